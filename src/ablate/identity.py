"""A run's identity: what determines its result, as one digest and the components it is made of.

Two jobs with the same identity are the same experiment: the same resolved config (paths and the
settings of the matrix around it left out), the same model code (by content), the same training
code version, the same data, and in time-box mode the same hardware class (equal time on other
hardware is other work). A finished run is reused only for a job of exactly its identity, and the
components are stored next to the digest so that two runs that differ can say *what* differs.

``identity.json`` (one per job directory, written by the trainer when the job starts; file name in
``ablate.results``; documented in docs/results-format.md)::

    {"format_version": 1,
     "identity": "<sha256 of the canonical JSON of components>",
     "components": {
        "config": {"model.n_layer": 12, "optim.lr": 0.0006, ...},     # dotted keys -> values
        "model_code": {"models.gpt2": "<sha256>", "my_attention": "<sha256>", ...},
        "code": {"git_sha": "...", "src_changes": "<sha256>"|null}  or  {"source_sha256": "..."},
        "data": {"shards": {"<file>": "<sha256>", ...}, "val_shard": "<file>",
                 "val_fingerprint": "<16 hex>"},
        "hardware": {"device": "NVIDIA H100 80GB HBM3", "world_size": 4} or null (iteration mode)},
     "computed": "<ISO time>", "mixed": false, "previous": [...]}

``mixed`` is true when the job was resumed under another identity than it started with (code
edited between a stop and ``resume=``): such a run is none of them and is never reused.

This module only holds the record and compares records (core: the report may use it); computing
the components from a config, a model and a dataset is ``ablate.provenance``'s job.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ablate import results

FORMAT_VERSION = 1
COMPONENTS = ("config", "model_code", "code", "data", "hardware")
"""The inputs that make an identity, in the order differences are named."""

COMPONENT_NAMES = {
    "config": "config keys",
    "model_code": "model files",
    "code": "code version",
    "data": "data",
    "hardware": "hardware",
}


def canonical(obj: Any) -> str:
    """The one JSON text a value hashes as: sorted keys, no spaces, NaN refused."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def digest(components: dict) -> str:
    """sha256 (hex) of the canonical JSON of the components: the identity."""
    return hashlib.sha256(canonical(components).encode("ascii")).hexdigest()


def short(identity: str | None) -> str:
    """The first 12 hex digits, as listings print an identity ("-" for none)."""
    return identity[:12] if identity else "-"


def make_record(components: dict) -> dict:
    """identity.json's content for these components (every key of COMPONENTS present)."""
    missing = [c for c in COMPONENTS if c not in components]
    if missing:
        raise ValueError(f"identity components missing: {missing}")
    # A copy, through the canonical JSON: the record never shares a dict with the caller.
    components = json.loads(canonical({c: components[c] for c in COMPONENTS}))
    return {
        "format_version": FORMAT_VERSION,
        "identity": digest(components),
        "components": components,
        "computed": results.now_iso(),
        "mixed": False,
        "previous": [],
    }


def merge_start(stored: dict | None, new: dict) -> dict:
    """The record a job writes when it (re)starts: ``new``, remembering earlier starts whose
    identity differed (then the run is ``mixed``: trained under two identities, reused by none)."""
    if not stored or not isinstance(stored.get("identity"), str):
        return new
    previous = [p for p in stored.get("previous") or [] if isinstance(p, dict)]
    if stored["identity"] != new["identity"]:
        previous.append(
            {
                "identity": stored["identity"],
                "components": stored.get("components"),
                "computed": stored.get("computed"),
            }
        )
    out = dict(new)
    out["previous"] = previous
    out["mixed"] = bool(stored.get("mixed")) or any(
        p.get("identity") != new["identity"] for p in previous
    )
    return out


def check_record(obj: Any) -> str | None:
    """Why a parsed identity.json cannot be trusted, or None: a wrong shape, a component
    missing, or a digest that is not the hash of its components (edited by hand, torn)."""
    if not isinstance(obj, dict):
        return f"is {type(obj).__name__}, not an object"
    ident, comps = obj.get("identity"), obj.get("components")
    if not isinstance(ident, str) or len(ident) != 64:
        return "has no 64-digit 'identity'"
    if not isinstance(comps, dict):
        return "has no 'components' object"
    missing = [c for c in COMPONENTS if c not in comps]
    if missing:
        return f"lacks component(s) {', '.join(missing)}"
    try:
        actual = digest({c: comps[c] for c in COMPONENTS})
    except (TypeError, ValueError):
        return "has components that are not plain JSON"
    if actual != ident:
        return "has an 'identity' that is not the hash of its components (edited or damaged)"
    return None


def read_identity(jd: results.JobDir) -> tuple[dict | None, str | None]:
    """(record, problem): the job's identity.json, or None and why (missing: no problem, older
    runs have none). Never raises for a damaged file."""
    path = jd.identity
    if not path.is_file():
        return None, None
    try:
        obj = results.read_json(path)
    except results.ResultsFormatError as e:
        return None, str(e)
    except (OSError, ValueError) as e:  # unreadable, or bytes that are not UTF-8
        return None, f"{path}: unreadable ({type(e).__name__}); the file is damaged"
    why = check_record(obj)
    if why:
        return None, f"{path}: {why}"
    return obj, None


def describe_components(record: dict | None) -> list[str]:
    """Lines naming an identity's components, indented (``runs show``, ``--cfg job``)."""
    if not record:
        return ["  (no identity.json: a run from before identities were recorded)"]
    comps = record["components"]
    lines = []
    config = comps.get("config") or {}
    lines.append(f"  config      {len(config)} keys")
    code = comps.get("model_code") or {}
    lines.append(
        "  model code  "
        + (", ".join(f"{m} {short(h)}" for m, h in code.items()) or "none recorded")
    )
    ver = comps.get("code") or {}
    if "git_sha" in ver:
        changes = ver.get("src_changes")
        lines.append(
            f"  code        git {str(ver['git_sha'])[:12]}"
            + (f" + uncommitted changes to src/ {short(changes)}" if changes else " (src/ clean)")
        )
    else:
        lines.append(f"  code        installed source {short(ver.get('source_sha256'))}")
    data = comps.get("data") or {}
    shards = data.get("shards") or {}
    lines.append(
        f"  data        {len(shards)} shard(s) (validation: {data.get('val_shard')}), "
        f"validation fingerprint {data.get('val_fingerprint')}"
    )
    hw = comps.get("hardware")
    lines.append(
        "  hardware    "
        + (
            f"{hw.get('device')} x {hw.get('world_size')} (time box)"
            if isinstance(hw, dict)
            else "not part of it (iteration budget)"
        )
    )
    return lines


# --------------------------------------------------------------------------- naming differences


@dataclass(frozen=True)
class Difference:
    """One input two identities do not share: its component, the key within it (a config key,
    a model module, a shard, ...) and both sides' values (None: absent on that side)."""

    component: str
    key: str
    a: Any
    b: Any

    def __str__(self) -> str:
        return f"{self.component} {self.key}: {_show(self.a)} vs {_show(self.b)}"


def _show(value: Any) -> str:
    if value is None:
        return "absent"
    if isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value):
        return value[:12]  # a hash: its prefix says enough
    text = value if isinstance(value, str) else canonical(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _components(record_or_components: dict) -> dict:
    comps = record_or_components.get("components")
    return comps if isinstance(comps, dict) else record_or_components


def differences(a: dict, b: dict) -> list[Difference]:
    """Every input in which two stored identities (records or their components) differ, in the
    order of COMPONENTS; empty when they are the same identity."""
    ca, cb = _components(a), _components(b)
    out: list[Difference] = []
    for comp in COMPONENTS:
        va, vb = ca.get(comp), cb.get(comp)
        if va == vb:
            continue
        if comp == "data" and isinstance(va, dict) and isinstance(vb, dict):
            out += _dict_diff(comp, va.get("shards") or {}, vb.get("shards") or {}, "shard ")
            for key in sorted((set(va) | set(vb)) - {"shards"}):
                if va.get(key) != vb.get(key):
                    out.append(Difference(comp, key, va.get(key), vb.get(key)))
        elif isinstance(va, dict) and isinstance(vb, dict) and comp != "hardware":
            out += _dict_diff(comp, va, vb, "")
        else:
            out.append(Difference(comp, _whole(comp, va, vb), va, vb))
    return out


def _whole(comp: str, va: Any, vb: Any) -> str:
    if comp == "hardware":
        return "class (device x world size)"
    return comp


def _dict_diff(comp: str, va: dict, vb: dict, prefix: str) -> list[Difference]:
    return [
        Difference(comp, f"{prefix}{key}", va.get(key), vb.get(key))
        for key in sorted(set(va) | set(vb))
        if va.get(key) != vb.get(key)
    ]


def job_differences(
    a: results.JobDir, b: results.JobDir
) -> tuple[list[Difference] | None, str | None]:
    """(differences, None) between two job directories' stored identities, or (None, why) when
    either has none or a damaged one (then nothing can be said about drift: not the same)."""
    records = []
    for jd in (a, b):
        record, problem = read_identity(jd)
        if record is None:
            return (
                None,
                problem or f"{jd.path}: no {results.IDENTITY} (recorded since identities exist)",
            )
        records.append(record)
    return differences(records[0], records[1]), None


def describe_differences(diffs: list[Difference], limit: int = 4) -> str:
    """One line naming what differs, grouped by component: ``config keys: optim.lr (0.0006 vs
    0.001); model files: models.gpt2; code version: git_sha (1a2b3c4d5e6f vs ...)``."""
    if not diffs:
        return "same identity"
    parts = []
    for comp in COMPONENTS:
        mine = [d for d in diffs if d.component == comp]
        if not mine:
            continue
        shown = []
        for d in mine[:limit]:
            if comp == "model_code":
                shown.append(d.key)  # the module; its two hashes say nothing to a reader
            else:
                shown.append(f"{d.key} ({_show(d.a)} vs {_show(d.b)})")
        more = f" and {len(mine) - limit} more" if len(mine) > limit else ""
        parts.append(f"{COMPONENT_NAMES[comp]}: {', '.join(shown)}{more}")
    return "; ".join(parts)
