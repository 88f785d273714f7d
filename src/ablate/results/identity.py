"""identity.json and reused.json: a run's stored identity, and where a reused job's files came from.

``identity.json`` (docs/results-format.md, "identity.json") holds a digest and the components it
is the hash of: ``config``, ``model_code``, ``code``, ``data``, ``hardware`` (COMPONENTS). This
module is the format: the canonical JSON a digest hashes, the check that a stored record is whole
(a record edited by hand or torn is a named problem, never a trusted identity), the typed
``RunIdentity`` that ``read_job`` puts in ``JobRecord.run_identity``, and the comparison of two
identities input by input (``differences``), which is how a reader says *what* differs between
two runs of one step and seed. Making a record from a config and a model is ``ablate.identity``'s
and ``ablate.provenance``'s job.

``reused.json`` is written into a job directory filled from an earlier run instead of training
(``ablate.matrix.reuse``): ``ReusedFrom``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ablate.results.files import ResultsFormatError, read_json
from ablate.results.job import JobDir

IDENTITY_FORMAT_VERSION = 1
"""identity.json's own ``format_version``."""
COMPONENTS = ("config", "model_code", "code", "data", "hardware")
"""The inputs that make an identity, in the order differences are named."""
COMPONENT_NAMES = {
    "config": "config keys",
    "model_code": "model files",
    "code": "code version",
    "data": "data",
    "hardware": "hardware",
}
"""Each component as a reader names it."""


def canonical(obj: Any) -> str:
    """The one JSON text a value hashes as: sorted keys, no spaces, NaN refused."""
    return json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    )


def digest(components: Mapping[str, Any]) -> str:
    """sha256 (hex) of the canonical JSON of the components: the identity."""
    return hashlib.sha256(canonical(components).encode("ascii")).hexdigest()


def short(identity: str | None) -> str:
    """The first 12 hex digits, as listings print an identity ("-" for none)."""
    return identity[:12] if identity else "-"


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


def read_identity(jd: JobDir) -> tuple[dict[str, Any] | None, str | None]:
    """(record, problem): the job's identity.json as stored, or None and why (missing: no
    problem, older runs have none). Never raises for a damaged file."""
    path = jd.identity
    if not path.is_file():
        return None, None
    try:
        obj = read_json(path)
    except ResultsFormatError as e:
        return None, str(e)
    except (OSError, ValueError) as e:  # unreadable, or bytes that are not UTF-8
        return None, f"{path}: unreadable ({type(e).__name__}); the file is damaged"
    why = check_record(obj)
    if why:
        return None, f"{path}: {why}"
    return obj, None


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


def _components(record_or_components: Mapping[str, Any]) -> Mapping[str, Any]:
    comps = record_or_components.get("components")
    return comps if isinstance(comps, dict) else record_or_components


def _dict_diff(
    comp: str, va: Mapping[str, Any], vb: Mapping[str, Any], prefix: str
) -> list[Difference]:
    return [
        Difference(comp, f"{prefix}{key}", va.get(key), vb.get(key))
        for key in sorted(set(va) | set(vb))
        if va.get(key) != vb.get(key)
    ]


def differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[Difference]:
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
            key = "class (device x world size)" if comp == "hardware" else comp
            out.append(Difference(comp, key, va, vb))
    return out


def describe_differences(diffs: Sequence[Difference], limit: int = 4) -> str:
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


@dataclass(frozen=True)
class RunIdentity:
    """A job's identity as identity.json stores it, checked whole (``check_record``)."""

    digest: str
    """The identity: sha256 of the canonical JSON of ``components``."""
    components: dict[str, Any]
    """{component: value} for each of COMPONENTS (docs/results-format.md, "identity.json")."""
    mixed: bool = False
    """Resumed under another identity than it started with: none of them, never reused."""
    computed: str | None = None
    """ISO time the trainer computed it (its latest start)."""
    previous: tuple[str, ...] = ()
    """Digests of earlier starts under other identities (``mixed`` runs)."""

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> RunIdentity:
        """From a record ``check_record`` accepted."""
        previous = record.get("previous")
        computed = record.get("computed")
        return cls(
            digest=str(record["identity"]),
            components={c: record["components"][c] for c in COMPONENTS},
            mixed=record.get("mixed") is True,
            computed=computed if isinstance(computed, str) else None,
            previous=tuple(
                str(p["identity"])
                for p in (previous if isinstance(previous, list) else [])
                if isinstance(p, dict) and isinstance(p.get("identity"), str)
            ),
        )

    @property
    def short(self) -> str:
        return short(self.digest)

    def differences(self, other: RunIdentity) -> list[Difference]:
        """Every input in which ``other`` differs (empty: the same identity)."""
        return differences(self.components, other.components)

    def describe_differences(self, other: RunIdentity, limit: int = 4) -> str:
        """One line naming what differs from ``other`` ("same identity" when nothing does)."""
        return describe_differences(self.differences(other), limit)


def load_identity(jd: JobDir) -> tuple[RunIdentity | None, str | None]:
    """(identity, problem) of a job directory: ``read_identity`` typed."""
    record, problem = read_identity(jd)
    return (RunIdentity.from_record(record) if record is not None else None), problem


# --------------------------------------------------------------------------- reused.json


@dataclass(frozen=True)
class ReusedFrom:
    """reused.json: this job was not trained here; its files came from an earlier run."""

    source: str
    """``from``: the job directory the files were copied or linked from."""
    original: str
    """The run that trained them: ``source`` itself, unless ``source`` was reused too."""
    identity: str | None = None
    """The identity both share."""
    reused_at: str | None = None
    """ISO time the files were filled in."""

    def to_dict(self) -> dict[str, Any]:
        """reused.json's object."""
        return {
            "from": self.source,
            "original": self.original,
            "identity": self.identity,
            "reused_at": self.reused_at,
        }


def read_reused(jd: JobDir) -> tuple[ReusedFrom | None, str | None]:
    """(record, problem) of reused.json: None, None for a job that trained itself. Never raises."""
    if not jd.reused.is_file():
        return None, None
    try:
        obj = read_json(jd.reused)
    except ResultsFormatError as e:
        return None, str(e)
    except (OSError, ValueError) as e:  # unreadable, or bytes that are not UTF-8
        return None, f"{jd.reused}: unreadable ({type(e).__name__}); the file is damaged"
    source, original = obj.get("from"), obj.get("original")
    if not isinstance(source, str) or not isinstance(original, str):
        return None, f"{jd.reused}: has no 'from' and 'original' paths; the file is damaged"
    ident, when = obj.get("identity"), obj.get("reused_at")
    return (
        ReusedFrom(
            source=source,
            original=original,
            identity=ident if isinstance(ident, str) else None,
            reused_at=when if isinstance(when, str) else None,
        ),
        None,
    )
