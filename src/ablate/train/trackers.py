"""Experiment trackers (``tracker=tensorboard|wandb|mlflow``): a live copy of metrics.jsonl.

Rank 0 writes each metrics record to metrics.jsonl first, then hands the same values to the
tracker (``iter`` is the step; list values such as per-head gates are flattened to
``key/<index>``). Runs of one matrix are grouped under the matrix directory's name (W&B group,
MLflow experiment, TensorBoard folder), named after the job, tagged with step and seed, and carry
the resolved config.

A tracker is never allowed to cost a result: any exception from a backend (not installed, disk
full, server down) is logged once in train.log and summary.json's notes, the tracker is switched
off for the rest of the job, and training and metrics.jsonl carry on. The matrix checks before any
job starts that the chosen tracker can start (``ablate.train.tracker_checks``: installed, W&B's API
key or offline mode, an MLflow store the installed client can open and reach).
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.util
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, Literal, cast

from ablate import results
from ablate.config import RunConfig, config_yaml, to_container
from ablate.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}

WandbMode = Literal["online", "offline", "disabled"]
"""tracker.mode's values (ablate.config.WANDB_MODES; TrackerConfig.problems refuses others)."""


def check_installed(name: str) -> None:
    """One line, before any job starts, when the chosen tracker cannot run here (its name was
    checked with the config: TrackerConfig.problems)."""
    package = PACKAGES.get(name)
    if package and importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"tracker={name} needs the {package} package, which is not installed: "
            f"pip install -e '.[{name}]' (or tracker=none)"
        )


def values(record: dict[str, Any]) -> Iterator[tuple[str, float]]:
    """The numeric values of one metrics.jsonl record, as (key, value); lists become key/<i>."""

    def walk(key: str, v: Any) -> Iterator[tuple[str, float]]:
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return
        if isinstance(v, (int, float)):
            yield key, float(v)
        elif isinstance(v, (list, tuple)):
            for i, item in enumerate(v):
                yield from walk(f"{key}/{i}", item)

    for k, v in record.items():
        if k not in ("kind", "iter"):
            yield from walk(k, v)


class Tracker:
    """Backend interface: log(step, values), close(status)."""

    def log(self, step: int, vals: dict[str, float]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        pass

    def close(self, status: str) -> None:
        pass


class TensorBoardTracker(Tracker):
    def __init__(self, cfg: RunConfig, jd: results.JobDir, config_yaml: str, start_iter: int):
        from torch.utils.tensorboard import SummaryWriter

        matrix = jd.path.parent
        root = (
            Path(cfg.tracker.dir).expanduser() / matrix.name
            if cfg.tracker.dir
            else matrix / "tensorboard"
        )
        self.log_dir = root / jd.path.name
        # A resumed job re-logs iterations after its checkpoint: purge_step hides the old ones.
        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=start_iter or None)
        self.writer.add_text("config", "```\n" + config_yaml + "\n```", global_step=start_iter)
        self.writer.add_text(
            "tags",
            f"step={cfg.step.name} seed={cfg.seed} matrix={matrix.name}",
            global_step=start_iter,
        )

    def log(self, step: int, vals: dict[str, float]) -> None:
        for k, v in vals.items():
            self.writer.add_scalar(k, v, global_step=step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self, status: str) -> None:
        self.writer.close()


class WandbTracker(Tracker):
    def __init__(self, cfg: RunConfig, jd: results.JobDir, config: dict[str, Any], start_iter: int):
        import wandb

        matrix = jd.path.parent
        folder = Path(cfg.tracker.dir).expanduser() if cfg.tracker.dir else matrix
        folder.mkdir(parents=True, exist_ok=True)
        # One W&B run per job, also across resumes: the id is derived from the job directory.
        run_id = hashlib.sha256(str(jd.path.resolve()).encode()).hexdigest()[:24]
        self.run = wandb.init(
            project=cfg.tracker.project,
            entity=cfg.tracker.entity,
            group=matrix.name,
            name=jd.path.name,
            job_type=cfg.step.name,
            tags=[f"step:{cfg.step.name}", f"seed:{cfg.seed}"],
            config=config,
            dir=str(folder),
            # A str in the config (OmegaConf has no Literal), validated against WANDB_MODES.
            mode=cast("WandbMode | None", cfg.tracker.mode),
            id=run_id,
            resume="allow",
            settings=wandb.Settings(console="off", silent=True),
        )
        # The iteration is an ordinary value and the x-axis of every chart; W&B's own step only
        # counts log calls. So a train and an eval record of one iteration are two rows, never a
        # merge, and a resumed job's re-logged iterations are kept instead of dropped as "old steps".
        self.run.define_metric("iter")
        self.run.define_metric("*", step_metric="iter")

    def log(self, step: int, vals: dict[str, float]) -> None:
        self.run.log({"iter": step, **vals})

    def close(self, status: str) -> None:
        import wandb

        self.run.finish(exit_code=0 if status == results.COMPLETED else 1)
        # finish() can return before W&B's service has written everything; teardown waits for it
        # (at process exit it runs anyway, but run_job also runs in-process: Slurm tasks, tests).
        wandb.teardown()


class MlflowTracker(Tracker):
    def __init__(
        self,
        cfg: RunConfig,
        jd: results.JobDir,
        config: dict[str, Any],
        config_yaml: str,
        start_iter: int,
    ):
        from mlflow.tracking import MlflowClient

        self.client = client = MlflowClient(tracking_uri=cfg.tracker.uri)
        matrix = jd.path.parent
        exp = client.get_experiment_by_name(matrix.name)
        if exp is None:
            try:
                exp_id = client.create_experiment(matrix.name)
            except Exception:  # a parallel job of the same matrix created it first
                # None (not created after all) raises AttributeError here: _guard reports it as
                # the tracker's start failure, as it does any other.
                exp_id = client.get_experiment_by_name(matrix.name).experiment_id  # type: ignore[union-attr]
        else:
            exp_id = exp.experiment_id
        # One run per job, also across resumes: find it by its job tag.
        found = client.search_runs(
            [exp_id], filter_string=f"tags.`ablate.job` = '{jd.path.name}'", max_results=1
        )
        if found:
            self.run_id = found[0].info.run_id
        else:
            tags = {
                "step": cfg.step.name,
                "seed": str(cfg.seed),
                "ablate.job": jd.path.name,
                "ablate.matrix": matrix.name,
                "ablate.job_dir": str(jd.path.resolve()),
            }
            self.run_id = client.create_run(exp_id, run_name=jd.path.name, tags=tags).info.run_id
            client.log_text(self.run_id, config_yaml, "config.yaml")
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in _flat(config)]
            for i in range(0, len(params), 100):
                client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, step: int, vals: dict[str, float]) -> None:
        from mlflow.entities import Metric

        ts = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(k, v, ts, step) for k, v in vals.items()]
        )

    def close(self, status: str) -> None:
        state = {results.COMPLETED: "FINISHED", results.FAILED: "FAILED"}.get(status, "KILLED")
        self.client.set_terminated(self.run_id, state)


def _flat(d: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _flat(v, key + ".")
        else:
            yield key, v


class _Stop(enum.Enum):
    """The worker's stop request (a one-member enum: a sentinel the type checker can narrow)."""

    STOP = enum.auto()


_STOP: Final = _Stop.STOP


class TrackedMetrics:
    """metrics.jsonl first, then the tracker; a tracker failure switches the tracker off, only.

    The tracker is opened here (setup, outside the time box) but fed by a worker thread: a slow
    or hanging backend (an HTTP tracking server that retries for minutes) never stalls an
    iteration. ``sync`` (at checkpoints) waits a bounded time for the worker to catch up; a
    backlog beyond ``MAX_BACKLOG`` records is dropped with one warning rather than blocking.
    """

    MAX_BACKLOG = 10_000
    WAIT_S = 30.0

    def __init__(
        self,
        writer: results.MetricsWriter,
        jd: results.JobDir,
        name: str,
        opener: Callable[[], Tracker],
        warn: Callable[[str], None],
    ):
        self.writer = writer
        self.jd = jd
        self.name = name
        self.warn = warn
        self.tracker: Tracker | None = None
        self._dropped = 0
        self._guard("start", lambda: setattr(self, "tracker", opener()))
        self._queue: queue.Queue[tuple[int, dict[str, float]] | threading.Event | _Stop] = (
            queue.Queue(maxsize=self.MAX_BACKLOG)
        )
        self._thread: threading.Thread | None = None
        if self.tracker is not None:
            # mypy keeps self.tracker narrowed to the None above: it cannot see _guard's setattr.
            self._thread = threading.Thread(  # type: ignore[unreachable]
                target=self._work, name=f"ablate-tracker-{name}", daemon=True
            )
            self._thread.start()

    def _guard(self, what: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - a tracker must not end training, whatever it raises
            if (
                isinstance(e, KeyboardInterrupt)
                and threading.current_thread() is threading.main_thread()
            ):
                raise
            self.tracker = None
            msg = " ".join(str(e).split())[:300]
            self.warn(
                f"tracker {self.name} failed at {what} ({type(e).__name__}: {msg}); it is off for the "
                f"rest of this job; training and metrics.jsonl are unaffected"
            )

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):  # a flush request: everything before it is sent
                tracker = self.tracker
                if tracker is not None:
                    self._guard("flush", tracker.flush)
                item.set()
                continue
            step, vals = item
            tracker = self.tracker
            if tracker is not None:
                self._guard(f"iteration {step}", functools.partial(tracker.log, step, vals))

    def write(self, record: dict[str, Any]) -> None:
        self.writer.write(record)
        if self.tracker is None:
            return
        try:
            self._queue.put_nowait((int(record.get("iter") or 0), dict(values(record))))
        except queue.Full:
            self._dropped += 1
            if self._dropped == 1:
                self.warn(
                    f"tracker {self.name} is falling behind ({self.MAX_BACKLOG} records queued); records "
                    "are dropped for it until it catches up; metrics.jsonl is complete"
                )

    def _wait(self, timeout: float) -> bool:
        """Wait until the worker has handled everything queued so far; False if it did not in time."""
        if self._thread is None or not self._thread.is_alive():
            return True
        done = threading.Event()
        try:
            self._queue.put(done, timeout=timeout)
        except queue.Full:
            return False
        return done.wait(timeout)

    def sync(self) -> None:
        self.writer.sync()
        if self.tracker is not None and not self._wait(self.WAIT_S):
            self.warn(
                f"tracker {self.name} did not keep up within {self.WAIT_S:.0f} s; training goes on"
            )

    def close(self) -> None:
        self.writer.close()
        if self._thread is None:
            return
        finished = self._wait(self.WAIT_S)
        try:
            self._queue.put(_STOP, timeout=1.0)
        except queue.Full:
            pass
        self._thread.join(timeout=1.0 if finished else 0.0)
        tracker, self.tracker = self.tracker, None
        if tracker is None:
            return
        if not finished:
            self.warn(
                f"tracker {self.name} did not send its last records within {self.WAIT_S:.0f} s; "
                "metrics.jsonl is complete"
            )
            return
        try:
            status = (self.jd.read_summary() or {}).get("status") or results.RUNNING
        except Exception:
            status = results.RUNNING
        try:
            tracker.close(status)
        except Exception as e:  # noqa: BLE001
            self.warn(
                f"tracker {self.name} failed at close ({type(e).__name__}: {e}); metrics.jsonl is complete"
            )


def open_metrics(
    cfg: RunConfig,
    jd: results.JobDir,
    writer: results.MetricsWriter,
    start_iter: int,
    warn: Callable[[str], None],
) -> results.MetricsWriter | TrackedMetrics:
    """The metrics sink of rank 0: the writer itself, or the writer plus the configured tracker."""
    name = cfg.tracker.name
    if name == "none":
        return writer

    def opener() -> Tracker:
        check_installed(name)
        config, text = to_container(cfg), config_yaml(cfg)
        if name == "tensorboard":
            return TensorBoardTracker(cfg, jd, text, start_iter)
        if name == "wandb":
            return WandbTracker(cfg, jd, config, start_iter)
        return MlflowTracker(cfg, jd, config, text, start_iter)

    return TrackedMetrics(writer, jd, name, opener, warn)
