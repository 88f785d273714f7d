"""Shared fixtures: one tokenized embedded corpus per test session, repository paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Tokenize the embedded corpus once per session, in a temporary cache (never the user's)."""
    if "ABLATE_DATA_CACHE" not in os.environ or os.environ.get("ABLATE_TEST_KEEP_CACHE") != "1":
        os.environ["ABLATE_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield os.environ["ABLATE_DATA_CACHE"]


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _runs_index(tmp_path_factory, monkeypatch):
    """Every test gets its own runs index (never the user's, and never another test's runs to
    reuse), outside any folder a test uses as its results root."""
    path = tmp_path_factory.mktemp("runs-index") / "runs.sqlite"
    monkeypatch.setenv("ABLATE_RUNS_INDEX", str(path))
    yield path


@pytest.fixture(autouse=True)
def _model_registries():
    """A test that loads a plugin (its modules register components) leaves the registries as it
    found them, so no other test sees its names (an error lists every registered name)."""
    from models import load_components, registry

    load_components()  # the built-in names are registered once per process: keep them
    tables = (registry.REGISTRY, registry.ATTENTION, registry.MLPS)
    saved = [dict(t) for t in tables]
    yield
    for table, before in zip(tables, saved):
        table.clear()
        table.update(before)
