"""What makes a comparison untrustworthy, found in the stored files and put at the top of REPORT.md.

Each check returns a ``Warn``: one line for the Warnings section, the steps whose row in the
main table gets a mark, and whether it takes away the step's verdicts (bold, better/worse,
within noise): a run that never left warmup, or that was evaluated fewer than MIN_EVALS times,
measured the start of training, not the architecture. A matrix whose every job ran the smoke
preset is a pipeline check: it gets a different title and no verdicts at all.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ablate import results as R
from ablate.report.load import UNREADABLE

MIN_EVALS = 3
BOX_TOLERANCE = 0.05  # training time over the box by more than this share
THROUGHPUT_TOLERANCE = (
    0.25  # achieved FLOP/s of a step below the fastest step's by more than this share
)
SMOKE_EXPERIMENT = "smoke"
MARK = "⚠"
# What gives a pipeline check a verdict: no number of smoke seeds does (verdict.block_reason).
VERDICT_NEEDS = (
    "A verdict needs a preset other than smoke (e.g. matrix=cpu1h or experiment=gpu1h) and at "
    "least 2 seeds per step (3 recommended, e.g. seed=1,2,3)."
)


@dataclass
class Warn:
    kind: str
    text: str
    steps: set[str] = field(default_factory=set)  # rows marked in the main table
    blocks_verdict: bool = False  # those steps get no verdict
    pairs: set[frozenset[str]] | None = None
    """The comparisons (pairs of steps) a blocking warning takes the verdict of; None: every
    comparison of ``steps`` (report/conditions.py blocks one comparison, not a step's all)."""

    def blocks(self, a: str, b: str) -> bool:
        """Whether it takes the verdict of the comparison of steps ``a`` and ``b``."""
        if not self.blocks_verdict:
            return False
        if self.pairs is not None:
            return frozenset((a, b)) in self.pairs
        return a in self.steps or b in self.steps


def _finite(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, numbers.Real) and math.isfinite(x)


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def is_pipeline_check(experiments: list[Any]) -> bool:
    """Every experiment preset the matrices ran is the smoke preset (``Collection.experiments``)."""
    return bool(experiments) and all(e == SMOKE_EXPERIMENT for e in experiments)


def collect_warnings(
    jobs: pd.DataFrame,
    stats: dict[str, Any],
    order: list[str],
    pipeline_check: bool = False,
) -> list[Warn]:
    out: list[Warn] = []
    done = jobs[jobs["status"] == R.COMPLETED]
    rows = jobs.to_dict("records")  # plain dicts: iterrows is ~50x slower on a big matrix
    done_rows = [r for r in rows if r["status"] == R.COMPLETED]

    warm = [(r["key"], r["step"], _in_warmup(r)) for r in done_rows]
    warm = [w for w in warm if w[2]]
    if warm:
        out.append(
            Warn(
                "warmup",
                "ended in warmup (the box ended before, or just as, the learning rate reached "
                "its peak, so the run measured the start of training, not the architecture): "
                + _names([f"{k} ({why})" for k, _, why in warm])
                + "; no verdicts for these steps. Give the box more time or shorten the warmup "
                "(optim.warmup_iters, optim.warmup_fraction).",
                {s for _, s, _ in warm},
                True,
            )
        )

    few = [
        (r["key"], r["step"], int(r["n_evals"]))
        for r in done_rows
        if _finite(r["n_evals"]) and r["n_evals"] < MIN_EVALS
    ]
    if few:
        out.append(
            Warn(
                "evals",
                f"fewer than {MIN_EVALS} evals: "
                + _names([f"{k} ({n})" for k, _, n in few])
                + "; no verdicts for these steps. Lower budget.eval_interval or give the box more time.",
                {s for _, s, _ in few},
                True,
            )
        )

    over = [
        (r["key"], r["step"], float(r["train_seconds"]), float(r["box_seconds"]))
        for r in rows
        if _finite(r["train_seconds"])
        and _finite(r["box_seconds"])
        and r["box_seconds"] > 0
        and r["train_seconds"] > (1 + BOX_TOLERANCE) * r["box_seconds"]
    ]
    if over:
        out.append(
            Warn(
                "box",
                f"trained more than {100 * BOX_TOLERANCE:.0f}% past the time box (more time, "
                "more tokens): " + _names([f"{k} ({t:.1f} s of {b:.0f} s)" for k, _, t, b in over]),
                {s for _, s, _, _ in over},
            )
        )

    out += _budget(rows, done_rows)
    w = _throughput(done, order)
    if w is not None:
        out.append(w)
    w = _cadence(done_rows, order)
    if w is not None:
        out.append(w)
    out += _batches(rows, order)

    # A run that has not finished has no trained-weights recheck and maybe no summary yet: that
    # is its status (the notes say it), not a missing check. Only a run that never had a check
    # (preflight=false), or a finished one (completed, or whose files cannot be read) without
    # one, is "without a causality check".
    unchecked = [
        r["key"]
        for r in rows
        if r["status"] != "leaked"
        and r.get("causality_state") not in (R.CHECKED, R.LEAKED)
        and (r["status"] in (R.COMPLETED, UNREADABLE) or r.get("causality_state") == R.UNCHECKED)
    ]
    leaked = [r["key"] for r in rows if r["status"] == "leaked"]
    if leaked:
        out.append(
            Warn(
                "leaked",
                "failed the causality check after training (the model sees future tokens; "
                "its loss is not a language-modelling loss): " + _names(leaked),
                {r["step"] for r in rows if r["status"] == "leaked"},
                True,
            )
        )
    if unchecked:
        # Say why each run is unchecked: a user who set preflight=false needs a different fix
        # from one whose summary.json predates the causality record.
        why = {
            R.UNCHECKED: "not checked before training (preflight=false, or no causality.json)",
            R.TRAINED_UNCHECKED: "trained weights not rechecked",
            R.UNRECORDED: "no causality record in summary.json",
        }
        by_reason: dict[str, list[str]] = {}
        for r in rows:
            if r["key"] in unchecked:
                reason = why.get(r.get("causality_state"), why[R.UNRECORDED])
                by_reason.setdefault(reason, []).append(r["key"])
        parts = [f"{reason}: {_names(keys)}" for reason, keys in by_reason.items()]
        steps = {r["step"] for r in rows if r["key"] in set(unchecked)}
        out.append(
            Warn(
                "causality",
                f"{len(unchecked)} of {len(jobs)} run(s) without a causality check "
                f"({'; '.join(parts)}): nothing shows these models could not see future tokens",
                steps,
            )
        )

    single = [s for s in order if s in stats and stats[s].n == 1]
    if single and len(single) == len(
        [s for s in order if stats.get(s) is not None and stats[s].n >= 1]
    ):
        # A pipeline check has no verdict to settle with seeds: its advice says what would.
        advice = VERDICT_NEEDS if pipeline_check else "Add seeds (e.g. seed=1,2,3)."
        out.append(
            Warn(
                "seeds",
                "one seed per step: no seed-noise estimate; intervals, where shown, cover "
                f"validation sampling only. {advice}",
            )
        )
    elif single:
        out.append(
            Warn("seeds", f"one seed for {_names(single)}: no seed-noise estimate for these steps.")
        )
    return out


def _in_warmup(r: Any) -> str | None:
    """Why a run ended in warmup, or None. A time box records when its warmup ends
    (summary.json ``warmup_end_seconds``, training seconds); otherwise iterations count."""
    end, t, box = r["warmup_end_seconds"], r["train_seconds"], r["box_seconds"]
    if _finite(end) and end > 0 and _finite(t):
        if t < end:
            return f"warmup ends at {end:.1f} s of training, the run trained {t:.1f} s"
        if _finite(box) and end >= box:
            # The last iteration overran the box, so the run did pass the warmup's end: say
            # what happened (the peak came with the box's end) rather than "never reached".
            return f"its warmup took the whole {box:g}-s box, the rate peaked only as the box ended"
        return None
    if (
        _finite(r["warmup_iters"])
        and _finite(r["iterations"])
        and r["iterations"] < r["warmup_iters"]
    ):
        return f"iteration {int(r['iterations'])} of {int(r['warmup_iters'])} warmup"
    return None


def _budget(rows: list[dict[str, Any]], done_rows: list[dict[str, Any]]) -> list[Warn]:
    """What a run got of its budget and data that the table does not show: an iteration budget
    the box cut short (summary.json ``schedule_fraction`` < 1: its learning rate never decayed,
    the R-MLP validation table's failure), training data seen more than once (``epochs`` > 1),
    validation that overlaps training above the threshold the job recorded (``data``
    ``val_overlap_share`` > ``val_overlap_warn_share``). Marked, not withheld: the steps compared
    may share the condition."""
    out = []
    cut = [r for r in done_rows if _finite(r["schedule_done"]) and r["schedule_done"] < 1.0]
    if cut:
        names = [
            f"{r['key']} (iteration {_int(r['iterations'])} of budget.max_iters="
            f"{_int(r['max_iters'])}, {100 * r['schedule_done']:.0f}% of its schedule)"
            for r in cut
        ]
        out.append(
            Warn(
                "schedule",
                "the box ended an iteration budget early, so its learning-rate schedule never "
                "finished (the rate never decayed to optim.min_lr; the run measured a model "
                f"mid-schedule): {_names(names)}. Give the box more time, lower "
                "budget.max_iters, or drop budget.max_iters to decay over the box.",
                {r["step"] for r in cut},
            )
        )
    seen = [r for r in rows if _finite(r["epochs"]) and r["epochs"] > 1.0]
    if seen:
        out.append(
            Warn(
                "epochs",
                "trained on more than one epoch of the training data (windows were seen again, "
                "so later losses partly measure memorisation): "
                + _names([f"{r['key']} ({r['epochs']:.2f} epochs)" for r in seen])
                + ". Use more data or a shorter budget.",
                {r["step"] for r in seen},
            )
        )
    over = [
        r
        for r in rows
        if _finite(r["val_overlap_share"])
        and _finite(r["val_overlap_warn_share"])
        and r["val_overlap_share"] > r["val_overlap_warn_share"]
    ]
    if over:
        out.append(
            Warn(
                "overlap",
                "validation overlaps training (a share of validation tokens inside 64-token "
                "spans that also occur in the training data, above the "
                f"{100 * over[0]['val_overlap_warn_share']:g}% the data module warns at): "
                + _names([f"{r['key']} ({100 * r['val_overlap_share']:.1f}%)" for r in over])
                + "; their validation loss partly measures recall of training text. Train on "
                "data split by document (python -m ablate.data prepares one).",
                {r["step"] for r in over},
            )
        )
    return out


def _int(x: Any) -> str:
    return str(int(x)) if _finite(x) else "?"


def _throughput(done: pd.DataFrame, order: list[str]) -> Warn | None:
    """Tokens per second should differ between steps only as their FLOPs per token do; achieved
    FLOP/s that differ more say the machine, not the model, set the pace (contention)."""
    rows = []
    for step in order:
        sub = done[done["step"] == step]
        tps = [float(x) for x in sub["tokens_per_s"] if _finite(x)]
        fpt = [float(x) for x in sub["flops_per_token"] if _finite(x)]
        if tps and fpt:
            t, f = sum(tps) / len(tps), sum(fpt) / len(fpt)
            rows.append((step, t, f, t * f))
    if len(rows) < 2:
        return None
    top = max(r[3] for r in rows)
    off = [r for r in rows if top > 0 and r[3] < (1 - THROUGHPUT_TOLERANCE) * top]
    if not off:
        return None
    numbers_ = "; ".join(
        f"{s}: {t:,.0f} tokens/s x {f:.3g} FLOPs/token = {a / 1e12:.3g} TFLOP/s"
        for s, t, f, a in rows
    )
    return Warn(
        "throughput",
        "tokens per second differ between steps more than their FLOPs per token explain "
        f"(achieved FLOP/s more than {100 * THROUGHPUT_TOLERANCE:.0f}% below the fastest step's for "
        f"{', '.join(r[0] for r in off)}): machine contention or a different device, so equal time was not "
        f"equal work. {numbers_}",
        {r[0] for r in off},
    )


CADENCE_TOLERANCE = 0.01
INTERVAL, TOKENS = "budget.eval_interval", "optim.tokens_per_iter"


def _configured_cadence(r: dict[str, Any]) -> tuple[float, float] | None:
    """(budget.eval_interval, optim.tokens_per_iter) from the run's config.yaml; None when it
    does not record both."""
    values: dict[str, Any] = r.get("config_values") or {}
    every, tokens = values.get(INTERVAL), values.get(TOKENS)
    if not (_finite(every) and _finite(tokens)):
        return None
    assert isinstance(every, numbers.Real) and isinstance(tokens, numbers.Real)  # _finite
    e, t = float(every), float(tokens)
    return (e, t) if e > 0 and t > 0 else None


def _cadence(done_rows: list[dict[str, Any]], order: list[str]) -> Warn | None:
    """Completed runs configured to evaluate at different token intervals (budget.eval_interval x
    optim.tokens_per_iter): a coarser cadence reads a target's crossing later (matched work
    interpolates between evals, which makes that small, not 0). The configured cadence, not the
    gaps between recorded evals: the eval at the box's end (and one at a resume or a stop) falls
    between the periodic ones, so measured gaps differ between runs of equal settings."""
    per_step: dict[str, set[tuple[float, float]]] = {}
    for r in done_rows:
        c = _configured_cadence(r)
        if c is not None:
            per_step.setdefault(str(r["step"]), set()).add(c)
    flat = sorted({e * t for cs in per_step.values() for e, t in cs})
    if len(flat) < 2 or flat[-1] <= (1 + CADENCE_TOLERANCE) * flat[0]:
        return None
    counts: dict[float, int] = {}
    for cs in per_step.values():
        for x in {e * t for e, t in cs}:
            counts[x] = counts.get(x, 0) + 1
    common = max(counts, key=lambda x: counts[x])
    odd = {
        s
        for s, cs in per_step.items()
        if any(abs(e * t - common) > CADENCE_TOLERANCE * common for e, t in cs)
    }
    text = "; ".join(
        f"{s}: every "
        + ", ".join(f"{e:,.0f} x {t:,.0f} = {e * t:,.0f}" for e, t in sorted(per_step[s]))
        + " tokens"
        for s in order
        if s in per_step
    )
    # Name only the setting that differs: the advice must not blame one that is equal.
    differ = [
        key
        for key, i in ((INTERVAL, 0), (TOKENS, 1))
        if len({c[i] for cs in per_step.values() for c in cs}) > 1
    ]
    return Warn(
        "cadence",
        f"eval cadences differ ({text}; {INTERVAL} x {TOKENS}, as configured): matched work "
        "interpolates between evals, but a coarser cadence still resolves a target's crossing "
        f"less well. Give every step the same {' and '.join(differ)}.",
        odd,
    )


def _batches(rows: list[dict[str, Any]], order: list[str]) -> list[Warn]:
    """Every step of one seed must have trained on the same global batches: compare each job's
    batch fingerprints (metrics.jsonl) with those of the first job of its seed in matrix order
    (the baseline when it comes first), at the iterations both recorded."""
    out = []
    rank = {s: i for i, s in enumerate(order)}
    by_seed: dict[Any, list[dict[str, Any]]] = {}
    for r in rows:
        if isinstance(r["batch_fingerprints"], dict):
            by_seed.setdefault(r["seed"], []).append(r)
    for seed, rows in by_seed.items():
        rows.sort(key=lambda r: rank.get(r["step"], len(rank)))
        ref = rows[0]
        for r in rows[1:]:
            common = sorted(set(ref["batch_fingerprints"]) & set(r["batch_fingerprints"]))
            bad = [i for i in common if ref["batch_fingerprints"][i] != r["batch_fingerprints"][i]]
            if bad:
                out.append(
                    Warn(
                        "batches",
                        f"{r['key']} (step {r['step']}, seed {seed}) did not see the training "
                        f"batches {ref['key']} saw: the global batch of iteration {bad[0]} differs "
                        f"({r['batch_fingerprints'][bad[0]]} vs {ref['batch_fingerprints'][bad[0]]}; "
                        f"{len(bad)} of {len(common)} recorded batches differ), so the comparison mixes "
                        "architecture and data; no verdict for this step.",
                        {r["step"]},
                        True,
                    )
                )
    return out


def section(warnings: list[Warn]) -> str:
    return "\n".join(f"- {MARK} {w.text}" for w in warnings)
