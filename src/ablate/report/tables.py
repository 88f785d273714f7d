"""Markdown sections of the report; each function turns collected data into one section's text.

Numbers are formatted only through report/fmt.py (rounded half away from zero, at the last
moment); the main table is report/main_table.py (records rendered as markdown, CSV and JSON);
the Seeds and noise and Progression sections render verdicts (report/verdict_text.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablate import results as R
from ablate.report.conditions import step_settings
from ablate.report.fmt import (
    CI_DIGITS,
    bold,
    finite,
    fmt_num,
    fmt_pct,
    fmt_w,
    pipe,
    rounded,
    signed,
)
from ablate.report.load import Collection, relpath
from ablate.report.main_table import (
    MAIN_HEADERS,
    best_steps,
    main_legend,
    main_table,
)
from ablate.report.stats import StepStats

# Re-exported: earlier callers import the number formats and the main table's helpers from here.
__all__ = [
    "CI_DIGITS",
    "MAIN_HEADERS",
    "best_steps",
    "bold",
    "causality_section",
    "finite",
    "fmt_num",
    "fmt_pct",
    "fmt_w",
    "hardware",
    "main_legend",
    "main_table",
    "notes_section",
    "pipe",
    "ra_section",
    "rmlp_section",
    "rounded",
    "runs_table",
    "share_section",
    "signed",
    "sources_section",
    "stability_table",
    "steps_section",
]

# --------------------------------------------------------------------------- runs


def hardware(row: pd.Series) -> str:
    ws = row["world_size"]
    dev = row["device"]
    if ws is None and dev is None:
        return "-"
    ws_s = str(int(ws)) if finite(ws) else "?"
    return f"{ws_s} x {dev or '?'}"


def runs_table(coll: Collection) -> str:
    rows = []
    for _, r in coll.jobs.iterrows():
        mfu = f"{100 * r['mfu']:.1f}%" if finite(r["mfu"]) else "-"
        rows.append(
            [
                r["key"],
                r["step"],
                "-" if r["seed"] is None else str(r["seed"]),
                r["status"],
                rounded(r["final_val_loss"], 4)
                if finite(r["final_val_loss"])
                else ("NaN" if r["nan"] else "-"),
                rounded(r["val_se"], 4) if finite(r["val_se"]) else "-",
                fmt_num(r["final_val_tokens"]),
                rounded(r["best_val_loss"], 4)
                if finite(r["best_val_loss"])
                else ("NaN" if r["nan"] else "-"),
                fmt_num(r["iterations"]),
                fmt_num(r["tokens_seen"]),
                fmt_num(r["train_seconds"], 1),
                fmt_num(r["ms_per_iter"], 1),
                fmt_num(r["tokens_per_s"]),
                mfu,
                fmt_num(r["peak_memory_mb"]),
                hardware(r),
                r["precision"] or "-",
                str(int(r["resumed"])) if finite(r["resumed"]) else "-",
            ]
        )
    return pipe(
        rows,
        [
            "Job",
            "Step",
            "Seed",
            "Status",
            "Final val loss",
            "Loss SE",
            "Val tokens",
            "Best periodic val loss",
            "Iterations",
            "Tokens seen",
            "Train s",
            "ms/iter",
            "Tokens/s",
            "MFU",
            "Peak MB",
            "World size x device",
            "Precision",
            "Resumed",
        ],
    )


# --------------------------------------------------------------------------- gates


def rmlp_section(coll: Collection, stats: dict[str, StepStats]) -> str:
    steps = [s for s in coll.order if stats[s].rmlp_layers]
    if not steps:
        return "No step recorded R-MLP gate values."
    n_layers = max(len(stats[s].rmlp_layers or []) for s in steps)
    rows = []
    for i in range(n_layers):
        rows.append([str(i)] + [_cell(stats[s].rmlp_layers, i) for s in steps])
    for name, fn in (("min", min), ("max", max), ("mean", lambda xs: sum(xs) / len(xs))):
        cells = []
        for s in steps:
            xs = [x for x in stats[s].rmlp_layers or [] if finite(x)]
            cells.append(fmt_w(fn(xs)) if xs else "-")
        rows.append([f"**{name}**"] + cells)
    note = (
        "Final R-MLP w_rec per layer"
        + (" (mean over seeds)" if _multi(stats, steps) else "")
        + "; positive: the MLP adds the reciprocal signal, negative: it subtracts it."
    )
    return pipe(rows, ["Layer"] + steps) + "\n\n" + note


def ra_section(coll: Collection, stats: dict[str, StepStats]) -> str:
    steps = [s for s in coll.order if stats[s].ra_layers]
    if not steps:
        return "No step recorded RA gate values."
    rows = []
    for s in steps:
        flat = [x for layer in stats[s].ra_layers or [] for x in layer if finite(x)]
        layers = stats[s].ra_layers or []
        heads = max((len(layer) for layer in layers), default=0)
        if not flat:
            rows.append([s, f"{len(layers)} x {heads}", "-", "-", "-"])
            continue
        rows.append(
            [
                s,
                f"{len(layers)} x {heads}",
                fmt_w(sum(flat) / len(flat)),
                fmt_w(min(flat)),
                fmt_w(max(flat)),
            ]
        )
    summary = pipe(rows, ["Step", "Layers x heads", "Mean", "Min", "Max"])
    n_layers = max(len(stats[s].ra_layers or []) for s in steps)
    per_layer = []
    for i in range(n_layers):
        cells = []
        for s in steps:
            layers = stats[s].ra_layers or []
            xs = [x for x in layers[i] if finite(x)] if i < len(layers) else []
            cells.append(fmt_w(sum(xs) / len(xs)) if xs else "-")
        per_layer.append([str(i)] + cells)
    note = (
        "Final RA w_rec over every layer and head"
        + (" (mean over seeds)" if _multi(stats, steps) else "")
        + "; below, the mean over heads per layer."
    )
    return summary + "\n\n" + note + "\n\n" + pipe(per_layer, ["Layer"] + steps)


def steps_section(coll: Collection) -> str:
    """Each step's description from its config.yaml: what it changes and what it can express
    that the baseline cannot, so a reader knows what a difference measures."""
    rows = []
    for step in coll.order:
        sub = coll.jobs[coll.jobs["step"] == step]
        descs = [d for d in dict.fromkeys(sub["description"]) if isinstance(d, str) and d.strip()]
        archs = [a for a in dict.fromkeys(sub["architecture"]) if isinstance(a, str)]
        rows.append(
            [step, " / ".join(archs) or "?", " / ".join(" ".join(d.split()) for d in descs) or "-"]
        )
    table = pipe(rows, ["Step", "Architecture", "What it is (config.yaml step.description)"])
    sets = step_settings(coll)
    if not sets:
        return table
    lines = [f"- {step}: {', '.join(keys)}" for step, keys in sets.items()]
    return (
        table + "\n\nSteps that set keys besides model options (their step file: within one matrix "
        "nothing else changes between steps), so they change more than the model; each "
        "difference is named under Warnings:\n\n" + "\n".join(lines)
    )


def share_section(coll: Collection) -> str:
    """Per layer, the reciprocal paths' share of their block output (summary.json gate_shares),
    mean over a step's completed runs."""
    cols: list[tuple[str, list[float]]] = []
    done = coll.jobs[coll.jobs["status"] == R.COMPLETED]
    for step in coll.order:
        recs = [g for g in done.loc[done["step"] == step, "gate_shares"] if isinstance(g, dict)]
        for key, label in (("ra_share", "RA"), ("rmlp_share", "R-MLP")):
            lists = [g[key] for g in recs if g.get(key)]
            if lists:
                width = min(len(x) for x in lists)
                cols.append(
                    (
                        f"{step} {label}",
                        [sum(x[i] for x in lists) / len(lists) for i in range(width)],
                    )
                )
    if not cols:
        return "No run recorded gate shares (summary.json gate_shares; written by the final eval)."
    n_layers = max(len(v) for _, v in cols)
    rows = [
        [str(i)] + [rounded(v[i], 3) if i < len(v) and finite(v[i]) else "-" for _, v in cols]
        for i in range(n_layers)
    ]
    return (
        pipe(rows, ["Layer"] + [c for c, _ in cols]) + "\n\n"
        "What each reciprocal path contributes, measured on fixed validation windows at the final eval "
        "(unlike raw gates, these compare across steps: rescaling a gate against its path's weights "
        "leaves them unchanged). R-MLP: RMS(w_rec x reciprocal path) / RMS(MLP output). RA: RMS of the "
        "reciprocal score term / RMS of the whole attention score, over causal entries of all heads. "
        "0: the path contributes nothing; mean over completed runs."
    )


def _cell(values: list[float] | None, i: int) -> str:
    if not values or i >= len(values) or not finite(values[i]):
        return "-"
    return fmt_w(values[i])


def _multi(stats: dict[str, StepStats], steps: list[str]) -> bool:
    return any(stats[s].n > 1 for s in steps)


# --------------------------------------------------------------------------- stability, sources


def stability_table(coll: Collection, stats: dict[str, StepStats]) -> str:
    rows = []
    for step in coll.order:
        st = stats[step]
        other = st.n_jobs - sum(st.counts.get(k, 0) for k in R.STATUSES)
        rows.append(
            [
                step,
                str(st.n_jobs),
                str(st.counts.get(R.COMPLETED, 0)),
                str(st.counts.get(R.FAILED, 0)),
                str(st.counts.get(R.RUNNING, 0)),
                str(st.counts.get(R.INTERRUPTED, 0)),
                str(st.counts.get(R.PENDING, 0) + other),
                str(st.nan_jobs),
                f"{st.resumed_jobs} ({st.resumes} resumes)" if st.resumed_jobs else "0",
            ]
        )
    return pipe(
        rows,
        [
            "Step",
            "Jobs",
            "Completed",
            "Failed",
            "Running",
            "Interrupted",
            "Pending/unknown",
            "NaN loss",
            "Resumed from checkpoint",
        ],
    )


def sources_section(coll: Collection, where: Path) -> str:
    dirs = "\n".join(f"- `{Path(d).resolve()}`" for d in coll.matrix_dirs)
    rows = []
    for _, r in coll.jobs.iterrows():
        sha = r["git_sha"] or "-"
        if sha != "-" and r["git_dirty"]:
            sha += " (dirty)"
        rows.append(
            [
                r["key"],
                f"`{sha}`" if sha != "-" else "-",
                f"`{relpath(r['config_path'], where)}`" if r["config_path"] else "missing",
                r["source"],
            ]
        )
    return (
        f"Matrix directories:\n\n{dirs}\n\n"
        + pipe(rows, ["Job", "git SHA", "Config", "Values from"])
        + "\n\nPaths are relative to the directory of this report."
    )


def causality_section(coll: Collection, stats: dict[str, StepStats]) -> str:
    """Per step and per job: was the model checked before training and on its trained weights."""
    rows = []
    for _, r in coll.jobs.iterrows():
        leak = r["causality_max_leak"]
        rows.append(
            [
                r["key"],
                r["step"],
                r["causality_state"] or "-",
                r["causality_init"] or "-",
                r["causality_trained"] or "-",
                f"{leak:.3g}" if finite(leak) else "-",
                fmt_num(r["causality_seconds"], 1),
            ]
        )
    steps = ", ".join(f"{s}: {stats[s].causality}" for s in coll.order)
    text = pipe(
        rows,
        [
            "Checked job",
            "Step",
            "Causality",
            "Before training",
            "Trained weights",
            "Largest leak",
            "Check s",
        ],
    )
    return (
        f"Steps: {steps}.\n\n"
        + text
        + "\n\nBefore training: the preflight's gradient and perturbation "
        "probes on the job's model config (random and initial weights); trained weights: the same probes "
        "on the weights the job ended (or resumed) with. `checked` needs both; `unchecked` ran with "
        "preflight=false; `leaked` failed one and is excluded from comparisons. Check seconds are outside "
        "the training time box."
    )


def notes_section(notes: list[str]) -> str:
    """One line per distinct note: the same text for several jobs ("V0: trainer: final eval on
    the whole validation shard ...", once per job) is one line naming them all, in order."""
    merged: dict[str, list[str]] = {}
    for n in notes:
        label, sep, rest = n.partition(": ")
        if not sep or not label or any(c.isspace() for c in label):
            label, rest = "", n  # not a job's note: kept as it is
        merged.setdefault(rest, [])
        if label and label not in merged[rest]:
            merged[rest].append(label)
    return "\n".join(
        f"- {', '.join(labels)}: {rest}" if labels else f"- {rest}"
        for rest, labels in merged.items()
    )
