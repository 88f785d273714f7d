"""A real, throw-away, single-node Slurm cluster for the test suite.

``SlurmCluster`` starts munged, MariaDB, slurmdbd, slurmctld and slurmd for
*this* host, with every piece of state (configs, spool, state save, logs, pid
files, MariaDB datadir, munge socket) in one per-run temporary directory, and
stops everything it started on exit.  No mocks: ``sbatch``, ``sacct``,
``squeue``, ``scontrol`` and submitit talk to the real daemons.

Requirements: root, and the Debian packages installed by
``.ci/install-slurm.sh`` (munge, slurm-client, slurmctld, slurmd, slurmdbd,
mariadb-server).  Without them the fixture *skips*, unless the environment
variable ``CI`` is set, in which case it *fails* (CI must not skip silently).

Using it from pytest
--------------------
In a ``conftest.py`` (``tests/conftest.py`` or any sub-folder)::

    import sys, pathlib
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))  # the tests/ folder
    from slurm_cluster import slurm_cluster  # noqa: F401  (session-scoped fixture)

(from ``tests/conftest.py`` the ``sys.path`` line is unnecessary: pytest puts
``tests/`` on the path itself).  Then, in a test::

    @pytest.mark.slurm
    def test_x(slurm_cluster, tmp_path):
        ex = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
        ex.update_parameters(slurm_partition=slurm_cluster.partition, timeout_min=5)
        assert ex.submit(int, "3").result() == 3

While the fixture is active ``SLURM_CONF`` is exported in ``os.environ`` (restored
afterwards), so Slurm client commands and submitit reach the test cluster.

Attributes: ``partition`` (default partition, "debug", PreemptMode=REQUEUE),
``high_partition`` ("high", higher PriorityTier: preempts "debug"),
``partitions``, ``tmpdir``, ``env`` (environment for subprocesses),
``nodename``, ``cpus``; method ``logs()`` (tail of every daemon log).

Outside pytest::

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", "--wrap", "hostname"], env=cluster.env)

The temporary directory is removed on success and kept (its path printed) when
setup fails, the ``with`` body raises, or a test of the session failed.  At
start, daemons left behind by an earlier run whose test process is gone are
killed -- only processes recorded in that run's ``pids`` file whose command
line or environment names that run's directory, and job processes whose
``SLURM_CONF`` points into it.  Nothing else is ever signalled.
"""

from __future__ import annotations

import getpass
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFIX = "ablate-slurm-"
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


def _which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in SBIN:
        p = os.path.join(d, name)
        if os.access(p, os.X_OK):
            return p
    return None


def missing_binaries() -> list[str]:
    return [b for b in REQUIRED if _which(b) is None]


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
        if pids and verbose:
            print(f"[slurm_cluster] killing stale processes {pids} of {d}", file=sys.stderr)
        _terminate(pids, grace=3.0)
        if not os.path.exists(os.path.join(d, "KEEP")):
            shutil.rmtree(d, ignore_errors=True)


class SlurmCluster:
    """Context manager running a single-node Slurm with accounting (see module doc)."""

    partition = "debug"
    high_partition = "high"
    partitions = ("debug", "high")

    def __init__(self, timeout: float = 60.0, keep: bool | None = None, verbose: bool = True):
        self.timeout = timeout
        self.keep = keep  # None: keep only on failure
        self.verbose = verbose
        self.tmpdir: Path | None = None
        self.env: dict[str, str] = {}
        self.nodename = socket.gethostname().split(".")[0]
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
        self._wait("munged", self._munge_ok, daemons=("munged",))
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
        self._start("slurmd", [_which("slurmd"), "-D", "-f", self._p("slurm.conf")])
        self._wait(
            f"node {self.nodename} to be idle",
            self._node_idle,
            daemons=("slurmdbd", "slurmctld", "slurmd"),
        )
        self._wait("sacct", lambda: self._ok(["sacct", "-n", "-X", "-a"]), daemons=("slurmdbd",))

        self._old_slurm_conf = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = self.env["SLURM_CONF"]
        self._exported = True

    def _ensure_hostname(self) -> None:
        try:
            socket.gethostbyname(self.nodename)
        except OSError:
            self._log(f"adding {self.nodename} to /etc/hosts")
            with open("/etc/hosts", "a") as f:
                f.write(f"\n127.0.1.1\t{self.nodename}\n")

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
            ["sinfo", "-h", "-N", "-n", self.nodename, "-o", "%t"], check=False, timeout=5
        )
        states = set(res.stdout.split())  # one line per partition the node is in
        return res.returncode == 0 and states == {"idle"}

    def _write_configs(self) -> None:
        mem_mb = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_mb = int(line.split()[1]) // 1024
        real_memory = max(256, int(mem_mb * 0.9))
        p = self._p
        # cred_expire: a requeued job waits about this long (+1 s) before it may start again; the
        # default (120) would make every requeue test take minutes, and Slurm refuses less than 5.
        slurm_conf = f"""\
# generated by tests/slurm_cluster.py
ClusterName={CLUSTER_NAME}
SlurmctldHost={self.nodename}(127.0.0.1)
SlurmctldPort={self.ports["ctld"]}
SlurmdPort={self.ports["slurmd"]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.munge_socket},cred_expire=5
StateSaveLocation={p("state")}
SlurmdSpoolDir={p("spool")}
SlurmctldPidFile={p("run", "slurmctld.pid")}
SlurmdPidFile={p("run", "slurmd.pid")}
SlurmctldLogFile={p("log", "slurmctld.log")}
SlurmdLogFile={p("log", "slurmd.log")}
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
NodeName={self.nodename} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={real_memory} State=UNKNOWN
PartitionName={self.partition} Nodes={self.nodename} Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName={self.high_partition} Nodes={self.nodename} MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
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

    @pytest.fixture(scope="session")
    def slurm_cluster(request):
        """Session-scoped running :class:`SlurmCluster` (skip, or fail under CI, if unavailable)."""
        problem = None
        missing = missing_binaries()
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
        try:
            cluster = SlurmCluster().__enter__()
        except SlurmSetupError as exc:
            pytest.fail(f"could not start the test Slurm cluster: {exc}", pytrace=False)
        try:
            yield cluster
        finally:
            if cluster.keep is None and request.session.testsfailed:
                cluster.keep = True
            cluster.close()
