"""How pytest-xdist spreads the suite over its workers: the tests of one folder in ``ONE_WORKER``
(the real-Slurm tests) all run in one worker, everything else test by test.

Why not ``@pytest.mark.xdist_group``: xdist's loadgroup passes the group by appending ``@group`` to
each test's node id during collection, and with pytest 9.2's structured node ids that change no
longer takes effect, so the groups are silently ignored (pytest-xdist issue #1386). Here the
controller's scheduler reads the folder from the node id itself, which nothing has to change.

A worker's session starts its own Slurm clusters, and two clusters on one host at once break
each other (one munged socket, one set of ports), so the folder must stay on one worker;
``claim`` makes sure it did: a second worker that starts a cluster fails at once, naming this
module, instead of failing in munged.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ONE_WORKER = ("tests/slurm/",)
"""Node-id prefixes whose tests run in one worker, in the order they were collected."""


def scope_of(nodeid: str) -> str:
    """The unit the scheduler hands to one worker: a folder of ``ONE_WORKER``, else the test."""
    for prefix in ONE_WORKER:
        if nodeid.startswith(prefix):
            return prefix
    return nodeid


def make_scheduler(config, log):
    """The scheduler for ``--dist loadgroup`` (pyproject's addopts); None leaves other modes to
    xdist."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerFolders(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return OneWorkerFolders(config, log)


def claim(shared: Path, what: str) -> str | None:
    """Record that this worker runs ``what`` (in ``shared``, a folder every worker sees); the
    problem, as one line, when another worker already did. Outside xdist: None."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return None
    path = shared / f"{what}.worker"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        other = path.read_text().strip()
        if other == worker:
            return None
        return (
            f"{what}: worker {worker} starts it while worker {other} already did; the tests that "
            "use it must run in one worker (tests/helpers/workers.py, ONE_WORKER)"
        )
    with os.fdopen(fd, "w") as f:
        f.write(worker)
    return None


def share_the_cores() -> int | None:
    """Give this worker its share of the cores; returns the threads set, None if left alone.

    Every worker trains, probes and starts jobs at the same time. torch's default, one thread
    per core in every process, then oversubscribes the cores, and OpenMP threads that spin-wait
    on each other run many times slower: the cpu1h verdict test took 155 s alone and 655 s beside
    a second copy of itself on 2 cores (a fair share would be 310 s). The jobs a worker starts
    inherit its share through OMP_NUM_THREADS (torch reads it when it loads). A value set by
    whoever ran pytest is kept, and without xdist (or with one worker) nothing changes."""
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
    if count < 2 or "OMP_NUM_THREADS" in os.environ:
        return None
    threads = max(1, len(os.sched_getaffinity(0)) // count)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # loaded before conftest (by a plugin): set it there as well
        sys.modules["torch"].set_num_threads(threads)
    return threads
