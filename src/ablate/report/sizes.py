"""Model size as an axis: how a step's gain changes from one model size to the next.

Over 400 lines on purpose: the size facts, the per-size comparison and the trend's interval
(whose variance parts come from both sizes' comparisons) are one chain of derivation.

A size axis is an axis of the model's shape: ``model=tiny,small`` (named sizes, conf/model/) or a
width/depth list (``model.n_layer=2,4``, ``model.n_embd=...``): a ``model`` key whose values give
the jobs different parameter counts or FLOPs per token. With two or more sizes the report adds a
section: per size, each step's non-embedding parameters N (the parameters less the token and
position embeddings, read from env.json's ``num_params`` and config.yaml's widths), its training
FLOPs per token (env.json, 6N plus attention), its val loss, its improvement over the baseline
*at the same size* with the 95% interval of Seeds and noise and its verdict, and its compute
multiplier (report/multiplier.py); a plot of val loss against training FLOPs, one point per size
per step; and per step one line reading the trend from the smallest size to the largest.

**The trend.** The two sizes' runs are independent, so the change in improvement (largest size
minus smallest, in points of percent) has the variance of the two estimates added, each part
with its own degrees of freedom; its interval is the generalized pivot of that sum
(report/distributions.py; at 95%, one trend line: with one seed t with the Welch-Satterthwaite
df, else the seed parts summed and the Seeds and noise interval's calibrated half-width:
trend_half_width), at a Bonferroni-adjusted level over the trend lines of the report. The
line says "shrinks" or "grows" only when that interval excludes 0 and both sizes' comparisons
can make a verdict (2 or more seeds with per-window losses, no warning that takes it away, no
pipeline check); otherwise it gives the numbers and says why there is no reading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from ablate import results as R
from ablate.report import verdict_text as VT
from ablate.report.axes import AXIS
from ablate.report.distributions import (
    CALIBRATED_CONFIDENCE,
    pivot_half_width,
    t_half_quantile,
)
from ablate.report.fmt import fmt_pct, pipe, rounded, signed
from ablate.report.groups import Group, GroupedCollection, label, norm
from ablate.report.matched import multiplier_records
from ablate.report.noise import (
    CONFIDENCE,
    SEEDS_AND_WINDOWS,
    SEEDS_ONLY,
    THIS_SEED,
    Parts,
    seeds_and_windows_half_width,
)
from ablate.report.plots import _colors, _figure, _save
from ablate.report.stats import compare
from ablate.report.verdict import adjusted_confidence, block_reason

SHAPE_KEYS = ("model", "model.n_layer", "model.n_embd", "model.n_head", "model.block_size")


def _mean(xs: list[float]) -> float:
    ys = [x for x in xs if isinstance(x, (int, float)) and math.isfinite(x)]
    return sum(ys) / len(ys) if ys else math.nan


@dataclass
class StepAtSize:
    step: str
    n_params: float  # non-embedding, mean over the step's used runs
    flops_per_token: float
    train_flops: float  # flops_per_token x tokens seen, mean over runs
    loss: float


@dataclass
class SizePoint:
    group: Group
    size: str  # the size axes' values, as written
    n_params: float  # the baseline's non-embedding parameters at this size
    steps: dict[str, StepAtSize]


def size_keys(gc: GroupedCollection) -> list[str]:
    """The axes that are model sizes (module docstring)."""
    out = []
    for key in gc.values_of(AXIS):
        if key != "model" and not key.startswith("model."):
            continue
        shapes: dict[str, set[tuple[str, float]]] = {}
        for g in gc.groups:
            rows = g.jobs[g.jobs["step"] == gc.baseline]
            shape: set[tuple[str, float]] = set()
            for total, f in zip(rows["num_params"], rows["flops_per_token"]):
                if _finite(total):
                    shape.add(("params", float(total)))
                if _finite(f):
                    shape.add(("flops", float(f)))
            shapes.setdefault(norm(g.values[key]), set()).update(shape)
        distinct = {frozenset(s) for s in shapes.values() if s}
        if len(distinct) > 1 or (not any(shapes.values()) and key in SHAPE_KEYS):
            out.append(key)
    return out


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _used(g: Group, step: str) -> pd.DataFrame:
    """The step's runs its statistics use (report/stats.py's rule): completed with a finite val
    loss, else every run with one."""
    rows = g.jobs[g.jobs["step"] == step]
    finite = rows["val_loss"].map(_finite).astype(bool)
    done = rows[(rows["status"] == R.COMPLETED) & finite]
    return done if len(done) else rows[finite]


Bucket = tuple[tuple[str, ...], tuple[tuple[str, str], ...]]
"""Groups that differ only in their size values: (tuned keys, the other dimensions' values)."""


def _points(gc: GroupedCollection, keys: list[str]) -> dict[str, list[SizePoint]]:
    """{rest label: size points in increasing size} for every bucket of groups that differ only
    in their size values (axis groups, and each tuned comparison's groups)."""
    buckets: dict[Bucket, list[Group]] = {}
    names: dict[Bucket, str] = {}
    for g in gc.compared:
        rest = {k: v for k, v in g.values.items() if k not in keys}
        bkey = (g.tuned, tuple((k, norm(v)) for k, v in rest.items()))
        buckets.setdefault(bkey, []).append(g)
        prefix = f"each step at its best {', '.join(g.tuned)}" if g.tuned else ""
        names[bkey] = ", ".join(x for x in (prefix, label(rest) if rest else "") if x)
    out: dict[str, list[SizePoint]] = {}
    for key, groups in buckets.items():
        if len(groups) < 2:
            continue
        pts = []
        for g in groups:
            steps = {}
            for step in g.order:
                st = g.stats[step]
                used = _used(g, step)
                sizes = [float(x) for x in used["non_embedding_params"]]
                fpt = [float(x) for x in used["flops_per_token"]]
                train = [
                    float(a) * float(b)
                    for a, b in zip(used["flops_per_token"], used["tokens_seen"])
                ]
                steps[step] = StepAtSize(step, _mean(sizes), _mean(fpt), _mean(train), st.mean)
            base = steps.get(g.baseline)
            pts.append(
                SizePoint(
                    g,
                    ", ".join(g.values[k] for k in keys),
                    base.n_params if base is not None else math.nan,
                    steps,
                )
            )
        pts.sort(key=lambda p: (not math.isfinite(p.n_params), p.n_params))
        out[names[key]] = pts
    return out


def _fmt_params(n: float) -> str:
    if not math.isfinite(n):
        return "-"
    if n >= 1e9:
        return f"{n / 1e9:.3g}B"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}K"
    return f"{n:.0f}"


def _size_label(p: SizePoint) -> str:
    return f"{p.size} (N {_fmt_params(p.n_params)})"


def _var_parts(effect: Any, scale: float) -> list[tuple[float, float]]:
    """The effect's variance parts (value, df) in percent units (``scale`` = 100 / ref mean)."""
    return [(float(v), float(d)) for v, d in parts_of(effect.parts, scale)]


def parts_of(p: Parts, scale: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """noise.Parts' variance parts (arrays of value, df) in percent units, by what ``p.kind``
    knows (vectorised for the coverage simulations)."""
    s2 = scale * scale
    if p.kind == SEEDS_AND_WINDOWS:
        assert p.seed_var is not None and p.interaction_var is not None and p.seed_df is not None
        return [
            (p.seed_var * s2, np.full(np.shape(p.seed_var), float(p.seed_df))),
            (p.interaction_var * s2, np.asarray(p.window_df, dtype=np.float64)),
        ]
    if p.kind == THIS_SEED:
        assert p.interaction_var is not None
        return [(p.interaction_var * s2, np.asarray(p.window_df, dtype=np.float64))]
    if p.kind == SEEDS_ONLY:
        assert p.seed_var is not None and p.seed_df is not None
        return [(p.seed_var * s2, np.full(np.shape(p.seed_var), float(p.seed_df)))]
    return []


def trend_half_width(
    parts: Sequence[tuple[ArrayLike, ArrayLike]], confidence: float, seed_parts: int = 0
) -> np.ndarray:
    """Half-width of the trend's interval from the two sizes' parts (``seed_parts`` of them, in
    front, are seed parts with few df; the rest window parts).

    Off 95%: the generalized pivot of all the parts. Without seed parts (one seed, "this seed
    only") at 95%: t with the window parts' Welch-Satterthwaite df (exact when the sizes' window
    variances and df are equal; the pivot of the two parts covered 0.975 of 95% at 108 windows,
    4 df each, and t 0.955, 0.937-0.955 with one size's variance 1-16x the other's: 4,000
    simulated matrices each, tests/report/coverage_sim_curves.py). With them at 95%: the seed parts' sum counts with the sum of their df (exact when the
    sizes' seed variances are equal: chi-square(K - 1) + chi-square(K - 1) is chi-square(2K - 2);
    an estimated Welch-Satterthwaite df, rounded, still covered 0.97-0.98), the window parts' sum
    with its Welch-Satterthwaite df, and the interval is the headline comparison's calibrated
    half-width of those two (noise.seeds_and_windows_half_width). The generalized pivot of the
    four parts alone covered 0.98-1.00 of 95% with 2 and 3 seeds (conservative between dominant
    parts, twice: tests/report/test_report_coverage_curves.py)."""
    if not math.isclose(confidence, CALIBRATED_CONFIDENCE):
        # off 95% (a Bonferroni-adjusted trend) the calibration does not hold: the pivot alone,
        # conservative, as for the adjusted intervals of the verdicts
        return pivot_half_width(parts, confidence)
    if seed_parts == 0:
        var, df = _satterthwaite(parts)
        h: np.ndarray = t_half_quantile(confidence, df) * np.sqrt(var)
        return h
    seed_var = sum((np.asarray(v, dtype=np.float64) for v, _ in parts[:seed_parts]), np.zeros(()))
    seed_df = sum(np.asarray(d, dtype=np.float64) for _, d in parts[:seed_parts])
    win_var, win_df = _satterthwaite(parts[seed_parts:])
    seed_var, seed_df, win_var, win_df = np.broadcast_arrays(seed_var, seed_df, win_var, win_df)
    out = np.empty(seed_var.shape)
    for df in np.unique(seed_df):  # the calibration is per seed df
        sel = seed_df == df
        out[sel] = seeds_and_windows_half_width(
            seed_var[sel], int(df), win_var[sel], win_df[sel], confidence
        )
    return out


def _satterthwaite(
    parts: Sequence[tuple[ArrayLike, ArrayLike]],
) -> tuple[np.ndarray, np.ndarray]:
    """Sum of variance parts and its Welch-Satterthwaite degrees of freedom."""
    vs = [np.asarray(v, dtype=np.float64) for v, _ in parts]
    ds = [np.asarray(d, dtype=np.float64) for _, d in parts]
    total = sum(vs, np.zeros(np.broadcast(*vs).shape))
    den = sum((v * v / d for v, d in zip(vs, ds, strict=True)), np.zeros(total.shape))
    df = np.where(den > 0, total * total / np.where(den > 0, den, 1.0), np.inf)
    return total, np.maximum(df, min(float(np.min(d)) for d in ds))


@dataclass
class Gain:
    pct: float
    low: float
    high: float
    kind: str | None
    parts: list[tuple[float, float]]
    blocked: str | None


def _gain(p: SizePoint, step: str, confidence: float) -> Gain:

    g = p.group
    c = compare(g.stats[step], g.stats[g.baseline])
    blocked = c.withheld or block_reason(g, step, g.baseline)
    e = c.effect
    ref = c.ref_mean_used if math.isfinite(c.ref_mean_used) else c.ref_mean
    if e is None or not (math.isfinite(ref) and ref):
        return Gain(c.pct, math.nan, math.nan, None, [], blocked or c.why or "no interval")
    scale = 100.0 / ref
    lo, hi = e.interval(confidence)
    return Gain(e.diff * scale, lo * scale, hi * scale, e.kind, _var_parts(e, scale), blocked)


def trend_line(step: str, base: str, pts: list[SizePoint], confidence: float) -> str:
    """One line: the step's improvement at each size and what the change from the smallest to the
    largest size is, with its interval (module docstring)."""
    have = [p for p in pts if step in p.steps and p.group.stats]
    if len(have) < 2:
        return f"- {step}: ran at fewer than two sizes; no trend"
    gains = [(p, _gain(p, step, CONFIDENCE)) for p in have]
    cells = []
    for p, gn in gains:
        iv = f" [{_pct(gn.low)}, {_pct(gn.high)}]" if math.isfinite(gn.low) else ""
        cells.append(f"{_pct(gn.pct)}{iv} at {_size_label(p)}")
    (p0, g0), (p1, g1) = gains[0], gains[-1]
    head = f"- {step} against {base}: the improvement is " + ", ".join(cells)
    if g0.blocked or g1.blocked:
        why = g0.blocked or g1.blocked
        return head + f"; no reading of the trend ({why})"
    if not g0.parts or not g1.parts:
        return head + "; no interval for the change (a size has no per-window losses or seeds)"
    change = g1.pct - g0.pct
    if g0.kind == SEEDS_AND_WINDOWS and g1.kind == SEEDS_AND_WINDOWS:
        # seed parts first (_var_parts: seed, window): the calibrated interval (trend_half_width)
        h = float(
            trend_half_width([g0.parts[0], g1.parts[0], g0.parts[1], g1.parts[1]], confidence, 2)
        )
    else:
        h = float(trend_half_width(g0.parts + g1.parts, confidence))
    iv = f"{_signed(change)} points [{_signed(change - h)}, {_signed(change + h)}]"
    if g0.kind != SEEDS_AND_WINDOWS or g1.kind != SEEDS_AND_WINDOWS:
        kind = g0.kind if g0.kind != SEEDS_AND_WINDOWS else g1.kind
        return head + f"; change {iv} ({kind}: no reading of the trend)"
    if change - h > 0:
        word = "grows"
    elif change + h < 0:
        word = "shrinks"
    else:
        return head + f"; no clear change from {p0.size} to {p1.size}: {iv} includes 0"
    line = f"- {step} against {base}: the gain {word} from {cells[0]} to {cells[-1]} (change {iv})"
    return line + ("; at every size: " + ", ".join(cells) if len(cells) > 2 else "")


def _pct(x: float) -> str:
    return fmt_pct(x, 2, plus=True) if math.isfinite(x) else "n/a"


def _signed(x: float) -> str:
    return signed(x, 2)


def section(
    gc: GroupedCollection, keys: list[str], plot_names: dict[str, str] | None = None
) -> str:

    buckets = _points(gc, keys)
    if not buckets:
        return ""
    n_lines = sum(
        1
        for pts in buckets.values()
        for s in gc.order
        if s != gc.baseline and sum(1 for p in pts if s in p.steps) >= 2
    )
    conf = adjusted_confidence(n_lines)
    out = [
        f"Model sizes: the values of {', '.join(f'`{k}`' for k in keys)}. Each step is compared "
        f"with {gc.baseline} at the same size only (the groups of Results).",
        "",
    ]
    for name, pts in buckets.items():
        if name:
            out += [f"### {name}", ""]
        rows = []
        for p in pts:
            mult = multiplier_records(p.group, p.group.stats)
            for step in p.group.order:
                s = p.steps[step]
                v = VT.vs_baseline(p.group, p.group.stats, step)
                if step == p.group.baseline:
                    impr, verdict, mcell = "-", "baseline", "-"
                else:
                    gn = _gain(p, step, CONFIDENCE)
                    iv = f" [{_pct(gn.low)}, {_pct(gn.high)}]" if math.isfinite(gn.low) else ""
                    impr = (
                        (f"{_pct(gn.pct)}{iv}") if not gn.blocked else f"not shown ({gn.blocked})"
                    )
                    verdict = VT._verdict_cell(v)
                    mcell = _mult_cell(mult.get(step))
                rows.append(
                    [
                        p.size,
                        step,
                        _fmt_params(s.n_params),
                        f"{s.flops_per_token:.3g}" if math.isfinite(s.flops_per_token) else "-",
                        f"{s.train_flops:.3g}" if math.isfinite(s.train_flops) else "-",
                        rounded(s.loss, 4) if math.isfinite(s.loss) else "-",
                        impr,
                        verdict,
                        mcell,
                    ]
                )
        out += [
            pipe(
                rows,
                [
                    "Size",
                    "Step",
                    "N (non-embedding)",
                    "FLOPs/token",
                    "Training FLOPs",
                    "Val loss",
                    f"Improvement vs {gc.baseline} [95%]",
                    "Verdict",
                    "Compute multiplier [95%]",
                ],
            ),
            "",
        ]
        lines = [trend_line(s, gc.baseline, pts, conf) for s in gc.order if s != gc.baseline]
        out += ["\n".join(lines), ""]
        if plot_names and name in plot_names:
            out += [
                f"![Val loss against training FLOPs, one point per size per step]({plot_names[name]})",
                "",
            ]
    out.append(
        "N: parameters less the token and position embeddings (env.json num_params, config.yaml "
        "widths), mean over the step's runs; FLOPs/token: training FLOPs per token (6N plus "
        "attention; env.json); Training FLOPs: FLOPs/token x tokens seen. Improvement: against the "
        "baseline at the same size, with the unadjusted 95% interval of Seeds and noise and the "
        "size's verdict (adjusted, as everywhere). Compute multiplier: how many times the "
        "baseline's tokens reach the step's final periodic val loss, at that size (Matched work). "
        "Trend: the change in improvement from the smallest size to the largest, in points, with "
        f"the interval of the two sizes' variances added (generalized pivot; calibrated as in Seeds "
        f"and noise at 95%), Bonferroni-adjusted "
        f'over the {n_lines} trend line(s) ({100 * conf:.4g}% each); "shrinks"/"grows" only '
        "when it excludes 0 and both sizes can make a verdict."
    )
    return "\n".join(out)


def _mult_cell(rec: Mapping[str, Any] | None) -> str:
    if not rec:
        return "-"
    v, lo, hi = (
        rec["compute_multiplier_tokens"],
        rec["compute_multiplier_tokens_low"],
        rec["compute_multiplier_tokens_high"],
    )
    if not (isinstance(v, float) and math.isfinite(v)):
        return "-"
    out = f"{v:.3g}x"
    if isinstance(lo, float) and math.isfinite(lo) and isinstance(hi, float) and math.isfinite(hi):
        out += f" [{lo:.3g}, {hi:.3g}]"
        if rec.get("compute_multiplier_interval") == THIS_SEED:
            out += " (this seed only)"
    if rec.get("compute_multiplier_extrapolated"):
        out += " (extrapolated)"
    return out


def write_plot(gc: GroupedCollection, keys: list[str], where: Path) -> dict[str, str]:
    """Val loss against training FLOPs per bucket: one point per size per step, a line per step."""

    out: dict[str, str] = {}
    colors = _colors(gc.order)
    for name, pts in _points(gc, keys).items():
        fig = _figure(7.0, 4.5)
        ax = fig.add_subplot(1, 1, 1)
        drawn = False
        for step in gc.order:
            xy = [
                (p.steps[step].train_flops, p.steps[step].loss)
                for p in pts
                if step in p.steps
                and math.isfinite(p.steps[step].train_flops)
                and math.isfinite(p.steps[step].loss)
            ]
            if not xy:
                continue
            xs, ys = zip(*xy)
            ax.plot(xs, ys, marker="o", color=colors.get(step), label=step)
            drawn = True
        if not drawn:
            continue
        for p in pts:
            b = p.steps.get(gc.baseline)
            if b is not None and math.isfinite(b.train_flops) and math.isfinite(b.loss):
                ax.annotate(
                    p.size,
                    (b.train_flops, b.loss),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        if all(x > 0 for line in ax.get_lines() for x in np.asarray(line.get_xdata(), float)):
            ax.set_xscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_ylabel("val loss")
        ax.set_title("Val loss against training FLOPs" + (f" ({name})" if name else ""))
        ax.grid(True, alpha=0.3)
        ax.legend(title="step")
        fig.tight_layout()
        fname = R.sanitize_name(f"sizes_{name or 'all'}") + ".png"
        _save(fig, where / fname)
        out[name] = fname
    return out
