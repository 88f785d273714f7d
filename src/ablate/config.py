"""Structured configs: every key a job reads is declared here, with its type and default.

Hydra composes YAML from ``conf/`` onto these dataclasses, so a misspelled key or a wrong type
fails at composition time instead of being silently ignored. Defaults live in code; YAML only
overrides. A job directory's ``config.yaml`` is loaded back through the same schema. After
composition (``ablate.compose``) and loading (``load_job_config``) the config *is* these
dataclasses (``OmegaConf.to_object``): every stage reads typed values, and a choice (device,
precision, keep) is an enum the schema enforces.

Over 400 lines: every field with its docstring, and each group's validation next to its
dataclass (one place per rule); splitting them apart is what this file exists to avoid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, get_type_hints

from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

from ablate.checks import Choice, choice, count, finite, share
from ablate.data.config import DataConfig
from ablate.errors import ConfigError
from ablate.lock import POLICIES as LOCK_POLICIES
from ablate.results import upgrade_job_config
from models import ModelConfigError
from models.config import ModelConfig, estimate_params, to_model_config, validate_config


@dataclass
class StepConfig:
    """One architecture step of a matrix (V0, V16, ...): its name and its label in the report."""

    name: str = "V0"
    """Short step id; the job directory and the report's Step column use it. A step file sets it
    to its own file name (``step/V19.yaml``: ``V19``)."""
    architecture: str = "Baseline"
    """Label for the report's Architecture column, printed exactly as written here."""
    description: str | None = None
    """One sentence on what the step changes relative to the baseline."""


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine decay to min_lr."""

    lr: float = 6e-4
    """Peak learning rate, reached at the end of the warmup."""
    min_lr: float = 6e-5
    """Learning rate at the end of the schedule (end of the time box or max_iters)."""
    warmup_fraction: float = 0.05
    """Linear warmup as a share of the budget: of the box's training time (time box: 0.05 = the
    first 5% of budget.box_seconds, whatever the iteration rate, so a busy and an idle machine
    follow the same learning rate at the same fraction of the box), or of budget.max_iters
    (iteration budget). Cosine decay to min_lr over the rest (ablate.train.optim.Schedule)."""
    warmup_iters: int | None = None
    """Iteration budgets only (budget.max_iters): warmup in iterations instead of
    warmup_fraction x max_iters. Refused with a time box, where warmup is a share of the box."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrix weights (see decay_embeddings, decay_gates)."""
    decay_embeddings: bool = False
    """Also decay the token/position embeddings (tied with the LM head)."""
    decay_gates: bool = False
    """Also decay the learned gates (w_std, w_rec); off so decay does not pull gates to 0."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    eps: float = 1e-8
    """AdamW epsilon."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    tokens_per_iter: int = 65536
    """Global batch in tokens per optimizer step, the same for any world size."""

    def problems(self) -> list[str]:
        out = finite("optim.lr", self.lr)
        out += finite("optim.min_lr", self.min_lr, strict=False)
        if not out and self.min_lr > self.lr:
            out.append(f"optim.min_lr={self.min_lr} must not exceed optim.lr={self.lr}")
        out += count("optim.warmup_iters", self.warmup_iters, low=0, none_ok=True)
        if share("optim.warmup_fraction", self.warmup_fraction, closed_low=True):
            out.append(
                f"optim.warmup_fraction={self.warmup_fraction} must be in [0, 1) (a share of the "
                "budget)"
            )
        out += finite("optim.weight_decay", self.weight_decay, strict=False)
        out += share("optim.beta1", self.beta1, closed_low=True)
        out += share("optim.beta2", self.beta2, closed_low=True)
        out += finite("optim.eps", self.eps)
        out += finite("optim.grad_clip", self.grad_clip, strict=False)
        out += count("optim.tokens_per_iter", self.tokens_per_iter)
        return out


class Keep(Choice):
    """budget.keep: what a completed job keeps of its model."""

    weights = "weights"
    checkpoint = "checkpoint"
    none = "none"


@dataclass
class BudgetConfig:
    """How long a job trains: a time box (box_seconds) or an iteration budget (max_iters).

    One name per quantity: ``box_seconds`` is the budget; ``train_seconds`` (summary.json,
    metrics.jsonl) is the training time a job measured against it."""

    box_seconds: float | None = 7200.0
    """Time box in seconds of training iterations only (evals and checkpoints excluded). Called
    ``budget.train_seconds`` before results format 3."""
    max_iters: int | None = None
    """Iteration budget; when set together with box_seconds, whichever ends first stops the job,
    and the schedule follows max_iters."""
    eval_interval: int = 100
    """Evaluate on the fixed validation windows every this many iterations (and at the end)."""
    log_interval: int = 10
    """Write a metrics line and a progress line every this many iterations."""
    checkpoint_interval_iters: int | None = None
    """Checkpoint every this many iterations (None: only by time and on signals)."""
    checkpoint_interval_seconds: float = 900.0
    """Checkpoint when this much wall time has passed since the last checkpoint."""
    keep: Keep = Keep.weights
    """What a completed job keeps of its model once DONE is written: "weights" (model.safetensors,
    the final weights; checkpoint.pt with the optimizer state is deleted), "checkpoint" (both),
    or "none" (neither). A job that is not DONE always keeps its full checkpoint for resume."""
    grace_seconds: float = 600.0
    """Extra wall time a launcher allows beyond box_seconds (startup, evals, compile) before it
    kills the job."""
    causality_audits: int = 3
    """Causality audits inside training besides the one at iteration 0 and the one of the final
    eval: at this many random points of the budget (seeded by ``seed``) the training step's own
    forward also runs a copy of its micro-batch with the tokens after a random cut per row
    replaced, and the outputs before each cut must not move; a difference ends the job ``leaked``.
    No optimizer step and no state change (the job trains bit-identically), outside the time box;
    the cost is in summary.json (``audit_seconds``, ``audit_share``). 0 disables every audit."""

    def problems(self) -> list[str]:
        out = finite("budget.box_seconds", self.box_seconds, none_ok=True)
        out += count("budget.max_iters", self.max_iters, none_ok=True)
        if self.box_seconds is None and self.max_iters is None:
            out.append(
                "budget.box_seconds and budget.max_iters are both unset; set one so the job ends"
            )
        out += count("budget.eval_interval", self.eval_interval)
        out += count("budget.log_interval", self.log_interval)
        out += count(
            "budget.checkpoint_interval_iters", self.checkpoint_interval_iters, none_ok=True
        )
        out += finite("budget.checkpoint_interval_seconds", self.checkpoint_interval_seconds)
        out += finite("budget.grace_seconds", self.grace_seconds, strict=False)
        out += count("budget.causality_audits", self.causality_audits, low=0)
        return out


def wall_seconds(budget: Any) -> float | None:
    """The wall limit a launcher gives a job: ``box_seconds + grace_seconds`` (None: no box).

    The one place the limit is computed; the local launcher kills a job past it, and Slurm's time
    limit is it plus ``launcher.slurm.time_margin_min``."""
    if budget.box_seconds is None:
        return None
    return float(budget.box_seconds + budget.grace_seconds)


class Device(Choice):
    """hardware.device: where a job trains."""

    auto = "auto"
    cuda = "cuda"
    cpu = "cpu"


class Precision(Choice):
    """hardware.precision: the numerics a job trains with."""

    auto = "auto"
    bf16 = "bf16"
    fp32 = "fp32"


@dataclass
class HardwareConfig:
    """Where and how a job runs."""

    device: Device = Device.auto
    """auto (CUDA when torch sees a GPU, else CPU) | cuda | cpu."""
    nproc_per_node: int = 1
    """Processes (GPUs) per job; torchrun starts this many ranks."""
    gpus: int | None = None
    """GPUs the launcher may use on this box (None: all visible). Jobs needing fewer are packed."""
    micro_batch: int = 8
    """Sequences per rank per forward pass; gradient accumulation makes up the global batch."""
    precision: Precision = Precision.auto
    """auto (bf16 on CUDA, fp32 on CPU) | bf16 | fp32."""
    compile: bool = False
    """torch.compile the model (inductor; on CPU too). If compiling fails the job runs eager, says so
    in train.log and records it in summary.json (``compile``, ``compile_error``)."""
    tf32: bool = True
    """Allow TF32 matmuls on CUDA."""
    threads: int | None = None
    """torch CPU threads per process (None: torch's default)."""

    def problems(self) -> list[str]:
        # device and precision are enums: the schema itself refuses any other value.
        out = count("hardware.nproc_per_node", self.nproc_per_node)
        out += count("hardware.gpus", self.gpus, none_ok=True)
        out += count("hardware.micro_batch", self.micro_batch)
        out += count("hardware.threads", self.threads, none_ok=True)
        return out


@dataclass
class SlurmConfig:
    """Slurm submission through submitit (launcher.name=slurm)."""

    partition: str | None = None
    """Partition to submit to (None: the cluster default)."""
    account: str | None = None
    """Account to charge."""
    qos: str | None = None
    """Quality of service."""
    constraint: str | None = None
    """Node feature constraint (e.g. a GPU type)."""
    nodes: int = 1
    """Nodes per job; ranks = nodes x hardware.nproc_per_node."""
    gpus_per_node: int | None = None
    """GPUs to request per node (None: hardware.nproc_per_node on CUDA, 0 on CPU)."""
    cpus_per_task: int = 1
    """CPUs per task (per rank)."""
    mem_gb: int | None = None
    """Memory per node in GB (None: the cluster default)."""
    time_margin_min: int = 15
    """Minutes added to the wall limit (budget.box_seconds + budget.grace_seconds) for the Slurm
    time limit, in whole minutes."""
    signal_delay_s: int = 120
    """Seconds before the time limit at which Slurm sends the checkpoint signal (USR2 via submitit;
    slurmctld may send it up to 30 s earlier): the trainer checkpoints and the task is requeued."""
    max_num_timeout: int = 3
    """How many times a job may be requeued after hitting its time limit (it resumes from its
    checkpoint); preemptions do not count."""
    array_parallelism: int = 64
    """Maximum array tasks running at once."""
    wait: bool = True
    """Wait for the jobs and write the report; false returns once the array is queued (later:
    ``python -m ablate.matrix status=<matrix dir>`` / ``wait=<matrix dir>``)."""
    folder: str | None = None
    """submitit log folder (None: <matrix dir>/.submitit)."""

    def problems(self) -> list[str]:
        out = count("launcher.slurm.nodes", self.nodes)
        out += count("launcher.slurm.gpus_per_node", self.gpus_per_node, low=0, none_ok=True)
        out += count("launcher.slurm.cpus_per_task", self.cpus_per_task)
        out += count("launcher.slurm.mem_gb", self.mem_gb, none_ok=True)
        out += count("launcher.slurm.time_margin_min", self.time_margin_min, low=0)
        out += count("launcher.slurm.signal_delay_s", self.signal_delay_s, low=0)
        out += count("launcher.slurm.max_num_timeout", self.max_num_timeout, low=0)
        out += count("launcher.slurm.array_parallelism", self.array_parallelism)
        return out


@dataclass
class LauncherConfig:
    """Which launcher runs the matrix's jobs."""

    name: str = "local"
    """local | slurm."""
    slurm: SlurmConfig = field(default_factory=SlurmConfig)
    """Slurm options (used when name=slurm)."""

    def problems(self) -> list[str]:
        return choice("launcher.name", self.name, LAUNCHERS) + self.slurm.problems()


LAUNCHERS = ("local", "slurm")


@dataclass
class TrackerConfig:
    """An experiment tracker that receives the same values as metrics.jsonl (rank 0 only).

    metrics.jsonl stays the record the report is built from; a tracker is a live view of it and
    its failure never stops training (see ablate.train.trackers)."""

    name: str = "none"
    """none | tensorboard | wandb | mlflow (choose with tracker=<name>)."""
    dir: str | None = None
    """Where local tracker files go: TensorBoard event files under <dir>/<matrix dir name>/<job>
    (None: <matrix dir>/tensorboard/<job>); W&B's run folders (None: the matrix directory)."""
    project: str = "ablate"
    """W&B project (runs of one matrix share a group named after the matrix directory)."""
    entity: str | None = None
    """W&B entity (team or user; None: your default)."""
    mode: str | None = None
    """W&B mode: online | offline | disabled (None: $WANDB_MODE, else online)."""
    uri: str | None = None
    """MLflow tracking URI, e.g. http://host:5000 or sqlite:///mlflow.db (None: $MLFLOW_TRACKING_URI
    or MLflow's default); the experiment is named after the matrix directory."""

    def problems(self) -> list[str]:
        out = choice("tracker.name", self.name, TRACKERS)
        if self.mode is not None:
            out += choice("tracker.mode", self.mode, WANDB_MODES)
        return out


TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
WANDB_MODES = ("online", "offline", "disabled")


@dataclass
class RunConfig:
    """Everything one job of a matrix needs: what its config.yaml stores and the trainer reads.
    How the matrix around it runs (launcher, results_root, ...) is MatrixSettings."""

    step: StepConfig = field(default_factory=StepConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    seed: int = 1
    """Seeds init, dropout and data order. Same seed, same step, same machine: same loss curve."""
    plugins: list[str] = field(default_factory=list)
    """Your own Python modules (dotted paths, e.g. [my_attention]) imported before any model is
    built, in the matrix process, its preflight and every job process; they register attention,
    MLP or arch classes (see models.registry)."""
    plugin_path: list[str] | None = None
    """Folders put first on sys.path to import ``plugins`` from (None: the directory the matrix
    was started in). Stored absolute in each job's config.yaml, so jobs find them anywhere."""
    experiment: str | None = None
    """Name of the preset that was applied (set by the experiment YAML)."""

    def problems(self) -> list[str]:
        """Every group's problems, then the model's (ranges, and whether it fits this host)."""
        out = self.budget.problems() + self.optim.problems() + self.hardware.problems()
        out += self.data.problems() + self.tracker.problems() + model_problems(self.model)
        if self.optim.warmup_iters is not None and self.budget.max_iters is None:
            out.append(
                f"optim.warmup_iters={self.optim.warmup_iters} counts iterations, but this job has "
                f"a time box (budget.max_iters is unset): its warmup is optim.warmup_fraction "
                f"(now {self.optim.warmup_fraction}) of the box's training time; drop "
                "optim.warmup_iters or set budget.max_iters"
            )
        if (
            isinstance(self.seed, bool)
            or not isinstance(self.seed, int)
            or not 0 <= self.seed < 2**63
        ):
            out.append(f"seed={self.seed} must be a non-negative integer below 2**63")
        return out


@dataclass
class CausalityCacheConfig:
    """Where the preflight keeps its causality verdicts, one per distinct model (ablate.causality_cache).

    A model is probed once: ``--plan`` and the run after it, a re-plan, another matrix with the
    same model read its verdict (the plan and the preflight say so, with its date). The key is
    the model config, the probes' settings, the data windows, torch, Python, the device and the
    content of every file of src/models and of the plugins, so any edit is probed again. The
    trained weights are rechecked by every job, never from the cache."""

    enabled: bool = True
    """Read and store verdicts (false: probe every model in every preflight, store nothing)."""
    dir: str | None = None
    """The cache folder (None: $ABLATE_CAUSALITY_CACHE, else $XDG_CACHE_HOME/ablate/causality,
    default ~/.cache/ablate/causality). Deleting it is safe: the models are probed again."""


@dataclass
class MatrixSettings:
    """How a matrix as a whole runs: one value per matrix, never one per job.

    Given on the same command line as the job keys (``launcher=slurm results_root=x report=false``):
    Hydra composes both into one root (``ComposedConfig``) and ``ablate.compose`` splits it, so a
    job's config.yaml holds what the job trains with and nothing about how the matrix was run.
    The settings are stored once, in matrix.json ("settings"), where ``resume=``, ``wait=``,
    ``status=`` and the report read them."""

    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    """Which launcher runs the jobs, and its options."""
    results_root: str = "results"
    """Where new matrix directories are created."""
    preflight: bool = True
    """Check every job (config, causality, data, output dir, GPUs, batch) before any trains."""
    causality_cache: CausalityCacheConfig = field(default_factory=CausalityCacheConfig)
    """The preflight's causality verdicts by model identity (a model is probed once)."""
    report: bool = True
    """Write REPORT.md into the matrix directory when the last job ends."""
    progress: bool = True
    """Live progress view (one line per running job, counts, ETA) while a local matrix runs, when
    stdout is a terminal; job output then goes to <job>/train.log only. false: echo job output."""
    reuse: bool = True
    """Reuse instead of retrain: a job whose identity (ablate.identity: config, model code, code
    version, data, and in time-box mode the hardware) matches a finished, causality-checked run
    in the runs index gets that run's files instead of training (matrix.json says where they
    came from). false: every job trains."""
    tune: list[str] = field(default_factory=list)
    """Axes (swept keys other than step and seed) the report tunes each step over, e.g.
    [optim.lr]: each step at its own best value, chosen on half the validation windows and
    reported on the other half (the report's Tuned comparison; ``--tune`` of the report)."""
    confirm_jobs: int = 64
    """A matrix of more jobs than this starts only with --yes (a sweep multiplies: 4 steps x 3
    seeds x 3 learning rates x 2 sizes is 72 jobs); --plan shows the count and the cost."""

    def problems(self) -> list[str]:
        out = self.launcher.problems()
        if not self.results_root.strip():
            out.append("results_root='' must name a folder")
        out += count("confirm_jobs", self.confirm_jobs)
        for key in self.tune:
            if not key.strip() or key in ("step", "seed"):
                out.append(
                    f"tune=[{','.join(self.tune)}]: {key!r} cannot be tuned; name swept keys "
                    "other than step and seed, e.g. tune=[optim.lr]"
                )
        return out


@dataclass
class ComposedConfig(MatrixSettings, RunConfig):
    """What Hydra composes from one command line: a job's fields (RunConfig) and the matrix's
    (MatrixSettings) side by side, so the command line stays flat; ``ablate.compose`` splits it
    into the two before anything else reads it."""


def job_nodes(settings: Any) -> int:
    """Nodes each job spans: ``launcher.slurm.nodes`` on Slurm, one machine otherwise."""
    return settings.launcher.slurm.nodes if settings.launcher.name == "slurm" else 1


# --------------------------------------------------------------------------- validation
#
# Each group's rules are its dataclass's ``problems()`` (above, and DataConfig's in
# ablate.data.config); choices are enums the schema enforces. ``validate_run`` (a job's) and
# ``validate_settings`` (the matrix's) collect them once a command line is composed (and when a
# stored config.yaml or matrix.json is loaded back), before any directory is created: a value that would only fail hours later, or inside torch, is refused here with the key
# that holds it. Code downstream trusts these values; what depends on the machine (a visible GPU,
# bf16 support, the data on disk) is checked by the preflight and the device setup.


def host_memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def model_problems(m: Any) -> list[str]:
    """Ranges (models.validate_config) and size: a model whose fp32 weights alone exceed this host's
    memory is refused from its sizes, before anything builds it."""
    try:
        mc = to_model_config(m)
        validate_config(mc)
    except ModelConfigError as e:
        return [str(e)]
    need = 4 * estimate_params(mc)
    have = host_memory_bytes()
    if have and need > have:
        return [
            f"model sizes (n_layer={mc.n_layer}, n_embd={mc.n_embd}, block_size={mc.block_size}, "
            f"vocab_size={mc.vocab_size}) give about {estimate_params(mc):,} parameters, "
            f"{need / 2**30:.1f} GiB in fp32 before training starts, more than this machine's "
            f"{have / 2**30:.1f} GiB of memory; lower them"
        ]
    return []


def validate_run(cfg: RunConfig) -> None:
    """Every rule of one job's config (``RunConfig.problems``); raises ConfigError with all
    problems on one line."""
    problems = cfg.problems()
    if problems:
        raise ConfigError("; ".join(problems))


def validate_settings(s: MatrixSettings) -> None:
    """Every rule of a matrix's settings (``MatrixSettings.problems``); raises ConfigError with all
    problems on one line."""
    problems = s.problems()
    if problems:
        raise ConfigError("; ".join(problems))


def _positive_seconds(value: str) -> bool:
    return not finite("", value)  # a finite number > 0


TRAIN_SYNC_MODES = ("auto", "every", "sparse")
"""ABLATE_TRAIN_SYNC: sync every iteration, only at sync points, or auto (every on CPU, sparse on
CUDA); read by ablate.train.clock."""

ENVIRONMENT: dict[str, tuple[str, Any]] = {
    "ABLATE_SMOKE_SECONDS": (
        "a positive number of seconds (the smoke preset's time box)",
        _positive_seconds,
    ),
    "ABLATE_TRAIN_SYNC": (
        f"one of {', '.join(TRAIN_SYNC_MODES)}",
        lambda v: v.strip().lower() in ("",) + TRAIN_SYNC_MODES,
    ),
    "ABLATE_LOCKS": (
        f"one of {', '.join(LOCK_POLICIES)}",
        lambda v: v.strip().lower() in LOCK_POLICIES,
    ),
}
"""Environment variables ablate reads, with what each must hold; checked before composing."""


def check_environment() -> None:
    """A set but unusable variable is one clear line, not an interpolation traceback later."""
    for name, (what, ok) in ENVIRONMENT.items():
        value = os.environ.get(name)
        if value is not None and not ok(value):
            raise ConfigError(
                f"environment variable {name}={value!r} must be {what}; fix or unset it"
            )


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=ComposedConfig)


def load_job_config(path: Path | str) -> RunConfig:
    """A job's config.yaml read back through the schema, as the dataclasses the trainer and the
    launchers use (unknown keys, wrong types and values outside an enum fail here too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: job config is missing; a job directory needs config.yaml")
    try:
        # An older format's layout is brought up to date first (ablate.results.upgrade_job_config).
        raw = OmegaConf.to_container(OmegaConf.load(path))
        if not isinstance(raw, dict):
            raise TypeError(f"expected a mapping, found {type(raw).__name__}")
        loaded = upgrade_job_config({str(k): v for k, v in raw.items()})
        _older_warmup(loaded)
    except Exception as e:  # not YAML, or not a mapping
        raise ConfigError(f"{path}: does not match the config schema: {_one_line(e)}") from None
    run: RunConfig = _typed(
        RunConfig, loaded, path, "does not match the config schema", validate_run
    )
    return run


def _older_warmup(config: dict[str, Any]) -> None:
    """A job written before warmup became a share of the budget, run again (resume): its
    config.yaml carries optim.warmup_fraction null ("use warmup_iters") and, in a time box,
    optim.warmup_iters (default 200, turned into seconds at the first measured iteration rate).
    The box's warmup is optim.warmup_fraction now and the count is refused there, so both go and
    the job resumes on today's schedule. (The report reads the file as written.)"""
    optim, budget = config.get("optim"), config.get("budget")
    if not isinstance(optim, dict):
        return
    if "warmup_fraction" in optim and optim["warmup_fraction"] is None:
        optim.pop("warmup_fraction")
    if isinstance(budget, dict) and budget.get("max_iters") is None:
        optim.pop("warmup_iters", None)


def choice_error(e: BaseException | None) -> str | None:
    """OmegaConf's refusal of a value outside an enum field (``hardware.device=gpu``), found in
    ``e`` or what it wraps (Hydra wraps it), as ``key='value' must be one of ...``; else None."""
    while e is not None and not isinstance(e, ValidationError):
        e = e.__cause__ or e.__context__
    if e is None or not is_dataclass(e.object_type) or not isinstance(e.key, str):
        return None
    kind = get_type_hints(e.object_type).get(e.key)
    if not (isinstance(kind, type) and issubclass(kind, Choice)):
        return None
    return f"{e.full_key}={e.value!r} must be one of {', '.join(kind.values())}"


def load_matrix_settings(stored: dict[str, Any], where: Path | str) -> MatrixSettings:
    """A matrix's settings as stored (``ablate.results.read_matrix_settings``) through the schema,
    as the dataclass; ``where`` names the file they came from in an error."""
    settings: MatrixSettings = _typed(
        MatrixSettings, stored, where, "matrix settings do not match the schema", validate_settings
    )
    return settings


def _typed(schema: type, stored: Any, where: Path | str, mismatch: str, validate: Any) -> Any:
    """``stored`` (plain values) through ``schema`` to its dataclass, then its rules; every refusal
    is one line starting with ``where``."""
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), stored))
    except Exception as e:  # omegaconf raises several types; all mean "this does not fit"
        raise ConfigError(f"{where}: {choice_error(e) or mismatch + ': ' + _one_line(e)}") from None
    try:
        validate(obj)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return obj


def to_container(cfg: Any) -> dict[str, Any]:
    """A config (a dataclass such as ``cfg.model``, or a DictConfig) as plain dicts, lists and
    values, enums as their strings."""
    node = OmegaConf.structured(cfg) if is_dataclass(cfg) else cfg
    return OmegaConf.to_container(node, resolve=True, enum_to_str=True)  # type: ignore[return-value]


def config_yaml(cfg: Any) -> str:
    """config.yaml's text for a job config; enums are written as their plain values (``cpu``)."""
    node = OmegaConf.structured(cfg) if is_dataclass(cfg) else cfg
    return OmegaConf.to_yaml(node, resolve=True)


def _one_line(e: BaseException) -> str:
    """OmegaConf's message on one line, its "full_key: ... object_type=..." detail as just the key."""
    text = " ".join(str(e).split()).split(" full_key:")[0]
    key = getattr(e, "full_key", None)
    return f"{text} (key {key})" if key else text
