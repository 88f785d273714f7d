"""Jobs that the Slurm tests start at the beginning of the session and check later.

A requeue test spends most of its time waiting for Slurm's clock: slurmctld checks time limits
only every 30 s, and a requeued job waits ``cred_expire`` seconds before it starts again. A test
module registers such a job with ``@in_background("<test name>")``; if that test is selected,
the session fixture ``background`` (tests/slurm/conftest.py) starts the job on the single-node
cluster (fixture ``slurm_cluster``, started then) before the first test, and the test itself
collects it with ``background.result("<test name>")``. Other tests run meanwhile. A starter that
raises, or a cluster that cannot start, fails (or skips) only its own test.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_STARTERS: dict[str, Callable[[Any, Any], Any]] = {}


def in_background(test_name: str):
    """Register ``fn(cluster, tmp_path) -> anything`` to start before the test named ``test_name``."""

    def register(fn):
        _STARTERS[test_name] = fn
        return fn

    return register


class Background:
    def __init__(self, request, tmp_path_factory):
        self.request = request  # to start the cluster only when a selected test needs it
        self.tmp_path_factory = tmp_path_factory
        self._started: dict[str, tuple[bool, Any]] = {}

    def start(self, test_name: str) -> None:
        if test_name in self._started:
            return
        tmp = self.tmp_path_factory.mktemp(test_name[:40])
        try:
            cluster = self.request.getfixturevalue("slurm_cluster")
            with cluster.active():
                self._started[test_name] = (True, _STARTERS[test_name](cluster, tmp))
        except (Exception, pytest.skip.Exception, pytest.fail.Exception) as e:
            # reported by the test that needs it (a cluster that cannot start skips or fails it),
            # not by every test
            self._started[test_name] = (False, e)

    def result(self, test_name: str) -> Any:
        """What the starter returned (starting it now if it was not started yet)."""
        self.start(test_name)
        ok, value = self._started[test_name]
        if not ok:
            raise value
        return value


def registered() -> list[str]:
    return list(_STARTERS)
