"""Multi-node DDP through Slurm: one job across two real Slurm nodes.

The cluster is ``slurm_two_nodes`` (tests/slurm_cluster.py): two slurmd, each in its own network,
UTS and mount namespace of this machine (``abl-node1``, ``abl-node2``, on a private bridge), under
one slurmctld. A two-node job's rank 1 is forked by the second node's slurmd, so it has that
node's hostname and reaches rank 0 over the bridge, through the rendezvous address and port that
submitit derives (the first node of the allocation; a port from the job id).

Every job here trains the same tiny CPU model (gloo, one thread per rank, an iteration budget so
runs are deterministic) with a plugin attention that sleeps in each training forward
(``slurm_slow_attention.py``): the time-limit test needs a job that is still training when
slurmctld's 30-s check sends the warning signal, and sleeping makes that cheap on shared cores.
Dropout is on, so each rank's RNG state matters: a resume that lost either rank's state would
change the curve. The results root is read-only on the second node (its mount namespace): the
jobs complete only if rank 0 alone writes the job directory.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from unittest import mock

import pytest

from ablate import results
from ablate.matrix.__main__ import main

pytestmark = [pytest.mark.slurm, pytest.mark.slow]

NODE1, NODE2 = "abl-node1", "abl-node2"
BOTH = "abl-node[1-2]"  # both, as Slurm lists them
ITERS = 260  # at >= 0.2 s each: longer than the latest warning signal of a 1-minute limit
JOB = {
    "model.n_layer": "1",
    "model.n_head": "2",
    "model.n_embd": "16",
    "model.block_size": "16",
    "model.dropout": "0.1",
    "model.attention": "slow_causal",
    "plugins": "[slurm_slow_attention]",
    "plugin_path": f"[{Path(__file__).resolve().parent}]",
    "hardware.micro_batch": "1",
    "optim.tokens_per_iter": "32",  # 2 ranks x 1 x 16 tokens: no accumulation on either layout
    "hardware.threads": "1",
    "data.val_windows": "2",
    "data.val_tokens": "256",
    "budget.box_seconds": "null",
    "budget.max_iters": str(ITERS),
    "budget.eval_interval": "65",
    "budget.log_interval": "10",
    "preflight": "false",  # the preflight is the matrix process' own, tested elsewhere
}
TWO_NODES = ("launcher.slurm.nodes=2", "hardware.nproc_per_node=1")
ONE_NODE = ("launcher.slurm.nodes=1", "hardware.nproc_per_node=2")


def _queue(cluster, root: Path, *overrides: str, read_only_on_node2: bool = True) -> Path:
    """Queue the job (launcher.slurm.wait=false); returns its matrix directory."""
    root.mkdir(parents=True)
    if read_only_on_node2:
        cluster.read_only_on(NODE2, root)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), cluster.active():
        rc = main(
            [
                "experiment=smoke",
                "step=V0",
                *[f"{k}={v}" for k, v in JOB.items()],
                "launcher=slurm",
                "launcher.slurm.wait=false",
                f"launcher.slurm.partition={cluster.partition}",
                f"launcher.slurm.folder={root}.submitit",  # writable on both nodes: their logs
                f"results_root={root}",
                *overrides,
            ]
        )
    assert rc == 0, out.getvalue()[-4000:]
    (mdir,) = root.glob("test_matrix_results_*")
    return mdir


def _wait(mdir: Path) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = main([f"wait={mdir}"])
    return rc, out.getvalue()


def _curve(job_dir: Path) -> list[tuple]:
    records, _ = results.read_metrics(job_dir / "metrics.jsonl")
    return [
        (r["kind"], r["iter"], r.get("loss/train"), r.get("loss/val"), r.get("lr"))
        for r in records
        if r["kind"] in ("train", "eval")
    ]


def _final_losses(job_dir: Path) -> list[float]:
    fe, problem = results.read_final_eval(job_dir / results.FINAL_EVAL)
    assert problem is None and fe is not None, problem
    return list(fe.window_losses)


def _sacct(cluster, job_id: str, fields: str = "JobID,State,NodeList") -> list[list[str]]:
    """Every record of the job and its steps, requeued attempts included (--duplicates)."""
    out = subprocess.run(
        ["sacct", "-n", "-P", "-D", "-o", fields, "-j", job_id],
        capture_output=True,
        text=True,
        env=cluster.env,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines()]


def _job_pids(cluster, node: str, job_id: str) -> list[int]:
    """Processes of Slurm job ``job_id`` on ``node``: its step daemons and tasks."""
    found = []
    for pid in cluster.node_pids(node):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if cmd.startswith(f"slurmstepd: [{job_id}.".encode()) or (
            f"SLURM_JOB_ID={job_id}\0".encode() in b"\0" + env
        ):
            found.append(pid)
    return found


def _rank_pid(cluster, node: str, job_id: str, timeout: float = 120) -> int:
    """The pid of the job's task on ``node`` (the Python process running submitit's entry; on
    the first node, not the srun whose command line names it), as soon as it exists."""

    def task():
        for pid in _job_pids(cluster, node, job_id):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"submitit.core._submit" in argv and Path(argv[0].decode()).name != "srun":
                return pid
        return None

    return _until(f"a task of Slurm job {job_id} on {node}", task, timeout)


def _endpoint(hexaddr: str) -> tuple[str, int]:
    """An address of /proc/net/tcp{,6} ("0B00A8C0:1F90") as ("192.168.0.11", 8080)."""
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port_hex, 16)
    raw = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four host-order words
    ip = socket.inet_ntop(socket.AF_INET6, raw)
    return ip.removeprefix("::ffff:"), int(port_hex, 16)


def _sockets(pid: int) -> list[tuple[str, tuple[str, int], tuple[str, int]]]:
    """(state, local, remote) of the TCP sockets process ``pid`` holds ("0A" listening,
    "01" established), as its own network namespace sees them."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[len("socket:[") : -1])
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for f in (line.split() for line in lines):
            if f[9] in inodes:
                found.append((f[3], _endpoint(f[1]), _endpoint(f[2])))
    return found


def _listens(pid: int, port: int | None = None) -> bool:
    """Whether process ``pid`` listens on TCP (on ``port``, if given): rank 0's rendezvous store."""
    return any(st == "0A" and port in (None, local[1]) for st, local, _ in _sockets(pid))


def _until(what: str, check, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not seen in {timeout:.0f}s"
        time.sleep(0.1)
    return found


def _trained_iter(job_dir: Path) -> int:
    try:
        records, _ = results.read_metrics(job_dir / "metrics.jsonl")
    except (OSError, ValueError):
        return 0
    return max([r["iter"] for r in records if r["kind"] == "train"] or [0])


@pytest.fixture(scope="module")
def references(slurm_two_nodes, tmp_path_factory) -> dict:
    """The job on two nodes (one rank each) and on one node (two ranks), queued together, after
    the same job under a 1-minute time limit ("time_limit"), which the last test collects: its
    requeues, which take minutes of Slurm's clock, overlap this module's other tests."""
    tmp = tmp_path_factory.mktemp("multinode")
    t0 = time.monotonic()
    # Time limit 1 minute (no box; margin 1 min). USR2 10 s before it, which slurmctld (checking
    # every 30 s) sends 20-50 s after the start, while the job (at least 52 s of training) still
    # trains. Each requeued attempt gets another minute and is signalled again if still running.
    time_limit = _queue(
        slurm_two_nodes,
        tmp / "time_limit",
        *TWO_NODES,
        "launcher.slurm.time_margin_min=1",
        "launcher.slurm.signal_delay_s=10",
        "launcher.slurm.max_num_timeout=6",
    )
    two = _queue(slurm_two_nodes, tmp / "two", *TWO_NODES)
    # On one node the job may land on either; node 2 keeps its root writable for it. The shell
    # that submits it exported a MASTER_PORT (sbatch hands it to the job): it is the port used.
    with mock.patch.dict(os.environ, {"MASTER_PORT": "29555"}):
        one = _queue(slurm_two_nodes, tmp / "one", *ONE_NODE, read_only_on_node2=False)
    # While they train, the rendezvous: rank 1 on the second node connected to the store rank 0
    # listens on, at the first node's address (MASTER_ADDR: the allocation's first node) and the
    # port derived from the job id; the one-node job's store listens on the exported MASTER_PORT.
    cluster = slurm_two_nodes
    jid = results.Manifest.load(two).job("V0")["slurm_job_id"]
    rank0, rank1 = _rank_pid(cluster, NODE1, jid), _rank_pid(cluster, NODE2, jid)
    store = (cluster.node_addrs[NODE1], random.Random(jid).randint(20000, 60000))
    _until(
        f"rank 1's connection to rank 0's store at {store}",
        lambda: (
            _listens(rank0, store[1])
            and any(st == "01" and rem == store for st, _, rem in _sockets(rank1))
        ),
    )
    jid1 = results.Manifest.load(one).job("V0")["slurm_job_id"]
    _until(
        "the one-node job's store on the exported MASTER_PORT",
        lambda: any(
            _listens(pid, 29555) for n in (NODE1, NODE2) for pid in _job_pids(cluster, n, jid1)
        ),
    )
    for mdir in (two, one):
        rc, out = _wait(mdir)
        assert rc == 0, out[-4000:]
    print(f"two-node and one-node jobs side by side: {time.monotonic() - t0:.0f}s")
    return {"two": two, "one": one, "time_limit": time_limit}


def test_one_job_across_two_nodes_equals_two_ranks_on_one_node(references, slurm_two_nodes):
    cluster = slurm_two_nodes
    two, one = references["two"] / "V0", references["one"] / "V0"
    for jd in (two, one):
        s = results.JobDir(jd).read_summary()
        assert s["status"] == "completed" and s["iterations"] == ITERS and s["world_size"] == 2, s

    # One rank on each node, each on its own host: the ranks ran in two slurmd's steps.
    env = json.loads((two / "env.json").read_text())
    assert env["hostnames"] == [NODE1, NODE2], env["hostnames"]
    assert env["hostname"] == NODE1 and env["world_size"] == 2 and env["local_world_size"] == 1
    assert env["backend"] == "gloo"
    sbatch = (two / "submission.sbatch").read_text()
    assert "#SBATCH --nodes=2\n" in sbatch and "#SBATCH --ntasks-per-node=1\n" in sbatch
    assert "--kill-on-bad-exit=1" in sbatch
    jid = results.Manifest.load(references["two"]).job("V0")["slurm_job_id"]
    steps = {r[0]: r for r in _sacct(cluster, jid)}
    assert steps[f"{jid}.0"][1:] == ["COMPLETED", BOTH], steps
    logs = Path(f"{references['two'].parent}.submitit")
    assert (
        f"hostname={NODE1}, local_rank=0(1), node=0(2), global_rank=0(2)"
        in (logs / f"{jid}_0_log.out").read_text()
    )
    assert (
        f"hostname={NODE2}, local_rank=0(1), node=1(2), global_rank=1(2)"
        in (logs / f"{jid}_1_log.out").read_text()
    )

    # Two ranks on one node: the same host twice.
    env1 = json.loads((one / "env.json").read_text())
    assert env1["local_world_size"] == 2 and env1["world_size"] == 2
    assert env1["hostnames"][0] == env1["hostnames"][1] in (NODE1, NODE2), env1["hostnames"]

    # The same training, number for number: the layout of the ranks changes nothing.
    curve = _curve(two)
    assert len([c for c in curve if c[0] == "train"]) == ITERS // 10, curve
    assert curve == _curve(one)
    assert _final_losses(two) == _final_losses(one)

    # Rank 0 alone wrote the job directory: the second node could not have (read-only there),
    # and rank 1 never tried (its logs have no write error). The mount itself is checked too.
    probe = cluster.node_run(NODE2, ["touch", str(two / "probe")], check=False)
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr, probe
    for stream in ("out", "err"):
        assert "Read-only" not in (logs / f"{jid}_1_log.{stream}").read_text()
    files = {p.name for p in two.iterdir()}
    assert files == {p.name for p in one.iterdir()}, files
    assert {"DONE", "summary.json", "metrics.jsonl", "env.json", "train.log"} <= files


def _ended_within(cluster, job_id: str, seconds: float) -> float:
    """Seconds until Slurm has the job no more (queued or running); fails, and cancels the job,
    past ``seconds``."""
    t0 = time.monotonic()
    while True:
        queued = subprocess.run(
            ["squeue", "-h", "-j", job_id, "-o", "%T"],
            capture_output=True,
            text=True,
            env=cluster.env,
        ).stdout.split()
        if not queued:
            return time.monotonic() - t0
        if time.monotonic() - t0 > seconds:
            subprocess.run(["scancel", job_id], env=cluster.env, check=False)
            raise AssertionError(f"Slurm job {job_id} still {queued} {seconds:.0f}s after the kill")
        time.sleep(0.2)


@pytest.mark.parametrize("when", ["at start-up", "in the rendezvous", "while training"])
def test_a_rank_killed_on_the_second_node_ends_the_job_with_its_cause(
    slurm_two_nodes, tmp_path, when
):
    cluster = slurm_two_nodes
    mdir = _queue(cluster, tmp_path / "r", *TWO_NODES)
    jd = mdir / "V0"
    jid = results.Manifest.load(mdir).job("V0")["slurm_job_id"]
    rank1 = _rank_pid(cluster, NODE2, jid)  # as soon as it exists: long before the rendezvous
    if when == "in the rendezvous":  # rank 0 waits for rank 1 to join; rank 1 never does
        os.kill(rank1, signal.SIGSTOP)
        rank0 = _rank_pid(cluster, NODE1, jid)
        _until("rank 0's rendezvous store", lambda: _listens(rank0))
    elif when == "while training":
        _until("20 iterations", lambda: _trained_iter(jd) >= 20)
    os.kill(rank1, signal.SIGKILL)
    # Far within the time limit (15 min): the survivor waits for the lost rank neither in a
    # collective nor in the rendezvous (srun --kill-on-bad-exit), where nothing else would end
    # it for 15 minutes.
    ended_s = _ended_within(cluster, jid, 60)
    print(f"killed rank 1 {when}: Slurm ended the job {ended_s:.1f}s later")
    rc, out = _wait(mdir)
    assert rc == 1, out[-4000:]
    job = results.Manifest.load(mdir).job("V0")
    assert job["status"] == "failed" and job["exit_code"] == 1, job
    records = _sacct(cluster, jid, "JobID,State")
    assert [r[1] for r in records if r[0] == jid] == ["FAILED"], records
    err0 = (Path(f"{mdir.parent}.submitit") / f"{jid}_0_log.err").read_text()
    assert f"{NODE2}: task 1: Killed" in err0, err0[-2000:]  # srun's own account
    if when == "while training":
        s = results.JobDir(jd).read_summary()
        assert s["status"] == "failed" and s["exit_code"] == 1 and s["iterations"] >= 20, s
        cause = (
            f"lost rank 1 on {NODE2} of this 2-rank job at iteration {s['iterations']}: "
            "that process crashed, was killed or lost its network"
        )
        assert s["error"].startswith(cause), s["error"]
        assert job["error"].startswith(cause), job["error"]
    else:  # before any collective: srun ended rank 0 (it had no training to record); Slurm's
        # state and srun's log say why
        assert "ended in state FAILED" in job["error"] and f"{jid}_0_log.err" in job["error"], job
    # Nothing of the job is left on either node.
    deadline = time.monotonic() + 15
    while any(_job_pids(cluster, n, jid) for n in (NODE1, NODE2)):
        assert time.monotonic() < deadline, {n: _job_pids(cluster, n, jid) for n in (NODE1, NODE2)}
        time.sleep(0.2)


def _why_not_requeued(cluster, mdir: Path) -> str:
    """What tells why a time-limited job ended without completing: matrix.json's entry, Slurm's
    record of every attempt, and the end of rank 0's submitit log (where a failed requeue
    shows)."""
    job = results.Manifest.load(mdir).job("V0")
    jid = str(job.get("slurm_job_id"))
    err = Path(f"{mdir.parent}.submitit") / f"{jid}_0_log.err"
    tail = err.read_text()[-2500:] if err.is_file() else f"(no {err})"
    return f"\nmatrix.json: {job}\nsacct: {_sacct(cluster, jid)}\nrank 0 log:\n{tail}"


def test_the_time_limit_signal_stops_both_nodes_and_the_requeued_job_resumes_exactly(
    slurm_two_nodes, references
):
    cluster = slurm_two_nodes
    assert os.environ["SLURM_CONF"] == cluster.env["SLURM_CONF"]  # this cluster, not the other
    mdir = references["time_limit"]  # queued before the references
    rc, out = _wait(mdir)
    assert rc == 0, out[-2500:] + _why_not_requeued(cluster, mdir)
    jd = mdir / "V0"
    job = results.Manifest.load(mdir).job("V0")
    assert job["status"] == "completed" and job["attempts"] == 1, job  # submitted once
    jid = job["slurm_job_id"]
    sbatch = (jd / "submission.sbatch").read_text()
    assert "#SBATCH --time=1\n" in sbatch and "#SBATCH --signal=USR2@10\n" in sbatch, sbatch

    # Every stop: the signal reached both nodes, rank 0 checkpointed, a requeued attempt resumed
    # there. (A signal during an attempt's start-up, before the trainer listens, is submitit's
    # alone: it requeues, and the next attempt resumes from the last checkpoint there was.)
    log = (jd / "train.log").read_text()

    def iters(marker: str, end: str) -> list[int]:
        return [
            int(line.split(marker)[1].split(end)[0]) for line in log.splitlines() if marker in line
        ]

    stopped = iters("SIGUSR2 received: checkpointed at iteration ", ";")
    periodic = iters("] checkpoint at iteration ", " ")  # periodic and signal checkpoints
    resumed = iters("resumed from checkpoint at iteration ", " ")
    assert stopped and set(stopped) <= set(resumed), log[-3000:]
    assert resumed == sorted(resumed) and set(resumed) <= set(stopped) | set(periodic), log[-3000:]
    s = results.JobDir(jd).read_summary()
    assert s["status"] == "completed" and s["resumed"] == len(resumed) and s["iterations"] == ITERS
    logs = Path(f"{mdir.parent}.submitit")
    rank1_log = (logs / f"{jid}_1_log.out").read_text()
    # rank 1's trainer stopped on the signal and handed it to submitit, which leaves the requeue
    # to rank 0
    assert rank1_log.count(f"Caught signal SIGUSR2 on {NODE2}") >= len(stopped), rank1_log[-3000:]
    assert "Not checkpointing nor requeuing since I am a slave" in rank1_log

    # Bit-identical to the uninterrupted two-node run: both ranks' model, optimizer and RNG came
    # back from the checkpoint.
    ref = references["two"] / "V0"
    assert _curve(jd) == _curve(ref)
    assert _final_losses(jd) == _final_losses(ref)
    assert s["final_val_loss"] == results.JobDir(ref).read_summary()["final_val_loss"]

    # Slurm's record: the same job requeued once per stop, each attempt on both nodes.
    deadline = time.monotonic() + 30  # slurmctld hands the end of a job to slurmdbd a moment later
    while True:
        attempts = [r for r in _sacct(cluster, jid) if r[0] == jid]
        if attempts[-1][1] != "RUNNING" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    states = [r[1] for r in attempts]
    assert states == ["REQUEUED"] * (len(states) - 1) + ["COMPLETED"], attempts
    assert len(states) - 1 >= len(stopped), attempts
    assert all(r[2] == BOTH for r in attempts), attempts
    env = json.loads((jd / "env.json").read_text())
    for start in [env, *env.get("previous", [])]:
        assert start["hostnames"] == [NODE1, NODE2], start
