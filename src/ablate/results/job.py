"""One job directory: the paths inside it, its DONE marker and its summary.json."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text
from ablate.results.files import atomic_write_json, read_json
from ablate.results.names import (
    CAUSALITY,
    CHECKPOINT,
    CONFIG,
    DONE,
    ENV,
    FINAL_EVAL,
    FORMAT_VERSION,
    IDENTITY,
    LOG,
    METRICS,
    REUSED,
    SBATCH,
    STAGE,
    STDOUT,
    SUMMARY,
    WEIGHTS,
    now_iso,
)
from ablate.results.summary import SUMMARY_KEYS, JobSummary, load_summary


@dataclass(frozen=True)
class JobDir:
    """Paths inside one job directory."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def env(self) -> Path:
        return self.path / ENV

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def log(self) -> Path:
        return self.path / LOG

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    @property
    def weights(self) -> Path:
        return self.path / WEIGHTS

    @property
    def done(self) -> Path:
        return self.path / DONE

    @property
    def final_eval(self) -> Path:
        return self.path / FINAL_EVAL

    @property
    def sbatch(self) -> Path:
        return self.path / SBATCH

    @property
    def causality(self) -> Path:
        return self.path / CAUSALITY

    @property
    def identity(self) -> Path:
        return self.path / IDENTITY

    @property
    def reused(self) -> Path:
        return self.path / REUSED

    @property
    def stage(self) -> Path:
        return self.path / STAGE

    @property
    def stdout(self) -> Path:
        return self.path / STDOUT

    def is_done(self) -> bool:
        return self.done.is_file()

    def mark_done(self) -> None:
        atomic_write_text(self.done, now_iso() + "\n")

    def read_summary(self) -> dict[str, Any] | None:
        """summary.json as a plain object (None: no file); ResultsFormatError when corrupt.
        Typed and never raising: ``summary_record`` (or ``results.read_job``)."""
        return read_json(self.summary) if self.summary.is_file() else None

    def summary_record(self) -> JobSummary | None:
        """summary.json as a JobSummary; None when it is missing or unreadable (never raises)."""
        return load_summary(self.summary)[0]

    def write_summary(self, summary: JobSummary | Mapping[str, Any]) -> None:
        """Write summary.json atomically: every key of JobSummary (null while unknown), at this
        FORMAT_VERSION. The trainer passes a JobSummary; a plain mapping is written as given
        (its missing keys null), which a read-modify-write of an older file needs."""
        if isinstance(summary, JobSummary):
            full = summary.to_dict()
        else:
            full = {key: None for key in SUMMARY_KEYS}
            full.update(summary)
            full["format_version"] = FORMAT_VERSION
        atomic_write_json(self.summary, full)
