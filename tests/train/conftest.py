"""Fixtures of the trainer tests; their helpers live in tests/helpers/train_helpers.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers.train_helpers import make_job  # noqa: E402


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Path:
    """One uninterrupted 1-process run of TINY (in-process), shared by the comparison tests."""
    from ablate.train import run_job

    job = make_job(tmp_path_factory.mktemp("reference"), "ref")
    result = run_job(job)
    assert result["status"] == "completed", result
    return job
