"""Process-group setup and the few collectives the trainer needs.

A job is distributed when WORLD_SIZE > 1 (torchrun and submitit set RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT) or when ``run_job`` is given ranks explicitly.
NCCL on CUDA, gloo on CPU. With one process every collective is a no-op.

When another rank of the job is gone (its process crashed or was killed, its node or network
went away), a collective fails on the survivors; ``lost_rank`` turns that backend error into one
sentence naming the lost rank and its host, which the trainer records as the job's failure.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import socket
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ablate.errors import ConfigError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    backend: str | None = None
    owns_group: bool = False  # we initialized the group, so we destroy it

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def resolve(
    rank: int | None = None, world_size: int | None = None, local_rank: int | None = None
) -> DistInfo:
    """Ranks from explicit arguments, else from the environment, else a single process."""
    world_size = world_size if world_size is not None else (_env_int("WORLD_SIZE") or 1)
    rank = rank if rank is not None else (_env_int("RANK") or 0)
    if local_rank is None:
        local_rank = _env_int("LOCAL_RANK")
        if local_rank is None:
            local_rank = rank if world_size > 1 else 0
    local_world = _env_int("LOCAL_WORLD_SIZE") or (world_size if world_size > 1 else 1)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not within world size {world_size}")
    return DistInfo(
        rank=rank, world_size=world_size, local_rank=local_rank, local_world_size=local_world
    )


def init(info: DistInfo, device: torch.device, timeout_s: float = 900.0) -> None:
    """Join (or create) the default process group when the job has more than one rank.

    ``timeout_s`` bounds how long a rank waits in a collective for the others (first-iteration
    compile, rank 0 writing a checkpoint): if a rank dies outside torchrun (which stops the other
    ranks itself), the survivors fail after this long instead of hanging.
    """
    if not info.enabled:
        return
    info.backend = "nccl" if device.type == "cuda" else "gloo"
    if dist.is_initialized():
        if dist.get_world_size() != info.world_size:
            raise ConfigError(
                f"a process group of {dist.get_world_size()} ranks already exists, job expects {info.world_size}"
            )
        return
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ConfigError(
                f"world size {info.world_size} needs {var} in the environment; start the job with torchrun "
                f"(python -m torch.distributed.run --standalone --nproc_per_node N -m ablate.train JOB_DIR)"
            )
    kwargs: dict[str, Any] = {}
    if device.type == "cuda":
        kwargs["device_id"] = device
    dist.init_process_group(
        backend=info.backend,
        rank=info.rank,
        world_size=info.world_size,
        timeout=_dt.timedelta(seconds=timeout_s),
        **kwargs,
    )
    info.owns_group = True


def shutdown(info: DistInfo) -> None:
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()
        info.owns_group = False


def all_reduce(tensor: torch.Tensor, op: str, info: DistInfo) -> torch.Tensor:
    """In-place all_reduce ("sum" | "max") when distributed; returns the tensor."""
    if info.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def rank_hosts(info: DistInfo) -> list[tuple[str, str | None]]:
    """(hostname, address) of every rank, in rank order (one all_gather; every rank calls it).

    The address is what the hostname resolves to, which is also the interface gloo uses unless
    GLOO_SOCKET_IFNAME says otherwise: it names a peer in a backend's error message."""
    host = socket.gethostname()
    try:
        addr: str | None = socket.gethostbyname(host)
    except OSError:
        addr = None
    return [tuple(h) for h in all_gather_object((host, addr), info)]


class RankLostError(RuntimeError):
    """A collective failed because another rank of the job is gone."""


# What the backends (gloo, NCCL, the TCP store) say when a peer of a collective went away or
# stopped answering.
_PEER_GONE = re.compile(
    r"connection (?:closed|reset) by peer|broken pipe|connection refused|timed out|timeout"
    r"|ncclRemoteError|ncclSystemError|communicator was aborted|remote process exited",
    re.IGNORECASE,
)
_PEER_ADDR = re.compile(r"\[([0-9A-Fa-f.:]+)\]:\d+")


def lost_rank(
    exc: BaseException,
    info: DistInfo,
    hosts: list[tuple[str, str | None]] | None = None,
    iteration: int | None = None,
) -> str | None:
    """The cause, in one sentence, when ``exc`` is a collective failing because another rank is
    gone; None for any other error (and in a one-process job)."""
    if not info.enabled or not isinstance(exc, RuntimeError):
        return None
    text = str(exc)
    if not (isinstance(exc, dist.DistError) or _PEER_GONE.search(text)):
        return None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    detail = f"{type(exc).__name__}: {first}"[:300]
    who = "another rank"
    peer = _PEER_ADDR.search(text)
    if peer and hosts:  # the backend names the peer's address: which rank(s) had it
        ranks = [r for r, (_, a) in enumerate(hosts) if a == peer.group(1) and r != info.rank]
        if len(ranks) == 1:
            who = f"rank {ranks[0]} on {hosts[ranks[0]][0]}"
        elif ranks:
            who = f"one of ranks {', '.join(map(str, ranks))} on {hosts[ranks[0]][0]}"
    where = f" at iteration {iteration}" if iteration is not None else ""
    placed = ""
    if hosts and who == "another rank":
        placed = " (ranks ran on " + ", ".join(f"{h} ({r})" for r, (h, _) in enumerate(hosts)) + ")"
    return (
        f"lost {who} of this {info.world_size}-rank job{placed}{where}: that process crashed, was "
        f"killed or lost its network (its own log says why); the job stopped; resume it to "
        f"continue from its last checkpoint (a collective failed with {detail})"
    )
