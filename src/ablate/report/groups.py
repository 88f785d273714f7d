"""Groups: a report split into parts whose runs are never pooled, each compared on its own.

Some runs of one step must not be averaged with each other: two learning rates of a sweep are not
two seeds of one experiment. Such runs go to different *groups*. A group is a ``Collection`` of
its own jobs, analysed exactly as a report without groups is (statistics, warnings, main table,
verdicts, progression, matched work, gates, runs: report.build's analysis), and the markdown shows
every section once per group (report/grouped.py), the default group first.

**Dimensions and reasons.** What separates the groups is a list of ``Dimension``s. Each names one
thing the jobs differ in (``optim.lr``), the ``Reason`` they are kept apart on it, its values as
written (in the order shown) and its default value. A reason says why a difference splits the
report, in a title and one explanation the Groups section prints: ``AXIS`` (report/axes.py: a key
the matrix swept, other than step and seed), ``SETTING`` (report/pooling.py: a config key in which
the matrices given disagree) and ``DRIFT`` (report/pooling.py: runs of one step and seed under
different identities) are its sources.

**The key.** Every job has one value per dimension (``split``'s ``per_job``). A group's key
(``Group.key``) is the tuple of its (dimension name, normalized value) pairs, in dimension order;
values compare as numbers when both are numbers (``1e-3`` is ``0.001``), else as written. ``split``
makes one group per key present, so the groups are the combinations of every dimension's values
that ran; a group without a run of the baseline is listed with the reason and compared nowhere.

**Adding a kind of group.** A new source computes, for each row of ``Collection.jobs`` in order,
its value of each new dimension (with a ``Reason`` of its own), and hands those dimensions and
values to ``split`` together with the axes' (report/axes.py ``split`` is the one caller): nothing
else changes. The markdown, the csv/json rows (``main_rows``: ``GROUP_COLUMNS``, then each
dimension's ``column``), the plots and the verdict family follow the groups.

**One verdict family.** The verdicts of every group, and of the tuned comparison's groups
(report/tuning.py), form one Bonferroni family (report/verdict.py): ``close`` counts the
verdict-capable comparisons of all of them and gives each group that ``family_size``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Protocol

import pandas as pd

from ablate import results as R
from ablate.report.load import Collection
from ablate.report.main_table import MainRow, main_records
from ablate.report.stats import StepStats
from ablate.report.verdict import capable, report_candidates

Analyse = Callable[[Collection], dict[str, StepStats]]
"""report.build's analysis of one collection: sets its warnings and pipeline check, returns its
per-step statistics."""

GroupKey = tuple[tuple[str, str], ...]
"""(dimension name, normalized value) pairs, in dimension order."""

GROUP_COLUMNS = {
    "group": "the group's heading (its dimensions' values; the tuned comparison's: each step at "
    "its best value of the tuned keys)",
    "tuned_over": "the keys each step is tuned over in this group (report/tuning.py), else empty",
}
"""The csv/json columns a grouped report puts first; then one per dimension (``Dimension.column``:
the group's value, for a tuned key each step's chosen value)."""


# --------------------------------------------------------------------------- values


def norm(value: Any) -> str:
    """A value as compared: numbers by value (``1e-3`` is ``0.001``), text as written."""
    text = str(value).strip()
    try:
        return repr(float(text))
    except ValueError:
        return text


def label(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items()) or "all jobs"


def numeric_order(values: list[str]) -> list[str]:
    """Values in numeric order when every one is a number, else as given."""
    try:
        return sorted(values, key=lambda v: float(v))
    except ValueError:
        return list(values)


# --------------------------------------------------------------------------- dimensions


@dataclass(frozen=True)
class Reason:
    """Why jobs that differ in a dimension are not pooled."""

    name: str
    """Short name (``axis``), the csv column prefix."""
    title: str
    """The Groups section's heading for its dimensions (``Axes``)."""
    explains: str
    """One paragraph for the reader: what these dimensions are and that nothing is pooled."""


@dataclass(frozen=True)
class Dimension:
    """One thing the groups differ in."""

    name: str
    """What differs (a config key: ``optim.lr``)."""
    reason: Reason
    values: tuple[str, ...]
    """Its values as first written, in the order groups are shown."""
    default: str | None = None
    """The value a run gets without the difference (its group comes first); None: the first."""
    default_note: str | None = None
    """What the Groups section says about the default (e.g. that it was not swept)."""
    detail: tuple[str, ...] = ()
    """Lines the Groups section shows under the dimension: which matrices hold each value and
    what differs (report/pooling.py)."""

    @property
    def column(self) -> str:
        return f"{self.reason.name}:{self.name}"


# --------------------------------------------------------------------------- groups


@dataclass
class Group(Collection):
    """One group's jobs, analysed like a whole report (report.build's statistics and warnings)."""

    values: dict[str, str] = field(default_factory=dict)
    """Dimension name -> this group's value as written, in dimension order."""
    default: bool = False
    """The group of every dimension's default value (shown first)."""
    tuned: tuple[str, ...] = ()
    """The tuned comparison's keys (report/tuning.py): each step at its own best value of them;
    ``values`` then holds the other dimensions only. () for every other group."""
    stats: dict[str, StepStats] = field(default_factory=dict)
    """Step -> StepStats; {} when the group is not compared (``why_not``)."""
    why_not: str | None = None
    """Why the group is not compared (no baseline run)."""
    intro: str | None = None
    """A sentence shown under the group's heading in Results."""

    @property
    def key(self) -> GroupKey:
        return tuple((k, norm(v)) for k, v in self.values.items())

    @property
    def heading(self) -> str:
        if self.tuned:
            rest = f" ({label(self.values)})" if self.values else ""
            return f"each step at its best {', '.join(self.tuned)}{rest}"
        return label(self.values) + (" (default)" if self.default else "")

    @property
    def slug(self) -> str:
        """A name for the group's files (plots/<slug>/)."""
        base = ("tuned-" + "-".join(self.tuned) + "_" if self.tuned else "") + "_".join(
            f"{k}={v}" for k, v in self.values.items()
        )
        return R.sanitize_name(base.strip("_") or "all")


class TunedComparison(Protocol):
    """What a grouped report reads of its tuned comparison (report/tuning.py's ``Tuning``, which
    builds its groups with this module's Group: tuning imports this module, never the reverse)."""

    keys: tuple[str, ...]
    groups: list[Group]
    warnings: list[str]

    def chosen(self, group: Group) -> dict[str, dict[str, str]]:
        """Each step's chosen value of each tuned key in ``group``."""
        ...


@dataclass
class GroupedCollection(Collection):
    """A report split into groups: every job (for Sources and Notes), the dimensions, the groups."""

    dimensions: list[Dimension] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    """One per key present, the default first, then in the dimensions' value order."""
    tuning: TunedComparison | None = None
    """The tuned comparison (report/tuning.py's Tuning), when ``--tune`` / ``tune=`` names axes."""
    extra_warnings: list[str] = field(default_factory=list)
    """Warnings of the whole report (the tuned comparison's grid edges)."""
    plot_files: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """Group slug -> its (file, caption) plots; "" -> the tuned and size plots."""
    tuning_plots: dict[str, str] = field(default_factory=dict)
    """The tuned comparison's plots: other dimensions' label -> file."""
    size_plots: dict[str, str] = field(default_factory=dict)
    """The model sizes' plots: other dimensions' label -> file."""

    @property
    def compared(self) -> list[Group]:
        """Every analysed group: the dimension groups, then the tuned comparison's."""
        tuned = self.tuning.groups if self.tuning is not None else []
        return [g for g in self.groups + tuned if g.stats]

    def values_of(self, reason: Reason) -> dict[str, list[str]]:
        """{dimension name: values} of the dimensions of one reason (the axes: ``AXIS``)."""
        return {d.name: list(d.values) for d in self.dimensions if d.reason == reason}


def collection_fields(coll: Collection) -> dict[str, Any]:
    """The Collection fields of ``coll``, to build a Group or GroupedCollection from it."""
    return {f.name: getattr(coll, f.name) for f in fields(Collection)}


def make_group(parent: Collection, jobs: pd.DataFrame, **extra: Any) -> Group:
    """A Group of ``jobs`` (rows of parent.jobs, or copies of them) with their curves."""
    jobs = jobs.reset_index(drop=True)
    keys = set(jobs["key"])
    steps = set(jobs["step"])
    base = collection_fields(parent)
    base.update(
        jobs=jobs,
        curves=parent.curves[parent.curves["key"].isin(keys)].reset_index(drop=True),
        order=[s for s in parent.order if s in steps],
        notes=[],
        warnings=[],
        pipeline_check=False,
        family_size=None,
    )
    return Group(**base, **extra)


def analyse_group(group: Group, analyse: Analyse) -> None:
    """The group's statistics and warnings; a group without a baseline run gets ``why_not``."""
    if group.baseline not in group.order:
        group.why_not = (
            f"no {group.baseline} run at {label(group.values)}, so its steps have no baseline "
            "here; they are listed under Sources and compared nowhere"
        )
        return
    group.stats = analyse(group)


_DUPLICATE = re.compile(r"^(\S+): step (\S+) seed (\S+) also ran as (\S+); the report takes")


def _notes(coll: Collection, group_of: dict[str, GroupKey]) -> list[str]:
    """The collection's notes less its duplicate-seed ones between jobs of different groups
    (those are not pooled: that is the point of the groups); each group adds its own."""
    out = []
    for note in coll.notes:
        m = _DUPLICATE.match(note)
        if m and group_of.get(m.group(1)) != group_of.get(m.group(4)):
            continue
        out.append(note)
    return out


def _duplicate_seed_notes(g: Group) -> list[str]:
    out: list[str] = []
    seen: dict[tuple[Any, Any], str] = {}
    for key, step, seed in zip(g.jobs["key"], g.jobs["step"], g.jobs["seed"]):
        if seed is None:
            continue
        if (step, seed) in seen:
            out.append(
                f"{key}: step {step} seed {seed} also ran as {seen[(step, seed)]} at "
                f"{label(g.values)}; the report takes their mean as that seed's one result"
            )
        seen.setdefault((step, seed), key)
    return out


def split(
    coll: Collection,
    dimensions: list[Dimension],
    per_job: list[dict[str, str]],
    analyse: Analyse,
) -> GroupedCollection:
    """``coll`` split into one analysed Group per combination of dimension values present.
    ``per_job``: each row of ``coll.jobs`` (in order) -> {dimension name: its value}."""
    names = [d.name for d in dimensions]
    keys: list[GroupKey] = [tuple((n, norm(row[n])) for n in names) for row in per_job]
    jobs = coll.jobs.copy()
    group_of = dict(zip(jobs["key"], keys))
    want: GroupKey = tuple(
        (d.name, norm(d.default if d.default is not None else d.values[0])) for d in dimensions
    )
    index = {d.name: [norm(v) for v in d.values] for d in dimensions}
    present = sorted(
        set(keys),
        key=lambda k: (k != want, [index[n].index(v) if v in index[n] else 0 for n, v in k]),
    )
    if want not in present:
        want = present[0]
    written = {d.name: {norm(v): v for v in reversed(d.values)} for d in dimensions}
    gc = GroupedCollection(
        **{**collection_fields(coll), "jobs": jobs, "notes": _notes(coll, group_of)},
        dimensions=list(dimensions),
    )
    for gk in present:
        rows = [i for i, k in enumerate(keys) if k == gk]
        values = {n: written[n].get(v, v) for n, v in gk}
        g = make_group(gc, jobs.iloc[rows], values=values, default=gk == want)
        analyse_group(g, analyse)
        gc.groups.append(g)
        gc.notes += _duplicate_seed_notes(g)
    return gc


def close(gc: GroupedCollection) -> None:
    """After every group is made (the tuned ones too): the whole report's pipeline check and
    warnings, and one verdict family over every group (module docstring)."""
    compared = gc.compared
    gc.pipeline_check = bool(compared) and all(g.pipeline_check for g in compared)
    gc.warnings = [w for g in compared for w in g.warnings]
    gc.family_size = sum(1 for g in compared for c in report_candidates(g, g.stats) if capable(c))
    for g in compared:
        g.family_size = gc.family_size


def default_stats(gc: GroupedCollection) -> dict[str, StepStats]:
    """The default group's statistics ({} when it is not compared)."""
    g = next((g for g in gc.groups if g.default and g.stats), None)
    return g.stats if g is not None else {}


# --------------------------------------------------------------------------- csv / json


def main_rows(gc: GroupedCollection) -> list[MainRow]:
    """The main table's records of every compared group (report/main_table.py), each with its
    group's columns: ``GROUP_COLUMNS``, then one per dimension (for a tuned key, each step's
    chosen value)."""
    out: list[MainRow] = []
    for g in gc.compared:
        chosen = gc.tuning.chosen(g) if gc.tuning is not None and g.tuned else {}
        for row in main_records(g, g.stats):
            cells: dict[str, Any] = {"group": g.heading, "tuned_over": ",".join(g.tuned) or None}
            for d in gc.dimensions:
                if d.name in g.tuned:
                    cells[d.column] = chosen.get(row.step, {}).get(d.name)
                else:
                    cells[d.column] = g.values.get(d.name)
            out.append(replace(row, group=cells))
    return out


def groups_section(gc: GroupedCollection, tuned: tuple[str, ...] = ()) -> tuple[str, str]:
    """(title, text) of the section that says what separates the groups: per reason its
    explanation and its dimensions (values, default), then the groups and the verdict family."""
    reasons = list(dict.fromkeys(d.reason for d in gc.dimensions))
    title = " and ".join(r.title for r in reasons)
    title = title[:1].upper() + title[1:]
    parts: list[str] = []
    for reason in reasons:
        lines = []
        for d in (d for d in gc.dimensions if d.reason == reason):
            if d.default_note:
                where = d.default_note
            elif d.default is None:
                where = "default: not recorded, the first value is shown first"
            else:
                where = f"default {d.default}"
            mark = " (tuned: Tuned comparison)" if d.name in tuned else ""
            lines.append(f"- `{d.name}`: {', '.join(d.values)} ({where}){mark}")
            lines += [f"  - {line}" for line in d.detail]
        parts += [reason.explains, "\n".join(lines)]
    counts = ", ".join(f"{g.heading}: {len(g.jobs)} job(s)" for g in gc.groups)
    parts.append(f"Groups: {counts}.")
    skipped = [f"- {g.heading}: {g.why_not}." for g in gc.groups if g.why_not]
    if skipped:
        parts.append("\n".join(skipped))
    parts.append(
        f"The verdicts of every group{' and of the tuned comparison' if gc.tuning else ''} "
        f"form one family: {gc.family_size} comparison(s) in all can make a verdict, and each "
        "is decided by its interval adjusted over all of them (Seeds and noise)."
    )
    return title, "\n\n".join(parts)
