"""``python -m ablate.report DIR_OR_GLOB...`` (console script ``ablate-report``).

Markdown (default): printed on stdout and written as REPORT.md plus PNG plots into the first
matrix directory, or into ``--out DIR``. ``--format csv|json``: only the per-step table, at full
precision, on stdout; nothing is written, so the output can be piped.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ablate import results as R
from ablate.errors import AblateError, die
from ablate.report.matched import DEFAULT_TARGET


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ablate-report",
        description="Report one or more ablation matrices from their stored results.",
    )
    p.add_argument(
        "dirs",
        nargs="+",
        metavar="DIR",
        help="matrix directories or globs, e.g. 'results/test_matrix_results_*'",
    )
    p.add_argument(
        "--baseline",
        metavar="STEP",
        help="step the others are compared with (default: matrix.json's baseline, else V0)",
    )
    p.add_argument(
        "--format",
        choices=("markdown", "csv", "json"),
        default="markdown",
        help="markdown report (default), or the per-step table as csv/json on stdout",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write REPORT.md and plots here instead of the first matrix dir",
    )
    p.add_argument(
        "--no-write", action="store_true", help="print the markdown only; write no files"
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument(
        "--target-loss",
        type=float,
        metavar="LOSS",
        help="val loss for the matched-work section's tokens/time to target "
        f"(default: {DEFAULT_TARGET})",
    )
    p.add_argument(
        "--tune",
        metavar="KEY[,KEY]",
        help="axes each step is tuned over, e.g. optim.lr: each step at its best value, chosen on "
        "half the validation windows and reported on the other half (default: the matrix's tune "
        "setting)",
    )
    return p


def _check_dirs(patterns: Sequence[str], writes: bool, out: str | None) -> None:
    """Refuse a folder that is not a matrix (before anything is read or written), and never write
    a report into a folder ablate did not create as a matrix."""
    dirs = R.find_matrix_dirs(patterns)
    for d in dirs:
        if R.is_matrix_dir(d):
            continue
        subdirs = [p for p in d.iterdir() if p.is_dir()]
        if any((p / R.SUMMARY).is_file() for p in subdirs):
            continue  # job directories copied together by hand: readable, see below for writing
        inside = [p.name for p in subdirs if R.is_matrix_dir(p)]
        raise AblateError(
            f"{d}: no jobs found, it is not a matrix directory (no {R.MANIFEST}, no job directory "
            f"with {R.SUMMARY}); "
            + (
                f"it holds matrix directories: point at them ({d}/{R.MATRIX_PREFIX}*)"
                if inside
                else f"point at a results/{R.MATRIX_PREFIX}* directory"
            )
        )
    if writes and out is None and not R.is_matrix_dir(dirs[0]):
        raise AblateError(
            f"{dirs[0]} has no {R.MANIFEST}: it is not a matrix directory, so the report is not "
            "written into it; add --out DIR (or --no-write to only print it)"
        )


def run(argv: Sequence[str] | None = None) -> str:
    args = _parser().parse_args(argv)
    _check_dirs(args.dirs, args.format == "markdown" and not args.no_write, args.out)
    from ablate import report  # deferred: pandas loads after argument parsing (fast --help)

    if args.target_loss is not None and not (
        math.isfinite(args.target_loss) and args.target_loss > 0
    ):
        raise AblateError(
            f"--target-loss {args.target_loss}: must be a positive finite validation loss"
        )

    tune = None
    if args.tune is not None:
        tune = [k.strip() for k in args.tune.split(",") if k.strip()]
        if not tune:
            raise AblateError("--tune needs a swept key, e.g. --tune optim.lr")
    if args.format != "markdown":
        # deferred: pandas loads after argument parsing (fast --help), as above
        from ablate.report import main_table

        coll, stats = report.build(args.dirs, args.baseline, args.target_loss, tune)
        rows = report.main_rows(coll, stats)
        if args.format == "csv":
            return str(main_table.frame(rows).to_csv(index=False))
        return main_table.to_json(rows)
    if args.no_write:
        coll, stats = report.build(args.dirs, args.baseline, args.target_loss, tune)
        where = Path(args.out) if args.out else Path(coll.matrix_dirs[0])
        return report.render_markdown(coll, stats, where, None)
    return report.write_report(
        args.dirs,
        args.baseline,
        out_dir=args.out,
        plots=not args.no_plots,
        target_loss=args.target_loss,
        tune=tune,
    )


def main(argv: Sequence[str] | None = None) -> None:
    try:
        text = run(argv)
    except AblateError as e:
        die(" ".join(str(e).split()))
    except KeyboardInterrupt:
        die("interrupted; nothing was changed", code=130)
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:  # `ablate-report ... | head` is fine
        sys.stderr.close()


if __name__ == "__main__":
    main()
