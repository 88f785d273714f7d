"""Shared fixtures: one tokenized embedded corpus per test session, repository paths."""

from __future__ import annotations

import importlib.util
import os
import signal
import sys
import threading
from pathlib import Path

import pytest
from helpers import tiers, workers

REPO = Path(__file__).resolve().parents[1]


# Before anything loads torch: the thread count is read when it loads.
workers.share_the_cores()


@pytest.hookimpl(tryfirst=True)  # before -m "not slow" deselects
def pytest_collection_modifyitems(config, items) -> None:
    """The tests in tests/slow_tests.txt are marked slow (``helpers.tiers``); under pytest-xdist
    the longest start first (every worker collects, and orders, the same list)."""
    problem = tiers.mark_listed_slow(items, config.args)
    if problem:
        raise pytest.UsageError(problem)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        tiers.longest_first(items)


if importlib.util.find_spec("xdist") is not None:

    @pytest.hookimpl(optionalhook=True)  # xdist installed but switched off (-p no:xdist)
    def pytest_xdist_make_scheduler(config, log):
        """Under pytest-xdist the real-Slurm tests run in one worker (``helpers.workers``)."""
        return workers.make_scheduler(config, log)


@pytest.fixture(scope="session", autouse=True)
def _heap():
    """Each test process allocates as the tool's own processes do (ablate.heap): the probes and
    jobs that tests run in-process reuse freed memory instead of faulting in fresh pages."""
    from ablate import heap

    heap.reuse_freed_memory()
    yield


@pytest.fixture(scope="session", autouse=True)
def _data_cache(tmp_path_factory):
    """Tokenize the embedded corpus once per session, in a temporary cache (never the user's)."""
    if "ABLATE_DATA_CACHE" not in os.environ or os.environ.get("ABLATE_TEST_KEEP_CACHE") != "1":
        os.environ["ABLATE_DATA_CACHE"] = str(tmp_path_factory.mktemp("data-cache"))
    yield os.environ["ABLATE_DATA_CACHE"]


@pytest.fixture(scope="session", autouse=True)
def _causality_cache(tmp_path_factory):
    """One causality cache for the whole session (never the user's): a model config many tests
    share is probed once per suite run. A test that counts probes points at its own folder.
    Under pytest-xdist the workers share one folder beside their own (the cache's writes are
    atomic), so a model is not probed once per worker."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        path = tmp_path_factory.getbasetemp().parent / "causality-cache"
        path.mkdir(exist_ok=True)
    else:
        path = tmp_path_factory.mktemp("causality-cache")
    os.environ["ABLATE_CAUSALITY_CACHE"] = str(path)
    yield os.environ["ABLATE_CAUSALITY_CACHE"]


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
def _fixed_plan_timing(request, monkeypatch):
    """`--plan` times a few real training steps of each distinct model (ablate.matrix.timing):
    about half of a smoke plan's seconds on 2 cores. A test of anything else gets a fixed timing
    on the device the plan chose; the tests of the timing itself are marked ``real_timing``."""
    from ablate.matrix import timing

    # an idle machine, whatever the load of the one running the tests (its caveat has its tests)
    monkeypatch.setattr(timing, "machine_load", lambda: (0.0, 2))
    if request.node.get_closest_marker("real_timing"):
        yield
        return
    import torch

    def fixed(job, device: str) -> timing.StepTiming:
        return timing.StepTiming(
            device=device,
            threads=torch.get_num_threads(),
            micro_step_s=0.05,
            optimizer_s=0.01,
            eval_tokens_per_s=100_000.0,
        )

    monkeypatch.setattr(timing, "time_model", fixed)
    yield


def _registries():
    from models import load_components, registry

    load_components()  # the built-in names are registered once per process: keep them
    return registry.REGISTRY, registry.ATTENTION, registry.MLPS


def _restore_registries(before: tuple[list[dict], set[str]]) -> None:
    """Back to ``before`` (tables, module names); a module imported since then whose names
    leave also leaves ``sys.modules``, so a later test that loads that plugin imports it again
    and gets its names back."""
    tables, modules = before
    for table, old in zip(_registries(), tables):
        for name in set(table) - set(old):
            module = getattr(table[name], "__module__", None) or ""
            if module not in modules and module.split(".")[0] not in ("models", "ablate"):
                sys.modules.pop(module, None)
        table.clear()
        table.update(old)


def _snapshot() -> tuple[list[dict], set[str]]:
    return [dict(t) for t in _registries()], set(sys.modules)


@pytest.fixture(scope="module", autouse=True)
def _model_registries_per_module():
    """What a module-scoped fixture registered (a matrix run in-process while the module's
    fixtures set up loads its plugins) is gone when the module ends."""
    before = _snapshot()
    yield
    _restore_registries(before)


@pytest.fixture(autouse=True)
def _model_registries():
    """A test that loads a plugin (its modules register components) leaves the registries as it
    found them, so no other test sees its names (an error lists every registered name)."""
    before = _snapshot()
    yield
    _restore_registries(before)


_SIGNALS = [
    getattr(signal, n)
    for n in ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")
    if hasattr(signal, n)
]


@pytest.fixture(autouse=True)
def _signal_handlers():
    """Handlers a test installs in this process (a job entry point run in-process catches stop
    signals for good) are undone after it: a later test's worker pool, forked with a handler that
    only records SIGTERM, could not be terminated."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    before = {s: signal.getsignal(s) for s in _SIGNALS}
    yield
    for s, handler in before.items():
        if handler is not None and signal.getsignal(s) is not handler:
            signal.signal(s, handler)
