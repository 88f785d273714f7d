"""The cause a job records when another rank of it is gone (ablate.train.distributed.lost_rank).

The end-to-end proof is tests/slurm/test_multinode_slurm.py (a rank on the second node killed
mid-run); these cases pin which errors count as a lost rank, and that the rank and host named are
those of the peer the backend reported, never a guess.
"""

from __future__ import annotations

import pytest
import torch.distributed as dist

from ablate.train.distributed import DistInfo, lost_rank

HOSTS = [("node1", "10.0.0.11"), ("node2", "10.0.0.12")]
TWO = DistInfo(rank=0, world_size=2)
GLOO = (
    "[../third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
    "[10.0.0.12]:11934. This is typically caused by a remote worker crashing."
)


def test_a_closed_connection_names_the_peer_rank_and_its_host():
    msg = lost_rank(RuntimeError(GLOO), TWO, HOSTS, iteration=10)
    assert msg is not None
    assert msg.startswith("lost rank 1 on node2 of this 2-rank job at iteration 10: that process")
    assert "Connection closed by peer [10.0.0.12]:11934" in msg  # the backend's own words kept
    assert "resume" in msg


@pytest.mark.parametrize(
    "exc",
    [
        RuntimeError("NCCL communicator was aborted on rank 0"),
        RuntimeError("[Rank 0] Watchdog caught collective operation timeout: WorkNCCL(...)"),
        RuntimeError("Timed out waiting 900000ms for recv operation to complete"),
        RuntimeError("[pair.cc:598] Connection reset by peer [10.0.0.99]:5"),  # unknown address
        dist.DistBackendError("something the backend said"),
        dist.DistNetworkError("Broken pipe"),
    ],
)
def test_backend_errors_of_a_gone_peer_count_and_list_where_ranks_ran(exc):
    msg = lost_rank(exc, TWO, HOSTS, iteration=3)
    assert msg is not None and msg.startswith("lost another rank of this 2-rank job")
    assert "(ranks ran on node1 (0), node2 (1))" in msg  # no peer address to match: all hosts


def test_two_ranks_behind_one_address_are_both_named():
    hosts = [("a", "10.0.0.1"), ("a", "10.0.0.1"), ("b", "10.0.0.2"), ("b", "10.0.0.2")]
    exc = RuntimeError("Connection closed by peer [10.0.0.2]:1")
    msg = lost_rank(exc, DistInfo(rank=0, world_size=4), hosts)
    assert msg.startswith("lost one of ranks 2, 3 on b of this 4-rank job: that process crashed")
    # a peer on this rank's own host is another rank there, never this one
    msg = lost_rank(RuntimeError("Connection closed by peer [10.0.0.1]:1"), DistInfo(1, 4), hosts)
    assert msg.startswith("lost rank 0 on a of this 4-rank job:")


@pytest.mark.parametrize(
    "exc,info",
    [
        (RuntimeError(GLOO), DistInfo(rank=0, world_size=1)),  # one process: nobody to lose
        (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), TWO),
        (ValueError("Connection closed by peer [10.0.0.12]:1"), TWO),  # not a backend error
        (OSError("No space left on device"), TWO),
        (KeyboardInterrupt(), TWO),
    ],
)
def test_other_errors_are_not_a_lost_rank(exc, info):
    assert lost_rank(exc, info, HOSTS, iteration=1) is None
