"""Checks made before any job of a matrix trains.

A matrix that will fail should fail in seconds, not after hours of GPU time: every job's config
builds a model, every step's model is causal (the leak behind the R-MLP validation table's "12%"), the data
is there and valid, the output directory is writable, and GPUs and batch arithmetic fit.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ablate import causality_cache, heap, results
from ablate.compose import JobSpec
from ablate.config import MatrixSettings, RunConfig, job_nodes, to_container
from ablate.data import ValWindows, final_val_windows, resolve_dataset
from ablate.data.overlap_check import PREFLIGHT_MEASURE_TOKENS, dataset_overlap, overlap_lines
from ablate.data.shards import read_shard
from ablate.data.verify import verify_dataset
from ablate.errors import AblateError, ConfigError
from ablate.launch.slurm import log_folder_problem
from ablate.matrix.model_check import (
    CausalityKeys,
    check_model,
    job_precisions,
    open_cache,
    probe_arguments,
    verdict_problems,
)
from ablate.train.optim import grad_accum_for


@dataclass
class PreflightResult:
    job: str
    problems: list[str]
    causality: dict | None = None
    """The causality record of this job's model config (shared by jobs with the same config)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_batch(cfg: RunConfig, world_size: int) -> list[str]:
    """The global batch splits into micro-batches at the world size the job will launch with (the
    trainer's own rule, ``grad_accum_for``, checked here before anything runs)."""
    try:
        grad_accum_for(
            cfg.optim.tokens_per_iter, cfg.model.block_size, cfg.hardware.micro_batch, world_size
        )
    except ConfigError as e:
        return [str(e)]
    return []


def check_hardware(cfg: RunConfig, gpus_available: int, launcher: str) -> list[str]:
    device = cfg.hardware.device  # values were validated at composition (ablate.config)
    nproc = cfg.hardware.nproc_per_node
    if device == "auto" and launcher == "local":
        device = "cuda" if gpus_available else "cpu"  # what the local launcher will pick
    if device == "cuda" and launcher == "local":
        limit = cfg.hardware.gpus if cfg.hardware.gpus is not None else gpus_available
        if gpus_available == 0:
            return [
                "hardware.device=cuda but no CUDA GPU is visible; use hardware=cpu or run on a GPU machine"
            ]
        if nproc > min(limit, gpus_available):
            return [
                f"hardware.nproc_per_node={nproc} needs {nproc} GPUs per job but {gpus_available} are visible; "
                f"lower hardware.nproc_per_node"
            ]
    return []


def check_data(cfg: RunConfig, progress: Callable[[str], None] | None = None) -> list[str]:
    d, T, vocab = cfg.data, cfg.model.block_size, cfg.model.vocab_size
    try:
        ds = resolve_dataset(d, vocab, T)
        ValWindows(ds.val_path, T, d.val_windows)
        n_final, _ = final_val_windows(ds.val_path, T, d.val_tokens, d.val_windows)
        checked = verify_dataset(ds, T, vocab, d.verify, d.cache_dir)
        # existing shards are measured here when small enough, else the line says how
        measure = ds.train_tokens <= PREFLIGHT_MEASURE_TOKENS
        say = (lambda m: progress(f"data: {m}")) if progress else None
        overlap = dataset_overlap(ds, d.cache_dir, measure, say)
    except AblateError as e:
        return [str(e)]
    if progress:
        progress(f"data: {checked.describe()}")
        # the plan's table can only bound the default final eval (data.val_tokens=null): this is
        # its real size, read from the validation shard
        progress(f"data: final eval: {n_final:,} windows x {T} = {n_final * T:,} tokens")
        for note in checked.notes:
            progress(f"data: note: {note}")
        for line in overlap_lines(overlap, ds):  # a warning above WARN_SHARE (1%)
            progress(f"data: {line}")
    return []


PROBE_WINDOWS = 16
"""Validation windows the causality probes start from (real text: newlines, repeated spans)."""


def data_key(cfg: RunConfig) -> str:
    """Jobs with equal data settings, block size and vocabulary read the same windows."""
    return repr(
        (sorted(to_container(cfg.data).items()), cfg.model.block_size, cfg.model.vocab_size)
    )


def model_key(cfg: RunConfig, precisions: list[str], dkey: str) -> str:
    """Jobs with equal keys get one causality check in a preflight (the first job's)."""
    model_cfg = to_container(cfg.model)
    return repr((sorted(model_cfg.items()), cfg.hardware.micro_batch, precisions, dkey))


def probe_windows(cfg: RunConfig) -> torch.Tensor | None:
    """The first PROBE_WINDOWS validation windows of the job's data, block_size + 1 tokens each
    (x and its next token), or None when the data cannot be read (check_data says why)."""
    T = cfg.model.block_size
    try:
        ds = resolve_dataset(cfg.data, cfg.model.vocab_size, T)
        tokens = read_shard(ds.val_path)
    except (AblateError, OSError, ValueError):
        return None
    n = min((len(tokens) - 1) // T, PROBE_WINDOWS)
    if n < 1:
        return None
    flat = torch.from_numpy(np.asarray(tokens[: n * T + 1]).astype(np.int64))
    return torch.stack([flat[i * T : (i + 1) * T + 1] for i in range(n)])


def check_output_dir(root: Path, create: bool = True) -> list[str]:
    """``create=False`` (the plan) leaves the disk alone: the nearest existing folder must be writable."""
    if not create:
        existing = root.expanduser().absolute()
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
            return []
        return [
            f"output directory {root} is not writable ({existing} is not a writable folder); "
            "set results_root to a writable path"
        ]
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=root, prefix=".writable-"):
            pass
    except OSError as e:
        return [
            f"output directory {root} is not writable ({e.strerror}); set results_root to a writable path"
        ]
    return []


# The longest name a job writes below its directory (temporary twins of its files, tracker run
# folders: wandb/run-<date>-<id>/files/..., tensorboard events with a host name), with room to spare.
JOB_FILES_RESERVE = 160
# A matrix directory's name: test_matrix_results_YYYYMMDD_HHMMSS and a _NNNN tie-breaker.
MATRIX_NAME_RESERVE = len(results.MATRIX_PREFIX) + len("YYYYMMDD_HHMMSS") + 5


def check_path_lengths(root: Path, job_names: list[str]) -> str | None:
    """Why the files of these jobs could not be written under ``root`` (the system's limits on a
    path and on one name in it), or None. Checked before anything is created: past the limit,
    creating a matrix would fail half way."""
    absolute = Path(os.path.abspath(os.path.expanduser(root)))
    existing = absolute
    while not _exists(existing) and existing != existing.parent:
        existing = existing.parent
    try:
        path_max = os.pathconf(existing, "PC_PATH_MAX")
        name_max = os.pathconf(existing, "PC_NAME_MAX")
    except (OSError, ValueError):
        path_max, name_max = 4096, 255
    long_part = next((part for part in absolute.parts if len(part.encode()) > name_max), None)
    if long_part is not None:
        return (
            f"results_root has a folder name of {len(long_part.encode()):,} bytes, beyond this "
            f"system's limit of {name_max} for one name; choose a shorter results_root"
        )
    longest = max(job_names, key=len, default="")
    if len(longest.encode()) > name_max:
        return (
            f"job name {longest[:60]}... is {len(longest.encode()):,} bytes long, beyond this "
            f"system's limit of {name_max} for one name; sweep fewer keys or shorter values"
        )
    need = len(str(absolute).encode()) + 1 + MATRIX_NAME_RESERVE + 1 + len(longest.encode())
    need += 1 + JOB_FILES_RESERVE
    if need >= path_max:
        return (
            f"results_root is {len(str(absolute)):,} characters long: the files of job "
            f"{longest} would need paths of up to about {need:,} bytes, beyond this system's limit "
            f"of {path_max:,} (PATH_MAX); choose a shorter results_root"
        )
    return None


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # ENAMETOOLONG
        return False


def world_size(cfg: RunConfig, nodes: int = 1) -> int:
    """Ranks of one job: ``nodes`` (ablate.config.job_nodes of the matrix settings) x processes per node."""
    return nodes * cfg.hardware.nproc_per_node


def preflight(
    jobs: list[JobSpec],
    settings: MatrixSettings,
    progress: Callable[[str], None] | None = None,
    create_output_dir: bool = True,
    causality: bool = True,
) -> list[PreflightResult]:
    """Run every check for every job of a matrix with these settings (MatrixSettings). Model and
    data checks run once per distinct config. ``create_output_dir=False`` (the plan) writes
    nothing to disk; ``causality=False`` builds each model but skips the causality probes (seconds
    to a minute or two per config on CPU at GPT-2 124M shapes)."""
    results_root = Path(settings.results_root)
    launcher = settings.launcher.name
    if causality:  # the probes allocate as training does (ablate.heap); given back at the end
        heap.reuse_freed_memory()
    nodes = job_nodes(settings)
    gpus = visible_gpus()
    results: list[PreflightResult] = []
    model_cache: dict[str, tuple[list[str], dict | None]] = {}
    data_cache: dict[str, list[str]] = {}
    cache = open_cache(settings, progress) if causality else None
    keys: CausalityKeys | None = None
    out_problems = check_output_dir(results_root, create=create_output_dir)
    distinct = len(
        {model_key(j.cfg, job_precisions(j.cfg, gpus, launcher), data_key(j.cfg)) for j in jobs}
    )
    for job in jobs:
        cfg = job.cfg
        if progress:
            progress(f"preflight {job.name}")
        problems: list[str] = []
        problems += check_hardware(cfg, gpus, launcher)
        problems += check_batch(cfg, world_size(cfg, nodes))
        dkey = data_key(cfg)
        if dkey not in data_cache:
            data_cache[dkey] = check_data(cfg, progress)
        problems += data_cache[dkey]
        # Building the model is the costly check (a big step allocates its full weights): only
        # when the cheap ones passed, so a wrong batch or missing data is reported in seconds.
        model_cfg = to_container(cfg.model)
        # the probes run at the job's micro-batch and precisions on its data: part of what is checked
        precisions = job_precisions(cfg, gpus, launcher)
        key = model_key(cfg, precisions, dkey)
        if key not in model_cache and not problems:
            probe = probe_arguments(cfg.seed, cfg.hardware.micro_batch, precisions)
            data = probe_windows(cfg) if causality else None
            inputs, hit, ckey = None, None, ""
            claim: contextlib.AbstractContextManager = contextlib.nullcontext()
            if cache is not None:
                keys = keys or CausalityKeys()
                inputs, why = keys.inputs(cfg, probe, data)
                if why and progress:
                    progress(f"causality cache: not used for {job.name}: {why}")
                if inputs is not None:
                    ckey = causality_cache.key_of(inputs)
                    claim = cache.claim(ckey)
            # held from the lookup to the store: a preflight of the same model at the same time
            # waits for this verdict rather than probing it too
            with claim:
                if cache is not None and inputs is not None:
                    hit = cache.get(ckey)
                if hit is not None:
                    model_cache[key] = (verdict_problems(hit), hit)
                else:
                    if progress and causality:
                        progress(
                            f"causality check of {job.name}'s model (distinct model "
                            f"{len(model_cache) + 1} of {distinct}; each takes seconds to minutes "
                            "on a CPU, and its verdict is cached)"
                        )
                    model_cache[key] = check_model(
                        model_cfg,
                        causality=causality,
                        data=data,
                        probe=probe,
                        progress=(lambda m, n=job.name: progress(f"causality {n}: {m}"))
                        if progress
                        else None,
                    )
                    rec = model_cache[key][1]
                    if cache is not None and inputs is not None and rec is not None:
                        cache.put(ckey, inputs, rec)
            rec = model_cache[key][1]
            if progress and rec is not None:
                when = causality_cache.stored_when(rec)
                progress(
                    f"causality {job.name}: {'causal' if rec['ok'] else 'LEAKS'}, "
                    f"{rec['probes_run']} probe(s), {rec['seconds']:.1f}s"
                    + (f", from the cache (probed {when})" if when else "")
                )
        model_problems, record = model_cache.get(key, ([], None))
        problems += model_problems
        problems += out_problems
        if launcher == "slurm":
            problem = log_folder_problem(
                settings.launcher.slurm.folder or results_root.expanduser().absolute()
            )
            if problem:
                problems.append(problem)
        results.append(PreflightResult(job.name, problems, record))
    heap.return_freed_memory()  # this process waits for hours holding it otherwise
    return results


def describe_failures(results: list[PreflightResult]) -> str:
    """One line per distinct problem, naming the jobs it concerns (a missing data directory
    shared by 40 jobs is one line, not 40)."""
    jobs_of: dict[str, list[str]] = {}
    for r in results:
        for p in r.problems:
            names = jobs_of.setdefault(p, [])
            if r.job not in names:
                names.append(r.job)
    lines = []
    for problem, names in jobs_of.items():
        if len(names) == len(results) and len(results) > 1:
            who = f"all {len(results)} jobs"
        else:
            who = ", ".join(names)
        lines.append(f"preflight failed for {who}: {problem}")
    return "\n".join(lines)
