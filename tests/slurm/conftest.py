"""Fixtures of the real-Slurm tests: throw-away clusters, each started once per session when a
selected test needs it: ``slurm_cluster`` (this host as the one node) and ``slurm_two_nodes``
(two nodes in network namespaces of this host; tests/slurm/test_multinode_slurm.py).

The clusters (``tests/slurm_cluster.py``) skip the tests when Slurm is not installed, and fail
them instead when the environment variable ``CI`` is set. Requeue tests start their jobs at the
beginning of the session (``slurm_background.py``) so that their waiting overlaps other tests.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from slurm_background import Background, registered  # noqa: E402
from slurm_cluster import slurm_cluster, slurm_two_nodes  # noqa: E402,F401  (session fixtures)

HERE = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(items) -> None:
    """Every test in this folder runs on one worker under pytest-xdist (``--dist loadgroup``):
    a worker's session starts its own clusters, and two clusters on one host at once break each
    other."""
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.xdist_group("slurm"))


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory) -> Background:
    """Starts the selected tests' background jobs on the cluster before the first test runs."""
    selected = {getattr(item, "originalname", None) or item.name for item in request.session.items}
    bg = Background(request, tmp_path_factory)
    for name in registered():
        if name in selected:
            bg.start(name)
    return bg
