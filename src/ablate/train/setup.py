"""Parts of the trainer's setup that build and return: the job's data and its forward models."""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from ablate.config import RunConfig
from ablate.data import Dataset, TrainBatches, ValWindows, final_val_windows, resolve_dataset
from ablate.train import distributed as dist_mod
from ablate.train.compile import CompileResult, compile_model
from ablate.train.device import DeviceSetup
from ablate.train.evals import Batch


@dataclass(frozen=True)
class Data:
    dataset: Dataset
    batches: TrainBatches
    """The global batch of iteration i, this rank's share (a pure function of seed and i)."""
    val_batches: list[Batch]
    """This rank's periodic validation windows, in micro-batches of exactly ``micro_batch`` rows
    (``ValWindows.filled_batches``: the last one filled with the first windows)."""
    val_count: int
    """This rank's periodic windows: the first rows of ``val_batches``; the rest fill."""
    final_windows: ValWindows
    """The final eval's windows: a superset of the periodic ones, sized by data.val_tokens."""
    val_note: str | None
    """Why the final eval has fewer windows than data.val_tokens asks for, if it has."""


def load_data(cfg: RunConfig, dinfo: dist_mod.DistInfo, dev: DeviceSetup, grad_accum: int) -> Data:
    ws, rank = dinfo.world_size, dinfo.rank
    # Rank 0 resolves first (it may tokenize into a cache), then the others.
    if dinfo.is_main:
        ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    dist_mod.barrier(dinfo)
    if not dinfo.is_main:
        ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    T, micro = cfg.model.block_size, cfg.hardware.micro_batch
    batches = TrainBatches(ds.train_paths, T, micro, grad_accum, ws, rank, cfg.seed)
    periodic = ValWindows(ds.val_path, T, cfg.data.val_windows, ws, rank)
    val_batches = periodic.filled_batches(micro)
    if dev.is_cuda:
        val_batches = [(x.pin_memory(), y.pin_memory()) for x, y in val_batches]
    n_final, val_note = final_val_windows(ds.val_path, T, cfg.data.val_tokens, cfg.data.val_windows)
    final_windows = ValWindows(ds.val_path, T, n_final, ws, rank)
    return Data(ds, batches, val_batches, periodic.n_local, final_windows, val_note)


@dataclass(frozen=True)
class Forward:
    eval_model: torch.nn.Module
    """What evals call: the compiled model (or the model), without the DDP wrapper."""
    train_model: torch.nn.Module
    """What training steps call: ``eval_model`` wrapped in DDP when there are several ranks."""
    compiled: CompileResult | None
    """The compile probe's result; None when compile was not asked for."""
    compile_seconds: float
    """Wall seconds of the compile probe (warm-up, not training)."""


def build_forward(
    model: torch.nn.Module,
    dev: DeviceSetup,
    dinfo: dist_mod.DistInfo,
    batches: TrainBatches,
    start_iter: int,
    val_batches: list[Batch],
) -> Forward:
    """torch.compile when the device asks for it (the probe runs the first micro-batch of
    ``start_iter`` and the first validation batch), then the DDP wrapper."""
    fwd, compiled, seconds = model, None, 0.0
    if dev.compile:
        t0 = time.perf_counter()
        val0 = val_batches[0] if val_batches else None
        first = batches.get(start_iter)[0]
        fwd, compiled = compile_model(model, dev.autocast, first, val0, dev.device, dinfo)
        seconds = time.perf_counter() - t0
    train_model = fwd
    if dinfo.enabled:
        # Buffers are created identically on every rank (same seed); no per-forward broadcast.
        no_buffer_sync: dict[str, Any] = (
            {"forward_sync_buffers": False}
            if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters
            else {"broadcast_buffers": False}
        )
        train_model = DDP(
            fwd, device_ids=[dev.device.index] if dev.is_cuda else None, **no_buffer_sync
        )
    return Forward(fwd, train_model, compiled, seconds)
