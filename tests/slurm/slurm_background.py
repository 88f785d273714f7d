"""Jobs that the Slurm tests start at the beginning of the session and check later.

A requeue test spends most of its time waiting for Slurm's clock: slurmctld checks time limits
only every 30 s, and a requeued job waits ``cred_expire`` seconds before it starts again. A test
module registers such a job with ``@in_background("<test name>")`` (on the single-node cluster,
fixture ``slurm_cluster``) or ``@in_background("<test name>", cluster="slurm_two_nodes")``; if
that test is selected, the session fixture ``background`` (tests/slurm/conftest.py) starts the
job before the first test, and the test itself collects it with
``background.result("<test name>")``. Other tests run meanwhile. A starter that raises fails
only its own test; a cluster is started only for selected tests that need it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

_STARTERS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {}


def in_background(test_name: str, cluster: str = "slurm_cluster"):
    """Register ``fn(cluster, tmp_path) -> anything`` to start before the test named ``test_name``,
    on the cluster of the session fixture named ``cluster``."""

    def register(fn):
        _STARTERS[test_name] = (cluster, fn)
        return fn

    return register


class Background:
    def __init__(self, request, tmp_path_factory):
        self.request = request  # to get the cluster fixtures, only when a starter needs one
        self.tmp_path_factory = tmp_path_factory
        self._started: dict[str, tuple[bool, Any]] = {}

    def start(self, test_name: str) -> None:
        if test_name in self._started:
            return
        tmp = self.tmp_path_factory.mktemp(test_name[:40])
        fixture, starter = _STARTERS[test_name]
        try:
            cluster = self.request.getfixturevalue(fixture)
            self._started[test_name] = (True, starter(cluster, tmp))
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
