"""Matched work next to equal time: loss at equal tokens, and what it took to reach a target loss.

A time box gives every step the same seconds; a faster step trains on more tokens. To separate
"learns more per token" from "runs more tokens per second", this section reads the periodic eval
curve (metrics.jsonl eval records: iteration, tokens, training seconds, FLOPs, val loss on the
fixed periodic windows) of every completed run and reports, per step (mean over its runs):

* the val loss at the largest token count every step has an eval at (steps share eval points
  when budget.eval_interval and optim.tokens_per_iter match);
* speedrun-style, the tokens, training seconds and FLOPs at the first eval whose val loss is at
  or below a target: ``--target-loss``, else the baseline's final periodic val loss (its last
  curve point, the same windows as every curve point, so target and curves are comparable).
  A run that never reached it counts as not reached; a step reports the mean over runs that did.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from ablate import results as R
from ablate.report.tables import fmt_num, pipe, rounded


@dataclass
class Matched:
    tokens: float | None  # largest token count every step has an eval at
    loss_at_tokens: dict  # step -> mean val loss there
    target: float | None
    target_source: str
    reach: dict  # step -> (runs reached, runs, mean tokens, mean seconds, mean FLOPs)


def _completed_curves(jobs: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    done = set(jobs.loc[jobs["status"] == R.COMPLETED, "key"])
    c = curves[curves["key"].isin(done)]
    # astype(bool): on an empty frame the mask would be an object Series, read as column labels
    return c[c["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v)).astype(bool)]


def matched_work(
    jobs: pd.DataFrame,
    curves: pd.DataFrame,
    order: list[str],
    baseline: str,
    target_loss: float | None = None,
) -> Matched:
    c = _completed_curves(jobs, curves)
    steps = [s for s in order if s in set(c["step"])]
    tokens: float | None = None
    at: dict = {}
    if steps:
        # A token count counts for a step when every one of its completed runs has an eval there.
        runs_at = c.groupby(["step", "tokens_seen"])["key"].nunique()
        runs_of = c.groupby("step")["key"].nunique()
        full = runs_at[runs_at.values == runs_of.reindex(runs_at.index.get_level_values(0)).values]
        common = None
        for s in steps:
            have = set(full.loc[s].index) if s in full.index.get_level_values(0) else set()
            common = have if common is None else common & have
        common = {t for t in (common or set()) if math.isfinite(t) and t > 0}
        if common:
            tokens = max(common)
            last = (
                c[c["tokens_seen"] == tokens]
                .sort_values("iter")
                .groupby(["step", "key"])["val_loss"]
                .last()
            )
            at = {s: float(v) for s, v in last.groupby(level=0).mean().items()}

    target, source = target_loss, "--target-loss"
    if target is None:
        base = c[c["step"] == baseline]
        if len(base):
            finals = base.sort_values("iter").groupby("key")["val_loss"].last()
            target, source = (
                float(finals.mean()),
                f"the baseline {baseline}'s final periodic val loss",
            )
    reach: dict = {}
    if target is not None:
        runs_of = c.groupby("step")["key"].nunique()
        hit = c[c["val_loss"] <= target].sort_values("iter").groupby("key").first()
        for s in steps:
            h = hit[hit["step"] == s]
            n_hit = len(h)
            mean = [
                float(h[col].mean()) if n_hit else math.nan
                for col in ("tokens_seen", "train_seconds", "flops")
            ]
            reach[s] = (n_hit, int(runs_of.get(s, 0)), *mean)
    return Matched(tokens, at, target, source, reach)


def matched_section(coll, target_loss: float | None = None) -> str:
    m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, target_loss)
    if not m.loss_at_tokens and not m.reach:
        return "No completed run recorded a validation curve."
    rows = []
    for step in coll.order:
        loss = m.loss_at_tokens.get(step)
        r = m.reach.get(step)
        if r is None:
            reached = tok = sec = fl = "-"
        else:
            n_hit, n, t, sec_, f = r
            reached = f"{n_hit}/{n}"
            tok = fmt_num(t) if n_hit else "not reached"
            sec = fmt_num(sec_, 1) if n_hit else "-"
            fl = f"{f:.3g}" if n_hit and math.isfinite(f) else "-"
        rows.append(
            [
                step,
                rounded(loss, 4) if loss is not None and math.isfinite(loss) else "-",
                reached,
                tok,
                sec,
                fl,
            ]
        )
    at = f"{fmt_num(m.tokens)} tokens" if m.tokens is not None else "equal tokens"
    target = f"{rounded(m.target, 4)} ({m.target_source})" if m.target is not None else "none"
    table = pipe(
        rows,
        [
            "Step",
            f"Val loss at {at}",
            "Runs reaching target",
            "Tokens to target",
            "Train s to target",
            "FLOPs to target",
        ],
    )
    head = f"Target val loss: {target}."
    if m.tokens is None:
        head += (
            " The steps share no eval point (their budget.eval_interval x optim.tokens_per_iter "
            "differ), so there is no val loss at equal tokens."
        )
    return (
        head
        + "\n\n"
        + table
        + "\n\nEqual time (the main table) favours the step that runs more tokens "
        "per second; these columns hold the work fixed instead. Val loss at equal tokens: the periodic "
        "eval (the small fixed subset of validation windows, so noisier than the main table) at the "
        "largest token count every step has an eval at, mean over completed runs. To target: the "
        "tokens, training seconds and FLOPs at the first periodic eval at or below the target, mean "
        "over the runs that reached it (`--target-loss` sets the target)."
    )
