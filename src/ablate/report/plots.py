"""PNG plots beside REPORT.md.

Figures are built with ``matplotlib.figure.Figure`` and rendered by the Agg canvas directly, never
through pyplot: no global backend switch, no display needed, safe inside the matrix runner.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from ablate import results as R
from ablate.report.load import Collection
from ablate.report.stats import StepStats

VAL_VS_ITER = "val_loss_vs_iter.png"
VAL_VS_TIME = "val_loss_vs_time.png"
VAL_VS_TOKENS = "val_loss_vs_tokens.png"
TRAIN_VS_TOKENS = "train_loss_vs_tokens.png"
W_REC = "w_rec_per_layer.png"
LEGEND = (
    "In the validation plots, the lines and dots are the periodic evals on the small fixed subset "
    "of validation windows (data.val_windows); a hollow diamond is a completed run's final eval "
    "on the full validation set, the number the main table compares, so the two need not meet. "
    "The training loss is each logged iteration's batch loss (metrics.jsonl loss/train)."
)

# The job column holding where a run ended, on each curve x axis: its final full-set eval is
# drawn there, so the number the main table compares is on the same figure as the periodic curve.
_END_COLUMN = {"iter": "iterations", "tokens_seen": "tokens_seen", "train_seconds": "train_seconds"}
FINAL_LABEL = "final eval, full validation set (the main table's number)"


def _figure(width: float = 8.0, height: float = 5.0) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    R.atomic_write_bytes(path, buf.getvalue())


def _colors(order: list[str]) -> dict[str, object]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(order) <= 10 else "tab20"]
    return {step: cmap(i % cmap.N) for i, step in enumerate(order)}


def _val_loss(coll: Collection, x: str, xlabel: str, title: str, path: Path) -> bool:
    fig = val_loss_figure(coll, x, xlabel, title)
    if fig is None:
        return False
    _save(fig, path)
    return True


def val_loss_figure(coll: Collection, x: str, xlabel: str, title: str) -> Any:
    """The validation-loss figure against column ``x`` of the curves, or None with nothing to plot.

    Every eval is a marker, so a run with one eval (a smoke run) is a visible point, not an empty
    line; when no run has two evals the figure says so instead of looking like a broken curve."""
    curves = coll.curves
    if curves.empty:
        return None
    curves = curves[curves["val_loss"].map(math.isfinite) & curves[x].map(math.isfinite)]
    if curves.empty:
        return None
    colors = _colors(coll.order)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for step, xs, ys in _lines_per_step(curves, x, "val_loss"):
        ax.plot(
            xs,
            ys,
            color=colors.get(step),
            linewidth=1.2,
            alpha=0.85,
            label=step,
            marker="o",
            markersize=4 if (xs == xs).sum() <= 200 else 1.5,  # points, not NaN breaks
        )
    _final_points(ax, coll, x, colors)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("validation loss")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(title="step")
    if curves.groupby("key").size().max() < 2:
        ax.text(
            0.5,
            0.02,
            "each run has a single evaluation: one point per run, no curve",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=9,
            style="italic",
        )
    return fig


def _lines_per_step(df: Any, x: str, y: str) -> list[tuple[str, Any, Any]]:
    """(step, xs, ys) per step, its jobs' lines joined by NaN breaks: one Line2D per step, so a
    thousand seeds draw in one call and a step's seeds share a colour and one legend entry."""
    import numpy as np

    out = []
    for step, g in df.groupby("step", sort=False):
        xs, ys = [], []
        for _, job in g.groupby("key", sort=False):
            xs += [job[x].to_numpy(dtype=float), [np.nan]]
            ys += [job[y].to_numpy(dtype=float), [np.nan]]
        out.append((str(step), np.concatenate(xs), np.concatenate(ys)))
    return out


def _final_points(ax: Any, coll: Collection, x: str, colors: dict[str, object]) -> None:
    """Each completed run's final full-set val loss, a hollow diamond at where the run ended: the
    periodic dots are a small subset of windows, so the two need not agree, and the figure shows
    both rather than letting the curve pass for the table's number."""
    end = _END_COLUMN.get(x)
    jobs = coll.jobs
    if end is None or jobs.empty:
        return
    done = jobs[(jobs["status"] == R.COMPLETED)]
    done = done[done["val_loss"].map(_finite) & done[end].map(_finite)]
    for step, g in done.groupby("step", sort=False):
        ax.scatter(
            g[end].to_numpy(dtype=float),
            g["val_loss"].to_numpy(dtype=float),
            marker="D",
            s=42,
            facecolors="none",
            edgecolors=[colors.get(step)] * len(g),
            linewidths=1.6,
            zorder=3,
        )
    if not done.empty:  # one legend entry in no step's colour: the diamond means the same for all
        ax.scatter(
            [], [], marker="D", s=42, facecolors="none", edgecolors="grey", label=FINAL_LABEL
        )


def train_loss_figure(coll: Collection) -> Any:
    """The logged training loss (each log iteration's global batch) against tokens seen, one line
    per run (seeds of a step share a colour), or None when no run logged a finite train loss."""
    tc = coll.train_curves
    if tc.empty:
        return None
    tc = tc[tc["train_loss"].map(_finite) & tc["tokens_seen"].map(_finite)]
    if tc.empty:
        return None
    colors = _colors(coll.order)
    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    for step, xs, ys in _lines_per_step(tc, "tokens_seen", "train_loss"):
        ax.plot(
            xs,
            ys,
            color=colors.get(step),
            linewidth=1.0,
            alpha=0.85,
            label=step,
        )
    ax.set_xlabel("tokens seen")
    ax.set_ylabel("training loss (the logged iteration's batch)")
    ax.set_title("Training loss against tokens seen")
    ax.grid(True, alpha=0.3)
    ax.legend(title="step")
    return fig


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def write_plots(
    coll: Collection, stats: dict[str, StepStats], out_dir: Path
) -> list[tuple[str, str]]:
    """Write the plots into ``out_dir``; returns (file name, caption) for those written."""
    written = []
    if _val_loss(
        coll, "iter", "iteration", "Validation loss against iterations", out_dir / VAL_VS_ITER
    ):
        written.append((VAL_VS_ITER, "Validation loss against iterations"))
    if _val_loss(
        coll,
        "tokens_seen",
        "tokens seen",
        "Validation loss against tokens seen",
        out_dir / VAL_VS_TOKENS,
    ):
        written.append((VAL_VS_TOKENS, "Validation loss against tokens seen"))
    if _val_loss(
        coll,
        "train_seconds",
        "training seconds (evals excluded)",
        "Validation loss against training time",
        out_dir / VAL_VS_TIME,
    ):
        written.append((VAL_VS_TIME, "Validation loss against training time"))
    fig = train_loss_figure(coll)
    if fig is not None:
        _save(fig, out_dir / TRAIN_VS_TOKENS)
        written.append((TRAIN_VS_TOKENS, "Training loss against tokens seen"))
    if _gates(coll, stats, out_dir / W_REC):
        written.append((W_REC, "Final w_rec per layer"))
    return written


def _gates(coll: Collection, stats: dict[str, StepStats], path: Path) -> bool:
    rmlp = [s for s in coll.order if stats[s].rmlp_layers]
    ra = [s for s in coll.order if stats[s].ra_layers]
    if not rmlp and not ra:
        return False
    from matplotlib.ticker import MaxNLocator

    colors = _colors(coll.order)
    panels = [p for p in (("R-MLP w_rec", rmlp), ("RA w_rec (mean over heads)", ra)) if p[1]]
    fig = _figure(8.0, 3.6 * len(panels))
    for i, (title, steps) in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        for s in steps:
            if title.startswith("R-MLP"):
                ys = stats[s].rmlp_layers or []
            else:
                ys = [_mean(layer) for layer in stats[s].ra_layers or []]
            ax.plot(range(len(ys)), ys, marker="o", color=colors.get(s), label=s)
        ax.axhline(0.0, color="grey", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("layer")
        ax.set_ylabel("w_rec")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(title="step")
    fig.tight_layout()
    _save(fig, path)
    return True


def _mean(xs: list[float]) -> float:
    ys = [x for x in xs if math.isfinite(x)]
    return sum(ys) / len(ys) if ys else math.nan
