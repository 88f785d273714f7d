"""``python -m ablate.runs list|show|rebuild|roots``: what have we tried, read from the runs index."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from ablate import identity, results
from ablate.errors import AblateError, die, exit_quietly_on_closed_pipe
from ablate.runs import query
from ablate.runs.index import ENV_INDEX, RunsIndex
from ablate.runs.read import Row

DESCRIPTION = """\
Every run under the known results roots, from a local index of the job directories (rebuilt
from them whenever it is missing or damaged). A matrix adds its results_root; --root DIR adds one.
"""

EPILOG = """\
filters: KEY=VALUE[,VALUE...], all must match: step, seed, status, causality, identity (a prefix),
matrix, job, host, experiment, device, reused (yes|no), or a swept key (lr=0.001 or optim.lr=0.001).
examples:
  python -m ablate.runs list
  python -m ablate.runs list step=V18 --since 7d
  python -m ablate.runs list status=completed --format csv > runs.csv
  python -m ablate.runs show test_matrix_results_20260131_120000/V0
  python -m ablate.runs rebuild --root results
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one `error:` line, as every ablate command
        raise AblateError(f"{message} (see python -m ablate.runs --help)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m ablate.runs",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = _Parser(add_help=False)
    common.add_argument(
        "--root",
        action="append",
        default=[],
        metavar="DIR",
        help="a results root to scan, remembered for later (repeatable)",
    )
    common.add_argument(
        "--index",
        metavar="FILE",
        help=f"the index file (default: ${ENV_INDEX}, else ~/.cache/ablate/runs-<host>.sqlite)",
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    ls = sub.add_parser("list", parents=[common], help="list runs (filters: KEY=VALUE)")
    ls.add_argument("filters", nargs="*", metavar="KEY=VALUE")
    ls.add_argument(
        "--since", metavar="WHEN", help="ended at or after: 2026-01-31, an ISO time, 3d, 12h"
    )
    ls.add_argument("--format", choices=("table", "csv", "json"), default="table")
    show = sub.add_parser("show", parents=[common], help="one run: its files, identity, reuse")
    show.add_argument(
        "run", metavar="RUN", help="a job directory, MATRIX/JOB, or an identity prefix"
    )
    show.add_argument("--format", choices=("text", "json"), default="text")
    sub.add_parser("rebuild", parents=[common], help="forget the index and read every root again")
    sub.add_parser("roots", parents=[common], help="the results roots the index scans")
    return p


def _open(args: argparse.Namespace) -> RunsIndex:
    roots = []
    for given in args.root:
        path = Path(given).expanduser()
        if not path.is_dir():
            raise AblateError(f"--root {given}: no such folder")
        roots.append(path)
    return RunsIndex(args.index, roots=roots)


def _list(args: argparse.Namespace) -> str:
    filters = query.parse_filters(args.filters)
    since = query.parse_since(args.since) if args.since is not None else None
    with _open(args) as index:
        index.refresh()
        rows = query.select(index.rows(), filters, since)
        if not index.roots():
            print(
                "note: no results roots known yet; run a matrix or add one with --root DIR",
                file=sys.stderr,
            )
    if args.format == "csv":
        return query.format_csv(rows)
    if args.format == "json":
        return query.format_json(rows)
    return query.format_table(rows) + f"{len(rows)} run(s)\n"


def find_runs(index: RunsIndex, run: str) -> list[Row]:
    """The rows ``run`` names: a job directory, MATRIX/JOB (or JOB when unique), an identity
    prefix (every run of that identity)."""
    rows = index.rows()
    path = Path(run).expanduser()
    if path.is_dir():
        want = os.path.abspath(path)
        hits = [r for r in rows if r["path"] == want]
        if hits:
            return hits
        index.record_job(want)  # a directory the index has not seen: read it now
        return [r for r in index.rows() if r["path"] == want]
    tail = run.strip("/")
    hits = [r for r in rows if r["path"].endswith("/" + tail)]
    if hits:
        return hits
    low = tail.lower()
    if len(low) >= 6 and all(c in "0123456789abcdef" for c in low):
        return [r for r in rows if (r["identity"] or "").startswith(low)]
    return []


def _show(args: argparse.Namespace) -> str:
    with _open(args) as index:
        index.refresh()
        hits = find_runs(index, args.run)
        if not hits:
            raise AblateError(
                f"no run matches {args.run!r}; give a job directory, MATRIX/JOB as listed by "
                "`python -m ablate.runs list`, or an identity prefix"
            )
        idents = {h["identity"] for h in hits}
        trained = [h for h in hits if not h["reused_from"]]
        labels = [f"{h['matrix']}/{h['job']}" for h in hits]
        if len(set(labels)) < len(labels) and len(trained) > 1:
            # one MATRIX/JOB under several roots: separate trainings the name cannot tell apart
            paths = ", ".join(h["path"] for h in trained[:5])
            raise AblateError(
                f"{args.run!r} matches {len(trained)} trained runs in different directories "
                f"({paths}{', ...' if len(trained) > 5 else ''}); give the job directory"
            )
        if len(hits) > 1 and (len(idents) > 1 or None in idents):
            names = ", ".join(labels[:5])
            raise AblateError(
                f"{args.run!r} matches {len(hits)} runs ({names}{', ...' if len(hits) > 5 else ''}); "
                "give MATRIX/JOB or the job directory"
            )
        row = next((h for h in hits if not h["reused_from"]), hits[0])
        same = index.with_identity(row["identity"]) if row["identity"] else [row]
    jd = results.JobDir(Path(row["path"]))
    record, problem = identity.read_identity(jd)
    others = [r for r in same if r["path"] != row["path"]]
    if args.format == "json":
        out = query.as_plain(row)
        out["identity_record"] = record
        out["identity_problem"] = problem
        out["same_identity"] = [r["path"] for r in others]
        return json.dumps(out, indent=2) + "\n"
    lines = [
        f"run          {row['matrix']}/{row['job']}",
        f"path         {row['path']}",
        f"step         {row['step']}   seed {row['seed']}   axes {query.cell(row, 'axes')}",
        f"status       {row['status']}   causality {row['causality']}",
        f"val loss     {query.cell(row, 'final_val_loss')} (final, full set)"
        + (
            f"; best periodic {row['best_val_loss']:.4f}"
            if row["best_val_loss"] is not None
            else ""
        ),
        f"when         {query.cell(row, 'ended')}   host {row['host'] or '-'}   device {row['device'] or '-'}",
        f"identity     {row['identity'] or '-'}"
        + ("  (mixed: resumed under another identity)" if row["mixed"] else ""),
    ]
    if problem:
        lines.append(f"  {problem}")
    lines += identity.describe_components(record)
    if row["reused_from"]:
        lines.append(f"reused from  {row['reused_from']} (trained there; not trained again here)")
    if others:
        lines.append(f"same identity ({len(others)}):")
        lines += [
            f"  {r['matrix']}/{r['job']}  {r['status']}"
            + ("  (reused)" if r["reused_from"] else "")
            for r in others
        ]
    return "\n".join(lines) + "\n"


def run(argv: Sequence[str] | None = None) -> str:
    args = _parser().parse_args(argv)
    if args.command is None:
        raise AblateError(
            "give a command: list, show, rebuild or roots (see python -m ablate.runs --help)"
        )
    if args.command == "list":
        return _list(args)
    if args.command == "show":
        return _show(args)
    with _open(args) as index:
        if args.command == "rebuild":
            counts = index.rebuild()
            n = len(index.rows())
            return f"rebuilt {index.path}: {n} run(s) in {counts['matrices']} matrix directories\n"
        roots = index.roots()
    return "".join(f"{r}\n" for r in roots) or "no results roots known yet\n"


def main(argv: Sequence[str] | None = None) -> int:
    try:
        out = run(argv)
    except AblateError as e:
        die(str(e))
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        exit_quietly_on_closed_pipe()
    return 0


if __name__ == "__main__":
    sys.exit(main())
