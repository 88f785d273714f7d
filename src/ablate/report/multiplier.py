"""The compute multiplier: how many times the baseline's tokens (and training seconds) reach a
step's final periodic val loss.

For each seed both steps ran: the tokens at which the baseline's interpolated curve (curves.py)
first reaches the step's final periodic val loss, over the step's own tokens; the geometric mean
over seeds, with an interval on the log scale (one seed: the crossings of that loss -+ the
periodic windows' paired sampling error, "this seed only"). 1.3x means the baseline needs 30% more
compute for the step's loss. When the baseline never gets there in its box, the multiplier is
read off ``C + A tokens^-alpha`` fitted to the second half of its curve, marked extrapolated, with
no interval.

With two or more seeds the interval on the log scale has the seeds' spread of the log ratios and,
where the final evals pair, the periodic windows' step-by-window part (curves.subset_parts)
carried to log tokens through the baseline's slope at the crossings (curves.log_scale_var): a
step-by-window effect moves every seed's level alike, so the seeds' spread cannot see it (without
it, 0.68 of 95% with 5 seeds when it dominates). Measured coverage 0.93-0.97 of 95% (0.90 at 108
windows with lag-1 0.6): tests/report/test_report_coverage_curves.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ablate.report.curves import (
    Curve,
    Estimate,
    fit_power_law,
    log_scale_var,
    over_seeds,
    periodic,
    subset_half_width,
    subset_parts,
)
from ablate.report.fmt import rounded
from ablate.report.noise import THIS_SEED, Effect


@dataclass
class Multiplier:
    tokens: Estimate
    seconds: Estimate
    final_loss: float  # the step's final periodic val loss (mean over the seeds used)
    note: str | None = None


def multiplier(base: list[Curve], step: list[Curve], effect: Effect | None) -> Multiplier:
    b = {c.seed: c for c in base}
    pairs = [(b[c.seed], c) for c in step if c.seed in b]
    if not pairs:
        return Multiplier(Estimate(math.nan), Estimate(math.nan), math.nan, "no seed in common")
    tok, sec, slopes, extrapolated, notes = [], [], [], False, []
    for bc, sc in pairs:
        if sc.tokens.size < 2 or bc.tokens.size < 2:
            notes.append(f"seed {sc.seed}: a run evaluated once has no curve")
            continue
        level = float(sc.loss[-1])
        t = bc.crossing(level)
        if t is None:
            fit = fit_power_law(bc)
            if fit is None or level <= fit[0]:
                notes.append(
                    f"seed {sc.seed}: the baseline never reaches {rounded(level, 4)}, not even "
                    "on a curve fitted to it"
                )
                continue
            C, A, alpha = fit
            t = (A / (level - C)) ** (1.0 / alpha)
            extrapolated = True
            s_base = t * bc.seconds[-1] / bc.tokens[-1] if np.isfinite(bc.seconds[-1]) else math.nan
        else:
            s_base = bc.at_tokens(bc.seconds, t)
            slopes.append(bc.log_slope(t))
        tok.append(t / sc.tokens[-1])
        sec.append(s_base / sc.seconds[-1] if sc.seconds[-1] > 0 else math.nan)
    final = float(np.mean([sc.loss[-1] for _, sc in pairs]))
    note = "; ".join(notes) or None
    if not tok:
        return Multiplier(Estimate(math.nan), Estimate(math.nan), final, note)
    if extrapolated:
        gm = float(np.exp(np.mean(np.log(tok))))
        gs = float(np.exp(np.mean(np.log(sec)))) if all(x > 0 for x in sec) else math.nan
        return Multiplier(
            Estimate(gm, runs=len(tok), extrapolated=True),
            Estimate(gs, runs=len(sec), extrapolated=True),
            final,
            note,
        )
    slope = float(np.mean(slopes)) if slopes else math.nan
    return Multiplier(
        log_ratio(tok, pairs, effect, slope), log_ratio(sec, pairs, effect, slope), final, note
    )


def log_ratio(
    ratios: list[float],
    pairs: list[tuple[Curve, Curve]],
    effect: Effect | None,
    slope: float = math.nan,
) -> Estimate:
    """Geometric mean of per-seed ratios with an interval on the log scale (the seeds' spread
    plus the periodic windows' part through the baseline's ``slope`` in loss per log token, the
    module docstring); one seed: the crossings of the step's final loss -+ the subset's paired
    sampling error."""
    r = np.asarray(ratios, dtype=np.float64)
    if not (r > 0).all():
        return Estimate(math.nan)
    var, df = subset_parts(effect, periodic(effect))
    if r.size >= 2:
        extra = float(log_scale_var(var, slope)) if var > 0 and slope > 0 else 0.0
        e = over_seeds(np.log(r), extra, df)
        return Estimate(
            float(np.exp(e.value)), float(np.exp(e.low)), float(np.exp(e.high)), e.kind, e.runs
        )
    if var <= 0:
        return Estimate(float(r[0]), runs=1)
    ((bc, sc),) = pairs
    h = float(subset_half_width(var, df))
    level = float(sc.loss[-1])
    hi, lo = bc.crossing(level - h), bc.crossing(level + h)  # a lower level takes longer
    scale = r[0] / (bc.crossing(level) / sc.tokens[-1])
    return Estimate(
        float(r[0]),
        lo / sc.tokens[-1] * scale if lo is not None else math.nan,
        hi / sc.tokens[-1] * scale if hi is not None else math.nan,
        THIS_SEED,
        1,
    )
