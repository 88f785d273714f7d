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

The file's format (canonical JSON, the check of a stored record, ``RunIdentity``, ``differences``)
belongs to the results format, ``ablate.results.identity``, re-exported here; ``results.read_job``
gives each job's ``RunIdentity`` to every reader. This module makes records (a job's start, a
resume under another identity) and describes them; computing the components from a config, a
model and a dataset is ``ablate.provenance``'s job.
"""

from __future__ import annotations

import json
from typing import Any

from ablate import results
from ablate.results.identity import (
    COMPONENT_NAMES,
    COMPONENTS,
    Difference,
    RunIdentity,
    canonical,
    check_record,
    describe_differences,
    differences,
    digest,
    load_identity,
    read_identity,
    short,
)
from ablate.results.identity import IDENTITY_FORMAT_VERSION as FORMAT_VERSION

__all__ = [
    "COMPONENTS",
    "COMPONENT_NAMES",
    "FORMAT_VERSION",
    "Difference",
    "RunIdentity",
    "canonical",
    "check_record",
    "describe_components",
    "describe_differences",
    "differences",
    "digest",
    "job_differences",
    "load_identity",
    "make_record",
    "merge_start",
    "read_identity",
    "short",
]


def make_record(components: dict[str, Any]) -> dict[str, Any]:
    """identity.json's content for these components (every key of COMPONENTS present)."""
    missing = [c for c in COMPONENTS if c not in components]
    if missing:
        raise ValueError(f"identity components missing: {missing}")
    # A copy, through the canonical JSON: the record never shares a dict with the caller.
    comps: dict[str, Any] = json.loads(canonical({c: components[c] for c in COMPONENTS}))
    return {
        "format_version": FORMAT_VERSION,
        "identity": digest(comps),
        "components": comps,
        "computed": results.now_iso(),
        "mixed": False,
        "previous": [],
    }


def merge_start(stored: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
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


def describe_components(record: dict[str, Any] | None) -> list[str]:
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


def job_differences(
    a: results.JobDir, b: results.JobDir
) -> tuple[list[Difference] | None, str | None]:
    """(differences, None) between two job directories' stored identities, or (None, why) when
    either has none or a damaged one (then nothing can be said about drift: not the same).
    A reader holding ``JobRecord``s compares their ``run_identity`` instead."""
    idents: list[RunIdentity] = []
    for jd in (a, b):
        ident, problem = load_identity(jd)
        if ident is None:
            return (
                None,
                problem or f"{jd.path}: no {results.IDENTITY} (recorded since identities exist)",
            )
        idents.append(ident)
    return idents[0].differences(idents[1]), None
