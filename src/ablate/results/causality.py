"""Causality records: the preflight's record a job starts with (causality.json), summary.json's
"causality" entry, and the one state the report says a job is in (docs/results-format.md,
"causality")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ablate.results.files import atomic_write_json, read_json
from ablate.results.job import JobDir
from ablate.results.names import LEAKED
from ablate.results.summary import JobSummary

# What the report says about a job's causality (causality_state).
CHECKED = "checked"  # preflight passed on the job's model config and the trained weights passed
UNCHECKED = "unchecked"  # preflight=false: the model was never checked before training
# Preflight passed, the trained recheck did not run (yet).
TRAINED_UNCHECKED = "trained weights unchecked"
UNRECORDED = "no causality record"  # results written before format 2, or a summary without the key
CAUSALITY_STATES = (CHECKED, UNCHECKED, TRAINED_UNCHECKED, UNRECORDED, LEAKED)


def write_causality_init(jd: JobDir, record: dict[str, Any] | None) -> None:
    """The matrix runner's preflight record for this job (None: preflight=false), read by the
    trainer into summary.json's "causality"."""
    atomic_write_json(jd.causality, {"init": record, "preflight": record is not None})


def read_causality_init(jd: JobDir) -> dict[str, Any] | None:
    """The preflight record the runner left in the job directory, or None (not checked)."""
    if not jd.causality.is_file():
        return None
    init = read_json(jd.causality).get("init")
    return init if isinstance(init, dict) else None


def causality_entry(
    init: dict[str, Any] | None,
    trained: dict[str, Any] | None = None,
    resume: list[Any] | None = None,
    audits: list[Any] | None = None,
) -> dict[str, Any]:
    """summary.json's "causality": {"init", "trained", "checked", "resume_checks", "audits"}."""
    return {
        "init": init,
        "trained": trained,
        "checked": bool(init is not None and init.get("ok") is True),
        "resume_checks": list(resume or []),
        "audits": list(audits or []),
    }


def causality_records(entry: Any) -> list[dict[str, Any]]:
    """The records of a summary's "causality" entry that are records (init, trained, resumes,
    audits in training; a summary written before audits has none)."""
    if not isinstance(entry, dict):
        return []
    resumes, audits = entry.get("resume_checks"), entry.get("audits")
    found = [
        entry.get("init"),
        entry.get("trained"),
        *(resumes if isinstance(resumes, list) else []),
        *(audits if isinstance(audits, list) else []),
    ]
    return [r for r in found if isinstance(r, dict)]


def causality_state(summary: JobSummary | Mapping[str, Any] | None) -> str:
    """One of CAUSALITY_STATES for a job's summary (None or old format: UNRECORDED)."""
    if summary is None:
        return UNRECORDED
    if isinstance(summary, JobSummary):
        status: Any = summary.status
        c: Any = summary.causality
    else:
        if not summary:
            return UNRECORDED
        status, c = summary.get("status"), summary.get("causality")
    if status == LEAKED:
        return LEAKED
    if not isinstance(c, dict):
        return UNRECORDED
    if any(r.get("ok") is False for r in causality_records(c)):
        return LEAKED
    if not c.get("checked") or not isinstance(c.get("init"), dict):
        return UNCHECKED
    trained = c.get("trained")
    if not isinstance(trained, dict) or trained.get("ok") is not True:
        return TRAINED_UNCHECKED
    return CHECKED
