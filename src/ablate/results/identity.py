"""A job directory's record of where its run came from: ``reused.json`` (a job filled from an
earlier run instead of training, ``ablate.matrix.reuse``). The run's identity itself is
``identity.json`` (``ablate.identity``)."""

from __future__ import annotations

from typing import Any

from ablate.results.files import ResultsFormatError, read_json
from ablate.results.job import JobDir


def read_reused(jd: JobDir) -> tuple[dict[str, Any] | None, str | None]:
    """(record, problem) of reused.json: None, None for a job that trained itself. The record's
    ``from`` is the directory the files came from, ``original`` the run that trained them (the
    same unless ``from`` was itself reused), ``identity`` the identity both share. Never raises."""
    if not jd.reused.is_file():
        return None, None
    try:
        obj = read_json(jd.reused)
    except ResultsFormatError as e:
        return None, str(e)
    except (OSError, ValueError) as e:  # unreadable, or bytes that are not UTF-8
        return None, f"{jd.reused}: unreadable ({type(e).__name__}); the file is damaged"
    if not isinstance(obj.get("from"), str) or not isinstance(obj.get("original"), str):
        return None, f"{jd.reused}: has no 'from' and 'original' paths; the file is damaged"
    return obj, None
