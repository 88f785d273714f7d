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
final evals pair, the step-by-window interaction of the periodic windows (Var(b̄) of noise.py for
the full set, scaled to the periodic subset's window count). With one seed: from the eval
windows, "this seed only": the periodic subset's sampling error, from the final eval's
per-window losses scaled to the subset. The section makes no verdicts (no better/worse, no
bold): its intervals are per comparison, unadjusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ablate import results as R
from ablate.report.distributions import pivot_half_width, t_quantile
from ablate.report.noise import CONFIDENCE, SEEDS_AND_WINDOWS, THIS_SEED
from ablate.report.tables import fmt_num, pipe, rounded

# --------------------------------------------------------------------------- one run's curve


@dataclass(frozen=True)
class Curve:
    """One completed run's periodic eval curve, ordered by tokens (duplicates: the last eval)."""

    key: str
    step: str
    seed: object
    tokens: np.ndarray
    loss: np.ndarray
    seconds: np.ndarray
    flops: np.ndarray

    @property
    def cadence(self) -> float:
        """Tokens between consecutive evals (median): budget.eval_interval x tokens per iter."""
        gaps = np.diff(self.tokens)
        return float(np.median(gaps)) if gaps.size else math.nan

    def loss_at(self, t: float) -> float:
        """Interpolated loss at ``t`` tokens (module docstring); NaN outside the curve."""
        tok, loss = self.tokens, self.loss
        if tok.size == 0 or t < tok[0] or t > tok[-1]:
            return math.nan
        i = int(np.searchsorted(tok, t, side="left"))
        if tok[i] == t:
            return float(loss[i])
        a, b = tok[i - 1], tok[i]
        w = (
            (math.log(t) - math.log(a)) / (math.log(b) - math.log(a))
            if a > 0
            else (t - a) / (b - a)
        )
        return float(loss[i - 1] + w * (loss[i] - loss[i - 1]))

    def crossing(self, level: float) -> float | None:
        """Tokens at which the interpolated curve first reaches ``level`` (None: never)."""
        tok, loss = self.tokens, self.loss
        hit = np.flatnonzero(loss <= level)
        if hit.size == 0:
            return None
        i = int(hit[0])
        if i == 0:
            return float(tok[0])
        a, b = tok[i - 1], tok[i]
        w = (loss[i - 1] - level) / (loss[i - 1] - loss[i])
        if a > 0:
            return float(math.exp(math.log(a) + w * (math.log(b) - math.log(a))))
        return float(a + w * (b - a))

    def at_tokens(self, column: np.ndarray, t: float) -> float:
        """``column`` (seconds, FLOPs) linearly interpolated in tokens at ``t``."""
        if not np.isfinite(column).all():
            return math.nan
        return float(np.interp(t, self.tokens, column))


def curves_of(jobs: pd.DataFrame, curves: pd.DataFrame) -> list[Curve]:
    done = jobs.loc[jobs["status"] == R.COMPLETED]
    keys = set(done["key"])
    c = curves[curves["key"].isin(keys)]
    ok = c["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v)).astype(bool)
    ok &= c["tokens_seen"].map(lambda v: isinstance(v, (int, float)) and v >= 0).astype(bool)
    c = c[ok].sort_values(["key", "tokens_seen", "iter"])
    out = []
    for key, g in c.groupby("key", sort=False):
        g = g.drop_duplicates("tokens_seen", keep="last")
        out.append(
            Curve(
                str(key),
                str(g["step"].iloc[0]),
                g["seed"].iloc[0],
                g["tokens_seen"].to_numpy(dtype=np.float64),
                g["val_loss"].to_numpy(dtype=np.float64),
                pd.to_numeric(g["train_seconds"], errors="coerce").to_numpy(dtype=np.float64),
                pd.to_numeric(g["flops"], errors="coerce").to_numpy(dtype=np.float64),
            )
        )
    return out


# --------------------------------------------------------------------------- estimates


@dataclass(frozen=True)
class Estimate:
    """A number with its 95% interval (NaN bounds: none) and what the interval covers."""

    value: float
    low: float = math.nan
    high: float = math.nan
    kind: str | None = None  # "seeds", "seeds and windows", "this seed only", None
    runs: int = 0
    extrapolated: bool = False

    def cell(self, fmt, unit: str = "") -> str:
        if not math.isfinite(self.value):
            return "-"
        out = fmt(self.value) + unit
        if math.isfinite(self.low) and math.isfinite(self.high):
            out += f" [{fmt(self.low)}, {fmt(self.high)}]"
            if self.kind == THIS_SEED:
                out += " (this seed only)"
        if self.extrapolated:
            out += " (extrapolated)"
        return out


def _over_seeds(values: Sequence[float], extra_var: float = 0.0, extra_df: float = math.inf):
    """Mean and 95% interval over seeds (t, n - 1 df), plus an independent variance part."""
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if n == 0:
        return Estimate(math.nan)
    if n == 1:
        return Estimate(float(x[0]), runs=1)
    seed_var = float(x.var(ddof=1)) / n
    if extra_var > 0:
        h = float(pivot_half_width([(seed_var, n - 1), (extra_var, extra_df)], CONFIDENCE))
        kind = SEEDS_AND_WINDOWS
    else:
        h = t_quantile(0.5 + CONFIDENCE / 2, n - 1) * math.sqrt(seed_var)
        kind = "seeds"
    m = float(x.mean())
    return Estimate(m, m - h, m + h, kind, n)


def _subset_parts(effect, periodic: int | None):
    """(variance, df) that the periodic subset's windows add to one paired comparison, from the
    final evals' per-window losses (noise.Effect), scaled from n windows to the subset's."""
    if effect is None or not periodic or effect.kind not in (SEEDS_AND_WINDOWS, THIS_SEED):
        return 0.0, math.inf
    p = effect.parts
    var = float(p.interaction_var) * effect.n_windows / periodic
    return var, float(p.window_df)


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
class Multiplier:
    tokens: Estimate
    seconds: Estimate
    final_loss: float  # the step's final periodic val loss (mean over the seeds used)
    note: str | None = None


@dataclass
class Matched:
    tokens: float | None  # the common grid's end: largest token count every compared run reached
    why_no_tokens: str | None
    loss_at_tokens: dict  # step -> mean interpolated val loss there
    diff_at_tokens: dict  # step -> Estimate of baseline - step there
    target: float | None
    target_source: str
    reach: dict  # step -> Reach
    multiplier: dict  # step -> Multiplier
    cadences: dict  # step -> sorted distinct cadences (tokens between evals)


def matched_work(
    jobs: pd.DataFrame,
    curves: pd.DataFrame,
    order: list[str],
    baseline: str,
    target_loss: float | None = None,
    stats: dict | None = None,
) -> Matched:
    runs = curves_of(jobs, curves)
    by_step: dict[str, list[Curve]] = {}
    for c in runs:
        by_step.setdefault(c.step, []).append(c)
    steps = [s for s in order if s in by_step]
    cadences = {
        s: sorted({round(c.cadence) for c in by_step[s] if math.isfinite(c.cadence)}) for s in steps
    }

    # The common grid: from the latest first eval to the earliest last eval over all runs.
    tokens, why = None, None
    usable = [c for c in runs if c.step in steps and c.tokens.size >= 2]
    short = [c.key for c in runs if c.step in steps and c.tokens.size < 2]
    if short:
        why = f"{', '.join(short)} evaluated once, so there is no curve to interpolate"
    elif usable:
        lo = max(c.tokens[0] for c in usable)
        hi = min(c.tokens[-1] for c in usable)
        if hi > 0 and hi >= lo:
            tokens = float(hi)
        else:
            first = max(usable, key=lambda c: c.tokens[0])
            last = min(usable, key=lambda c: c.tokens[-1])
            why = (
                f"{last.key}'s evals end at {fmt_num(last.tokens[-1])} tokens, before "
                f"{first.key}'s first at {fmt_num(first.tokens[0])}"
            )
    at: dict = {}
    diff: dict = {}
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
    if target is None and usable or (target is None and runs):
        target = max(float(c.loss.min()) for c in runs if c.step in steps)
        source = (
            "the highest of the compared runs' lowest periodic val losses, so every run reaches it"
        )
    reach: dict = {}
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
                _over_seeds([c.at_tokens(c.seconds, t) for c, t in hit]),
                float(np.mean([c.at_tokens(c.flops, t) for c, t in hit])) if hit else math.nan,
                why_not,
            )

    mult: dict = {}
    if baseline in by_step:
        for s in steps:
            if s != baseline:
                mult[s] = _multiplier(by_step[baseline], by_step[s], _effect(stats, s, baseline))
    return Matched(tokens, why, at, diff, target, source, reach, mult, cadences)


def _effect(stats: dict | None, step: str, baseline: str):
    if stats is None or step not in stats or baseline not in stats:
        return None
    from ablate.report.stats import compare  # deferred: stats imports tables' formats first

    c = compare(stats[step], stats[baseline])
    return c.effect


def _periodic(effect) -> int | None:
    return None if effect is None else effect.periodic_windows


def _paired(base: list[Curve], step: list[Curve], f, effect) -> Estimate:
    """``f(base run, step run)`` over the seeds both ran, with the interval of the module
    docstring (one seed: the subset's sampling error from the eval windows)."""
    b = {c.seed: c for c in base}
    vals = [f(b[c.seed], c) for c in step if c.seed in b]
    vals = [v for v in vals if math.isfinite(v)]
    var, df = _subset_parts(effect, _periodic(effect))
    if len(vals) == 1 and var > 0:
        h = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(var)
        return Estimate(vals[0], vals[0] - h, vals[0] + h, THIS_SEED, 1)
    return _over_seeds(vals, var, df)


def _reach_estimate(tokens, runs, target, stats, step) -> Estimate:
    """Tokens to the target over the runs that reached it; one run: the crossings of
    target -+ the half-width of its subset's sampling error (from its own final eval)."""
    if len(tokens) != 1:
        return _over_seeds(tokens)
    c = runs[0]
    st = stats.get(step) if stats else None
    fe = None
    if st is not None and c.seed in st.seeds:
        fe = st.evals[st.seeds.index(c.seed)]
    if fe is None or not fe.periodic_windows:
        return Estimate(tokens[0], runs=1)
    from ablate.report.noise import block_se

    est = block_se(fe.window_losses)
    if est is None:
        return Estimate(tokens[0], runs=1)
    h = t_quantile(0.5 + CONFIDENCE / 2, est.df) * est.se * math.sqrt(est.n / fe.periodic_windows)
    lo, hi = c.crossing(target + h), c.crossing(target - h)
    return Estimate(
        tokens[0],
        lo if lo is not None else math.nan,
        hi if hi is not None else math.nan,
        THIS_SEED,
        1,
    )


def fit_power_law(curve: Curve):
    """(C, A, alpha) of loss = C + A tokens^-alpha fitted to the curve's second half by least
    squares (alpha on a grid, C and A linear); None when it does not fit a falling curve."""
    keep = curve.tokens >= 0.5 * curve.tokens[-1]
    t, y = curve.tokens[keep], curve.loss[keep]
    if t.size < 3 or (t <= 0).any() or not y[-1] < y[0]:
        return None
    best = None
    for alpha in np.geomspace(0.02, 3.0, 120):
        X = np.stack([np.ones_like(t), t**-alpha], axis=1)
        coef, *_ = np.linalg.lstsq(X, y, rcond=None)
        sse = float(((X @ coef - y) ** 2).sum())
        if coef[1] > 0 and (best is None or sse < best[0]):
            best = (sse, float(coef[0]), float(coef[1]), float(alpha))
    return None if best is None else best[1:]


def _multiplier(base: list[Curve], step: list[Curve], effect) -> Multiplier:
    b = {c.seed: c for c in base}
    pairs = [(b[c.seed], c) for c in step if c.seed in b]
    if not pairs:
        return Multiplier(Estimate(math.nan), Estimate(math.nan), math.nan, "no seed in common")
    tok, sec, extrapolated, notes = [], [], False, []
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
    return Multiplier(_log_ratio(tok, pairs, effect), _log_ratio(sec, pairs, effect), final, note)


def _log_ratio(ratios: list[float], pairs, effect) -> Estimate:
    """Geometric mean of per-seed ratios with a t interval on the log scale; one seed: the
    crossings of the step's final loss -+ the subset's paired sampling error."""
    r = np.asarray(ratios, dtype=np.float64)
    if not (r > 0).all():
        return Estimate(math.nan)
    if r.size >= 2:
        e = _over_seeds(np.log(r))
        return Estimate(
            float(np.exp(e.value)), float(np.exp(e.low)), float(np.exp(e.high)), e.kind, e.runs
        )
    var, df = _subset_parts(effect, _periodic(effect))
    if var <= 0:
        return Estimate(float(r[0]), runs=1)
    ((bc, sc),) = pairs
    h = t_quantile(0.5 + CONFIDENCE / 2, df) * math.sqrt(var)
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


# --------------------------------------------------------------------------- the section


def matched_section(coll, target_loss: float | None = None, stats: dict | None = None) -> str:
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
    "seeds (t), with the periodic windows' step-by-window part where final evals pair; with one "
    "seed, \"this seed only\": the periodic windows' sampling error from the final eval's "
    "per-window losses. Per comparison, unadjusted: this section makes no verdicts."
)


def _signed4(x: float) -> str:
    s = rounded(x, 4)
    return s if s.startswith("-") else "+" + s


def multiplier_records(coll, stats: dict | None = None) -> dict[str, dict]:
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
