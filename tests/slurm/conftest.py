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

import os

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
    # The two-node cluster first: ``request.fixturenames`` also lists the fixtures others fetched
    # during this test's setup, and the session's first test sets up ``background``, which fetches
    # ``slurm_cluster``; the two-node tests, run first, then got the single-node cluster.
    names = [n for n in ("slurm_two_nodes", "slurm_cluster") if n in request.fixturenames]
    if not names and (getattr(request.node, "originalname", None) or request.node.name) in (
        registered()
    ):
        names = ["slurm_cluster"]  # a background test's job runs on the single-node cluster
    if names:
        cluster = request.getfixturevalue(names[0])
        monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])
        request.node.stash[_CONF] = cluster.env["SLURM_CONF"]


_CONF = pytest.StashKey[str]()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """The test's own cluster again when its body starts: a cluster that comes up while the
    test's fixtures are set up points ``os.environ`` at itself. (The two-node time-limit test,
    run first of the folder, asked the single-node cluster about its job, which that cluster does
    not have, and recorded it ended while it ran: CI, stop 36.)"""
    conf = item.stash.get(_CONF, None)
    if conf is not None and os.environ.get("SLURM_CONF") != conf:
        print(f"[slurm conftest] SLURM_CONF named {os.environ.get('SLURM_CONF')}; now {conf}")
        os.environ["SLURM_CONF"] = conf  # monkeypatch's teardown puts the old value back
    yield
