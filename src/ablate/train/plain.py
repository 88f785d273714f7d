"""Values made fit for JSON and for one line of a record (no ablate imports: every part uses it)."""

from __future__ import annotations

from typing import Any

ERROR_CHARS = 2000


def plain(obj: Any) -> Any:
    """Tensors and numpy scalars inside dicts/lists as plain Python numbers (for JSON)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (int, float, str)):
        return obj.item()
    return obj


def tail(text: str, n: int = ERROR_CHARS) -> str:
    """The end of ``text``, at most ``n`` characters (a traceback's last lines say the most)."""
    return text if len(text) <= n else "..." + text[-(n - 3) :]
