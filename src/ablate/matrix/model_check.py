"""The preflight's model check: build each distinct model at the job's shapes and prove it causal,
with the arguments the job's conditions give (``probe_arguments``, ``job_precisions``), reading
and storing the verdict in the causality cache (``ablate.causality_cache``) by its identity
(``CausalityKeys``). ``ablate.matrix.preflight`` runs it once per distinct model of a matrix.
"""

from __future__ import annotations

import re
import sysconfig
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

import ablate
import models
from ablate import causality_cache, provenance
from ablate.config import MatrixSettings, RunConfig, to_container

PROBE_PRECISIONS = ("fp32", "bf16")
"""What check_model probes when not told the job's precision (fp32 and bf16 autocast)."""


def probe_arguments(
    seed: int = 0, micro_batch: int = 3, precisions: Sequence[str] = PROBE_PRECISIONS
) -> dict[str, Any]:
    """Every ``models.check_causal`` argument the preflight sets, spelled out (defaults too), so
    that the causality cache's key holds exactly what was probed. The evals run at the job's
    micro-batch (ablate.train.evals): the eval batch is the micro-batch."""
    from models.causality import MODES  # deferred: imports torch's modules of the probes
    from models.causality_probes import EOT_TOKEN, KINDS

    return {
        "seed": int(seed),
        "batch": int(micro_batch),
        "eval_batch": int(micro_batch),
        "precisions": list(precisions),
        "modes": list(MODES),
        "methods": ["gradient", "perturbation"],
        "kinds": list(KINDS),
        "eot_token": EOT_TOKEN,
        "every_cut": None,  # every cut where affordable on the CPU (models.EVERY_CUT_FLOPS)
        "positions": None,
        "seq_len": None,
        "tol": None,
        "randomize": True,
    }


def job_precisions(cfg: RunConfig, gpus_available: int, launcher: str) -> list[str]:
    """The precisions the job's forward runs in: fp32 always (the probes' reference), and bf16
    autocast where the job may train in it (hardware.precision=bf16, or auto on a GPU; auto on a
    Slurm launcher, whose nodes this process cannot see). A CPU job in fp32 never runs bf16, and
    bf16 autocast on a CPU is slow: its probes need not pay for it."""
    precision = cfg.hardware.precision.value
    if precision == "fp32":
        return ["fp32"]
    if precision == "bf16":
        return ["fp32", "bf16"]
    device = cfg.hardware.device.value
    if device == "auto" and launcher == "local":
        device = "cuda" if gpus_available else "cpu"  # what the local launcher will pick
    return ["fp32"] if device == "cpu" else ["fp32", "bf16"]


def check_model(
    model_cfg: dict,
    causality: bool = True,
    seed: int = 0,
    micro_batch: int = 3,
    data: torch.Tensor | None = None,
    probe: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[str], dict | None]:
    """Build the step's model at the job's own shapes and prove it causal (the probes of
    models/causality.py, at the job's micro-batch, called as the trainer calls it, on the job's
    data windows when given). ``probe``: the check_causal arguments (``probe_arguments``;
    default: those of ``seed`` and ``micro_batch``, fp32 and bf16). Returns (problems, causality
    record or None when not checked). ``progress``: the probes' progress lines (check_causal)."""
    probe = probe if probe is not None else probe_arguments(seed, micro_batch)
    model = None
    try:
        torch.manual_seed(probe["seed"])
        model = models.build_model(dict(model_cfg))  # full size: what the job will train
        if not causality:
            return [], None
        report = models.check_causal(model, data=data, progress=progress, **probe)
    except models.ModelConfigError as e:
        return [str(e)], None
    except Exception as e:
        if isinstance(e, (MemoryError, RuntimeError)) and _allocation_failed(e):
            return [_allocation_message(model_cfg, e)], None
        place = model_code_frame(e)
        if place is None:  # raised by ablate's own probing, not by model code: a bug, traceback
            raise
        what = (
            "building the model"
            if model is None
            else "the causality check's forward and backward passes through the model"
        )
        return [f"{what} raised {type(e).__name__}: {_one_line(e)} (at {place})"], None
    record = report.to_record()
    return verdict_problems(record), record


# Files whose frames are the machinery around a model, not its code: torch, Python's and other
# installed libraries, ablate, and the models package's tables and causality probes.
_MODELS = Path(models.__file__).resolve().parent
_NOT_MODEL_CODE = {_MODELS / f"{n}.py" for n in ("__init__", "registry", "config")}
_NOT_MODEL_CODE |= set(_MODELS.glob("causality*.py"))
_LIBRARIES = [Path(ablate.__file__).resolve().parent, Path(torch.__file__).resolve().parent]
_LIBRARIES += [Path(p).resolve() for k, p in sysconfig.get_paths().items() if "lib" in k]


def model_code_frame(e: BaseException) -> str | None:
    """``file:line (function)`` of the innermost frame of ``e`` in model code (a component of
    src/models or a user's plugin module), or None when none of its frames is model code."""
    for frame in reversed(traceback.extract_tb(e.__traceback__)):
        path = Path(frame.filename).resolve()
        if path in _NOT_MODEL_CODE or any(path.is_relative_to(lib) for lib in _LIBRARIES):
            continue
        if frame.filename.startswith("<"):  # <frozen ...>, <string>: no file to point at
            continue
        return f"{frame.filename}:{frame.lineno} in {frame.name}"
    return None


def _one_line(e: BaseException, limit: int = 300) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def verdict_problems(record: dict) -> list[str]:
    """The preflight's problem line for a causality record (none when it passed); a verdict read
    from the cache says when it was measured."""
    if record.get("ok"):
        return []
    when = causality_cache.stored_when(record)
    cached = f" (cached verdict of {when})" if when else ""
    return [
        f"{record.get('message')}{cached}; refusing to train a step that sees future tokens or "
        "other rows"
    ]


class CausalityKeys:
    """The causality cache's key of each job's model (ablate.causality_cache): what is the same
    for every model (environment, the models package's files) is read once per preflight."""

    def __init__(self) -> None:
        self.environment = causality_cache.environment("cpu")  # check_model probes on the CPU
        self.models_source = causality_cache.models_source()

    def inputs(
        self, cfg: RunConfig, probe: dict[str, Any], data: torch.Tensor | None
    ) -> tuple[dict[str, Any] | None, str]:
        """(the key's inputs, '') or (None, why this model cannot be cached; '' when its config
        does not build)."""
        try:
            code = provenance.model_code(cfg)
            mcfg = models.check_config(cfg.model)
            parts = (models.REGISTRY[mcfg.arch], models.ATTENTION[mcfg.attention])
            parts += (models.MLPS[mcfg.mlp],)
        except (models.ModelConfigError, KeyError, OSError, SyntaxError):
            return None, ""  # the model config does not build: check_model says why
        for part in parts:
            for cls in getattr(part, "__mro__", (part,)):
                module = cls.__module__
                if module in code or module.split(".")[0] in ("models", "torch", "builtins"):
                    continue
                return None, (
                    f"{cls.__qualname__} comes from {module}, neither the models package nor "
                    "a plugin: its source is not in the key"
                )
        return {
            "format": causality_cache.FORMAT,
            "model": to_container(cfg.model),
            "probe": {**probe, "compiled": False},  # the preflight probes the eager model
            "data": causality_cache.tensor_fingerprint(data),
            "environment": self.environment,
            "code": {"models": self.models_source, "model_code": code},
        }, ""


def _allocation_failed(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, MemoryError) or any(
        t in text for t in ("can't allocate memory", "Cannot allocate memory", "out of memory")
    )


def _allocation_message(model_cfg: dict, e: BaseException) -> str:
    """One line for a model the preflight could not even allocate: its size, and the limit that
    is likely to blame (the address-space limit, ``ulimit -v``, is often far below the RAM)."""
    import resource

    c = model_cfg
    try:  # parameters: embeddings + 12 d^2 per layer (GPT-2's shape; a rough figure)
        params = c["vocab_size"] * c["n_embd"] + c["block_size"] * c["n_embd"]
        params += 12 * c["n_layer"] * c["n_embd"] ** 2
        size = f"about {params / 1e6:,.0f}M parameters, {params * 4 / 2**30:,.1f} GiB in fp32"
    except (KeyError, TypeError):
        size = "its parameters"
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    limit = (
        f"this process may map at most {soft / 2**30:,.1f} GiB of address space (ulimit -v), "
        "which counts every mapping, not only RAM in use; raise it, or make the model smaller"
        if soft != resource.RLIM_INFINITY
        else "the machine has too little free memory for it; free memory or make the model smaller"
    )
    asked = re.search(r"tried to allocate (\d+) bytes", str(e))
    cause = f"; {int(asked.group(1)) / 2**20:,.0f} MiB more were refused" if asked else ""
    return f"building the model ({size}) failed to allocate memory{cause}: {limit}"


def open_cache(
    settings: MatrixSettings, progress: Callable[[str], None] | None
) -> causality_cache.CausalityCache | None:
    """The causality cache of these settings (None: causality_cache.enabled=false)."""
    if not settings.causality_cache.enabled:
        return None
    folder = causality_cache.resolve_dir(settings.causality_cache.dir)
    return causality_cache.CausalityCache(folder, say=progress)
