"""Every unequal condition named before a verdict: what differs between the jobs of one comparison.

A comparison (a step against the baseline, or against the previous step: verdict.shown_pairs) is
fair only when its jobs ran under the same conditions apart from the step's own model options
and the seed. For each comparison this module compares the conditions of its completed jobs
(report/condition_facts.py: every config.yaml key, what env.json says they ran on, the validation
final_eval.json scored, the data and code identity.json hashed) key by key, and makes one
``Warn`` per key that differs, naming the key, its kind and each value with the jobs that had it:

- a difference no comparison survives (``Kind.blocks``: time box, tokens per iteration,
  validation windows, data) takes the verdict of the comparisons it occurs in (``Warn.pairs``),
  with why; a data path that differs while the shards' hashes agree is the same data elsewhere,
  a warning only;
- every other difference (max_iters, eval cadence, optimizer settings, compile, precision, world
  size, device, code version, ...) is a warning;
- the step's own model options (``model.*``, the model files) are compared only between runs of
  one step: two runs of V18 built from different model code are not one experiment;
- tokens seen: within a step in time-box mode (equal time of one model, other work: contention),
  between all the comparison's runs with an iteration budget; beyond ``TOKENS_TOLERANCE``.

``step_settings`` finds the keys besides model options that a step's config sets (its step file):
the keys in which a step's runs differ from the baseline's runs of the same matrix, where nothing
but the step, the seed and the axes changes between jobs. The Steps section names them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ablate import results as R
from ablate.report.condition_facts import Kind, kind_of, same, show
from ablate.report.load import Collection
from ablate.report.verdict import shown_pairs
from ablate.report.warnings import Warn

TOKENS_TOLERANCE = 0.05
"""Tokens seen may differ by this share (of the fewest) before it is named."""
TOKENS = "tokens seen"

Row = dict[str, Any]


def _completed(coll: Collection) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    for r in coll.jobs.to_dict("records"):
        if r["status"] == R.COMPLETED and isinstance(r["conditions"], dict):
            out.setdefault(str(r["step"]), []).append(r)
    return out


def _differs(rows: Sequence[Row], key: str) -> bool:
    values = [r["conditions"][key] for r in rows if key in r["conditions"]]
    return any(not same(values[0], v) for v in values[1:])


def _who(rows: Sequence[Row], chosen: Sequence[Row]) -> str:
    """The jobs ``chosen`` (of ``rows``) by step where they are all of a step's, else by job."""
    names: list[str] = []
    for step in dict.fromkeys(r["step"] for r in chosen):
        mine = [r for r in rows if r["step"] == step]
        picked = [r for r in chosen if r["step"] == step]
        if len(picked) == len(mine):
            names.append(str(step))
        else:
            names += [str(r["key"]) for r in picked]
    return ", ".join(names)


def values_text(rows: Sequence[Row], key: str) -> str:
    """``45 (V0, V16), 10 (V18)``: each value of ``key`` with the jobs that had it."""
    by_value: list[tuple[Any, list[Row]]] = []
    for r in rows:
        if key not in r["conditions"]:
            continue
        v = r["conditions"][key]
        for seen, members in by_value:
            if same(seen, v):
                members.append(r)
                break
        else:
            by_value.append((v, [r]))
    return ", ".join(f"{show(v)} ({_who(rows, members)})" for v, members in by_value)


@dataclass
class _Found:
    key: str
    kind: Kind
    blocks: str | None
    pairs: list[tuple[str, str]] = field(default_factory=list)
    rows: dict[str, Row] = field(default_factory=dict)
    note: str = ""
    shown: dict[str, Row] = field(default_factory=dict)
    """Tokens seen: every run of the comparisons, so the line shows both sides of what it
    compares, not only the runs that differ (``rows``)."""


def _tokens_differ(rows: Sequence[Row]) -> bool:
    xs = [float(r["tokens_seen"]) for r in rows if _finite(r["tokens_seen"])]
    return len(xs) > 1 and min(xs) > 0 and max(xs) > (1 + TOKENS_TOLERANCE) * min(xs)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _data_path_same_data(rows: Sequence[Row]) -> bool:
    """Every job records the shards' hashes and they agree: another path to the same data."""
    key = "identity.json data"
    values = [r["conditions"].get(key) for r in rows]
    return all(v is not None for v in values) and all(v == values[0] for v in values)


def _pair_findings(a: list[Row], b: list[Row]) -> Iterable[tuple[str, Kind, list[Row]]]:
    """(key, kind, the jobs it differs among) for each condition that differs in one comparison."""
    both = a + b
    keys = list(dict.fromkeys(k for r in both for k in r["conditions"]))
    for key in keys:
        kind = kind_of(key)
        if kind.step_own:
            rows = [r for side in (a, b) if _differs(side, key) for r in side]
        else:
            rows = both if _differs(both, key) else []
        if rows:
            yield key, kind, rows
    boxed = any(_finite(r["box_seconds"]) and r["box_seconds"] > 0 for r in both)
    sides = (a, b) if boxed else (both,)
    rows = [r for side in sides if _tokens_differ(side) for r in side]
    if rows:
        yield TOKENS, Kind("tokens seen"), rows


def condition_warnings(coll: Collection) -> list[Warn]:
    """One Warn per condition that differs between the completed jobs of a comparison the report
    shows (module docstring); blocking ones take the verdict of those comparisons only."""
    by_step = _completed(coll)
    found: dict[str, _Found] = {}
    for step, ref in shown_pairs(coll.order, coll.baseline):
        a, b = by_step.get(step, []), by_step.get(ref, [])
        if not a or not b:
            continue
        for key, kind, rows in _pair_findings(a, b):
            blocks = kind.blocks
            note = ""
            if key == "data.path" and _data_path_same_data(a + b):
                blocks, note = None, " (the shards' hashes agree: the same data in another place)"
            f = found.setdefault(key, _Found(key, kind, blocks, note=note))
            f.pairs.append((step, ref))
            f.rows.update((str(r["key"]), r) for r in rows)
            if key == TOKENS:
                f.shown.update((str(r["key"]), r) for r in a + b)
            if blocks is None:  # the same data elsewhere in one comparison: a warning only
                f.blocks = None
    rank = {s: i for i, s in enumerate(coll.order)}
    for f in found.values():  # values in matrix order of their jobs, the baseline's first
        f.rows = dict(sorted(f.rows.items(), key=lambda kv: rank.get(kv[1]["step"], len(rank))))
        f.shown = dict(sorted(f.shown.items(), key=lambda kv: rank.get(kv[1]["step"], len(rank))))
    return [_warn(f) for f in found.values()]


def _tokens_text(differ: list[Row], shown: list[Row]) -> str:
    """Where tokens seen differ (_pair_findings: within a step in a time box, else among all the
    comparison's runs), then every run of both sides with its tokens."""
    steps = list(dict.fromkeys(str(r["step"]) for r in differ))
    boxed = any(_finite(r["box_seconds"]) and r["box_seconds"] > 0 for r in shown)
    where = (
        f"among the runs of {' and of '.join(steps)} (one model, one time box)"
        if boxed
        else "among the compared runs"
    )
    values = "; ".join(
        f"{r['key']}: {float(r['tokens_seen']):,.0f}"
        if _finite(r["tokens_seen"])
        else f"{r['key']}: ?"
        for r in shown
    )
    return (
        f"tokens seen differ by more than {100 * TOKENS_TOLERANCE:.0f}% {where} ({values})"
        " (equal time or iterations was not equal work)"
    )


def _warn(f: _Found) -> Warn:
    rows = list(f.rows.values())
    if f.key == TOKENS:
        what = _tokens_text(rows, list(f.shown.values()))
    else:
        what = f"`{f.key}` ({f.kind.name}) differs: {values_text(rows, f.key)}{f.note}"
    pairs = ", ".join(f"{s} vs {r}" for s, r in f.pairs)
    text = f"unequal conditions in {pairs}: {what}"
    if f.blocks:
        text += f"; no verdict for {'this comparison' if len(f.pairs) == 1 else 'these comparisons'}: {f.blocks}."
    else:
        text += "."
    steps = {s for pair in f.pairs for s in pair if any(r["step"] == s for r in rows)}
    return Warn(
        f"unequal {f.kind.name}" if f.blocks else "unequal conditions",
        text,
        steps,
        f.blocks is not None,
        pairs={frozenset(p) for p in f.pairs},
    )


# --------------------------------------------------------------------------- the Steps section


def step_settings(coll: Collection) -> dict[str, list[str]]:
    """Step -> ``key=value (baseline: value)`` for each config key besides model options in which
    its runs differ from the baseline's runs of the same matrix (its step file sets it)."""
    rows = [r for r in coll.jobs.to_dict("records") if isinstance(r["conditions"], dict)]
    out: dict[str, list[str]] = {}
    for mdir in dict.fromkeys(r["matrix_dir"] for r in rows):
        here = [r for r in rows if r["matrix_dir"] == mdir]
        base = [r for r in here if r["step"] == coll.baseline]
        if not base:
            continue
        for step in dict.fromkeys(r["step"] for r in here if r["step"] != coll.baseline):
            mine = [r for r in here if r["step"] == step]
            for key in dict.fromkeys(k for r in mine for k in r["conditions"]):
                if " " in key or kind_of(key).step_own:  # config keys only, not model options
                    continue
                v, w = _one(mine, key), _one(base, key)
                if v is None or w is None or same(v[0], w[0]):
                    continue
                text = f"{key}={show(v[0])} ({coll.baseline}: {show(w[0])})"
                if text not in out.setdefault(str(step), []):
                    out[str(step)].append(text)
    return out


def _one(rows: Sequence[Row], key: str) -> tuple[Any] | None:
    """(the value every job of ``rows`` has for ``key``,), or None when they do not agree."""
    values = [r["conditions"].get(key) for r in rows]
    if not values or values[0] is None or any(not same(values[0], v) for v in values[1:]):
        return None
    return (values[0],)
