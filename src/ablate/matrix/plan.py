"""The plan: what a matrix would run and what it would cost, printed without running anything."""

from __future__ import annotations

from tabulate import tabulate

from ablate.compose import JobSpec
from ablate.config import MatrixSettings, RunConfig, job_nodes
from ablate.data import final_val_windows, resolve_dataset
from ablate.data.config import DEFAULT_VAL_TOKENS
from ablate.errors import AblateError
from ablate.launch.slurm import describe_submission
from ablate.matrix.axes import plan_lines
from ablate.matrix.preflight import data_key, world_size


def final_windows(cfg: RunConfig) -> int | None:
    """How many windows the job's final eval will score, read from its validation shard (what the
    job itself will compute), or None when the data does not resolve here (not prepared yet: the
    preflight says so in its own line)."""
    T = cfg.model.block_size
    try:
        ds = resolve_dataset(cfg.data, cfg.model.vocab_size, T)
        n, _ = final_val_windows(ds.val_path, T, cfg.data.val_tokens, cfg.data.val_windows)
    except AblateError:
        return None
    return n


def eval_cost(cfg: RunConfig, windows: int | None = None) -> tuple[str, str]:
    """What the evals cost next to training, estimated from FLOPs: an eval token is a forward
    pass only, ~1/3 of a training token (forward + backward). Returns (periodic share of the
    training time, final eval as tokens and training-iteration equivalents). ``windows``: the
    final eval's windows from the validation shard (final_windows); without it the size is the
    configured bound (data.val_tokens, or "<=" the default when null)."""
    T = cfg.model.block_size
    tpi = cfg.optim.tokens_per_iter  # >= 1 (ablate.config)
    periodic = cfg.data.val_windows * T
    share = periodic / (3.0 * cfg.budget.eval_interval * tpi)
    if windows is not None:
        final = windows * T
        final_s = f"{final:,}"
    elif cfg.data.val_tokens is None:
        final = (DEFAULT_VAL_TOKENS // T) * T
        final_s = f"<= {final:,}"
    else:
        final = (cfg.data.val_tokens // T) * T
        final_s = f"{final:,}"
    iters = final / (3.0 * tpi)
    return f"{100 * share:.1f}%", f"{final_s} (~{iters:.0f} iters)"


def warmup_warnings(jobs: list[JobSpec]) -> list[str]:
    """Jobs whose budget cannot leave warmup, known before running: an iteration budget no longer
    than its optim.warmup_iters. (A warmup_fraction, the only warmup of a time box, is below 1:
    every budget leaves it; a box can still cut an iteration budget short, which the job warns.)"""
    out = []
    for job in jobs:
        o, b = job.cfg.optim, job.cfg.budget
        if b.max_iters is not None and o.warmup_iters is not None and o.warmup_iters >= b.max_iters:
            out.append(
                f"warning: {job.name}: optim.warmup_iters={o.warmup_iters} >= budget.max_iters={b.max_iters}: "
                "the run ends in warmup and its report will make no verdict"
            )
    return out


def format_plan(
    jobs: list[JobSpec], settings: MatrixSettings, reuse_lines: list[str] | None = None
) -> str:
    """The plan of a matrix with these settings (MatrixSettings); ``reuse_lines``: which jobs
    would reuse a finished run (ablate.matrix.reuse.plan_lines)."""
    nodes = job_nodes(settings)
    rows = []
    total_dev_h = 0.0
    windows: dict[str, int | None] = {}  # one read of each validation shard
    for job in jobs:
        cfg = job.cfg
        ws = world_size(cfg, nodes)
        dkey = data_key(cfg)
        if dkey not in windows:  # setdefault would read the shard again for every job
            windows[dkey] = final_windows(cfg)
        box = cfg.budget.box_seconds
        device = cfg.hardware.device
        dev_h = ws * box / 3600 if box is not None else 0.0
        total_dev_h += dev_h
        rows.append(
            [
                job.name,
                job.step,
                cfg.step.architecture,
                job.seed,
                f"{ws} x {device}",
                "-" if box is None else f"{box:.0f}",
                cfg.budget.max_iters if cfg.budget.max_iters is not None else "-",
                f"{dev_h:.2f}",
                *eval_cost(cfg, windows[dkey]),
                " ".join(job.overrides),
            ]
        )
    headers = [
        "job",
        "step",
        "architecture",
        "seed",
        "ranks x device",
        "box s",
        "max iters",
        "device-hours",
        "periodic evals",
        "final eval tokens",
        "overrides",
    ]
    out = [
        f"Plan: {len(jobs)} job(s) into {settings.results_root}/test_matrix_results_<timestamp>/",
        "",
    ]
    out.append(tabulate(rows, headers=headers, tablefmt="pipe", disable_numparse=True))
    out.append("")
    out.append(
        f"Total: {total_dev_h:.2f} device-hours of training (boxes only; evals and startup come on top)."
    )
    out += plan_lines(jobs, settings)
    out.append(
        "Evals (outside the box, estimated from FLOPs: an eval token costs ~1/3 of a training token): "
        "periodic evals on data.val_windows windows every budget.eval_interval iterations add the "
        "share shown to the training time; the final eval on the full validation set "
        "(data.val_tokens; null: up to 2M, or what the validation shard holds; the size shown is "
        "read from the shard, or a bound marked <= where the data is not prepared yet) costs "
        "about as long as the training iterations shown."
    )
    out += list(reuse_lines or [])
    for line in warmup_warnings(jobs):
        out.append(line)
    if settings.launcher.name == "slurm":
        out.append("")
        out.append(describe_submission({j.name: j.cfg for j in jobs}, settings))
    else:
        out.append("Launcher: local (torchrun per job; jobs packed onto free devices).")
    return "\n".join(out)
