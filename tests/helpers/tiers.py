"""Which cases of a long parametrized grid run in the fast tier (``pytest -m "not slow"``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest


def slow_unless(cases: Iterable[Any], fast: Callable[[Any], bool], label: Callable[[Any], str]):
    """Each case as a pytest param named ``label(case)``; the cases ``fast`` picks run in the fast
    tier, every other one is marked slow (the full run runs them all)."""
    return [
        pytest.param(case, id=label(case), marks=() if fast(case) else pytest.mark.slow)
        for case in cases
    ]
