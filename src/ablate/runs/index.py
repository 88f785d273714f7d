"""The runs index: one local SQLite file listing every run under the known results roots.

The job directories stay the truth. The index is a cache of one row per job directory
(``ablate.runs.read.COLUMNS``) that can be deleted at any time and is rebuilt from the files:

- **Where.** ``$ABLATE_RUNS_INDEX``, else ``$XDG_CACHE_HOME/ablate/runs-<host>.sqlite`` (default
  ``~/.cache``): on this machine, one file per host, so a home directory shared over NFS never
  has two hosts writing one database. A path inside a results root is refused: the results
  folder may be shared, the index never is. The results roots it scans are listed beside it, in
  ``<index>.roots.json`` (a matrix adds its ``results_root``; ``--root DIR`` adds one), so a lost
  or damaged database is rebuilt from the same folders.
- **Kept current.** The matrix records each job when it ends and the whole matrix at its end;
  every reader first catches up (``refresh``): matrix directories whose mtime or matrix.json
  changed, and job directories whose mtime (or that of summary.json, identity.json, DONE,
  reused.json: a hand edit in place) changed, are read again (a writer replaces a file by
  rename, which changes the directory's mtime). A directory read within 2 s of its last change is
  read again next time (coarse mtimes). Matrices that disappeared are dropped.
- **Concurrent writers.** WAL mode and a 30 s busy timeout; every write is one short
  ``BEGIN IMMEDIATE`` transaction, so two matrices ending together both land.
- **Damage.** A file that is not an index (garbage, another program's database, a schema of
  another version) is moved aside and rebuilt from the roots, with one note; never a traceback.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from ablate import results
from ablate.errors import AblateError
from ablate.runs.read import COLUMNS, Row, is_within, job_stamp, read_matrix
from ablate.runs.roots import ENV_INDEX, absolute, default_path, read_roots, write_roots

__all__ = ["ENV_INDEX", "RunsIndex", "default_path"]

T = TypeVar("T")
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0

_RUN_TYPES = {
    "mixed": "INTEGER",
    "seed": "INTEGER",
    "final_val_loss": "REAL",
    "best_val_loss": "REAL",
    "done": "INTEGER",
    "ended_ts": "REAL",
    "dir_mtime": "INTEGER",
}
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)",
    "CREATE TABLE IF NOT EXISTS runs ("
    + ", ".join(
        f"{c} {_RUN_TYPES.get(c, 'TEXT')}{' PRIMARY KEY' if c == 'path' else ''}"
        for c in ("path", "matrix_dir", *COLUMNS[1:])
    )
    + ")",
    "CREATE INDEX IF NOT EXISTS runs_identity ON runs (identity)",
    "CREATE INDEX IF NOT EXISTS runs_matrix ON runs (matrix_dir)",
    "CREATE TABLE IF NOT EXISTS matrices (path TEXT PRIMARY KEY, root TEXT, dir_mtime INTEGER, "
    "manifest_mtime INTEGER)",
]
_ALL_COLUMNS = ("path", "matrix_dir", *COLUMNS[1:])


def _corrupt(e: sqlite3.DatabaseError) -> bool:
    """A file that is not (our) database, as opposed to a busy or unopenable one."""
    if type(e) is sqlite3.DatabaseError:  # "file is not a database", "disk image is malformed"
        return True
    text = str(e).lower()
    return "malformed" in text or "no such table" in text or "no such column" in text


class _Rebuild(Exception):
    """Internal: the database must be set aside and rebuilt (why)."""


def _stamp(path: Path) -> int:
    """mtime_ns of ``path`` (0: absent), 0 too when written within the last 2 s (read again)."""
    try:
        ns = os.stat(path).st_mtime_ns
    except OSError:
        return 0
    return ns if time.time_ns() - ns > 2_000_000_000 else 0


class RunsIndex:
    """The index file at ``path`` (default: ``default_path()``). ``note`` receives one-line
    remarks (a rebuilt index, a damaged roots list); default: stderr."""

    def __init__(
        self,
        path: results.PathLike | None = None,
        note: Callable[[str], None] | None = None,
        roots: Iterable[results.PathLike] = (),
    ):
        self.path = Path(path).expanduser().absolute() if path else default_path()
        self.note = note or (lambda m: print(m, file=sys.stderr, flush=True))
        self._conn: sqlite3.Connection | None = None
        new_roots = [absolute(r) for r in roots]
        for root in new_roots:  # refused before the file is created
            self._refuse_inside(root)
        self._open()
        self.add_roots(new_roots)

    # ------------------------------------------------------------------ the file

    @property
    def roots_file(self) -> Path:
        return self.path.with_name(self.path.name + ".roots.json")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> RunsIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self) -> None:
        if self.path.is_dir():
            raise AblateError(
                f"runs index {self.path} is a directory; set {ENV_INDEX} to a file path"
            )
        for root in self._stored_roots():
            self._refuse_inside(root)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise AblateError(
                f"cannot create the folder of the runs index {self.path} ({e.strerror}); set "
                f"{ENV_INDEX} to a writable local file"
            ) from None
        try:
            self._connect()
        except _Rebuild as why:
            self._set_aside(str(why))

    def _connect(self) -> None:
        try:
            conn = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except sqlite3.Error as e:
            raise AblateError(
                f"cannot open the runs index {self.path} ({e}); set {ENV_INDEX} to a writable "
                "local file"
            ) from None
        self._conn = conn
        try:
            conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if tables and "meta" not in tables:
                raise _Rebuild(f"holds tables of something else ({', '.join(sorted(tables))})")
            if "meta" in tables:
                row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if row is None or row[0] != str(SCHEMA_VERSION):
                    raise _Rebuild(
                        f"has schema {row[0] if row else 'none'}, this version uses {SCHEMA_VERSION}"
                    )
                return
            with self._write() as c:
                for stmt in _SCHEMA:
                    c.execute(stmt)
                c.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                    (str(SCHEMA_VERSION),),
                )
        except sqlite3.DatabaseError as e:
            if _corrupt(e):
                raise _Rebuild(f"is not a readable index ({e})") from None
            raise self._busy(e) from None

    def _busy(self, e: sqlite3.Error) -> AblateError:
        return AblateError(
            f"runs index {self.path}: {e}; another process may hold it for long (wait and "
            f"retry), or point {ENV_INDEX} at another file"
        )

    def _set_aside(self, why: str) -> None:
        """Move a damaged file out of the way, start a fresh one and fill it from the roots."""
        self.close()
        aside = self.path.with_name(f"{self.path.name}.damaged-{time.strftime('%Y%m%d_%H%M%S')}")
        with contextlib.suppress(FileNotFoundError):
            os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{self.path}{suffix}")
        try:
            self._connect()
        except _Rebuild as again:  # another process put garbage there in between: give up cleanly
            raise AblateError(
                f"runs index {self.path} {again}; delete it or set {ENV_INDEX} to another file"
            ) from None
        self.note(
            f"note: runs index {self.path} {why}; moved to {aside.name} and rebuilt from the "
            "results folders"
        )
        self.refresh()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn
        assert conn is not None, "runs index is closed"
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _guard(self, action: Callable[[], T]) -> T:
        """Run a read or write; a database found damaged now is set aside and rebuilt once."""
        try:
            return action()
        except sqlite3.DatabaseError as e:
            if not _corrupt(e):
                raise self._busy(e) from None
            self._set_aside(f"is not a readable index ({e})")
            try:
                return action()
            except sqlite3.DatabaseError as e2:
                raise self._busy(e2) from None

    # ------------------------------------------------------------------ roots

    def _stored_roots(self) -> list[Path]:
        return read_roots(self.roots_file, self.note)

    def roots(self) -> list[Path]:
        """The results roots scanned, in the order they were added."""
        out: list[Path] = []
        for p in self._stored_roots():
            if p not in out:
                out.append(p)
        return out

    def _refuse_inside(self, root: Path) -> None:
        if is_within(self.path, root):
            raise AblateError(
                f"the runs index {self.path} lies inside the results root {root}; keep it on "
                f"this machine, outside any results folder ({ENV_INDEX}=~/.cache/ablate/runs.sqlite)"
            )

    def add_roots(self, paths: Iterable[results.PathLike]) -> list[Path]:
        """Remember these results roots (absolute); returns the ones that were new."""
        known = self.roots()
        new: list[Path] = []
        for p in paths:
            root = absolute(p)
            self._refuse_inside(root)
            if root not in known and root not in new:
                new.append(root)
        if new:
            write_roots(self.roots_file, known + new)
        return new

    # ------------------------------------------------------------------ writing

    def record_matrix(
        self,
        matrix_dir: results.PathLike,
        root: results.PathLike | None = None,
        only: set[str] | None = None,
    ) -> int:
        """Read a matrix directory's jobs (``only``: just these job directories) into the index;
        jobs no longer there leave it. Returns the number of rows written."""
        mdir = Path(os.path.abspath(matrix_dir))
        root = Path(os.path.abspath(root)) if root else mdir.parent
        rows, present = read_matrix(mdir, root, only)
        key = (_stamp(mdir), _stamp(mdir / results.MANIFEST))

        def write() -> int:
            with self._write() as c:
                if only is None:
                    stale = [
                        r[0]
                        for r in c.execute("SELECT path FROM runs WHERE matrix_dir=?", (str(mdir),))
                        if r[0] not in present
                    ]
                    c.executemany("DELETE FROM runs WHERE path=?", [(p,) for p in stale])
                _upsert(c, rows, str(mdir))
                if only is None:
                    c.execute(
                        "INSERT OR REPLACE INTO matrices (path, root, dir_mtime, manifest_mtime) "
                        "VALUES (?, ?, ?, ?)",
                        (str(mdir), str(root), *key),
                    )
            return len(rows)

        return self._guard(write)

    def record_job(self, job_dir: results.PathLike) -> None:
        """Read one job directory (with its matrix's manifest entry) into the index."""
        jd = Path(os.path.abspath(job_dir))
        self.record_matrix(jd.parent, only={jd.name})

    def forget_matrix(self, c: sqlite3.Connection, mdir: str) -> None:
        c.execute("DELETE FROM runs WHERE matrix_dir=?", (mdir,))
        c.execute("DELETE FROM matrices WHERE path=?", (mdir,))

    def refresh(self) -> dict[str, int]:
        """Catch up with the files (module docstring). Returns counts: matrices and jobs read
        again, matrices dropped."""
        return self._guard(self._refresh)

    def _refresh(self) -> dict[str, int]:
        conn = self._conn
        assert conn is not None
        known = {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT path, root, dir_mtime, manifest_mtime FROM matrices")
        }
        jobs: dict[str, list[tuple[str, int]]] = {}
        for path, mdir, mtime in conn.execute("SELECT path, matrix_dir, dir_mtime FROM runs"):
            jobs.setdefault(mdir, []).append((path, mtime))
        whole: list[tuple[str, str]] = []
        partial: list[tuple[str, str, set[str]]] = []
        seen: set[str] = set()
        scanned_roots: set[str] = set()
        for root_path in self.roots():
            root = str(root_path)
            try:
                entries = list(os.scandir(root))
            except OSError:
                continue  # an unmounted or deleted root: its rows stay until it is back
            scanned_roots.add(root)
            for entry in entries:
                if not entry.name.startswith(results.MATRIX_PREFIX):
                    continue
                with contextlib.suppress(OSError):
                    if not entry.is_dir():
                        continue
                mdir = os.path.abspath(entry.path)
                seen.add(mdir)
                stamp = (_stamp(Path(mdir)), _stamp(Path(mdir) / results.MANIFEST))
                old = known.get(mdir)
                if old is None or 0 in stamp or old[1:] != stamp:
                    whole.append((mdir, root))
                    continue
                changed: set[str] = set()
                for path, mtime in jobs.get(mdir, []):
                    if mtime == 0 or job_stamp(path) != mtime:
                        changed.add(os.path.basename(path))
                if changed:
                    partial.append((mdir, root, changed))
        gone = [m for m, (r, _, _) in known.items() if r in scanned_roots and m not in seen]
        if gone:
            with self._write() as c:
                for m in gone:
                    self.forget_matrix(c, m)
        for mdir, root in whole:
            self.record_matrix(mdir, root)
        for mdir, root, names in partial:
            self.record_matrix(mdir, root, only=names)
        return {
            "matrices": len(whole),
            "jobs": sum(len(n) for _, _, n in partial),
            "dropped": len(gone),
        }

    def rebuild(self) -> dict[str, int]:
        """Forget every row and read every root again."""

        def clear() -> None:
            with self._write() as c:
                c.execute("DELETE FROM runs")
                c.execute("DELETE FROM matrices")

        self._guard(clear)
        return self.refresh()

    # ------------------------------------------------------------------ reading

    def rows(self, where: str = "", params: tuple[object, ...] = ()) -> list[Row]:
        """Index rows as dicts (oldest first)."""

        def read() -> list[Row]:
            conn = self._conn
            assert conn is not None
            cur = conn.execute(
                f"SELECT {', '.join(_ALL_COLUMNS)} FROM runs {where} ORDER BY ended_ts, path",
                params,
            )
            return [dict(zip(_ALL_COLUMNS, r, strict=True)) for r in cur]

        return self._guard(read)

    def with_identity(self, digest: str) -> list[Row]:
        return self.rows("WHERE identity=?", (digest,))


def _upsert(c: sqlite3.Connection, rows: list[Row], mdir: str) -> None:
    cols = _ALL_COLUMNS
    c.executemany(
        f"INSERT OR REPLACE INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [tuple(mdir if k == "matrix_dir" else row.get(k) for k in cols) for row in rows],
    )
