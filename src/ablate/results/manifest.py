"""matrix.json, the manifest of a matrix (docs/results-format.md, "matrix.json"), and finding the
matrix and job directories a reader is pointed at."""

from __future__ import annotations

import glob
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ablate.errors import AblateError
from ablate.results.files import PathLike, ResultsFormatError, atomic_write_json, read_json
from ablate.results.job import JobDir
from ablate.results.names import (
    CONFIG,
    FORMAT_VERSION,
    MANIFEST,
    MATRIX_PREFIX,
    PENDING,
    STATUSES,
    SUMMARY,
    is_matrix_dir,
    now_iso,
    sanitize_name,
)


class Manifest:
    """The matrix manifest: which jobs exist, with what overrides, and how each one ended.

    Rewritten atomically on every change, so ``matrix.json`` is always current and whole.
    """

    def __init__(self, path: PathLike, data: dict[str, Any]):
        self.path = Path(path)
        self.data = data
        self.problems: list[str] = []  # entries skipped on load, one line each
        self._unusable: list[Any] = []  # kept as they were when the file is rewritten
        self.readonly = False  # a reader that must not write (another process holds the lock)

    @classmethod
    def create(cls, matrix_dir: PathLike, **fields: Any) -> Manifest:
        data = {"format_version": FORMAT_VERSION, "created": now_iso(), "jobs": []}
        data.update(fields)
        manifest = cls(Path(matrix_dir) / MANIFEST, data)
        manifest.save()
        return manifest

    @classmethod
    def load(cls, matrix_dir: PathLike) -> Manifest:
        matrix_dir = Path(matrix_dir)
        if not matrix_dir.is_dir():
            raise ResultsFormatError(f"{matrix_dir}: no such directory")
        if not is_matrix_dir(matrix_dir):
            raise ResultsFormatError(
                f"{matrix_dir} is not a matrix directory (no {MANIFEST}); "
                f"point at a results/{MATRIX_PREFIX}* directory"
            )
        data = read_json(matrix_dir / MANIFEST)
        if not isinstance(data.get("jobs"), list):
            raise ResultsFormatError(
                f"{matrix_dir / MANIFEST}: has no 'jobs' list; the file is corrupt"
            )
        manifest = cls(matrix_dir / MANIFEST, data)
        good: list[dict[str, Any]] = []
        seen: set[str] = set()
        for i, entry in enumerate(data["jobs"]):
            why = _entry_problem(entry, seen)
            if why:
                manifest.problems.append(f"{matrix_dir / MANIFEST}: jobs[{i}] {why}; skipped")
                manifest._unusable.append(entry)
                continue
            for key, default in (("status", PENDING), ("overrides", []), ("attempts", 0)):
                entry.setdefault(key, default)
            for key in ("attempts", "exit_code"):  # counters a writer does arithmetic with
                v = entry.get(key)
                if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
                    manifest.problems.append(
                        f"{matrix_dir / MANIFEST}: job {entry['name']} has {key}={v!r}, "
                        f"not an integer; ignored"
                    )
                    entry[key] = 0 if key == "attempts" else None
            if entry["status"] not in STATUSES:
                manifest.problems.append(
                    f"{matrix_dir / MANIFEST}: job {entry['name']} has unknown status "
                    f"{entry['status']!r}; treated as {PENDING}"
                )
                entry["status"] = PENDING
            seen.add(entry["name"])
            good.append(entry)
        data["jobs"] = good
        return manifest

    @property
    def dir(self) -> Path:
        return self.path.parent

    @property
    def jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = self.data["jobs"]
        return jobs

    def job(self, name: str) -> dict[str, Any]:
        for job in self.jobs:
            if job["name"] == name:
                return job
        raise KeyError(name)

    def job_dir(self, name: str) -> JobDir:
        return JobDir(self.dir / name)

    def add_job(self, name: str, overrides: list[str], **fields: Any) -> dict[str, Any]:
        job = {
            "name": name,
            "overrides": list(overrides),
            "status": PENDING,
            "started": None,
            "ended": None,
            "exit_code": None,
            "error": None,
            "attempts": 0,
        }
        job.update(fields)
        self.jobs.append(job)
        self.save()
        return job

    def update_job(self, name: str, **fields: Any) -> None:
        self.job(name).update(fields)
        self.save()

    def update(self, **fields: Any) -> None:
        self.data.update(fields)
        self.save()

    def save(self) -> None:
        if self.readonly:
            return
        data = self.data
        if self._unusable:
            data = {**self.data, "jobs": self.data["jobs"] + self._unusable}
        atomic_write_json(self.path, data)


def _entry_problem(entry: Any, seen: set[str]) -> str | None:
    """Why a matrix.json job entry cannot be used, or None."""
    if not isinstance(entry, dict):
        return f"is {type(entry).__name__} {str(entry)[:40]!r}, not a job object"
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        return "has no 'name'"
    try:
        ok = sanitize_name(name) == name
    except AblateError:
        ok = False
    if not ok:  # a name like '../x' would read or write outside the matrix directory
        return f"has name {name!r}, which is not a plain directory name"
    if name in seen:
        return f"repeats job {name!r}"
    if "overrides" in entry and not isinstance(entry["overrides"], list):
        return f"({name}) has 'overrides' that is not a list"
    return None


def find_matrix_dirs(patterns: Iterable[str]) -> list[Path]:
    """Expand paths/globs into matrix directories; a pattern matching nothing is an error."""
    found: list[Path] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) or ([pattern] if Path(pattern).exists() else [])
        if not matches:
            raise AblateError(
                f"no directory matches {pattern!r}; run a matrix first or check the path"
            )
        for match in matches:
            p = Path(match)
            if p.is_dir() and p not in found:
                found.append(p)
    if not found:
        raise AblateError("none of the given paths is a directory")
    return found


def iter_job_dirs(matrix_dir: PathLike) -> Iterator[JobDir]:
    """Job directories of a matrix: from the manifest when present, else every subdirectory
    holding a summary.json or config.yaml (so a hand-copied job still reads)."""
    matrix_dir = Path(matrix_dir)
    if is_matrix_dir(matrix_dir):
        for job in Manifest.load(matrix_dir).jobs:
            yield JobDir(matrix_dir / job["name"])
        return
    for sub in sorted(p for p in matrix_dir.iterdir() if p.is_dir()):
        if (sub / SUMMARY).is_file() or (sub / CONFIG).is_file():
            yield JobDir(sub)
