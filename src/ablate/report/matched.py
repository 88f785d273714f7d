"""Matched work next to equal time: loss at equal tokens, work to a target loss, and the compute
multiplier.

A time box gives every step the same seconds; a faster step trains on more tokens. To separate
"learns more per token" from "runs more tokens per second", this section reads the periodic eval
curve of every completed run (metrics.jsonl eval records: tokens, training seconds, FLOPs, val
loss on the fixed periodic windows).

**Interpolation.** Between two eval points the loss is interpolated linearly in log(tokens)
(linearly in tokens from an eval at 0 tokens): loss curves are close to straight in log tokens,
so the chord between evals barely depends on the eval cadence (a power-law curve evaluated every
25 instead of every 5 iterations moves a crossing by 1e-5 of its tokens, where reading the first
eval at or below it moved it by 1.3%). Training seconds and FLOPs at a token count are linear in
tokens. Nothing is extrapolated, except the compute multiplier's marked case below.

* **Val loss at equal tokens**: every run interpolated at the largest token count all compared
  runs reached (the common grid ends there), mean over runs; its difference to the baseline
  with a 95% interval.
* **Work to a target** (speedrun style): the tokens, training seconds and FLOPs at which a run's
  curve first reaches the target loss: ``--target-loss``, else the highest of the compared runs'
  lowest periodic val losses (so every compared run reaches it); mean over the runs that did,
  with a 95% interval; a run that did not says why.
* **Compute multiplier**: for each step, the tokens (and training seconds) the baseline needed
  to reach the step's final periodic val loss, divided by the step's own, per seed both ran,
  then the geometric mean: 1.3x means the baseline needs 30% more compute for that loss. When the
  baseline never gets there in its box, the multiplier is read off a fitted curve
  loss = C + A * tokens^-alpha, marked "extrapolated", with no interval.

**Intervals.** With two or more seeds: a t interval over the seeds (for differences and
multipliers, over the seeds both steps ran; multipliers on the log scale), plus, where the runs'
final evals pair, the step-by-window interaction of the periodic windows (for the multiplier
carried to log tokens through the baseline's slope at the crossings); with that part the
half-width is the headline comparison's calibrated one (curves.seeds_half_width). Tokens and
seconds to a target are per step, and the target is a loss on these periodic windows: their
interval covers the expected tokens on these windows, over seeds. With one seed: from the eval
windows, "this seed only": the periodic subset's sampling error.

**The periodic windows' part** (curves.subset_parts): Var(b̄) of noise.py (one seed: the pair's
whole eval variance) estimated on the final eval's windows after the periodic ones, carried
from their count to the periodic subset's with the exact variance of the mean of an AR(1)
segment at their lag-1 autocorrelation (the periodic windows are the first, consecutive ones).
Measured coverage of every interval: 0.93-0.97 of 95% (0.90 at 108 windows with lag-1 0.6),
tests/report/test_report_coverage_curves.py. The section makes no verdicts (no better/worse, no
bold): its intervals are per comparison, unadjusted.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ablate.report.curves import (
    Curve,
    Estimate,
    curves_of,
    over_seeds,
    periodic,
    periodic_block_se,
    subset_half_width,
    subset_parts,
    subset_var,
)
from ablate.report.fmt import fmt_num, pipe, rounded
from ablate.report.load import Collection
from ablate.report.multiplier import Multiplier, multiplier
from ablate.report.noise import THIS_SEED, Effect
from ablate.report.stats import StepStats, compare

# --------------------------------------------------------------------------- the section's numbers


@dataclass
class Reach:
    runs: int  # compared runs of the step
    hit: int  # runs whose curve reached the target
    tokens: Estimate
    seconds: Estimate
    flops: float
    why_not: list[str] = field(default_factory=list)


@dataclass
class Matched:
    tokens: float | None  # the common grid's end: largest token count every compared run reached
    why_no_tokens: str | None
    loss_at_tokens: dict[str, float]  # step -> mean interpolated val loss there
    diff_at_tokens: dict[str, Estimate]  # step -> Estimate of baseline - step there
    target: float | None
    target_source: str
    reach: dict[str, Reach]  # step -> Reach
    multiplier: dict[str, Multiplier]  # step -> Multiplier


DEFAULT_TARGET = (
    "the highest of the compared runs' lowest periodic val losses, so every run reaches it"
)
"""The target without ``--target-loss`` (REPORT.md says it, and so does ``--help``)."""


def matched_work(
    jobs: pd.DataFrame,
    curves: pd.DataFrame,
    order: list[str],
    baseline: str,
    target_loss: float | None = None,
    stats: dict[str, StepStats] | None = None,
) -> Matched:
    runs = curves_of(jobs, curves)
    by_step: dict[str, list[Curve]] = {}
    for c in runs:
        by_step.setdefault(c.step, []).append(c)
    steps = [s for s in order if s in by_step]

    # The common grid: from the latest first eval to the earliest last eval over all runs.
    tokens, why = None, None
    usable = [c for c in runs if c.step in steps and c.tokens.size >= 2]
    short = [c.key for c in runs if c.step in steps and c.tokens.size < 2]
    if short:
        why = f"{', '.join(short)} evaluated once, so there is no curve to interpolate"
    elif usable:
        lo = max(c.tokens[0] for c in usable)
        hi = min(c.tokens[-1] for c in usable)
        # a usable curve has two distinct token counts >= 0 (curves_of), so hi > 0 here
        if hi >= lo:
            tokens = float(hi)
        else:
            first = max(usable, key=lambda c: c.tokens[0])
            last = min(usable, key=lambda c: c.tokens[-1])
            why = (
                f"{last.key}'s evals end at {fmt_num(last.tokens[-1])} tokens, before "
                f"{first.key}'s first at {fmt_num(first.tokens[0])}"
            )
    at: dict[str, float] = {}
    diff: dict[str, Estimate] = {}
    if tokens is not None:
        at = {s: float(np.mean([c.loss_at(tokens) for c in by_step[s]])) for s in steps}
        for s in steps:
            if s != baseline and baseline in by_step:
                diff[s] = _paired(
                    by_step[baseline],
                    by_step[s],
                    lambda b, c: b.loss_at(tokens) - c.loss_at(tokens),
                    _effect(stats, s, baseline),
                )

    target, source = target_loss, "--target-loss"
    if target is None and steps:
        target = max(float(c.loss.min()) for s in steps for c in by_step[s])
        source = DEFAULT_TARGET
    reach: dict[str, Reach] = {}
    if target is not None:
        for s in steps:
            hit, why_not = [], []
            for c in by_step[s]:
                t = c.crossing(target)
                if t is None:
                    why_not.append(
                        f"{c.key}: its lowest periodic val loss {rounded(float(c.loss.min()), 4)} "
                        f"stays above the target"
                    )
                else:
                    hit.append((c, t))
            reach[s] = Reach(
                len(by_step[s]),
                len(hit),
                _reach_estimate([t for _, t in hit], [c for c, _ in hit], target, stats, s),
                over_seeds([c.at_tokens(c.seconds, t) for c, t in hit], floor=0.0),
                float(np.mean([c.at_tokens(c.flops, t) for c, t in hit])) if hit else math.nan,
                why_not,
            )

    mult: dict[str, Multiplier] = {}
    if baseline in by_step:
        for s in steps:
            if s != baseline:
                mult[s] = multiplier(by_step[baseline], by_step[s], _effect(stats, s, baseline))
    return Matched(tokens, why, at, diff, target, source, reach, mult)


def _effect(stats: dict[str, StepStats] | None, step: str, baseline: str) -> Effect | None:
    if stats is None or step not in stats or baseline not in stats:
        return None
    c = compare(stats[step], stats[baseline])
    return c.effect


def _paired(
    base: list[Curve],
    step: list[Curve],
    f: Callable[[Curve, Curve], float],
    effect: Effect | None,
) -> Estimate:
    """``f(base run, step run)`` over the seeds both ran, with the interval of the module
    docstring (one seed: the subset's sampling error from the eval windows)."""
    b = {c.seed: c for c in base}
    vals = [f(b[c.seed], c) for c in step if c.seed in b]
    vals = [v for v in vals if math.isfinite(v)]
    var, df = subset_parts(effect, periodic(effect))
    if len(vals) == 1 and var > 0:
        h = float(subset_half_width(var, df))
        return Estimate(vals[0], vals[0] - h, vals[0] + h, THIS_SEED, 1)
    return over_seeds(vals, var, df)


def _reach_estimate(
    tokens: list[float],
    runs: list[Curve],
    target: float,
    stats: dict[str, StepStats] | None,
    step: str,
) -> Estimate:
    """Tokens to the target over the runs that reached it; one run: the crossings of
    target -+ the half-width of its subset's sampling error (from its own final eval)."""
    if len(tokens) != 1:
        return over_seeds(tokens, floor=0.0)
    c = runs[0]
    st = stats.get(step) if stats else None
    fe = None
    if st is not None and c.seed in st.seeds:
        fe = st.evals[st.seeds.index(c.seed)]
    if fe is None or not fe.periodic_windows:
        return Estimate(tokens[0], runs=1)
    est = periodic_block_se(fe.window_losses, fe.periodic_windows)
    if est is None:
        return Estimate(tokens[0], runs=1)
    var = subset_var(est.se**2, est.n, fe.periodic_windows, est.rho)
    h = float(subset_half_width(var, est.df))
    lo, hi = c.crossing(target + h), c.crossing(target - h)
    return Estimate(
        tokens[0],
        lo if lo is not None else math.nan,
        hi if hi is not None else math.nan,
        THIS_SEED,
        1,
    )


# --------------------------------------------------------------------------- the section


def matched_section(
    coll: Collection, target_loss: float | None = None, stats: dict[str, StepStats] | None = None
) -> str:
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, target_loss, stats)
    if not m.reach and not m.loss_at_tokens:
        return "No completed run recorded a validation curve."
    base = coll.baseline
    rows = []
    for step in coll.order:
        r = m.reach.get(step)
        loss = m.loss_at_tokens.get(step)
        d = m.diff_at_tokens.get(step)
        rows.append(
            [
                step,
                rounded(loss, 4) if loss is not None and math.isfinite(loss) else "-",
                "-" if step == base or d is None else d.cell(lambda x: _signed4(x)),
                "-" if r is None else f"{r.hit}/{r.runs}",
                "-" if r is None else (r.tokens.cell(fmt_num) if r.hit else "not reached"),
                "-" if r is None or not r.hit else r.seconds.cell(lambda x: fmt_num(x, 1)),
                "-" if r is None or not math.isfinite(r.flops) else f"{r.flops:.3g}",
            ]
        )
    at = f"{fmt_num(m.tokens)} tokens" if m.tokens is not None else "equal tokens"
    table = pipe(
        rows,
        [
            "Step",
            f"Val loss at {at}",
            f"{base} - step there [95%]",
            "Runs reaching target",
            "Tokens to target [95%]",
            "Train s to target [95%]",
            "FLOPs to target",
        ],
    )
    head = f"Target val loss: {rounded(m.target, 4)} ({m.target_source})." if m.target else ""
    if m.tokens is None and m.why_no_tokens:
        head += f" No val loss at equal tokens: {m.why_no_tokens}."
    if any(w.kind == "cadence" for w in coll.warnings):
        head += " Eval cadences differ (see Warnings): the curves are interpolated between evals."
    mult_rows = []
    for step in coll.order:
        mu = m.multiplier.get(step)
        if mu is None:
            continue
        mult_rows.append(
            [
                step,
                rounded(mu.final_loss, 4) if math.isfinite(mu.final_loss) else "-",
                mu.tokens.cell(lambda x: f"{x:.3g}", "x"),
                mu.seconds.cell(lambda x: f"{x:.3g}", "x"),
            ]
        )
    text = head.strip() + "\n\n" + table
    if mult_rows:
        text += (
            "\n\nCompute multiplier against the baseline "
            + base
            + ":\n\n"
            + pipe(
                mult_rows,
                [
                    "Step",
                    "Final periodic val loss",
                    "Tokens multiplier [95%]",
                    "Train-seconds multiplier [95%]",
                ],
            )
        )
    notes = [n for r in m.reach.values() for n in r.why_not]
    notes += [f"{s}: {mu.note}" for s, mu in m.multiplier.items() if mu.note]
    if notes:
        text += "\n\n" + "\n".join(f"- {n}" for n in notes)
    return text + "\n\n" + LEGEND


LEGEND = (
    "Equal time (the main table) favours the step that runs more tokens per second; this section "
    "holds the work fixed, on the periodic evals (the small fixed subset of validation windows, so "
    "noisier than the main table). Curves are interpolated between evals linearly in log tokens; "
    "nothing is compared outside the token range every run covers. Val loss at equal tokens: mean "
    "over completed runs; its difference to the baseline over the seeds both ran. To target: "
    "tokens, training seconds and FLOPs where a run's curve first reaches the target, mean over the "
    "runs that did (`--target-loss` sets the target). Compute multiplier: the tokens (train "
    "seconds) the baseline needed to reach the step's final periodic val loss over the step's own, "
    "geometric mean over the seeds both ran; above 1, the step saves compute; extrapolated: read "
    "off a curve C + A tokens^-alpha fitted to the baseline, no interval. Intervals: 95% over "
    "seeds (t without per-window losses; where final evals pair, with the periodic windows' "
    "step-by-window part, the main table's calibrated interval); with one "
    "seed, \"this seed only\": the periodic windows' sampling error from the final eval's "
    "per-window losses (its windows after the periodic ones, carried to the periodic ones' count "
    "with their autocorrelation). Measured coverage 0.93-0.97 of 95% on simulated runs (0.90 at "
    "about 100 windows with lag-1 autocorrelation 0.6). Per comparison, unadjusted: this section "
    "makes no verdicts."
)


def _signed4(x: float) -> str:
    s = rounded(x, 4)
    return s if s.startswith("-") else "+" + s


def multiplier_records(
    coll: Collection, stats: dict[str, StepStats] | None = None
) -> dict[str, dict[str, Any]]:
    """Per compared step, the compute multiplier's csv/json fields (docs/results-format.md)."""
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, coll.target_loss, stats)
    out = {}
    for step, mu in m.multiplier.items():
        out[step] = {
            "compute_multiplier_tokens": mu.tokens.value,
            "compute_multiplier_tokens_low": mu.tokens.low,
            "compute_multiplier_tokens_high": mu.tokens.high,
            "compute_multiplier_seconds": mu.seconds.value,
            "compute_multiplier_seconds_low": mu.seconds.low,
            "compute_multiplier_seconds_high": mu.seconds.high,
            "compute_multiplier_interval": mu.tokens.kind,
            "compute_multiplier_extrapolated": mu.tokens.extrapolated,
        }
    return out
