"""A test hook, not part of ablate: with ``ABLATE_TEST_KILL_AT=<point>`` in its environment (and
this folder on PYTHONPATH), a trainer process kills itself with SIGKILL at that point of the steps
after training, as the kernel's OOM killer or a node failure would. Used by
tests/train/test_after_training.py; every other process is left alone.

Points, in the order the trainer reaches them (``Trainer._complete``):

- ``checkpointed``: the trained model's checkpoint is written, the final eval not started;
- ``final_eval``: final_eval.json is written, summary.json not yet completed;
- ``recheck``: summary.json says completed, the causality recheck of the trained weights starts;
- ``weights``: model.safetensors is written, checkpoint.pt not yet removed;
- ``done``: checkpoint.pt is removed, DONE not yet written.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import signal
import sys

POINT = os.environ.get("ABLATE_TEST_KILL_AT")
POINTS = ("checkpointed", "final_eval", "recheck", "weights", "done")


def _die() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _patch() -> None:
    from ablate import results
    from ablate.train import causality, evals
    from ablate.train import checkpoint as ckpt

    if POINT == "checkpointed":
        evals.Evaluator.final = lambda self, *args, **kwargs: _die()
    elif POINT == "final_eval":
        write = results.write_final_eval

        def write_then_die(*args, **kwargs):
            write(*args, **kwargs)
            _die()

        results.write_final_eval = write_then_die
    elif POINT == "recheck":
        recheck = causality.Recheck.__call__

        def die_at_final(self, when, iteration):
            if when == "final":
                _die()
            return recheck(self, when, iteration)

        causality.Recheck.__call__ = die_at_final
    elif POINT == "weights":
        save = ckpt.save_final_weights

        def save_then_die(*args, **kwargs):
            save(*args, **kwargs)
            _die()

        ckpt.save_final_weights = save_then_die
    elif POINT == "done":
        results.JobDir.mark_done = lambda self, *args, **kwargs: _die()


class _AfterTrainerImport(importlib.abc.MetaPathFinder):
    """Patches once ablate.train.trainer is imported (only a trainer process imports it to run)."""

    def find_spec(self, name, path, target=None):
        if name != "ablate.train.trainer":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _patch()

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if POINT:
    if POINT not in POINTS:
        raise SystemExit(f"ABLATE_TEST_KILL_AT={POINT!r} is not one of {POINTS}")
    sys.meta_path.insert(0, _AfterTrainerImport())
