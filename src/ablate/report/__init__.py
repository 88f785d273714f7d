"""The report: every number in it is read from a results directory, none is typed by hand.

    from ablate.report import write_report
    markdown = write_report(["results/test_matrix_results_20251111_170325"])

``write_report`` writes REPORT.md and the plots into the first matrix directory (or ``out_dir``)
and returns the markdown. User mistakes raise ``ablate.errors.AblateError``.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from ablate import __version__
from ablate import results as R
from ablate.atomic import disk_full_error, is_disk_full
from ablate.errors import AblateError, UnwritableError
from ablate.report import tables as T
from ablate.report import warnings as W
from ablate.report.load import Collection, collect
from ablate.report.matched import matched_section
from ablate.report.stats import StepStats, compare, step_stats

__all__ = ["write_report", "build", "render_markdown", "aggregate", "Collection"]

PathLike = str | os.PathLike


def _dirs(matrix_dirs: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(matrix_dirs, (str, os.PathLike)):
        matrix_dirs = [matrix_dirs]
    return R.find_matrix_dirs([str(p) for p in matrix_dirs])


def build(
    matrix_dirs: PathLike | Iterable[PathLike],
    baseline: str | None = None,
    target_loss: float | None = None,
) -> tuple[Collection, dict[str, StepStats]]:
    """Read the matrices and compute per-step statistics (no files written)."""
    coll = collect(_dirs(matrix_dirs), baseline)
    coll.target_loss = target_loss
    stats = step_stats(coll.jobs, coll.order)
    coll.pipeline_check = W.is_pipeline_check(coll.jobs)
    coll.warnings = W.collect_warnings(coll.jobs, stats, coll.order)
    return coll, stats


def aggregate(coll: Collection, stats: dict[str, StepStats]) -> pd.DataFrame:
    """The main table at full precision, one row per step, for ``--format csv|json``."""
    base = stats[coll.baseline]
    winners = T.best_steps(stats, T.blocked_steps(coll))
    rows = []
    prev: StepStats | None = None
    for step in coll.order:
        st = stats[step]
        c = compare(st, base) if step != coll.baseline else None
        p = compare(st, prev) if prev is not None else None
        lo, hi = c.pct_interval if c is not None and c.pct_interval else (math.nan, math.nan)
        rows.append(
            {
                "step": step,
                "architecture": st.architecture,
                "is_baseline": step == coll.baseline,
                "is_best": step in winners,
                "causality": st.causality,
                "n": st.n,
                "jobs": st.n_jobs,
                "completed": st.counts.get(R.COMPLETED, 0),
                "failed": st.counts.get(R.FAILED, 0),
                "partial": st.flag,
                "best_val_loss_mean": st.mean,
                "best_val_loss_std": st.std,
                "best_val_loss_min": min(st.values) if st.values else math.nan,
                "best_val_loss_max": max(st.values) if st.values else math.nan,
                "improvement_pct": c.pct if c is not None else math.nan,
                "improvement_ci_low_pct": lo,
                "improvement_ci_high_pct": hi,
                "no_verdict": (
                    W.no_verdict(coll.warnings, coll.pipeline_check, step, coll.baseline)
                    if step != coll.baseline
                    else None
                ),
                "warnings": "; ".join(w.kind for w in coll.warnings if step in w.steps) or None,
                "within_noise": (
                    c.interval.within_noise if c is not None and c.interval is not None else None
                ),
                "interval_method": (
                    c.interval.method if c is not None and c.interval is not None else None
                ),
                "eval_se": st.eval_se,
                "best_periodic_val_loss_mean": (
                    sum(st.best_periodic) / len(st.best_periodic) if st.best_periodic else math.nan
                ),
                "vs_previous_step": prev.step if prev is not None else None,
                "vs_previous_pct": p.pct if p is not None else math.nan,
                "rmlp_w_rec_mean": st.rmlp_w_rec if st.has_rmlp else math.nan,
                "nan_jobs": st.nan_jobs,
                "resumed_jobs": st.resumed_jobs,
            }
        )
        prev = st
    return pd.DataFrame(rows)


def render_markdown(
    coll: Collection,
    stats: dict[str, StepStats],
    where: Path,
    plots: list[tuple[str, str]] | None = None,
) -> str:
    """The whole report as markdown; ``where`` is the directory REPORT.md goes to (for links)."""
    names = ", ".join(Path(d).name for d in coll.matrix_dirs)
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    if coll.pipeline_check:
        title = f"# Pipeline check (smoke preset), not evidence about the architectures: {names}"
    else:
        title = f"# Ablation report: {names}"
    out = [
        title,
        "",
        f"Generated by ablate {__version__} (`python -m ablate.report`) on {stamp} from "
        f"{len(coll.jobs)} job(s) in {len(coll.matrix_dirs)} matrix directory(ies); every number below "
        "is read from the files listed under Sources.",
        "",
    ]
    if coll.pipeline_check:
        out += [
            "Every job ran the smoke preset (a tiny model, a tiny corpus, a box of seconds): this "
            "report shows that the pipeline runs end to end. Its numbers say nothing about the "
            "architectures, and it makes no verdicts.",
            "",
        ]
    if coll.warnings:
        out += [
            "## Warnings",
            "",
            W.section(coll.warnings),
            "",
            f"Steps marked {W.MARK} in the tables below are named in these warnings.",
            "",
        ]
    out += [
        "## Results",
        "",
        T.main_table(coll, stats),
        "",
        T.main_legend(coll, stats),
        "",
    ]
    out += ["## Steps", "", T.steps_section(coll), ""]
    if coll.notes:
        out += ["## Notes", "", T.notes_section(coll.notes), ""]
    out += [
        "## Seeds and noise",
        "",
        T.seeds_section(coll, stats),
        "",
        "## Progression",
        "",
        T.progression_section(coll, stats),
        "",
        "## Matched work",
        "",
        matched_section(coll, coll.target_loss),
        "",
        "## Causality",
        "",
        T.causality_section(coll, stats),
        "",
        "## Runs",
        "",
        T.runs_table(coll),
        "",
        "Final val loss: the final eval on the full validation set (Val tokens scored; Eval SE from "
        "its per-window losses); the main table compares it. Best periodic val loss: the lowest of the "
        "periodic evals on the small fixed subset (data.val_windows), biased low (a minimum over noisy "
        "evals) and shown for reference only. "
        "Iterations, tokens seen and train seconds are as recorded at the run's last summary or "
        "metrics line; train seconds count training iterations only. ms/iter, tokens/s and MFU are "
        "averages over the run's timed iterations (summary.json; for a job without one, the last "
        "logged interval). Peak memory is rank 0's, in MiB. World size x device is what the run recorded.",
        "",
        "## Gates",
        "",
        "### R-MLP w_rec per layer",
        "",
        T.rmlp_section(coll, stats),
        "",
        "### RA w_rec per head",
        "",
        T.ra_section(coll, stats),
        "",
        "### Reciprocal share of the block output per layer",
        "",
        T.share_section(coll),
        "",
        "## Stability",
        "",
        T.stability_table(coll, stats),
        "",
    ]
    if plots is not None:
        out += ["## Plots", ""]
        if plots:
            out += [f"![{caption}]({name})\n" for name, caption in plots]
        else:
            out += ["No plottable data (no validation losses or gate values recorded).", ""]
    out += ["## Sources", "", T.sources_section(coll, where), ""]
    return "\n".join(out)


def write_report(
    matrix_dirs: PathLike | Iterable[PathLike],
    baseline: str | None = None,
    out_dir: PathLike | None = None,
    plots: bool = True,
    target_loss: float | None = None,
) -> str:
    """Write REPORT.md (atomically) and the plots; return the markdown.

    The report goes into ``out_dir`` when given, else into the first matrix directory: with
    several matrices, one report covers them all and the others are left untouched.
    """
    coll, stats = build(matrix_dirs, baseline, target_loss)
    where = Path(out_dir) if out_dir is not None else Path(coll.matrix_dirs[0])
    try:
        where.mkdir(parents=True, exist_ok=True)
        written = None
        if plots:
            # deferred: matplotlib (seconds to import) only when plots are wanted
            from ablate.report.plots import write_plots

            written = write_plots(coll, stats, where)
        text = render_markdown(coll, stats, where, written)
        R.atomic_write_text(where / R.REPORT, text)
    except UnwritableError as e:
        raise UnwritableError(f"{e}; pass --out DIR (a writable folder)") from None
    except (
        OSError
    ) as e:  # read-only results, --out under a file, a full disk: one line, not a traceback
        if is_disk_full(e):
            raise disk_full_error(where / R.REPORT) from None
        raise AblateError(
            f"cannot write the report into {where}: {e.strerror or e}; pass --out DIR "
            f"(a writable folder)"
        ) from None
    return text


def terminal_summary(markdown: str, report_path: PathLike | None = None) -> str:
    """What a command prints at the end of a matrix: the title, the warnings, the main table and
    any notes, then where the full report is. The full report (legends, noise, runs, gates,
    sources) stays in REPORT.md; its 250-character rows do not belong on a terminal."""
    lines = markdown.splitlines()
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        if line.startswith("## "):
            sections.append((line[3:].strip(), [line]))
        else:
            sections[-1][1].append(line)
    out = [lines[0]] if lines and lines[0].startswith("# ") else []
    for title, body in sections[1:]:
        if title == "Results":
            # The heading and the table: stop at the first blank line after the table starts.
            table, started = [body[0]], False
            for line in body[1:]:
                if line.startswith("|"):
                    started = True
                elif started:
                    break
                table.append(line)
            out += [""] + [ln for ln in table if ln.strip() or ln is table[0]]
        elif title in ("Warnings", "Notes"):
            out += [""] + [ln for ln in body if ln.strip()]
    if report_path is not None:
        out += ["", f"Full report: {report_path}"]
    return "\n".join(out).strip() + "\n"
