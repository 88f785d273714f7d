"""The report's verdicts as text: main-table cells and bold, the Seeds and noise section, the
Progression section, and what more seeds would cost. Every word comes from a Verdict record
(report/verdict.py); this module only renders them, so csv/json carry the same verdicts.
"""

from __future__ import annotations

import math
from typing import Any

from ablate import results as R
from ablate.report.fmt import CI_DIGITS, bold, finite, fmt_num, fmt_pct, pipe, rounded, signed
from ablate.report.load import Collection
from ablate.report.noise import CONFIDENCE, SEEDS_AND_WINDOWS, SEEDS_ONLY, THIS_SEED
from ablate.report.stats import Comparison, StepStats, compare
from ablate.report.verdict import (
    ADJUSTMENT,
    BETTER,
    NONE,
    WITHIN,
    WORSE,
    Verdict,
    block_reason,
    report_verdicts,
)
from ablate.report.warnings import VERDICT_NEEDS


def verdicts(coll: Collection, stats: dict[str, StepStats]) -> dict[tuple[str, str], Verdict]:
    return report_verdicts(coll, stats)


def vs_baseline(coll: Collection, stats: dict[str, StepStats], step: str) -> Verdict | None:
    if step == coll.baseline:
        return None
    return verdicts(coll, stats).get((step, coll.baseline))


def vs_previous(coll: Collection, stats: dict[str, StepStats], step: str) -> Verdict | None:
    """``step`` against the step before it in matrix order (either direction of the pair)."""
    i = coll.order.index(step)
    if i == 0:
        return None
    prev = coll.order[i - 1]
    vs = verdicts(coll, stats)
    if (step, prev) in vs:
        return vs[(step, prev)]
    v = vs.get((prev, step))
    return v.flipped() if v is not None else None


def record(v: Verdict | None, prefix: str = "") -> dict[str, Any]:
    """The verdict's csv/json fields; the same keys, empty, for a row without that comparison."""
    return v.record(prefix) if v is not None else Verdict.empty_record(prefix)


def bold_steps(coll: Collection, stats: dict[str, StepStats]) -> set[str]:
    """Rows the main table sets in bold: each step whose verdict against the baseline is "better";
    the baseline when every other step's verdict is "worse". Nothing else: a lead the adjusted
    intervals cannot resolve is not marked."""
    found = [vs_baseline(coll, stats, s) for s in coll.order if s != coll.baseline]
    others = [v for v in found if v is not None]
    out = {v.step for v in others if v.verdict == BETTER}
    if others and all(v.verdict == WORSE for v in others):
        out.add(coll.baseline)
    return out


def improvement_cell(coll: Collection, stats: dict[str, StepStats], step: str) -> str:
    """The main table's Improvement cell of ``step`` (improvement_text of its comparison with
    the baseline)."""
    if step == coll.baseline:
        return "-"
    c = compare(stats[step], stats[coll.baseline])
    v = vs_baseline(coll, stats, step)
    return improvement_text(c, v, block_reason(coll, step, coll.baseline))


def improvement_text(c: Comparison | None, v: Verdict | None, blocked: str | None) -> str:
    """The main table's Improvement cell from a step's comparison with the baseline (None: the
    baseline's row), its verdict and why a warning takes the verdict away (block_reason): the
    percentage from the means, then what the data say about it (bold: a verdict; "within
    noise"; "this seed only"; "no verdict")."""
    if c is None:
        return "-"
    if c.withheld:
        return f"not shown ({c.withheld})"
    if math.isnan(c.pct):
        return "n/a"
    cell = fmt_pct(c.pct, 1, plus=True)  # as in Progression: "+9.9%", not "10%"
    if v is not None and v.bold:
        cell = bold(cell)
    elif c.flag:
        pass  # a partial value: its status below says why nothing is decided
    elif v is None or blocked:
        cell += " (no verdict)"
    elif v.verdict == WITHIN:
        cell += " (within noise)"
    elif len(v.seeds) == 1:
        cell += " (this seed only)"
    else:
        cell += " (no verdict)"
    if c.flag:
        cell += f" ({c.flag})"
    return cell


def legend(coll: Collection) -> str:
    """The main table's sentences about verdicts and bold."""
    return (
        f"Improvement: (baseline - step) / baseline, baseline {coll.baseline}, from unrounded "
        "means; negative means worse. In bold when the data decide it: the step is better (or "
        f"worse) than the baseline with its {ADJUSTMENT}-adjusted interval (Seeds and noise) "
        'excluding 0; "within noise" when that interval includes 0; "this seed only" when the '
        'steps share one seed, so nothing measures seed-to-seed variation; "no verdict" when '
        "fewer than 2 seeds or no per-window losses leave a part of the noise unknown, or a "
        "warning takes the verdict away. Bold rows: the steps better than the baseline (or the "
        "baseline, when every other step is worse); a step whose model leaked or was not "
        "causality-checked is never bold and no improvement involving it is shown (see Causality)."
    )


# --------------------------------------------------------------------------- Seeds and noise


def _interval(v: Verdict, adjusted: bool) -> str:
    lo, hi = (v.low_adj, v.high_adj) if adjusted else (v.low, v.high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "-"
    return (
        f"[{fmt_pct(v.pct(lo), CI_DIGITS, plus=True)}, {fmt_pct(v.pct(hi), CI_DIGITS, plus=True)}]"
    )


def _noise(v: Verdict) -> str:
    if v.interval is None:
        return "-"
    eff = (
        f"; {fmt_num(v.n_windows_eff)} effective windows (blocks of {v.block_windows})"
        if v.n_windows_eff is not None
        else ""
    )
    # each kind of interval sets the parts it names (noise.Effect, report/verdict.py)
    if v.interval == THIS_SEED:
        assert v.window_se is not None
        return f"windows SE {rounded(v.window_se, 4)}, seeds unknown (1 seed){eff}"
    assert v.seed_se is not None
    if v.interval == SEEDS_ONLY:
        return f"seeds SE {rounded(v.seed_se, 4)}, windows unknown"
    assert v.window_se is not None
    return f"seeds SE {rounded(v.seed_se, 4)}, windows SE {rounded(v.window_se, 4)}{eff}"


def _verdict_cell(v: Verdict | None) -> str:
    if v is None:
        return "-"
    if v.verdict != NONE:
        return v.verdict
    return f"no verdict ({v.label})" if v.label else "no verdict"


def family_sentence(coll: Collection, stats: dict[str, StepStats]) -> str:
    vs = verdicts(coll, stats)
    m = next(iter(vs.values())).family_size if vs else 0
    if coll.pipeline_check:
        # No number of seeds gives a smoke run a verdict (verdict.block_reason): say what does.
        return (
            "No comparison in this report makes a verdict: it is a pipeline check (smoke preset), "
            f"whatever its seeds. {VERDICT_NEEDS}"
        )
    if m == 0:
        return (
            "No comparison in this report can make a verdict (each needs at least 2 seeds of both "
            "steps with per-window losses, and no warning that takes it away)."
        )
    adj = 100.0 * (1.0 - (1.0 - CONFIDENCE) / m)
    return (
        f"Verdicts: {m} comparison(s) in this report can make one (each step against the "
        f"baseline, and against the previous step under Progression). Each is decided by its "
        f"{ADJUSTMENT}-adjusted {rounded(adj, 2).rstrip('0').rstrip('.')}% interval (95% shared over the {m}), so that "
        "the chance of any false better/worse in this report is at most 5% "
        '(bold, "better" or "worse" iff that interval excludes 0).'
    )


def seeds_section(coll: Collection, stats: dict[str, StepStats]) -> str:
    base = stats[coll.baseline]
    rows = []
    reasons: list[str] = []
    for step in coll.order:
        st = stats[step]
        cells = [
            step,
            str(st.n),
            rounded(st.mean, 4) if st.values else "-",
            rounded(st.eval_se, 4) if finite(st.eval_se) else "-",
            rounded(st.std, 4) if finite(st.std) else "-",
        ]
        if step == coll.baseline:
            rows.append(cells + ["-", "-", "-", "-", "-", "baseline"])
            continue
        c = compare(st, base)
        v = vs_baseline(coll, stats, step)
        if c.withheld or v is None:
            rows.append(cells + ["-", "not shown", "-", "-", "-", c.withheld or "-"])
            continue
        est = fmt_pct(v.estimate_pct, CI_DIGITS, plus=True) if v.seeds else "n/a"
        if v.reason and v.verdict == NONE:
            reasons.append(f"- {step}: no verdict: {v.reason}.")
        rows.append(
            cells
            + [
                ", ".join(str(s) for s in v.seeds) or "none",
                est,
                _interval(v, adjusted=True),
                _interval(v, adjusted=False)
                + (f" ({v.interval})" if v.interval not in (None, SEEDS_AND_WINDOWS) else ""),
                _noise(v),
                _verdict_cell(v),
            ]
        )
    table = pipe(
        rows,
        [
            "Step",
            "n",
            "Mean val loss",
            "Loss SE",
            "Std",
            "Seeds compared",
            f"Improvement vs {coll.baseline}",
            "Adjusted interval",
            "95% interval alone",
            "Noise",
            "Verdict",
        ],
    )
    compared = [s for s in coll.order if s != coll.baseline]
    notes = [
        f"- {s}: {compare(stats[s], base).note}." for s in compared if compare(stats[s], base).note
    ]
    text = family_sentence(coll, stats) + "\n\n" + table + "\n\n" + METHOD
    if notes or reasons:
        text += "\n\n" + "\n".join(notes + reasons)
    cost = seeds_cost(coll, stats)
    if cost:
        text += "\n\n" + cost
    return text


METHOD = (
    "n: completed runs with a finite loss; the val loss is the final full-set eval. Loss SE: the "
    "standard error of a run's val loss (the mean of its per-window losses, by batch means over "
    "blocks of consecutive windows, the block length chosen from the windows' autocorrelation); "
    "root mean square over the step's runs. It holds how much the windows differ in difficulty, "
    "which a comparison pairs away: the Noise column's windows SE is the standard error of the "
    "window-by-window difference of two steps, far smaller. Std: sample standard deviation over seeds. The comparison with the baseline "
    "uses the seeds both steps completed (Seeds compared): per seed the window-by-window "
    "difference of their final evals. What is estimated: the expected difference in final val "
    "loss over seeds and over the validation distribution. Its variance has a seed part (from the "
    "spread of the per-seed differences, seeds - 1 degrees of freedom) and a window part (a "
    "step helping some windows more than others, common to every seed: from the blocks of the "
    "seed-averaged differences, less the run noise they hold); the interval is the generalized "
    "pivot of their sum (Noise: each part's standard error, seeds SE and windows SE, and the "
    "effective number of windows; with one seed, the windows SE holds the run noise too). "
    "Adjusted interval: the one the verdict reads (see above); 95% interval alone: the same "
    'comparison at 95% on its own. "this seed only": one seed in common, so the interval covers '
    "validation sampling of that seed's runs, not seed-to-seed variation, and there is no verdict; "
    '"seeds only": no paired per-window losses, so the window part is unknown and there is no '
    "verdict. Percentages are of the baseline's mean over the seeds compared."
)


def seeds_cost(coll: Collection, stats: dict[str, StepStats]) -> str | None:
    """What it would take to give every comparison with the baseline a verdict: seeds so that each
    compared step has at least 2 (3 recommended) completed runs, in jobs and device-hours. None
    for a pipeline check: no seeds settle it (family_sentence says what would)."""
    if coll.pipeline_check:
        return None
    steps = [s for s in coll.order if stats[s].values and stats[s].causality == R.CHECKED]
    short = [s for s in steps if stats[s].n < 2]
    if not short or len(steps) < 2:
        return None
    done = coll.jobs[coll.jobs["status"] == R.COMPLETED]

    def hours(step: str) -> float:
        sub = done[done["step"] == step]
        per = []
        for _, r in sub.iterrows():
            box, dev = r.get("box_seconds"), r.get("device_count") or r.get("world_size") or 1
            if finite(box) and finite(float(dev)):
                per.append(float(box) * float(dev) / 3600.0)
        return sum(per) / len(per) if per else math.nan

    parts = []
    for want in (2, 3):
        jobs = {s: max(0, want - stats[s].n) for s in steps}
        n_jobs = sum(jobs.values())
        h = sum(hours(s) * k for s, k in jobs.items() if k)
        cost = f" ({fmt_num(h, 1)} device-hours at the runs' boxes)" if math.isfinite(h) else ""
        parts.append(f"{want} seeds per step: {n_jobs} more job(s){cost}")
    return (
        f"Seeds that would settle it: {', '.join(short)} ran one seed, so the seed-to-seed "
        "variation of their comparisons is unknown and no verdict is possible. "
        + "; ".join(parts)
        + " (with 2 seeds the seed part has one degree of freedom and the interval is wide; "
        "3 is the smallest useful number). Add seeds as a matrix axis, e.g. seed=1,2,3."
    )


# --------------------------------------------------------------------------- Progression


def progression_section(coll: Collection, stats: dict[str, StepStats]) -> str:
    base = stats[coll.baseline]
    rows = []
    bullets = []
    prev: StepStats | None = None
    for step in coll.order:
        st = stats[step]
        refs = []
        if prev is not None:
            refs.append((prev, "previous"))
        if step != coll.baseline and (prev is None or prev.step != coll.baseline):
            refs.append((base, "baseline"))
        elif prev is not None and prev.step == coll.baseline:
            refs[-1] = (prev, "previous, baseline")
        for ref, why in refs:
            c = compare(st, ref)
            v = (
                vs_previous(coll, stats, step)
                if "previous" in why
                else vs_baseline(coll, stats, step)
            )
            if math.isnan(c.pct):
                rows.append(
                    [
                        step,
                        f"{ref.step} ({why})",
                        _loss_pair(ref, st),
                        "-",
                        f"not shown ({c.withheld})" if c.withheld else "n/a",
                        "-",
                        "-",
                    ]
                )
                continue
            flag = f" ({c.flag})" if c.flag else ""
            if v is None:
                ci, word = "-", "-"
            elif v.verdict == NONE:
                ci = _interval(v, adjusted=False)
                ci += f" ({v.interval})" if ci != "-" and v.interval != SEEDS_AND_WINDOWS else ""
                word = _verdict_cell(v)
            else:
                ci, word = _interval(v, adjusted=True), v.verdict
            pct = fmt_pct(c.pct, 1, plus=True)
            rows.append(
                [
                    step,
                    f"{ref.step} ({why})",
                    _loss_pair(ref, st),
                    signed(-c.diff, 4),
                    (bold(pct) if v is not None and v.bold else pct) + flag,
                    ci,
                    word,
                ]
            )
            if "previous" in why:
                bullets.append(
                    f"- {ref.step} → {step}: {pct}{flag} "
                    f"({rounded(ref.mean, 4)} → {rounded(st.mean, 4)}; {word})"
                )
        prev = st
    if not rows:
        return "Only one step; nothing to compare."
    total = [
        f"{s}: {fmt_pct(compare(stats[s], base).pct, 1, plus=True)}"
        for s in coll.order
        if s != coll.baseline
        and stats[s].values
        and base.values
        and not compare(stats[s], base).withheld
    ]
    text = pipe(
        rows,
        ["Step", "Against", "Best val loss", "Loss change", "Improvement", "Interval", "Verdict"],
    )
    text += (
        "\n\nImprovement = (reference - step) / reference best val loss: positive means the step's "
        "loss is lower. Steps follow the matrix order. Interval: the adjusted interval a verdict "
        "reads (Seeds and noise); for a comparison without a verdict, its 95% interval and what "
        "it covers.\n\n"
    )
    if total:
        bullets.append(f"- Against the baseline {coll.baseline}: " + ", ".join(total))
    return text + "\n".join(bullets)


def _loss_pair(ref: StepStats, st: StepStats) -> str:
    a = rounded(ref.mean, 4) if ref.values else "-"
    b = rounded(st.mean, 4) if st.values else "-"
    return f"{a} → {b}"
