"""Checkpoints: atomic save, ``weights_only`` load, and RNG states as plain types.

A checkpoint holds everything needed to continue a job exactly: the unwrapped model, the
optimizer, the iteration (which is also the loader position: data order is a pure function of
(seed, iteration)), the elapsed training seconds and the other counters, the best validation
loss so far, and the RNG states of every rank (torch CPU/CUDA, numpy, python). RNG states are
stored as tensors, ints and lists so ``torch.load(..., weights_only=True)`` can read them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, TypedDict, cast

import numpy as np
import torch
from numpy.typing import NDArray
from safetensors import safe_open
from safetensors.torch import load_file, save

import models
from ablate.atomic import atomic_open, atomic_write_bytes
from ablate.errors import AblateError

CHECKPOINT_FORMAT = 1

_NumpyLegacyState = tuple[str, NDArray[np.uint32], int, int, float]
"""``np.random.get_state()``: (name, keys, pos, has_gauss, cached_gaussian)."""


class NumpyRng(TypedDict):
    """numpy's legacy generator state, its keys as a tensor."""

    name: str
    keys: torch.Tensor
    pos: int
    has_gauss: int
    cached_gaussian: float


class PythonRng(TypedDict):
    """``random.getstate()`` as plain types."""

    version: int
    state: list[int]
    gauss: float | None


class RngState(TypedDict):
    """One rank's RNG states (``capture_rng``); CUDA's is None off CUDA devices."""

    torch: torch.Tensor
    numpy: NumpyRng
    python: PythonRng
    cuda: torch.Tensor | None


# --------------------------------------------------------------------------- RNG states


def seed_all(seed: int) -> None:
    """Python's, numpy's and torch's generators (every CUDA device's too) from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def capture_rng(device: torch.device) -> RngState:
    """This process's RNG states as weights_only-loadable types."""
    # numpy's stubs give the no-argument call the legacy=False overload (a dict); at run time the
    # default is legacy=True, which returns this tuple.
    np_state = cast(_NumpyLegacyState, np.random.get_state())
    py_state = random.getstate()
    state: RngState = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64).copy()),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {
            "version": int(py_state[0]),
            "state": [int(v) for v in py_state[1]],
            "gauss": None if py_state[2] is None else float(py_state[2]),
        },
        "cuda": None,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: RngState, device: torch.device) -> None:
    torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            int(npst["pos"]),
            int(npst["has_gauss"]),
            float(npst["cached_gaussian"]),
        )
    )
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(v) for v in py["state"]), py["gauss"]))
    if device.type == "cuda" and (cuda := state.get("cuda")) is not None:
        torch.cuda.set_rng_state(cuda.to("cpu", torch.uint8), device)


# --------------------------------------------------------------------------- save / load


def save_checkpoint(path: os.PathLike[str] | str, payload: dict[str, Any]) -> None:
    """torch.save through ablate.atomic: a crash mid-save leaves the previous checkpoint intact."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, **payload}, f)


def load_checkpoint(path: os.PathLike[str] | str) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (on CPU), or None when there is none."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise AblateError(
            f"{path}: cannot be read as a checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:300]}); "
            f"delete it to restart the job from scratch"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise AblateError(
            f"{path}: unknown checkpoint format; delete it to restart the job from scratch"
        )
    return ckpt


def mismatch_message(path: os.PathLike[str] | str, error: BaseException) -> str:
    """One line for a checkpoint whose tensors do not fit the model and optimizer built from the
    job's config.yaml (changed since the checkpoint was written)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    detail = "; ".join(lines[1:] if len(lines) > 1 else lines)
    detail = detail if len(detail) <= 300 else detail[:297] + "..."
    return (
        f"{path} does not match the model this job's config.yaml builds ({detail}); the config "
        f"changed since the checkpoint was written: restore config.yaml, or delete {Path(path).name} "
        "to train the job from scratch"
    )


def checkpoint_state(path: os.PathLike[str] | str) -> dict[str, Any] | None:
    """The counters (``RunState``) a checkpoint holds, without reading its tensors into memory
    (``mmap``); None when there is no checkpoint. An unreadable one: the error of
    ``load_checkpoint``."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        ckpt = load_checkpoint(path)  # not mmap-able (an older torch's file): read it whole
    state = ckpt.get("state") if isinstance(ckpt, dict) else None
    return state if isinstance(state, dict) else {}


# --------------------------------------------------------------------------- final weights

WEIGHTS_FORMAT = "ablate-final-weights-1"


def save_final_weights(
    path: os.PathLike[str] | str, model: torch.nn.Module, model_config: dict[str, Any]
) -> None:
    """The model's weights as safetensors (atomic), with the model config in the metadata so
    ``load_final_weights`` rebuilds the model through ``models.build_model``.

    Tied tensors (the token embedding and the LM head) share storage; safetensors refuses
    aliases, so each storage is stored once and the aliases are listed in the metadata.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[torch.device, int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name, t in model.state_dict().items():
        key = (
            t.device,
            t.untyped_storage().data_ptr(),
            t.storage_offset(),
            tuple(t.shape),
            tuple(t.stride()),
        )
        if key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = t.detach().to("cpu").contiguous()
    metadata = {
        "format": WEIGHTS_FORMAT,
        "model_config": json.dumps(model_config, sort_keys=True),
        "aliases": json.dumps(aliases, sort_keys=True),
    }
    atomic_write_bytes(path, save(tensors, metadata=metadata))


def load_final_weights(path: os.PathLike[str] | str) -> torch.nn.Module:
    """A job's ``model.safetensors`` back as a model (``models.build_model`` + its weights, CPU)."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
        state = load_file(str(path))
    except Exception as e:
        raise AblateError(
            f"{path}: cannot be read as safetensors ({type(e).__name__}: {e})"
        ) from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise AblateError(f"{path}: not an ablate weights file (format {meta.get('format')!r})")
    model = models.build_model(json.loads(meta["model_config"]))
    for alias, name in json.loads(meta.get("aliases", "{}")).items():
        state[alias] = state[name]
    model.load_state_dict(state)
    return model
