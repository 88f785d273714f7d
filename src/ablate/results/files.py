"""Reading and writing the plain-text files of a results directory: JSON (strict: NaN and infinity
stored as strings), YAML, and numbers read back from them.

Every write that replaces a file goes through ``ablate.atomic`` (temporary file, fsync,
``os.replace``), so a crash leaves either the old or the new version, never a torn one.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ablate.atomic import atomic_write_text
from ablate.errors import AblateError

PathLike = str | os.PathLike[str]


class ResultsFormatError(AblateError):
    """A results file that cannot be read as the documented format."""


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy / torch scalars; a non-finite one is stored as a string too
        return _clean(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _clean(obj: Any) -> Any:
    """NaN/inf are not JSON: store them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)  # "nan", "inf", "-inf"
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=False)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    atomic_write_text(path, to_json(obj, indent=2) + "\n")


def read_json(path: PathLike) -> dict[str, Any]:
    """Read a JSON object; a missing or corrupt file is a ResultsFormatError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFormatError(f"{path}: unreadable ({e})") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ResultsFormatError(
            f"{path}: not valid JSON ({e.msg} at line {e.lineno}); the file is corrupt"
        ) from None
    except (ValueError, RecursionError) as e:  # an integer of 5,000 digits; brackets nested deep
        raise ResultsFormatError(
            f"{path}: not readable as JSON ({type(e).__name__}: {str(e)[:80]}); the file is corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise ResultsFormatError(f"{path}: expected a JSON object, found {type(obj).__name__}")
    return obj


def read_yaml(path: PathLike) -> dict[str, Any]:
    """Read a YAML mapping (a job's config.yaml); missing or corrupt is a ResultsFormatError.

    Plain YAML on purpose: readers of old results must not depend on today's config schema.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ResultsFormatError(f"{path}: file is missing") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsFormatError(f"{path}: unreadable ({e})") from None
    # The C loader is ~10x faster on big matrices.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        obj = yaml.load(text, Loader=loader)
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ResultsFormatError(f"{path}: not valid YAML{at}; the file is corrupt") from None
    except (ValueError, RecursionError) as e:  # a value the loader cannot build; deep nesting
        raise ResultsFormatError(
            f"{path}: not readable as YAML ({type(e).__name__}: {str(e)[:80]}); the file is corrupt"
        ) from None
    if not isinstance(obj, dict):
        raise ResultsFormatError(f"{path}: expected a YAML mapping, found {type(obj).__name__}")
    return obj


def as_float(value: Any) -> float | None:
    """A stored number back as float; "nan"/"inf" strings (see _clean) become float nan/inf."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    raise ResultsFormatError(f"expected a number, found {value!r}")
