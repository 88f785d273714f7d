"""The time box's clock: sync points, collective elapsed time, stop planning.

``RunState.train_seconds`` counts wall time spent in training iterations only; the box is
``budget.box_seconds``, held by the run's ``Box`` (module ``box``). The first iteration of every process start (compile, allocator warm-up)
goes to ``warmup_seconds``; evals and checkpoints are timed by the trainer and kept out.

On CUDA the host runs ahead of the GPU, so a wall-clock reading means something only after
``torch.cuda.synchronize()``. The clock therefore synchronizes only at sync points: log, eval
and checkpoint iterations, the planned last iteration, and otherwise every ``~SYNC_SECONDS`` of
training (at most ``log_interval`` iterations apart; this bounds how late a signal is noticed).
At a sync point every rank adds its measured time to its clock and one small ``all_reduce(MAX)``
of [elapsed, signal flag, seconds since the last checkpoint, first non-finite iteration] makes all
decisions collective: every rank sees the same elapsed time (rank-local clocks differ by
microseconds; MAX takes the slowest), so all ranks stop at the same iteration and compute the same
learning rate, and no rank can leave a collective the others still wait in.

Between sync points elapsed time is extrapolated from the last sync with the measured seconds per
iteration; the stop iteration is *planned* from that estimate (``it + round(remaining / t_iter)``)
so the job ends within half an iteration of its box instead of overshooting by a whole sync
interval. On CPU every iteration is a sync point (no device queue to drain; the collective
costs well under a millisecond), so both the clock and the learning rate are exact there.

NaN checks use no host sync either: a device tensor records the first iteration whose loss was
non-finite, and it is read (as part of the sync vector) at sync points, so no NaN is missed.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from ablate.config import TRAIN_SYNC_MODES
from ablate.errors import ConfigError
from ablate.train import distributed as dist_mod
from ablate.train.box import Box
from ablate.train.device import DeviceSetup
from ablate.train.state import RunState

SYNC_SECONDS = 5.0  # on CUDA, at most this much training between two sync points


@dataclass
class Sync:
    """What every rank agreed on at a sync point."""

    signal: int  # a stop signal number, or 0
    since_checkpoint: float  # wall seconds since the last checkpoint
    bad_iter: int  # first iteration with a non-finite loss, or 0


class BoxClock:
    def __init__(
        self,
        state: RunState,
        dev: DeviceSetup,
        dinfo: dist_mod.DistInfo,
        box: Box,
        log_interval: int,
    ):
        self.state, self.dev, self.dinfo = state, dev, dinfo
        self.box = box
        self.log_interval = log_interval
        self.every_iter = sync_every_iter(dev)
        self.t_iter: float | None = None  # seconds per training iteration (collective estimate)
        self.sync_iter, self.sync_elapsed = state.iter, state.train_seconds
        self.next_sync = state.iter + 1
        self.box_stop: int | None = None
        self.first = True  # the first iteration of this process start: warm-up, not training
        self.seg_start = time.perf_counter()
        self.seg_timed_from = state.iter
        self.last_checkpoint = time.perf_counter()

    def start(self) -> None:
        """The loop starts: the first segment (warm-up) and the checkpoint timer run from now,
        at the state's iteration and elapsed seconds."""
        st = self.state
        self.sync_iter, self.sync_elapsed = st.iter, st.train_seconds
        self.next_sync = st.iter + 1
        self.seg_start = time.perf_counter()
        self.seg_timed_from = st.iter
        self.last_checkpoint = time.perf_counter()

    def spent(self) -> bool:
        """The budget is used up already (a job resumed from its last checkpoint)."""
        return self.box.spent(self.state.iter, self.state.train_seconds)

    def estimate(self, it: int) -> float:
        """Elapsed training seconds at iteration ``it``, extrapolated from the last sync point."""
        est = self.sync_elapsed + (it - self.sync_iter) * (self.t_iter or 0.0)
        return min(est, self.box.seconds) if self.box.seconds is not None else est

    def is_sync_point(self, it: int, due: bool) -> bool:
        return self.first or self.every_iter or due or it >= self.next_sync or self.end(it)

    def end(self, it: int) -> bool:
        """Iteration ``it`` is the last: the box is spent (``Box.spent``, on the collective
        elapsed time of the last sync point) or ``it`` is the stop planned at that sync point."""
        return self.box.spent(it, self.state.train_seconds) or (
            self.box_stop is not None and it >= self.box_stop
        )

    def sync(self, it: int, signal: int | None, first_bad: torch.Tensor) -> Sync:
        """Measure the segment since the last sync point, agree with every rank, plan the stop."""
        st = self.state
        self.dev.synchronize()
        now = time.perf_counter()
        if self.first:
            st.warmup_seconds += now - self.seg_start
        else:
            st.train_seconds += now - self.seg_start
            st.timed_iters += it - self.seg_timed_from
        vec = torch.tensor(
            [st.train_seconds, float(signal or 0), now - self.last_checkpoint, 0.0],
            dtype=torch.float64,
            device=self.dev.device,
        )
        vec[3] = first_bad.to(torch.float64)
        dist_mod.all_reduce(vec, "max", self.dinfo)
        elapsed, sig, since_ckpt, bad = vec.tolist()
        if not self.first and it > self.sync_iter:
            # Seconds per iteration since the last sync point (collective values only, so every
            # rank computes the same estimate). CPU syncs every iteration: smooth the noise.
            dt_iter = (elapsed - self.sync_elapsed) / (it - self.sync_iter)
            self.t_iter = (
                dt_iter
                if self.t_iter is None or not self.every_iter
                else 0.8 * self.t_iter + 0.2 * dt_iter
            )
        st.train_seconds = elapsed  # every rank now holds the same elapsed time
        self.sync_iter, self.sync_elapsed = it, elapsed
        if self.box.seconds is not None:  # plan the stop: within half an iteration of the box
            remaining = self.box.seconds - elapsed
            if self.t_iter and self.t_iter > 0:
                self.box_stop = it + max(0, int(math.floor(remaining / self.t_iter + 0.5)))
            elif remaining <= 0:
                self.box_stop = it
        return Sync(signal=int(sig), since_checkpoint=since_ckpt, bad_iter=int(bad))

    def exclude(self, seconds: float) -> None:
        """Leave ``seconds`` of the running segment out of the box (a causality audit inside a
        step, measured between device syncs: train.audit)."""
        self.seg_start += seconds

    def checkpointed(self) -> None:
        self.last_checkpoint = time.perf_counter()

    def next_segment(self, it: int) -> None:
        """After a sync point's work (evals, checkpoints): where the next one is, and a fresh
        segment start so that work stays out of the box."""
        if self.every_iter or self.t_iter is None:
            self.next_sync = it + 1
        else:
            self.next_sync = it + int(
                max(1, min(self.log_interval, SYNC_SECONDS // max(self.t_iter, 1e-9)))
            )
        self.first = False
        self.dev.synchronize()  # evals/checkpoints queued nothing, but be exact about the segment start
        self.seg_start = time.perf_counter()
        self.seg_timed_from = it


def sync_every_iter(dev: DeviceSetup) -> bool:
    """Sync at every iteration (CPU default) or only at sync points (CUDA default).

    ``ABLATE_TRAIN_SYNC=every|sparse`` overrides the default; the tests use ``sparse`` to run the
    CUDA bookkeeping (planned stop, sparse collective checks) on CPU.
    """
    mode = os.environ.get("ABLATE_TRAIN_SYNC", "auto").strip().lower()
    if mode == "every":
        return True
    if mode == "sparse":
        return False
    if mode not in ("",) + TRAIN_SYNC_MODES:
        raise ConfigError(f"ABLATE_TRAIN_SYNC={mode!r} is not one of {', '.join(TRAIN_SYNC_MODES)}")
    return not dev.is_cuda
