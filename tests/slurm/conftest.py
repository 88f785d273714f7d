"""Fixtures of the real-Slurm tests: throw-away clusters, each started once per session when a
selected test needs it: ``slurm_cluster`` (this host as the one node) and ``slurm_two_nodes``
(two nodes in network namespaces of this host; tests/slurm/test_multinode_slurm.py).

The clusters (``tests/slurm_cluster.py``) skip the tests when Slurm is not installed, and fail
them instead when the environment variable ``CI`` is set. Requeue tests start their jobs at the
beginning of the session (``slurm_background.py``) so that their waiting overlaps other tests.
Under pytest-xdist every test of this folder runs in one worker (``tests/helpers/workers.py``):
a worker's session starts its own clusters, and two clusters on one host at once break each other.
"""

from __future__ import annotations

import pytest
from slurm_background import Background, registered  # noqa: E402
from slurm_cluster import slurm_cluster, slurm_two_nodes  # noqa: E402,F401  (session fixtures)


@pytest.fixture(scope="session", autouse=True)
def background(request, tmp_path_factory) -> Background:
    """Starts the selected tests' background jobs on the cluster before the first test runs."""
    selected = {getattr(item, "originalname", None) or item.name for item in request.session.items}
    bg = Background(request, tmp_path_factory)
    for name in registered():
        if name in selected:
            bg.start(name)
    return bg


@pytest.fixture(autouse=True)
def _slurm_conf_of_the_test(request, monkeypatch):
    """``SLURM_CONF`` names the cluster the test uses (``slurm_cluster`` or ``slurm_two_nodes``,
    asked for directly or through its fixtures, or the one a background job of the test runs
    on): with both clusters up, ``os.environ`` names the
    one started last, and the test's matrix would submit to the other one."""
    names = [n for n in ("slurm_cluster", "slurm_two_nodes") if n in request.fixturenames]
    if not names and (getattr(request.node, "originalname", None) or request.node.name) in (
        registered()
    ):
        names = ["slurm_cluster"]  # a background test's job runs on the single-node cluster
    if names:
        cluster = request.getfixturevalue(names[0])
        monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
