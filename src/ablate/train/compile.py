"""torch.compile for a job: compile, prove it on the job's own shapes, or run eager and say so.

torch.compile is lazy: the graph is traced at the first forward and the backward compiled at the
first backward, so a backend that cannot work (no C compiler, no Triton, an unsupported Python)
would otherwise fail inside the first training iteration or, worse, the first eval. The trainer
therefore compiles in setup and runs a *probe*: one training forward + backward on a real
micro-batch and one eval forward (``no_grad``) on a validation batch, under the job's autocast.
These are exactly the graphs the loop and the evals use (same shapes, grad mode, autocast and
train/eval flags), so the probe's compile is reused, not repeated. The probe leaves no trace:
gradients are set back to None and every RNG state is restored, so a compiled job and an eager job
start from the same state (parameters are never stepped).

If anything in the probe raises, the job runs eager and says so in one line (train.log, the
summary's ``compile_error`` and ``notes``); ranks agree through one all_reduce, so either every
rank compiles or none does. Dynamo's own silent fallback (running a frame eager after too many
recompiles) is turned into an error with ``fail_on_recompile_limit_hit``.

``ABLATE_COMPILE_BACKEND`` picks the torch.compile backend (default ``inductor``; ``aot_eager`` or
``eager`` help bisect a compile problem); an unknown name fails the probe like any other backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

from ablate.train import checkpoint as ckpt_mod
from ablate.train import distributed as dist_mod
from models.loss import forward_logits, lm_loss

DEFAULT_BACKEND = "inductor"
ERROR_CHARS = 300


@dataclass
class CompileResult:
    """What the job really runs: compiled or eager, and why."""

    requested: bool
    compiled: bool
    backend: str | None = None
    error: str | None = None  # one line; None when compile worked or was not asked for
    seconds: float = 0.0  # the probe: tracing, compiling and one forward/backward
    graphs: int | None = None  # graphs dynamo compiled in the probe (train + eval)
    graph_breaks: int | None = None


def backend_name() -> str:
    return os.environ.get("ABLATE_COMPILE_BACKEND", "").strip() or DEFAULT_BACKEND


def _first_line(e: BaseException) -> str:
    first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


def _one_line(e: BaseException) -> str:
    text = _first_line(e)
    inner = getattr(
        e, "inner_exception", None
    )  # BackendCompilerFailed: "backend='x' raised:" + the cause
    if isinstance(inner, BaseException):
        text = f"{text} {_first_line(inner)}"
    return text if len(text) <= ERROR_CHARS else text[: ERROR_CHARS - 3] + "..."


def _counts() -> tuple[int, int]:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"]), int(sum(counters["graph_break"].values()))


def compile_model(
    model: torch.nn.Module,
    autocast: Callable[[], Any],
    train_batch: tuple[torch.Tensor, torch.Tensor],
    val_batch: tuple[torch.Tensor, torch.Tensor] | None,
    device: torch.device,
    dinfo: dist_mod.DistInfo,
    backend: str | Callable[..., Any] | None = None,
) -> tuple[torch.nn.Module, CompileResult]:
    """``(forward module, result)``: the compiled module if the probe passed on every rank, else
    ``model`` itself (eager) with ``result.error`` saying why. ``train_batch`` / ``val_batch`` are
    ``(x, y)`` CPU tensors of the shapes the job trains and evaluates on."""
    backend = backend or backend_name()
    label = backend if isinstance(backend, str) else getattr(backend, "__name__", repr(backend))
    import torch._dynamo

    torch._dynamo.reset()  # a fresh cache per job: in-process reruns do not accumulate recompiles
    if hasattr(torch._dynamo.config, "fail_on_recompile_limit_hit"):  # torch >= 2.7
        torch._dynamo.config.fail_on_recompile_limit_hit = True  # never fall back to eager silently
    g0, b0 = _counts()
    rng = ckpt_mod.capture_rng(device)
    was_training = model.training
    t0 = time.perf_counter()
    error: str | None = None
    fwd = None
    try:
        fwd = torch.compile(model, backend=backend)
        x, y = (t.to(device) for t in train_batch)
        model.train()
        with autocast():  # as the training step calls it: fwd(x), the loss computed outside
            loss = lm_loss(forward_logits(fwd, x), y)
        loss.backward()  # type: ignore[no-untyped-call]  # untyped in torch
        if val_batch is not None:  # a rank may hold no validation window
            model.eval()
            vx = val_batch[0].to(device)
            with torch.no_grad(), autocast():
                fwd(vx)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    except Exception as e:  # any failure means "this job cannot compile"; it runs eager instead
        error = _one_line(e)
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
        ckpt_mod.restore_rng(rng, device)
    seconds = time.perf_counter() - t0
    g1, b1 = _counts()

    flag = torch.tensor([1.0 if error else 0.0], device=device)
    dist_mod.all_reduce(flag, "max", dinfo)
    if flag.item() > 0 and error is None:
        error = "torch.compile failed on another rank"
    if error is not None:
        torch._dynamo.reset()
        return model, CompileResult(True, False, label, error, seconds)
    # torch.compile's stub returns the callable type it is given; given a Module it returns an
    # OptimizedModule (a Module). With no error the try block ran through, so fwd is set.
    return cast(torch.nn.Module, fwd), CompileResult(
        True, True, label, None, seconds, g1 - g0, b1 - b0
    )
