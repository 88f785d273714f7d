"""Noise from the data: standard errors and paired intervals from the final eval's window losses.

A job's final eval stores one loss per validation window (``final_eval.json``). Windows are
consecutive pieces of one token stream, so neighbours share documents and are correlated; the
standard error therefore comes from *batch means*: the windows are cut into at most MAX_BLOCKS
blocks of L consecutive windows, and

    SE = sd(block means) / sqrt(K) * sqrt(K * L / n)

with K full blocks (a last, partial block is left out of the spread, the factor rescales from
the K*L windows the spread describes to all n). With independent windows this is sd/sqrt(n) in
expectation; with correlated ones it keeps the correlation inside each block.

Two steps with the same seed scored the same windows (same validation tokens, checked by a
fingerprint, same block size), so their difference is measured window by window: d_w =
base_w - step_w. The paired SE (blocks of d_w) removes what both share (hard and easy windows)
and is usually far smaller than either job's SE.

Over several seeds each pair s gives a difference d_s with eval SE e_s. The spread of the d_s
(sample variance V, n - 1) already holds the eval noise, so the seed part is
``max(0, V - mean(e_s^2))`` and the standard error of the mean difference is
``sqrt(max(V, mean(e_s^2)) / k)``, with k - 1 degrees of freedom. Which part dominates is
reported. With one seed only the eval noise is known: the interval says nothing about
seed-to-seed variation, and the report says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ablate.results import FinalEval

CONFIDENCE = 0.95
MAX_BLOCKS = 64  # 2,048 windows of 1,024 tokens: blocks of 32 windows (32K tokens), 63 df


@dataclass(frozen=True)
class BlockSE:
    """Mean and batch-means standard error of a sequence of per-window values."""

    mean: float
    se: float
    blocks: int  # K: full blocks the spread is measured on
    block_windows: int  # L: windows per block
    n: int  # windows

    @property
    def df(self) -> int:
        return self.blocks - 1


def block_se(values: Sequence[float], max_blocks: int = MAX_BLOCKS) -> BlockSE | None:
    """Batch-means SE of the mean of ``values`` (see module docstring); None with fewer than 2 blocks."""
    x = np.asarray(values, dtype=np.float64)
    n = int(x.size)
    if n < 2:
        return None
    L = max(1, n // max_blocks)
    K = n // L
    if K < 2:
        return None
    means = x[: K * L].reshape(K, L).mean(axis=1)
    var = float(means.var(ddof=1))
    se = math.sqrt(var / K) * math.sqrt(K * L / n)
    return BlockSE(float(x.mean()), se, K, L, n)


def pairable(a: FinalEval, b: FinalEval) -> str | None:
    """None when ``a`` and ``b`` scored the same windows, else why they did not."""
    if a.block_size != b.block_size:
        return f"block sizes differ ({a.block_size} vs {b.block_size})"
    if a.n_windows != b.n_windows:
        return f"window counts differ ({a.n_windows} vs {b.n_windows})"
    if a.fingerprint and b.fingerprint and a.fingerprint != b.fingerprint:
        return "validation tokens differ (fingerprints differ)"
    return None


@dataclass(frozen=True)
class Paired:
    """base - step over the same windows of one seed."""

    diff: float
    se: float
    df: int


def paired(base: FinalEval, step: FinalEval) -> Paired | None:
    """The paired difference base - step (positive: the step's loss is lower); None if unpairable."""
    if pairable(base, step) is not None:
        return None
    est = block_se(np.asarray(base.window_losses) - np.asarray(step.window_losses))
    if est is None:
        return None
    return Paired(est.mean, est.se, est.df)


@dataclass(frozen=True)
class Combined:
    """Paired differences combined over seeds, in loss units (base - step)."""

    diff: float
    se: float
    df: float
    seeds: int
    eval_var: float  # mean squared paired eval SE
    seed_var: float | None  # between-seed variance beyond eval noise; None with one seed

    @property
    def dominant(self) -> str:
        if self.seed_var is None:
            return "eval (seed noise unknown: one seed)"
        return "seeds" if self.seed_var > self.eval_var else "eval"


def combine(pairs: Sequence[Paired]) -> Combined | None:
    """Combine per-seed paired differences (see module docstring)."""
    if not pairs:
        return None
    k = len(pairs)
    eval_var = sum(p.se**2 for p in pairs) / k
    mean = sum(p.diff for p in pairs) / k
    if k == 1:
        return Combined(mean, pairs[0].se, float(pairs[0].df), 1, eval_var, None)
    v = sum((p.diff - mean) ** 2 for p in pairs) / (k - 1)
    return Combined(
        mean, math.sqrt(max(v, eval_var) / k), float(k - 1), k, eval_var, max(0.0, v - eval_var)
    )
