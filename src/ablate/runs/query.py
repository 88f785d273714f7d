"""Filters, dates and output formats of ``python -m ablate.runs``."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import re
import time
from typing import Any

from ablate import identity
from ablate.errors import AblateError
from ablate.runs.read import Row

FILTER_KEYS = {
    "step": "step name",
    "seed": "seed",
    "status": "completed, failed, interrupted, leaked, running, pending",
    "causality": "checked, unchecked, leaked, ...",
    "identity": "identity digest or a prefix of it",
    "matrix": "matrix directory name",
    "job": "job directory name",
    "host": "host it ran on",
    "experiment": "experiment preset (smoke, ...)",
    "device": "device name x world size",
    "reused": "yes: filled from an earlier run; no: trained itself",
}
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_AGE_SECONDS = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}

TABLE_COLUMNS = (
    ("run", "run"),
    ("step", "step"),
    ("seed", "seed"),
    ("axes", "axes"),
    ("status", "status"),
    ("causality", "causality"),
    ("final_val_loss", "val loss"),
    ("identity", "identity"),
    ("ended", "when"),
    ("host", "host"),
    ("reused_from", "reused from"),
)
CSV_COLUMNS = (
    "run",
    "step",
    "seed",
    "axes",
    "status",
    "causality",
    "final_val_loss",
    "best_val_loss",
    "identity",
    "mixed",
    "ended",
    "host",
    "device",
    "experiment",
    "reused_from",
    "path",
)


def parse_filters(args: list[str]) -> list[tuple[str, list[str]]]:
    """``KEY=VALUE[,VALUE...]`` arguments as (key, alternatives)."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not key or not value:
            raise AblateError(
                f"filter {arg!r}: write KEY=VALUE (e.g. step=V18, seed=1,2, status=completed)"
            )
        out.append((key, [v for v in value.split(",") if v != ""]))
    return out


def parse_since(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for ``--since``: a date (2026-01-31), an ISO time
    (2026-01-31T14:00, offsets allowed) or an age (90m, 12h, 3d, 2w)."""
    now = time.time() if now is None else now
    value = text.strip()
    m = _AGE.match(value)
    if m:
        return now - float(m.group(1)) * _AGE_SECONDS[m.group(2)]
    try:
        when = _dt.datetime.fromisoformat(value)
    except ValueError:
        raise AblateError(
            f"--since {text!r}: not a date; use YYYY-MM-DD, an ISO time (2026-01-31T14:00) "
            "or an age (90m, 12h, 3d, 2w)"
        ) from None
    if when.tzinfo is None:
        when = when.astimezone()  # local time, as a user types it
    return when.timestamp()


def axes_of(row: Row) -> dict[str, str]:
    """The row's swept keys and values (parsed once per row)."""
    parsed = row.get("_axes")
    if parsed is None:
        text = row.get("axes")
        try:
            parsed = json.loads(text) if text and text != "{}" else {}
        except ValueError:
            parsed = {}
        if not isinstance(parsed, dict):
            parsed = {}
        row["_axes"] = parsed
    out: dict[str, str] = parsed
    return out


def _same_value(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12)
    except ValueError:
        return False


def _matches(row: Row, key: str, values: list[str]) -> bool:
    if key in FILTER_KEYS:
        if key == "identity":
            return any((row["identity"] or "").startswith(v.lower()) for v in values)
        if key == "reused":
            yes = {v.lower() in ("yes", "true", "1") for v in values}
            return (row["reused_from"] is not None) in yes
        have = row.get(key)
        return have is not None and any(_same_value(str(have), v) for v in values)
    axes = axes_of(row)
    for name, have in axes.items():
        if name == key or name.rsplit(".", 1)[-1] == key:
            return any(_same_value(str(have), v) for v in values)
    return False


def select(
    rows: list[Row], filters: list[tuple[str, list[str]]], since: float | None = None
) -> list[Row]:
    """The rows every filter accepts (and that ended at or after ``since``). A key that is
    neither a column nor a swept key of any indexed run is an error naming the keys there are."""
    swept: set[str] = set()
    if any(key not in FILTER_KEYS for key, _ in filters):
        for row in rows:
            for name in axes_of(row):
                swept |= {name, name.rsplit(".", 1)[-1]}
    for key, values in filters:
        if key not in FILTER_KEYS and key not in swept:
            sweeps = ", ".join(sorted(swept)) or "none indexed"
            raise AblateError(
                f"unknown filter key {key!r}; filter by {', '.join(FILTER_KEYS)}, or by a swept "
                f"key ({sweeps})"
            )
        if key == "reused" and any(
            v.lower() not in ("yes", "no", "true", "false", "1", "0") for v in values
        ):
            raise AblateError(f"reused={','.join(values)}: use reused=yes or reused=no")
        if key == "seed" and not all(re.fullmatch(r"\d+", v) for v in values):
            raise AblateError(f"seed={','.join(values)}: seeds are non-negative integers")
    if since is None and not filters:
        return rows
    out = []
    for row in rows:
        if since is not None and (row["ended_ts"] is None or row["ended_ts"] < since):
            continue
        if all(_matches(row, k, v) for k, v in filters):
            out.append(row)
    return out


def _run_name(row: Row) -> str:
    return f"{row['matrix']}/{row['job']}"


def cell(row: Row, key: str) -> str:
    value = row.get(key)
    if key == "run":
        return _run_name(row)
    if key == "axes":
        return (
            " ".join(f"{k.rsplit('.', 1)[-1]}={v}" for k, v in sorted(axes_of(row).items())) or "-"
        )
    if key == "identity":
        return identity.short(value) + ("*" if row.get("mixed") else "")
    if key == "final_val_loss":
        return "-" if value is None else f"{value:.4f}"
    if key == "ended":
        ts = row.get("ended_ts")
        return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))
    if key == "reused_from":
        return "-" if not value else "/".join(str(value).rstrip("/").split("/")[-2:])
    return "-" if value is None else str(value)


def format_table(rows: list[Row]) -> str:
    header = [title for _, title in TABLE_COLUMNS]
    keys = [key for key, _ in TABLE_COLUMNS]
    body = [[cell(r, key) for key in keys] for r in rows]
    widths = [max([len(h)] + [len(line[i]) for line in body]) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in body
    ]
    return "\n".join(lines) + "\n"


def as_plain(row: Row) -> dict[str, Any]:
    out = {k: row.get(k) for k in CSV_COLUMNS if k != "run"}
    out["run"] = _run_name(row)
    out["axes"] = axes_of(row)
    out["mixed"] = bool(row.get("mixed"))
    return {k: out[k] for k in CSV_COLUMNS}


def format_json(rows: list[Row]) -> str:
    return json.dumps([as_plain(r) for r in rows], indent=2) + "\n"


def format_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for row in rows:
        plain = as_plain(row)
        plain["axes"] = json.dumps(plain["axes"], sort_keys=True) if plain["axes"] else ""
        w.writerow(["" if plain[k] is None else plain[k] for k in CSV_COLUMNS])
    return buf.getvalue()
