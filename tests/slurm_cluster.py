"""A real, throw-away Slurm cluster for the test suite: one node, or several on this one machine.

``SlurmCluster`` starts munged, MariaDB, slurmdbd, slurmctld and slurmd for
*this* host, with every piece of state (configs, spool, state save, logs, pid
files, MariaDB datadir, munge socket) in one per-run temporary directory, and
stops everything it started on exit.  No mocks: ``sbatch``, ``sacct``,
``squeue``, ``scontrol`` and submitit talk to the real daemons.

``SlurmCluster(nodes=2)`` (fixture ``slurm_two_nodes``) runs two compute nodes under one
slurmctld, each a slurmd in its own network namespace (``ip netns``) and UTS namespace, with its
own hostname (``abl-node1``, ``abl-node2``) and address on a private bridge (``10.X.Y.11``,
``.12``; slurmctld listens on the bridge's ``.1``), and its own ``/etc/hosts`` (bind-mounted in
its own mount namespace) that resolves the nodes' names to those addresses.  A job step's tasks
are forked by each node's slurmd, so they run in that node's namespaces: ``hostname`` differs,
and ranks on different nodes talk over the bridge as over a real network.  The file system is
shared (as a cluster's shared results root is).  Debian's Slurm is built without
``--enable-multiple-slurmd``; the namespaces make that unnecessary (every slurmd is alone on its
"host", on the default port).

Requirements: root, and the Debian packages installed by
``.ci/install-slurm.sh`` (munge, slurm-client, slurmctld, slurmd, slurmdbd,
mariadb-server).  Without them the fixture *skips*, unless the environment
variable ``CI`` is set, in which case it *fails* (CI must not skip silently).

Using it from pytest
--------------------
In a ``conftest.py`` (``tests/conftest.py`` or any sub-folder; ``tests/`` is on pytest's
``pythonpath``, pyproject.toml, so no test edits ``sys.path``)::

    from slurm_cluster import slurm_cluster  # noqa: F401  (session-scoped fixture)

Then, in a test::

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
        ex.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5)
        assert ex.submit(int, "3").result() == 3

While the fixture is active ``SLURM_CONF`` is exported in ``os.environ`` (restored
afterwards), so Slurm client commands and submitit reach the test cluster. With both clusters
up, tests/slurm/conftest.py points it at the cluster each test uses, and ``cluster.active()``
does so for a block.

Attributes: ``partition`` (default partition, "debug", PreemptMode=REQUEUE),
``high_partition`` ("high", higher PriorityTier: preempts "debug"),
``held_partition`` ("held", down: its jobs stay PENDING until ``set_held(False)``),
``partitions``, ``tmpdir``, ``env`` (environment for subprocesses),
``nodename`` (the first node), ``nodenames``, ``cpus`` (per node); methods ``logs()`` (tail of
every daemon log) and, with several nodes, ``node_pids(name)`` (every process running in that
node's namespaces: its slurmd, step daemons and job tasks).

Outside pytest::

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

The temporary directory is removed on success and kept (its path printed) when
setup fails, the ``with`` body raises, or a test of the session failed.  At
start, daemons left behind by an earlier run whose test process is gone are
killed -- only processes recorded in that run's ``pids`` file whose command
line or environment names that run's directory, job processes whose
``SLURM_CONF`` points into it, and processes inside the network namespaces that run
created (listed in its ``netns`` file, then deleted with its bridge).  Nothing else is ever
signalled.
"""

from __future__ import annotations

import contextlib
import getpass
import glob
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "ablate-slurm-"
# A failed session keeps its clusters' state for debugging (KEEP); after this long nobody is
# debugging it, and the folders would otherwise pile up in /tmp.
KEEP_DAYS = 7.0
CLUSTER_NAME = "ablatetest"
DB_NAME = "slurm_acct_db"
DB_USER = "slurm"
DB_PASS = "ablate-test"
MUNGE_SOCKET = "/run/munge/munge.socket.2"
SBIN = ("/usr/sbin", "/usr/local/sbin", "/sbin")
REQUIRED = (
    "munged",
    "munge",
    "unmunge",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "slurmdbd",
    "slurmctld",
    "slurmd",
    "sacctmgr",
    "sacct",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scontrol",
    "scancel",
)


class SlurmSetupError(RuntimeError):
    pass


class NamespaceError(SlurmSetupError):
    """This machine does not let us create the nodes' network namespaces (no CAP_NET_ADMIN or
    CAP_SYS_ADMIN, e.g. an unprivileged container)."""


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


# Several nodes on one machine: network, UTS and mount namespaces (iproute2, util-linux).
REQUIRED_MULTI = ("ip", "nsenter", "unshare", "hostname", "mount")
NODE_PREFIX = "abl-node"


def missing_binaries(nodes: int = 1) -> list[str]:
    need = REQUIRED + (REQUIRED_MULTI if nodes > 1 else ())
    return [b for b in need if _which(b) is None]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _proc_mentions(pid: int, needle: str) -> bool:
    """True if the process' command line or environment contains ``needle``."""
    for what in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{what}", "rb") as f:
                if needle.encode() in f.read():
                    return True
        except OSError:
            pass
    return False


def _ancestors() -> set[int]:
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _terminate(pids: list[int], grace: float = 5.0) -> None:
    """SIGTERM, wait up to ``grace`` s, then SIGKILL."""
    pids = [p for p in pids if _alive(p)]
    for p in pids:
        try:
            os.kill(p, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for p in pids:  # reap our own children so they don't linger as zombies
            try:
                os.waitpid(p, os.WNOHANG)
            except ChildProcessError:
                pass
        pids = [p for p in pids if _alive(p)]
        if not pids:
            return
        time.sleep(0.05)
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass
        try:
            os.waitpid(p, 0)
        except ChildProcessError:
            pass


def _job_processes(tmpdir: str) -> list[int]:
    """Processes whose environment has SLURM_CONF pointing into ``tmpdir``
    (slurmstepd and job processes of that cluster), except us and our parents."""
    needle = f"SLURM_CONF={tmpdir}/".encode()
    skip = _ancestors()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) in skip:
            continue
        try:
            with open(f"/proc/{d}/environ", "rb") as f:
                if needle in f.read():
                    found.append(int(d))
        except OSError:
            pass
    return found


def _ip(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    ip = _which("ip") or "ip"
    res = subprocess.run([ip, *args], capture_output=True, text=True, timeout=15)
    if check and res.returncode != 0:
        raise NamespaceError(f"ip {' '.join(args)} failed: {res.stderr.strip()}")
    return res


def _netns_pids(ns: str) -> list[int]:
    """Every process inside network namespace ``ns`` (none if it does not exist)."""
    res = _ip("netns", "pids", ns)
    return [int(p) for p in res.stdout.split() if p.isdigit()] if res.returncode == 0 else []


def _recorded_network(run_dir: str) -> tuple[list[str], str | None]:
    """The network namespaces and bridge a run created (its ``netns`` file)."""
    namespaces, bridge = [], None
    try:
        for line in Path(run_dir, "netns").read_text().splitlines():
            kind, _, name = line.partition(" ")
            if kind == "netns" and name:
                namespaces.append(name)
            elif kind == "bridge" and name:
                bridge = name
    except OSError:
        pass
    return namespaces, bridge


def _delete_network(namespaces: list[str], bridge: str | None) -> None:
    for ns in namespaces:  # deleting a namespace deletes its end of the veth pair, and so both
        if os.path.exists(f"/run/netns/{ns}"):
            _ip("netns", "del", ns)
    if bridge and os.path.exists(f"/sys/class/net/{bridge}"):
        _ip("link", "del", bridge)


def _free_subnet() -> str:
    """A 10.X.Y.0/24 prefix ("10.X.Y") that no interface of this machine uses."""
    used = _ip("-4", "-o", "addr").stdout + _ip("-4", "route").stdout
    rng = random.Random()
    for _ in range(200):
        prefix = f"10.{rng.randint(128, 250)}.{rng.randint(0, 254)}"
        if f" {prefix}." not in used and f"\n{prefix}." not in "\n" + used:
            return prefix
    raise SlurmSetupError("found no free 10.X.Y.0/24 subnet for the test nodes' bridge")


def cleanup_stale_runs(base: str | None = None, verbose: bool = True) -> None:
    """Stop daemons (and jobs) of earlier runs whose owning test process is gone."""
    base = base or tempfile.gettempdir()
    for d in glob.glob(os.path.join(base, PREFIX + "*")):
        owner = os.path.join(d, "owner")
        try:
            pid_s, start = Path(owner).read_text().split()
            if _proc_start_time(int(pid_s)) == start:
                continue  # that run is still alive (e.g. a concurrent session)
        except (OSError, ValueError):
            continue  # not one of ours (or not fully set up): leave alone
        pids = []
        try:
            for line in Path(d, "pids").read_text().splitlines():
                name, pid = line.split()
                if _alive(int(pid)) and _proc_mentions(int(pid), d):
                    pids.append(int(pid))
        except (OSError, ValueError):
            pass
        pids += _job_processes(d)
        namespaces, bridge = _recorded_network(d)
        for ns in namespaces:
            pids += _netns_pids(ns)
        pids = sorted(set(pids))
        if pids and verbose:
            print(f"[slurm_cluster] killing stale processes {pids} of {d}", file=sys.stderr)
        _terminate(pids, grace=3.0)
        _delete_network(namespaces, bridge)
        keep = os.path.join(d, "KEEP")
        try:
            kept_days = (time.time() - os.stat(keep).st_mtime) / 86400.0
        except OSError:
            kept_days = None
        if kept_days is None:
            shutil.rmtree(d, ignore_errors=True)
        elif kept_days > KEEP_DAYS:
            if verbose:
                print(
                    f"[slurm_cluster] removing {d}, kept {kept_days:.0f} days after a failed run",
                    file=sys.stderr,
                )
            shutil.rmtree(d, ignore_errors=True)


class SlurmCluster:
    """Context manager running a Slurm with accounting: this host as its one node, or ``nodes``
    nodes in network namespaces of this host (see module doc)."""

    partition = "debug"
    high_partition = "high"
    held_partition = "held"
    partitions = ("debug", "high", "held")

    def __init__(
        self, timeout: float = 60.0, keep: bool | None = None, verbose: bool = True, nodes: int = 1
    ):
        if nodes < 1:
            raise ValueError(f"nodes={nodes}: a cluster needs at least one node")
        self.timeout = timeout
        self.keep = keep  # None: keep only on failure
        self.verbose = verbose
        self.tmpdir: Path | None = None
        self.env: dict[str, str] = {}
        self.host = socket.gethostname().split(".")[0]  # this machine: slurmctld's host
        self.multi = nodes > 1
        # One node: this host. Several: one network namespace each, named like hosts of a cluster.
        self.nodenames = (
            [f"{NODE_PREFIX}{i}" for i in range(1, nodes + 1)] if self.multi else [self.host]
        )
        self.nodename = self.nodenames[0]
        self.node_addrs: dict[str, str] = {}  # node -> its address (several nodes)
        self.netns: dict[str, str] = {}  # node -> its network namespace (several nodes)
        self.bridge: str | None = None
        self.ctld_addr = "127.0.0.1"
        # At least 4 CPU slots, even on a 2-core machine: Slurm does not pin CPUs here
        # (task/none), and the tests keep a mostly sleeping requeue job or two in the background
        # while 2-task jobs run; 2 slots would make those wait.
        self.cpus = max(4, len(os.sched_getaffinity(0)))
        self._procs: dict[str, subprocess.Popen] = {}
        self._old_slurm_conf: str | None = None
        self._exported = False
        self.setup_seconds: float | None = None

    # ------------------------------------------------------------------ utils
    def _log(self, msg: str) -> None:
        if self.verbose:
            print(f"[slurm_cluster] {msg}", file=sys.stderr)

    def _p(self, *parts: str) -> str:
        assert self.tmpdir is not None
        return str(self.tmpdir.joinpath(*parts))

    def _start(self, name: str, cmd: list[str], user: str | None = None) -> subprocess.Popen:
        log = open(self._p("log", f"{name}.out"), "ab")
        kwargs = {}
        if user is not None:
            pw = pwd.getpwnam(user)
            kwargs = dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        proc = subprocess.Popen(
            cmd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.tmpdir,
            start_new_session=True,
            **kwargs,
        )
        log.close()
        self._procs[name] = proc
        with open(self._p("pids"), "a") as f:
            f.write(f"{name} {proc.pid}\n")
        return proc

    def _run(
        self, cmd: list[str], check: bool = True, timeout: float = 15, **kw
    ) -> subprocess.CompletedProcess:
        res = subprocess.run(
            cmd, env=self.env, capture_output=True, text=True, timeout=timeout, **kw
        )
        if check and res.returncode != 0:
            raise SlurmSetupError(
                f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout}{res.stderr}"
            )
        return res

    def _wait(
        self, what: str, cond, timeout: float | None = None, daemons: tuple[str, ...] = ()
    ) -> None:
        deadline = time.monotonic() + (timeout or self.timeout)
        last_exc = None
        while time.monotonic() < deadline:
            for d in daemons:
                rc = self._procs[d].poll()
                if rc is not None:
                    raise SlurmSetupError(f"{d} exited with code {rc} while waiting for {what}")
            try:
                if cond():
                    return
            except (subprocess.SubprocessError, OSError) as exc:
                last_exc = exc
            time.sleep(0.1)
        raise SlurmSetupError(
            f"timed out after {timeout or self.timeout:.0f}s waiting for {what}"
            + (f" (last error: {last_exc})" if last_exc else "")
        )

    def _ok(self, cmd: list[str], timeout: float = 5) -> bool:
        return self._run(cmd, check=False, timeout=timeout).returncode == 0

    @contextlib.contextmanager
    def active(self):
        """``SLURM_CONF`` names this cluster while inside: with two clusters up (one session
        starts both), ``os.environ`` names the one started last, and a matrix run in-process
        would submit to, and ask, the other one."""
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = self.env["SLURM_CONF"]
        try:
            yield self
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before

    def set_held(self, held: bool) -> None:
        """``held_partition`` down (a job submitted to it stays PENDING, reason PartitionDown,
        whatever the load: a test sees it queued for as long as it needs) or up (it starts)."""
        state = "DOWN" if held else "UP"
        self._run(["scontrol", "update", f"PartitionName={self.held_partition}", f"State={state}"])

    def logs(self, lines: int = 40) -> str:
        """Tail of every daemon log, for error messages."""
        if self.tmpdir is None:
            return ""
        out = []
        for f in sorted(glob.glob(self._p("log", "*"))):
            try:
                text = Path(f).read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            out.append(f"==> {f} <==\n" + "\n".join(text))
        return "\n".join(out)

    # ------------------------------------------------------------------ setup
    def __enter__(self) -> SlurmCluster:
        t0 = time.monotonic()
        try:
            self._setup()
        except BaseException as exc:
            self.keep = True if self.keep is None else self.keep
            logs = self.logs()
            self.close()
            if isinstance(exc, SlurmSetupError):
                raise SlurmSetupError(f"{exc}\n(state kept in {self.tmpdir})\n{logs}") from None
            raise
        self.setup_seconds = time.monotonic() - t0
        self._log(f"cluster up in {self.setup_seconds:.1f}s, state in {self.tmpdir}")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None and self.keep is None:
            self.keep = True
        self.close()

    def _setup(self) -> None:
        missing = missing_binaries()
        if missing:
            raise SlurmSetupError(
                f"missing Slurm/munge/MariaDB binaries: {missing} (run .ci/install-slurm.sh)"
            )
        if os.geteuid() != 0:
            raise SlurmSetupError("starting a test Slurm needs root")
        cleanup_stale_runs(verbose=self.verbose)

        base = tempfile.gettempdir()
        if len(base) > 60:  # unix socket paths are limited to ~107 bytes
            base = "/tmp"
        self.tmpdir = Path(tempfile.mkdtemp(prefix=PREFIX, dir=base))
        os.chmod(self.tmpdir, 0o755)  # munge user must reach its socket dir
        me = os.getpid()
        Path(self._p("owner")).write_text(f"{me} {_proc_start_time(me)}\n")
        for sub in ("log", "state", "spool", "db", "munge", "run"):
            os.mkdir(self._p(sub))
        os.chmod(self._p("state"), 0o700)
        munge_pw = pwd.getpwnam("munge")
        os.chown(self._p("munge"), munge_pw.pw_uid, munge_pw.pw_gid)
        os.chmod(self._p("munge"), 0o755)  # munged: socket dir must be o+x, not o+w

        self._ensure_hostname()
        self.ports = {k: _free_port() for k in ("mysql", "dbd", "ctld", "slurmd")}
        if self.multi:
            self._setup_network()
        # Slurm's clients (sacctmgr, and so submitit's sacct) ignore AuthInfo=socket= on their
        # slurmdbd connection and always use munge's default socket, so munged must serve it.
        self.munge_socket = MUNGE_SOCKET
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SALLOC_", "SRUN_"))
        }
        self._own_munged = not (os.path.exists(MUNGE_SOCKET) and self._munge_ok())
        self.env["SLURM_CONF"] = self._p("slurm.conf")
        self._write_configs()

        # munged and the MariaDB datadir in parallel
        if self._own_munged:
            self._start_munged()
        else:
            self._log(f"using the munged already serving {MUNGE_SOCKET}")
        init = subprocess.Popen(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self._p('db')}",
                "--user=root",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            stdout=open(self._p("log", "mariadb-install-db.out"), "wb"),
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=self.tmpdir,
        )
        # (a munged already serving the socket is another run's: not ours to watch)
        self._wait("munged", self._munge_ok, daemons=("munged",) if self._own_munged else ())
        if init.wait(timeout=self.timeout) != 0:
            raise SlurmSetupError("mariadb-install-db failed")

        self._start(
            "mariadbd",
            [
                _which("mariadbd"),
                "--no-defaults",
                f"--datadir={self._p('db')}",
                "--user=root",
                f"--socket={self._p('run', 'mysql.sock')}",
                f"--pid-file={self._p('run', 'mariadbd.pid')}",
                "--bind-address=127.0.0.1",
                f"--port={self.ports['mysql']}",
                "--skip-name-resolve",
                f"--log-error={self._p('log', 'mariadbd.log')}",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--skip-log-bin",
                "--innodb-flush-log-at-trx-commit=0",
                "--performance-schema=OFF",
            ],
        )
        sql = ["mariadb", "--no-defaults", "-uroot", f"--socket={self._p('run', 'mysql.sock')}"]
        self._wait("mariadbd", lambda: self._ok(sql + ["-e", "SELECT 1"]), daemons=("mariadbd",))
        self._run(
            sql
            + [
                "-e",
                f"CREATE DATABASE IF NOT EXISTS {DB_NAME};"
                f"CREATE USER '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASS}';"
                f"CREATE USER '{DB_USER}'@'localhost' IDENTIFIED BY '{DB_PASS}';"
                f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'127.0.0.1';"
                f"GRANT ALL ON {DB_NAME}.* TO '{DB_USER}'@'localhost';",
            ]
        )

        self._start("slurmdbd", [_which("slurmdbd"), "-D"])
        self._wait(
            "slurmdbd",
            lambda: self._ok(["sacctmgr", "-n", "-P", "show", "cluster"]),
            daemons=("slurmdbd",),
        )
        if (
            CLUSTER_NAME
            not in self._run(
                ["sacctmgr", "-n", "-P", "show", "cluster", "format=cluster"]
            ).stdout.split()
        ):
            self._run(["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME])

        self._start("slurmctld", [_which("slurmctld"), "-D", "-f", self._p("slurm.conf")])
        slurmds = self._start_slurmds()
        self._wait(
            f"node(s) {', '.join(self.nodenames)} to be idle",
            self._node_idle,
            daemons=("slurmdbd", "slurmctld", *slurmds),
        )
        self._wait("sacct", lambda: self._ok(["sacct", "-n", "-X", "-a"]), daemons=("slurmdbd",))

        self._old_slurm_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = self.env["SLURM_CONF"]
        self._exported = True

    def _ensure_hostname(self) -> None:
        try:
            socket.gethostbyname(self.host)
        except OSError:
            self._log(f"adding {self.host} to /etc/hosts")
            with open("/etc/hosts", "a") as f:
                f.write(f"\n127.0.1.1\t{self.host}\n")

    # ------------------------------------------------------- several nodes: the network
    def _setup_network(self) -> None:
        """A bridge on this host (slurmctld's address) and one network namespace per node,
        joined to the bridge by a veth pair; each node gets an /etc/hosts naming every node."""
        probe = subprocess.run(  # the nodes' own hostname and /etc/hosts need these namespaces
            [_which("unshare"), "--uts", "--mount", "--propagation", "private", "--", "true"],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if probe.returncode != 0:
            raise NamespaceError(f"unshare --uts --mount failed: {probe.stderr.strip()}")
        tag = self.tmpdir.name[len(PREFIX) :][-6:].lower()
        tag = "".join(c if c.isalnum() else "0" for c in tag)
        prefix = _free_subnet()
        self.bridge = f"ab{tag}br"  # interface names: at most 15 characters
        self.ctld_addr = f"{prefix}.1"
        record = open(self._p("netns"), "a")  # for the cleanup of a run that died
        record.write(f"bridge {self.bridge}\n")
        record.flush()
        _ip("link", "add", self.bridge, "type", "bridge", check=True)
        _ip("addr", "add", f"{self.ctld_addr}/24", "dev", self.bridge, check=True)
        _ip("link", "set", self.bridge, "up", check=True)
        for i, node in enumerate(self.nodenames, start=1):
            ns, veth = f"{PREFIX}{tag}-{i}", f"ab{tag}v{i}"
            record.write(f"netns {ns}\n")
            record.flush()
            _ip("netns", "add", ns, check=True)
            self.netns[node] = ns
            self.node_addrs[node] = f"{prefix}.{10 + i}"
            _ip(
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns, check=True
            )
            _ip("link", "set", veth, "master", self.bridge, "up", check=True)
            _ip("-n", ns, "addr", "add", f"{self.node_addrs[node]}/24", "dev", "eth0", check=True)
            _ip("-n", ns, "link", "set", "eth0", "up", check=True)
            _ip("-n", ns, "link", "set", "lo", "up", check=True)
        record.close()
        hosts = "127.0.0.1\tlocalhost\n" + f"{self.ctld_addr}\t{self.host}\n"
        hosts += "".join(f"{a}\t{n}\n" for n, a in self.node_addrs.items())
        Path(self._p("hosts")).write_text(hosts)
        os.chmod(self._p("hosts"), 0o644)

    def _start_slurmds(self) -> list[str]:
        """slurmd of every node; returns their names in ``self._procs``."""
        slurmd = [_which("slurmd"), "-D", "-f", self._p("slurm.conf")]
        if not self.multi:
            self._start("slurmd", slurmd)
            return ["slurmd"]
        names = []
        for node in self.nodenames:
            # Enter the node's network namespace, then new UTS and mount namespaces: its own
            # hostname, and its own /etc/hosts. Every exec replaces the last, so the pid is slurmd's.
            cmd = [
                _which("nsenter"),
                f"--net=/run/netns/{self.netns[node]}",
                "--",
                _which("unshare"),
                "--uts",
                "--mount",
                "--propagation",
                "private",
                "--",
                "/bin/sh",
                "-c",
                'hostname "$1" && mount --bind "$2" /etc/hosts && shift 2 && exec "$@"',
                "sh",
                node,
                self._p("hosts"),
                *slurmd,
                "-N",
                node,
            ]
            self._start(f"slurmd-{node}", cmd)
            names.append(f"slurmd-{node}")
        return names

    def node_run(
        self, node: str, cmd: list[str], check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run ``cmd`` on ``node``: in its network, UTS and mount namespaces (those of its slurmd)."""
        if node not in self.netns:
            raise ValueError(f"{node} is not a namespaced node of this cluster ({self.nodenames})")
        pid = self._procs[f"slurmd-{node}"].pid
        return self._run(
            [_which("nsenter"), "-t", str(pid), "-n", "-u", "-m", "--", *cmd], check=check
        )

    def read_only_on(self, node: str, path: str | os.PathLike) -> None:
        """Make ``path`` read-only for every process on ``node`` (now running or started later);
        the rest of the machine, other nodes included, keeps writing it. Undone when the node's
        namespaces go (at the end of the cluster)."""
        path = os.path.realpath(path)
        self.node_run(node, ["mount", "--bind", path, path])
        self.node_run(node, ["mount", "-o", "remount,bind,ro", path, path])

    def node_pids(self, node: str) -> list[int]:
        """Every process in ``node``'s network namespace: its slurmd, step daemons and tasks."""
        if node not in self.netns:
            raise ValueError(f"{node} is not a namespaced node of this cluster ({self.nodenames})")
        return _netns_pids(self.netns[node])

    def _munge_ok(self) -> bool:
        cred = self._run(["munge", "-n", "-S", self.munge_socket], check=False, timeout=5)
        if cred.returncode != 0:
            return False
        return (
            self._run(
                ["unmunge", "-S", self.munge_socket], check=False, timeout=5, input=cred.stdout
            ).returncode
            == 0
        )

    def _start_munged(self) -> None:
        key = "/etc/munge/munge.key"
        mpw = pwd.getpwnam("munge")
        if os.path.exists(key):
            st = os.stat(key)
            if st.st_uid != mpw.pw_uid or st.st_mode & 0o077:
                self._log(f"fixing owner/mode of {key} (munge, 0400)")
                os.chown(key, mpw.pw_uid, mpw.pw_gid)
                os.chmod(key, 0o400)
        else:
            key = self._p("munge", "munge.key")
            subprocess.run(
                ["mungekey", "--create", f"--keyfile={key}"],
                check=True,
                user=mpw.pw_uid,
                group=mpw.pw_gid,
                extra_groups=[],
            )
        run_dir = os.path.dirname(self.munge_socket)
        os.makedirs(run_dir, exist_ok=True)  # nothing creates /run/munge without systemd
        os.chown(run_dir, mpw.pw_uid, mpw.pw_gid)
        os.chmod(run_dir, 0o755)
        for stale in (self.munge_socket, self.munge_socket + ".lock"):
            if os.path.exists(stale):
                os.unlink(stale)
        self._start(
            "munged",
            [
                _which("munged"),
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={self._p('munge', 'munged.pid')}",
                f"--log-file={self._p('munge', 'munged.log')}",
                f"--seed-file={self._p('munge', 'munged.seed')}",
                "--num-threads=2",
            ],
            user="munge",
        )

    def _node_idle(self) -> bool:
        res = self._run(
            ["sinfo", "-h", "-N", "-n", ",".join(self.nodenames), "-o", "%N %t"],
            check=False,
            timeout=5,
        )
        seen: dict[str, set[str]] = {}  # one line per node and partition it is in
        for line in res.stdout.splitlines():
            node, _, state = line.partition(" ")
            seen.setdefault(node, set()).add(state.strip())
        return (
            res.returncode == 0
            and set(seen) == set(self.nodenames)
            and all(states == {"idle"} for states in seen.values())
        )

    def _write_configs(self) -> None:
        mem_mb = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_mb = int(line.split()[1]) // 1024
        real_memory = max(256, int(mem_mb * 0.9) // len(self.nodenames))
        p = self._p
        if self.multi:  # one slurm.conf for every node: %n is the node's name
            spool, slurmd_pid, slurmd_log = (
                p("spool", "%n"),
                p("run", "slurmd-%n.pid"),
                p("log", "slurmd-%n.log"),
            )
            for node in self.nodenames:
                os.mkdir(p("spool", node))
            nodes = "\n".join(
                f"NodeName={n} NodeHostname={n} NodeAddr={a} CPUs={self.cpus} "
                f"RealMemory={real_memory} State=UNKNOWN"
                for n, a in self.node_addrs.items()
            )
        else:
            spool, slurmd_pid, slurmd_log = (
                p("spool"),
                p("run", "slurmd.pid"),
                p("log", "slurmd.log"),
            )
            nodes = (
                f"NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={real_memory} State=UNKNOWN"
            )
        node_list = ",".join(self.nodenames)
        # cred_expire: a requeued job waits about this long (+1 s) before it may start again; the
        # default (120) would make every requeue test take minutes, and Slurm refuses less than 5.
        slurm_conf = f"""\
# generated by tests/slurm_cluster.py
ClusterName={CLUSTER_NAME}
FirstJobId={100000 if self.multi else 1}
SlurmctldHost={self.host}({self.ctld_addr})
SlurmctldPort={self.ports["ctld"]}
SlurmdPort={self.ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={p("state")}
SlurmdSpoolDir={spool}
SlurmctldPidFile={p("run", "slurmctld.pid")}
SlurmdPidFile={slurmd_pid}
SlurmctldLogFile={p("log", "slurmctld.log")}
SlurmdLogFile={slurmd_log}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobContainerType=job_container/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.ports["dbd"]}
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
SlurmdParameters=config_overrides
PropagateResourceLimits=NONE
ReturnToService=2
KillWait=5
MinJobAge=5
InactiveLimit=0
MessageTimeout=10
SlurmdTimeout=60
MailProg=/bin/true
{nodes}
PartitionName={self.partition} Nodes={node_list} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName={self.high_partition} Nodes={node_list} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
PartitionName={self.held_partition} Nodes={node_list} MaxTime=INFINITE State=DOWN PriorityTier=1 PreemptMode=REQUEUE
"""
        dbd_conf = f"""\
# generated by tests/slurm_cluster.py
AuthType=auth/munge
AuthInfo=socket={self.munge_socket}
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={self.ports["dbd"]}
SlurmUser=root
PidFile={p("run", "slurmdbd.pid")}
LogFile={p("log", "slurmdbd.log")}
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.ports["mysql"]}
StorageUser={DB_USER}
StoragePass={DB_PASS}
StorageLoc={DB_NAME}
"""
        Path(p("slurm.conf")).write_text(slurm_conf)
        fd = os.open(p("slurmdbd.conf"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dbd_conf)

    # --------------------------------------------------------------- teardown
    def close(self) -> None:
        """Cancel jobs, stop every daemon we started, restore SLURM_CONF, clean up."""
        if self._exported:
            if self._old_slurm_conf is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = self._old_slurm_conf
            self._exported = False
        if self.tmpdir is None:
            return
        ctld = self._procs.get("slurmctld")
        if ctld is not None and ctld.poll() is None:
            try:
                self._run(["scancel", "-u", getpass.getuser()], check=False, timeout=5)
                deadline = time.monotonic() + 3
                while time.monotonic() < deadline:
                    r = self._run(["squeue", "-h", "-o", "%i"], check=False, timeout=5)
                    if r.returncode != 0 or not r.stdout.strip():
                        break
                    time.sleep(0.2)
            except subprocess.SubprocessError:
                pass
        for group in (("slurmd", "slurmctld"), ("slurmdbd",), ("mariadbd", "munged")):
            _terminate([self._procs[n].pid for n in group if n in self._procs])
        for proc in self._procs.values():
            proc.poll()
        _terminate(_job_processes(str(self.tmpdir)), grace=2.0)
        if self.netns:  # anything left in a node's namespaces
            _terminate([pid for ns in self.netns.values() for pid in _netns_pids(ns)], grace=2.0)
        _delete_network(list(self.netns.values()), self.bridge)
        self.netns.clear()
        self._procs.clear()
        if self.keep:
            Path(self._p("KEEP")).touch()
            print(f"[slurm_cluster] state and logs kept in {self.tmpdir}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmpdir, ignore_errors=True)


try:
    import pytest
except ImportError:  # usable without pytest
    pytest = None

if pytest is not None:

    def _running_cluster(request, nodes: int):
        """A started :class:`SlurmCluster` for a fixture (skip, or fail under CI, if unavailable)."""
        problem = None
        missing = missing_binaries(nodes)
        if missing:
            problem = (
                f"Slurm not installed (missing {', '.join(missing)}); run .ci/install-slurm.sh"
            )
        elif os.geteuid() != 0:
            problem = "the test Slurm cluster must be started as root"
        if problem:
            if in_ci():
                pytest.fail(f"CI is set but {problem}", pytrace=False)
            pytest.skip(problem)
        from helpers import workers

        shared = request.getfixturevalue("tmp_path_factory").getbasetemp().parent
        problem = workers.claim(shared, "slurm-cluster")
        if problem:
            pytest.fail(problem, pytrace=False)
        try:
            return SlurmCluster(nodes=nodes).__enter__()
        except NamespaceError as exc:  # the machine's limits, like a missing package
            problem = f"cannot create the test nodes' network namespaces here: {exc}"
            if in_ci():
                pytest.fail(f"CI is set but {problem}", pytrace=False)
            pytest.skip(problem)
        except SlurmSetupError as exc:
            pytest.fail(f"could not start the test Slurm cluster: {exc}", pytrace=False)

    def _stop(request, cluster) -> None:
        if cluster.keep is None and request.session.testsfailed:
            cluster.keep = True
        cluster.close()

    @pytest.fixture(scope="session")
    def slurm_cluster(request):
        """Session-scoped running single-node :class:`SlurmCluster` (this host is the node)."""
        cluster = _running_cluster(request, 1)
        try:
            yield cluster
        finally:
            _stop(request, cluster)

    @pytest.fixture(scope="session")
    def slurm_two_nodes(request):
        """Session-scoped running two-node :class:`SlurmCluster` (``abl-node1``, ``abl-node2``:
        network namespaces of this host)."""
        cluster = _running_cluster(request, 2)
        try:
            yield cluster
        finally:
            _stop(request, cluster)
