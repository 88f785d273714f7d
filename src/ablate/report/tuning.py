"""The tuned comparison: each step at its own best value of the tuned axes (``--tune optim.lr``).

A step that loses at the baseline's learning rate may win at its own. Picking each step's best run
and reporting that same run's loss is biased toward the step with more (or noisier) tries: the
minimum of several noisy losses is lower than any of their means (the winner's curse). So the
choice and the report use different validation windows:

**The halves.** Each run's final eval stores one loss per validation window (final_eval.json), in
stream order. The n windows are cut into ``HALF_BLOCKS`` (16) consecutive blocks of n/16 windows;
the even blocks (1st, 3rd, ...) are the *selection half*, the odd blocks the *report half*. Both
are fixed by n alone (the same windows for every run), and both cover the whole stream, so a
topic that spans a stretch of the validation text lands in both. Each step's value is the one
whose mean selection-half loss (over its completed runs) is lowest; the step is then reported,
compared and given verdicts (report/verdict.py, the same family as every other comparison) on
its report-half losses alone.

**What the halves share.** Window losses are correlated along the stream, so the halves' means
are correlated through the windows on either side of the 15 block boundaries: for an AR(1)
stream with lag-1 autocorrelation rho, corr ~ 15 rho / ((1 - rho^2) n / 2), 0.005 at rho 0.3
and 2,048 windows, 0.09 at 108 windows (``halves_correlation``). Windows a step happens to do well
on therefore barely favour it twice. What the halves share fully is each run's *seed*: its
initialization and data order move its loss on every window alike, so a value whose seeds were
lucky stays lucky on the report half. The window split removes the winner's curse of the
validation windows, not that of the seeds; it is small when grid values differ by more than the
seed spread, and more seeds shrink it. The section says so next to each choice.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ablate import results as R
from ablate.report import verdict_text as VT
from ablate.report.fmt import bold, pipe, rounded
from ablate.report.groups import (
    Analyse,
    Group,
    GroupedCollection,
    analyse_group,
    label,
    make_group,
    norm,
    numeric_order,
)
from ablate.report.noise import block_se
from ablate.report.plots import _figure, _save

HALF_BLOCKS = 16
SELECTION, REPORT = "selection", "report"


def halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(selection, report) window indices of a final eval of ``n`` windows (module docstring)."""
    block = (np.arange(n) * HALF_BLOCKS) // max(n, 1)
    even = block % 2 == 0
    return np.flatnonzero(even), np.flatnonzero(~even)


def halves_correlation(rho: float, n: int) -> float:
    """The correlation of the two halves' means for an AR(1) stream of ``n`` windows (docstring)."""
    return (HALF_BLOCKS - 1) * rho / ((1.0 - rho * rho) * (n / 2.0))


def half(fe: R.FinalEval, which: str) -> R.FinalEval:
    """The final eval restricted to one half: what the tuned comparison reports and compares."""
    sel, rep = halves(fe.n_windows)
    losses = np.asarray(fe.window_losses, dtype=np.float64)[sel if which == SELECTION else rep]
    losses.setflags(write=False)
    fp = f"{fe.fingerprint}:{which}-half" if fe.fingerprint else None
    return replace(fe, loss=float(losses.mean()), window_losses=losses, fingerprint=fp)


@dataclass
class Candidate:
    """One value of the tuned keys for one step: its runs' mean losses on each half."""

    values: dict[str, str]
    runs: int
    seeds: list[Any]
    selection: float  # mean over its runs of the selection-half mean (NaN: no per-window losses)
    report: float
    full: float  # mean final full-set val loss
    without_windows: int = 0  # completed runs without per-window losses (not used)

    @property
    def label(self) -> str:
        return label(self.values)


@dataclass
class Choice:
    step: str
    rest: dict[str, str]  # the other axes' values
    candidates: list[Candidate]  # in grid order
    chosen: Candidate | None
    edges: list[str] = field(default_factory=list)  # "optim.lr=1e-3 is the largest value ..."
    why_none: str | None = None
    note: str | None = None  # e.g. the candidates ran different seeds


@dataclass
class Tuning:
    keys: tuple[str, ...]
    choices: list[Choice]
    groups: list[Group]
    warnings: list[str]
    grids: dict[str, list[str]]  # tuned key -> values in grid (numeric) order

    def chosen(self, group: Group) -> dict[str, dict[str, str]]:
        """step -> its chosen values of the tuned keys, in the tuned group ``group``."""
        return {
            c.step: dict(c.chosen.values)
            for c in self.choices
            if c.chosen is not None and c.rest == group.values
        }


def _usable(jobs: pd.DataFrame) -> pd.DataFrame:
    finite = jobs["val_loss"].map(lambda v: isinstance(v, float) and math.isfinite(v))
    return jobs[(jobs["status"] == R.COMPLETED) & finite.astype(bool)]


def candidate(values: dict[str, str], runs: pd.DataFrame) -> Candidate:
    """One value's completed ``runs`` (rows of Collection.jobs): the mean over runs of each run's
    selection-half and report-half mean loss (``halves``)."""
    sel, rep = [], []
    without = 0
    for fe in runs["final_eval"]:
        if not isinstance(fe, R.FinalEval):
            without += 1
            continue
        s, r = halves(fe.n_windows)
        w = np.asarray(fe.window_losses, dtype=np.float64)
        if s.size == 0 or r.size == 0:
            without += 1
            continue
        sel.append(float(w[s].mean()))
        rep.append(float(w[r].mean()))
    return Candidate(
        values=values,
        runs=len(runs),
        seeds=list(runs["seed"]),
        selection=float(np.mean(sel)) if sel else math.nan,
        report=float(np.mean(rep)) if rep else math.nan,
        full=float(runs["val_loss"].mean()) if len(runs) else math.nan,
        without_windows=without,
    )


def _edges(step: str, chosen: Candidate, grids: dict[str, list[str]]) -> list[str]:
    out = []
    for key, grid in grids.items():
        if len(grid) < 2:
            continue
        v = chosen.values[key]
        where = (
            "smallest"
            if norm(v) == norm(grid[0])
            else "largest"
            if norm(v) == norm(grid[-1])
            else None
        )
        if where:
            out.append(
                f"{step}: its best {key}={v} is the {where} value of the grid ({', '.join(grid)}); "
                f"the best value may lie beyond it: extend the grid"
            )
    return out


def tune(gc: GroupedCollection, keys: list[str], analyse: Analyse) -> Tuning:
    """Choose each step's value on the selection half, per combination of the other axes, and
    build one tuned Group per combination (its runs carry their report half)."""
    keys_t = tuple(keys)
    rest_keys = [d.name for d in gc.dimensions if d.name not in keys_t]
    grids = {d.name: numeric_order(list(d.values)) for d in gc.dimensions if d.name in keys_t}
    buckets: dict[tuple[str, ...], list[Group]] = {}
    for g in gc.groups:
        buckets.setdefault(tuple(norm(g.values[k]) for k in rest_keys), []).append(g)
    choices: list[Choice] = []
    groups: list[Group] = []
    warnings: list[str] = []
    for members in buckets.values():
        rest = {k: members[0].values[k] for k in rest_keys}
        grid_order = {
            tuple(norm(v) for v in vals): i
            for i, vals in enumerate(_product([grids[k] for k in keys_t]))
        }
        members = sorted(
            members, key=lambda g: grid_order.get(tuple(norm(g.values[k]) for k in keys_t), 0)
        )
        rows = []
        for step in gc.order:
            cands = []
            for g in members:
                runs = _usable(g.jobs[g.jobs["step"] == step])
                if len(runs):
                    cands.append(candidate({k: g.values[k] for k in keys_t}, runs))
            if not cands:
                continue
            choice = choose(step, rest, cands, grids)
            choices.append(choice)
            warnings += [e + (f" (at {label(rest)})" if rest else "") for e in choice.edges]
            if choice.chosen is None:
                continue
            g = next(m for m in members if _same(m.values, choice.chosen.values))
            rows.append(_report_half(_usable(g.jobs[g.jobs["step"] == step])))
        if not rows:
            continue
        tg = make_group(
            gc,
            pd.concat(rows, ignore_index=True),
            values=rest,
            tuned=keys_t,
            intro=(
                f"Each step at its best {', '.join(keys_t)}, chosen on the selection half of the "
                "validation windows; every loss and verdict here is from the report half (see "
                "Tuned comparison)."
            ),
        )
        analyse_group(tg, analyse)
        groups.append(tg)
    return Tuning(keys_t, choices, groups, warnings, grids)


def _product(lists: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for values in lists:
        out = [o + (v,) for o in out for v in values]
    return out


def _same(a: dict[str, str], b: dict[str, str]) -> bool:
    return all(norm(a[k]) == norm(b[k]) for k in b)


def choose(
    step: str, rest: dict[str, str], cands: list[Candidate], grids: dict[str, list[str]]
) -> Choice:
    """The step's value: the candidate with the lowest selection-half loss (its report-half loss
    is what the tuned comparison reports); grid edges and uneven seeds noted."""
    ok = [c for c in cands if math.isfinite(c.selection)]
    if not ok:
        return Choice(
            step,
            rest,
            cands,
            None,
            why_none="no run has per-window losses (final_eval.json), so no value can be chosen "
            "on windows other than those that report it",
        )
    best = min(ok, key=lambda c: c.selection)  # the first of equals: grid order
    choice = Choice(step, rest, cands, best, _edges(step, best, grids))
    seed_sets = {tuple(sorted(map(str, c.seeds))) for c in ok}
    if len(seed_sets) > 1:
        choice.note = (
            f"{step}: the values ran different seeds ("
            + "; ".join(f"{c.label}: {', '.join(map(str, c.seeds))}" for c in ok)
            + "), so their selection losses average different seeds"
        )
    skipped = [c for c in cands if c.without_windows]
    if skipped:
        extra = ", ".join(f"{c.label} ({c.without_windows})" for c in skipped)
        choice.note = ((choice.note + "; ") if choice.note else f"{step}: ") + (
            f"runs without per-window losses are left out of the choice: {extra}"
        )
    return choice


def _report_half(runs: pd.DataFrame) -> pd.DataFrame:
    """The chosen runs as the tuned group sees them: final eval, val loss and loss SE of the
    report half. Runs without per-window losses stay out (they cannot be split)."""
    rows = runs[runs["final_eval"].map(lambda fe: isinstance(fe, R.FinalEval))].copy()
    evals = [half(fe, REPORT) for fe in rows["final_eval"]]
    rows["final_eval"] = evals
    rows["val_loss"] = [fe.loss for fe in evals]
    rows["final_val_loss"] = [fe.loss for fe in evals]
    ses = [block_se(fe.window_losses) for fe in evals]
    rows["val_se"] = [e.se if e is not None else math.nan for e in ses]
    return rows


# --------------------------------------------------------------------------- the section


def section(gc: GroupedCollection, tuning: Tuning, plot_name: dict[str, str] | None = None) -> str:

    keys = ", ".join(tuning.keys)
    n_windows = sorted(
        {fe.n_windows for fe in gc.jobs["final_eval"] if isinstance(fe, R.FinalEval)}
    )
    blocks = f"{n_windows[0] // HALF_BLOCKS}-window blocks" if len(n_windows) == 1 else "blocks"
    out = [
        f"Each step at its own best {keys}: the value whose mean loss on the **selection half** of "
        "the validation windows is lowest, then the step's loss on the **report half** only (the "
        f"{HALF_BLOCKS} consecutive {blocks} of the final eval's windows alternate: even ones "
        'select, odd ones report). The groups headed "each step at its best '
        f'{keys}" in every section compare those report-half losses, with verdicts in the same '
        "family as the rest of the report.",
        "",
    ]
    by_rest: dict[str, list[Choice]] = {}
    for c in tuning.choices:
        by_rest.setdefault(label(c.rest) if c.rest else "", []).append(c)
    grid_values = [
        dict(zip(tuning.keys, vals)) for vals in _product([tuning.grids[k] for k in tuning.keys])
    ]
    for rest_label, choices in by_rest.items():
        group = next(
            (g for g in tuning.groups if (label(g.values) if g.values else "") == rest_label), None
        )
        if rest_label:
            out += [f"### At {rest_label}", ""]
        rows = []
        for c in choices:
            cells = [c.step, c.chosen.label if c.chosen else "none"]
            for vals in grid_values:
                cand = next((x for x in c.candidates if _same(x.values, vals)), None)
                if cand is None:
                    cells.append("-")
                    continue
                cell = f"{_loss(cand.selection)} / {_loss(cand.report)}"
                cells.append(bold(cell) if cand is c.chosen else cell)
            if group is not None and group.stats and c.chosen is not None and c.step in group.stats:
                cells.append(VT.improvement_cell(group, group.stats, c.step))
            else:
                cells.append("-")
            cells.append("grid edge" if c.edges else "")
            rows.append(cells)
        headers = ["Step", f"Chosen {keys}"]
        headers += [f"{label(v)}: selection / report" for v in grid_values]
        headers += [f"Improvement vs {gc.baseline} (report half)", "Edge"]
        out += [pipe(rows, headers), ""]
        notes = [e for c in choices for e in c.edges]
        notes += [f"{c.step}: no value chosen: {c.why_none}" for c in choices if c.why_none]
        notes += [c.note for c in choices if c.note]
        if notes:
            out += ["\n".join(f"- {n}" for n in notes), ""]
        if plot_name and rest_label in plot_name:
            out += [f"![Loss at every value of {keys}, per step]({plot_name[rest_label]})", ""]
    out.append(
        "Cells: mean val loss over the value's completed runs on the selection half / on the report "
        "half (the chosen value in bold). Improvement: the report-half loss against the tuned "
        f"baseline's, as in Results. Edge: the chosen value is the smallest or largest of the grid, "
        "so the best may lie outside it. The halves' means share little through the windows "
        f"(for windows with lag-1 autocorrelation rho, about {HALF_BLOCKS - 1} rho / ((1 - rho^2) "
        "n / 2) of correlation: 0.005 at rho 0.3 over 2,048 windows), so the choice does not favour "
        "a step on the windows that report it; but every window of a run shares its seed "
        "(initialization and data order), so a value whose seeds were lucky stays lucky on the "
        "report half: that part of the winner's curse remains, small when the grid's values differ "
        "by more than the seed spread (Seeds and noise) and smaller with more seeds."
    )
    return "\n".join(out)


def _loss(x: float) -> str:
    return rounded(x, 4) if math.isfinite(x) else "-"


def write_plot(gc: GroupedCollection, tuning: Tuning, where: Path) -> dict[str, str]:
    """One figure per combination of the other axes: a panel per step, its loss on each half at
    every value, the chosen value marked. Returns {rest label: file name}."""

    out: dict[str, str] = {}
    by_rest: dict[str, list[Choice]] = {}
    for c in tuning.choices:
        by_rest.setdefault(label(c.rest) if c.rest else "", []).append(c)
    one_numeric = len(tuning.keys) == 1 and _all_numeric(tuning.grids[tuning.keys[0]])
    for rest_label, choices in by_rest.items():
        n = len(choices)
        cols = min(n, 4)
        rows = (n + cols - 1) // cols
        fig = _figure(3.2 * cols, 2.8 * rows)
        for i, c in enumerate(choices):
            ax = fig.add_subplot(rows, cols, i + 1)
            if one_numeric:
                xs = [float(x.values[tuning.keys[0]]) for x in c.candidates]
            else:
                xs = list(range(len(c.candidates)))
                ax.set_xticks(xs, [x.label for x in c.candidates], rotation=30, fontsize=7)
            ax.plot(xs, [x.selection for x in c.candidates], marker="o", label="selection half")
            ax.plot(xs, [x.report for x in c.candidates], marker="s", label="report half")
            if c.chosen is not None:
                k = c.candidates.index(c.chosen)
                ax.axvline(xs[k], color="grey", linestyle=":", linewidth=1)
            if one_numeric and all(x > 0 for x in xs):
                ax.set_xscale("log")
            if one_numeric:
                ax.set_xticks(xs, [x.values[tuning.keys[0]] for x in c.candidates], fontsize=7)
                ax.minorticks_off()
            ax.set_title(c.step, fontsize=9)
            ax.set_xlabel(", ".join(tuning.keys), fontsize=8)
            ax.set_ylabel("val loss", fontsize=8)
            ax.grid(True, alpha=0.3)
            if i == 0:
                ax.legend(fontsize=7)
        fig.tight_layout()
        name = R.sanitize_name(f"tuned_{'-'.join(tuning.keys)}_{rest_label or 'all'}") + ".png"
        _save(fig, where / name)
        out[rest_label] = name
    return out


def _all_numeric(values: list[str]) -> bool:
    try:
        [float(v) for v in values]
    except ValueError:
        return False
    return True
