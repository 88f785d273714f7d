"""The small rules config dataclasses state their fields' limits with, and the base of their enums.

Each config dataclass (``ablate.config``, ``ablate.data.config``) has a ``problems()`` method
right under its fields that returns one ``"key=value must ..."`` line per bad value, built from
these helpers; ``ablate.config.validate_run`` collects them. They live here, in the core layer,
because ``ablate.data.config`` sits beside ``ablate.config`` and may not import it.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any


class Choice(str, Enum):
    """A config value from a fixed list (``hardware.device``, ...). The schema refuses any other
    value at composition. A ``str`` (``device == "cuda"`` holds) that prints as its value, so
    messages, f-strings and JSON say ``cpu``, never ``Device.cpu``; members are named as their
    values, because OmegaConf reads and writes an enum field by member name."""

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


def number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def finite(
    name: str, value: Any, *, low: float = 0.0, strict: bool = True, none_ok: bool = False
) -> list[str]:
    """``value`` is a finite number > low (strict) or >= low; None only when ``none_ok``."""
    if value is None:
        return [] if none_ok else [f"{name}=null must be a number"]
    v = number(value)
    if v is None or not math.isfinite(v):
        return [f"{name}={value} must be a finite number"]
    if (strict and v <= low) or (not strict and v < low):
        return [f"{name}={value} must be {'>' if strict else '>='} {low:g}"]
    return []


def count(name: str, value: Any, *, low: int = 1, none_ok: bool = False) -> list[str]:
    """``value`` is an integer >= low; None only when ``none_ok``."""
    if value is None:
        return [] if none_ok else [f"{name}=null must be an integer"]
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{name}={value!r} must be an integer"]
    if value < low:
        return [f"{name}={value} must be at least {low}"]
    return []


def share(name: str, value: Any, *, closed_low: bool) -> list[str]:
    """``value`` is a finite number in [0, 1) (``closed_low``) or (0, 1)."""
    v = number(value)
    if v is None or not math.isfinite(v) or not (0.0 <= v < 1.0 if closed_low else 0.0 < v < 1.0):
        return [f"{name}={value} must be in {'[0, 1)' if closed_low else '(0, 1)'}"]
    return []


def choice(name: str, value: Any, allowed: tuple[str, ...]) -> list[str]:
    return [] if value in allowed else [f"{name}={value!r} must be one of {', '.join(allowed)}"]
