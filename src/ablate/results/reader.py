"""The one reader of a job directory: config facts, summary.json, env.json, identity.json,
reused.json, final_eval.json and metrics.jsonl, read into one typed ``JobRecord`` with the
fallbacks between them.

The report, the live view (``python -m ablate.matrix status=DIR``), the outcome rules, reuse and
the runs index (``python -m ablate.runs``) read a job through here. Reading never raises: a file
that is missing, corrupt or holds a value of the wrong type costs the job that value, and
``JobRecord.problems`` says what was skipped, one line each.

Over 400 lines on purpose: one reader per file would put the fallbacks between the files (a
summary without its final loss falls back to final_eval.json, a job without identity.json to the
config's facts) back into every caller; this module is the one place that decides them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_type_hints

from ablate.results.causality import causality_entry, causality_state
from ablate.results.files import ResultsFormatError, read_json
from ablate.results.final_eval import FinalEval, read_final_eval
from ablate.results.identity import (
    Difference,
    ReusedFrom,
    RunIdentity,
    load_identity,
    read_reused,
)
from ablate.results.job import JobDir
from ablate.results.legacy import env_device, env_git, read_job_config
from ablate.results.metrics import (
    MetricsFacts,
    Record,
    last_train_record,
    metrics_facts,
    read_metrics,
)
from ablate.results.names import (
    CAUSALITY,
    CONFIG,
    ENV,
    FINAL_EVAL,
    IDENTITY,
    METRICS,
    REUSED,
    SUMMARY,
)
from ablate.results.summary import JobSummary, load_summary

Problems = list[str]


def _value(node: Any, key: str, want: type, what: str, where: str, problems: Problems) -> Any:
    """``node[key]`` when it has type ``want`` (an int is a float too); None when absent or null,
    and also None, with a problem, when it has another type."""
    if not isinstance(node, dict):
        return None
    v = node.get(key)
    if v is None:
        return None
    if type(v) is want:
        return v
    if want is float and type(v) is int:
        return float(v)
    problems.append(f"{where}: {key!r} is {v!r:.60}, not {what}; ignored")
    return None


Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class ConfigFacts:
    """What readers need from a job's config.yaml, read as plain YAML in today's layout
    (results.legacy), so that a directory of any format reads without today's schema."""

    step: str | None = None
    """``step.name``."""
    architecture: str | None = None
    """``step.architecture``: the report's label."""
    description: str | None = None
    """``step.description``."""
    seed: int | None = None
    """``seed``."""
    has_seed: bool = False
    """Whether the file sets ``seed`` (null counts): then it is the job's seed."""
    experiment: str | None = None
    """``experiment`` (``smoke``: the report is a pipeline check)."""
    mlp: str | None = None
    """``model.mlp`` (``rmlp``: the step has R-MLP gates)."""
    warmup_iters: float | None = None
    """``optim.warmup_iters``."""
    max_iters: int | None = None
    """``budget.max_iters``."""
    box_seconds: float | None = None
    """``budget.box_seconds`` (``budget.train_seconds`` before format 3)."""
    n_embd: int | None = None
    """``model.n_embd``: with vocab_size and block_size, the embeddings' parameters."""
    vocab_size: int | None = None
    """``model.vocab_size``."""
    block_size: int | None = None
    """``model.block_size``."""
    values: Mapping[str, Scalar] = field(default_factory=dict)
    """Every scalar of the file by dotted key (``{"optim.lr": 0.0006, "model.n_layer": 12}``):
    what a report compares between jobs, e.g. the value of an axis for a job whose matrix did
    not sweep it (report/axes.py)."""

    @classmethod
    def parse(cls, config: dict[str, Any], where: str, problems: Problems) -> ConfigFacts:
        for section in ("step", "model", "optim", "budget"):
            value = config.get(section)
            if value is not None and not isinstance(value, dict):
                problems.append(f"{where}: {section!r} is {value!r:.60}, not a mapping; ignored")
        step = config.get("step")
        model, optim, budget = (config.get(k) for k in ("model", "optim", "budget"))
        name = step.get("name") if isinstance(step, dict) else None
        return cls(
            step=str(name) if isinstance(name, (str, int)) and not isinstance(name, bool) else None,
            architecture=_value(step, "architecture", str, "a string", where, problems),
            description=_value(step, "description", str, "a string", where, problems),
            seed=_value(config, "seed", int, "an integer", where, problems),
            has_seed="seed" in config,
            experiment=_value(config, "experiment", str, "a string", where, problems),
            mlp=_value(model, "mlp", str, "a string", where, problems),
            warmup_iters=_value(optim, "warmup_iters", float, "a number", where, problems),
            max_iters=_value(budget, "max_iters", int, "an integer", where, problems),
            box_seconds=_value(budget, "box_seconds", float, "a number", where, problems),
            n_embd=_value(model, "n_embd", int, "an integer", where, problems),
            vocab_size=_value(model, "vocab_size", int, "an integer", where, problems),
            block_size=_value(model, "block_size", int, "an integer", where, problems),
            values=flat_scalars(config),
        )


def flat_scalars(node: Mapping[str, Any], prefix: str = "") -> dict[str, Scalar]:
    """The scalars of a nested mapping by dotted key; lists and other values are left out."""
    out: dict[str, Scalar] = {}
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_scalars(value, name + "."))
        elif value is None or isinstance(value, (str, int, float, bool)):
            out[name] = value
    return out


@dataclass(frozen=True)
class EnvFacts:
    """What readers need from a job's env.json (flat keys of early versions too, results.legacy)."""

    world_size: int | None = None
    device: str | None = None
    device_count: int | None = None
    git_sha: str | None = None
    git_dirty: bool | None = None
    flops_per_token: float | None = None
    hostname: str | None = None
    num_params: int | None = None
    """The model's parameters (the tied LM head counted once)."""
    precision: str | None = None
    """The numerics the job trained with, as resolved (``bf16``; config.yaml may say ``auto``)."""
    compile: bool | None = None
    """Whether the model ran compiled (a failed compile runs eager: false)."""

    @classmethod
    def parse(cls, env: dict[str, Any], where: str, problems: Problems) -> EnvFacts:
        sha, dirty = env_git(env)
        flat = {"git.sha": sha, "git.dirty": dirty, "device": env_device(env)}
        return cls(
            world_size=_value(env, "world_size", int, "an integer", where, problems),
            device=_value(flat, "device", str, "a string", where, problems),
            device_count=_value(env, "device_count", int, "an integer", where, problems),
            git_sha=_value(flat, "git.sha", str, "a string", where, problems),
            git_dirty=_value(flat, "git.dirty", bool, "true or false", where, problems),
            flops_per_token=_value(env, "flops_per_token", float, "a number", where, problems),
            hostname=_value(env, "hostname", str, "a string", where, problems),
            num_params=_value(env, "num_params", int, "an integer", where, problems),
            precision=_value(env, "precision", str, "a string", where, problems),
            compile=_value(env, "compile", bool, "true or false", where, problems),
        )


ReadMode = Literal["report", "progress", "summary", "index"]


@dataclass
class JobRecord:
    """One job directory as read. The raw parts (``config``, ``summary``, ``env``, ``final_eval``,
    ``metrics``) are None where the file is missing or unreadable; the properties below resolve
    each value from the best source that has it (summary.json first, then metrics.jsonl, with
    final_eval.json for the final loss and config.yaml / env.json for what they record)."""

    jd: JobDir
    config: ConfigFacts | None = None
    """None: no readable config.yaml."""
    summary: JobSummary | None = None
    """None: summary.json is missing or unreadable (``summary_unreadable`` says which)."""
    summary_unreadable: str | None = None
    """Why summary.json could not be read at all (corrupt JSON, not an object), else None."""
    env: EnvFacts = field(default_factory=EnvFacts)
    final_eval: FinalEval | None = None
    metrics: MetricsFacts | None = None
    """metrics.jsonl read whole (mode "report"); None otherwise or without the file."""
    last_train: Record | None = None
    """The last train record, read from the file's tail (mode "progress", the live view)."""
    done: bool = False
    """DONE exists."""
    run_identity: RunIdentity | None = None
    """identity.json (modes "report" and "index"): what determines the run's result. None: no
    file (a run from before identities were recorded) or a damaged one (then a problem)."""
    reused: ReusedFrom | None = None
    """reused.json (modes "report" and "index"): the run these files came from, for a job that
    was not trained here. None: trained here (or a damaged file, then a problem)."""
    preflight: dict[str, Any] | None = None
    """causality.json (mode "report"): the preflight's record the matrix runner left
    before the job started (``{"init", "preflight"}``, results.write_causality_init). None: no
    file, or a damaged one (then a problem)."""
    gates: dict[str, list[Any]] = field(default_factory=dict)
    """Final gate values (mode "report"): summary.json's, else the last eval record's; per layer
    (and per head for ``ra_*``), each number a float. A gate of another shape is left out."""
    problems_by_file: dict[str, Problems] = field(default_factory=dict)
    """What could not be read or was skipped, one line each naming the file, by the file's name
    (config.yaml, summary.json, env.json, final_eval.json, metrics.jsonl)."""
    broken: dict[str, str] = field(default_factory=dict)
    """The files a comparison rests on (``COMPARED_FILES``) that exist but are not as documented
    (not valid YAML/JSON, truncated, not an object, a value of the wrong type), each with the
    first problem found: such a job is not compared (the report shows it as unreadable)."""
    notes: Problems = field(default_factory=list)
    """Where one file's value was taken over another's, one line each (for the report's Notes)."""

    @property
    def problems(self) -> Problems:
        """Every problem of every file, one line each, naming the file."""
        return [p for found in self.problems_by_file.values() for p in found]

    def _problems(self, name: str) -> Problems:
        return self.problems_by_file.setdefault(name, [])

    # ------------------------------------------------------------------ identity

    def step(self, entry: Mapping[str, Any] | None = None) -> str:
        """config.yaml's step name, else summary.json's, else the manifest entry's, else the
        directory name up to its first ``_``."""
        for value in (
            self.config.step if self.config else None,
            self.summary.step if self.summary else None,
            (entry or {}).get("step"),
        ):
            if value:
                return str(value)
        return self.jd.name.split("_")[0]

    def seed(self, entry: Mapping[str, Any] | None = None) -> Any:
        if self.config is not None and self.config.has_seed:
            return self.config.seed
        if self.summary is not None and self.summary.seed is not None:
            return self.summary.seed
        return (entry or {}).get("seed")

    @property
    def architecture(self) -> str | None:
        if self.config is not None and self.config.architecture is not None:
            return self.config.architecture
        return self.summary.architecture if self.summary else None

    def identity_differences(self, other: JobRecord) -> list[Difference] | None:
        """What differs between this run's identity and ``other``'s, input by input (empty: the
        same identity); None when either has none (a run without or with a damaged
        identity.json: nothing can be said, so the two are not known to be the same)."""
        if self.run_identity is None or other.run_identity is None:
            return None
        return self.run_identity.differences(other.run_identity)

    # ------------------------------------------------------------------ causality

    @property
    def causality(self) -> dict[str, Any] | None:
        """summary.json's "causality" entry; for a job whose summary has none (stopped before
        the trainer wrote its first summary.json, which starts from the same record), the entry
        of the preflight's record in causality.json: checked before training, the trained
        weights not (yet). None: neither file records one."""
        s = self.summary
        if s is not None and isinstance(s.causality, dict) and s.causality:
            return s.causality
        if self.preflight is None:
            return None
        init = self.preflight.get("init")
        return causality_entry(init if isinstance(init, dict) else None)

    @property
    def causality_state(self) -> str:
        """One of results.CAUSALITY_STATES, from ``causality`` (a leaked status wins)."""
        status = self.summary.status if self.summary is not None else None
        return causality_state({"status": status, "causality": self.causality})

    @property
    def trained_in(self) -> Path:
        """The job directory the run trained in: its own, or for a reused job the original's."""
        return Path(self.reused.original) if self.reused is not None else self.jd.path

    # ------------------------------------------------------------------ values

    def number(self, name: str) -> float | None:
        """A numeric summary.json value (NaN stays NaN); where the summary has none, the value
        derived from metrics.jsonl (when read)."""
        if name not in _NUMBERS:
            raise KeyError(f"{name!r} is not a numeric summary.json key")
        value = getattr(self.summary, name) if self.summary is not None else None
        if value is None and self.metrics is not None:
            value = getattr(self.metrics, name, None)
        return None if value is None else float(value)

    @property
    def final_val_loss(self) -> float | None:
        """final_eval.json's loss, else summary.json's final_val_loss, else metrics.jsonl's."""
        if self.final_eval is not None:
            return self.final_eval.loss
        return self.number("final_val_loss")

    @property
    def val_loss(self) -> float | None:
        """The number a report compares: the final full-set val loss when finite, else the best
        periodic val loss (a run without a final eval: failed, running, older results)."""
        final = self.final_val_loss
        if final is not None and math.isfinite(final):
            return final
        return self.number("best_val_loss")

    @property
    def has_final_loss(self) -> bool:
        final = self.final_val_loss
        return final is not None and math.isfinite(final)

    @property
    def box_seconds(self) -> float | None:
        """summary.json's box, else config.yaml's (summaries of early versions have none)."""
        if self.summary is not None and self.summary.box_seconds is not None:
            return self.summary.box_seconds
        return self.config.box_seconds if self.config else None

    @property
    def warmup_iters(self) -> float | None:
        """An iteration budget's warmup in iterations: the one the run really had (summary.json's
        ``schedule.warmup_end`` on the iterations clock: ``optim.warmup_fraction x max_iters`` when
        ``optim.warmup_iters`` is unset), else config.yaml's ``optim.warmup_iters``."""
        schedule = self.summary.schedule if self.summary is not None else None
        if schedule is not None and schedule.get("clock") == "iterations":
            end = _number(schedule.get("warmup_end"))
            if end is not None:
                return end
        return self.config.warmup_iters if self.config else None

    @property
    def max_iters(self) -> int | None:
        """summary.json's iteration budget, else config.yaml's ``budget.max_iters``."""
        if self.summary is not None and self.summary.max_iters is not None:
            return self.summary.max_iters
        return self.config.max_iters if self.config else None

    @property
    def iteration_schedule_done(self) -> float | None:
        """An iteration budget's schedule: the share of it the run got, at most 1 (below 1: the
        box cut the run and its learning rate never decayed). summary.json's
        ``schedule_fraction`` on the iterations clock; a run from before the schedule was recorded
        (any ``budget.max_iters`` set the iterations clock then): iterations / max_iters.
        None: a time box's schedule (it ends with the box), or nothing says."""
        s = self.summary
        if s is not None and s.schedule is not None:
            return s.schedule_fraction if s.schedule.get("clock") == "iterations" else None
        budget, done = self.max_iters, s.iterations if s is not None else None
        if budget is None or budget <= 0 or done is None:
            return None
        return min(1.0, done / budget)

    @property
    def val_overlap(self) -> tuple[float, float | None] | None:
        """summary.json ``data``: the share of validation tokens inside spans that also occur in
        training, and the share above which the job's version warned (``val_overlap_warn_share``);
        None when not measured or not recorded."""
        data = self.summary.data if self.summary is not None else None
        if data is None:
            return None
        share = _number(data.get("val_overlap_share"))
        return None if share is None else (share, _number(data.get("val_overlap_warn_share")))

    @property
    def world_size(self) -> int | None:
        s = self.summary.world_size if self.summary is not None else None
        return s if s is not None else self.env.world_size

    @property
    def device(self) -> str | None:
        s = self.summary.device if self.summary is not None else None
        return s if s is not None else self.env.device

    @property
    def device_count(self) -> int | None:
        s = self.summary.device_count if self.summary is not None else None
        return s if s is not None else self.env.device_count

    @property
    def non_embedding_params(self) -> int | None:
        """env.json's parameters less the token and position embeddings ((vocab_size +
        block_size) x n_embd, config.yaml): the N of scaling laws; None when either is missing."""
        total = self.env.num_params
        if self.config is None or total is None:
            return None
        n_embd, vocab, block = self.config.n_embd, self.config.vocab_size, self.config.block_size
        if n_embd is None or vocab is None or block is None:
            return None
        return total - (vocab + block) * n_embd

    @property
    def source(self) -> str:
        """Where the job's numbers come from: summary.json, metrics.jsonl or nowhere ("-")."""
        if self.summary is not None:
            return "summary.json"
        return "metrics.jsonl" if self.metrics is not None and self.metrics.records else "-"


_NUMBERS = {
    name for name, hint in get_type_hints(JobSummary).items() if hint in (int | None, float | None)
}


def _number(v: Any) -> float | None:
    if type(v) in (float, int) or (isinstance(v, str) and v in ("nan", "inf", "-inf")):
        return float(v)
    return None


def _per_layer(values: Any, per_head: bool) -> list[Any] | None:
    """A gate's values, each number a float: per layer a number, or (``per_head``) a list of
    numbers; None when the values have another shape."""
    if not isinstance(values, list):
        return None
    out: list[Any] = []
    for layer in values:
        if per_head:
            heads = [_number(v) for v in layer] if isinstance(layer, list) else [None]
            if None in heads:
                return None
            out.append(heads)
        else:
            number = _number(layer)
            if number is None:
                return None
            out.append(number)
    return out


def _gates(gates: dict[str, Any], where: str, problems: Problems) -> dict[str, list[Any]]:
    """Gate values in summary.json's layout, checked: ``ra_*`` per layer a list of per-head
    numbers, any other gate per layer one number (the models' gate_stats())."""
    out: dict[str, list[Any]] = {}
    for name, values in gates.items():
        per_head = str(name).startswith("ra_")
        checked = _per_layer(values, per_head)
        if checked is None:
            shape = (
                "a list (layers) of lists (heads) of numbers" if per_head else "a list of numbers"
            )
            problems.append(f"{where}: gate {name!r} is not {shape}; its values are not shown")
            continue
        out[str(name)] = checked
    return out


def _read(
    reader: Callable[[Any], dict[str, Any]], path: Any, problems: Problems
) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return reader(path)
    except ResultsFormatError as e:
        problems.append(str(e))
        return None


COMPARED_FILES = (CONFIG, SUMMARY, FINAL_EVAL)
"""The files a job's comparison rests on: what ran (config.yaml), how it ended and its numbers
(summary.json), its final loss and noise (final_eval.json). One of them broken, the job is not
compared (``JobRecord.broken``); a broken env.json or metrics.jsonl costs only its own values."""


def read_job(jd: JobDir, mode: ReadMode = "report", config: ConfigFacts | None = None) -> JobRecord:
    """Read one job directory; never raises for what is in its files.

    ``mode``: "report" reads every file, metrics.jsonl whole (curve, fallbacks); "index" (the runs
    index, thousands of jobs) config.yaml, summary.json, env.json, identity.json and reused.json,
    not metrics.jsonl or final_eval.json; "progress" (the live view, every second) config.yaml,
    summary.json and the last train record from the tail of metrics.jsonl; "summary" (the outcome
    rules) summary.json only. ``config``: facts read before, so config.yaml is not read again."""
    rec = JobRecord(jd, done=jd.is_done())
    if config is not None:
        rec.config = config
    elif mode != "summary":
        raw = _read(read_job_config, jd.config, rec._problems(CONFIG))
        if raw is not None:
            rec.config = ConfigFacts.parse(raw, str(jd.config), rec._problems(CONFIG))
    rec.summary, summary_problems = load_summary(jd.summary)
    if rec.summary is None and summary_problems:
        rec.summary_unreadable = summary_problems[0]
    rec._problems(SUMMARY).extend(summary_problems)
    if mode == "progress":
        rec.last_train = last_train_record(jd.metrics)
    if mode in ("report", "index"):
        _read_env_and_identity(rec)
    if mode == "report":
        _read_the_rest(rec)
    for name in COMPARED_FILES:
        found = rec.problems_by_file.get(name)
        if found:
            rec.broken[name] = found[0]
    if mode == "report":
        if rec.summary is not None and rec.summary.gates:  # a gate's shape costs only its values
            rec.gates = _gates(rec.summary.gates, str(jd.summary), rec._problems(SUMMARY))
        elif rec.metrics is not None:
            rec.gates = _gates(rec.metrics.gates, str(jd.metrics), rec._problems(METRICS))
        _cross_check(rec)
    rec.problems_by_file = {name: found for name, found in rec.problems_by_file.items() if found}
    return rec


def _read_env_and_identity(rec: JobRecord) -> None:
    """env.json, identity.json and reused.json (modes "report" and "index")."""
    jd = rec.jd
    env = _read(read_json, jd.env, rec._problems(ENV))
    if env is not None:
        rec.env = EnvFacts.parse(env, str(jd.env), rec._problems(ENV))
    rec.run_identity, identity_problem = load_identity(jd)
    if identity_problem:
        rec._problems(IDENTITY).append(identity_problem)
    rec.reused, reused_problem = read_reused(jd)
    if reused_problem:
        rec._problems(REUSED).append(reused_problem)


def _read_the_rest(rec: JobRecord) -> None:
    """metrics.jsonl, final_eval.json and causality.json (mode "report")."""
    jd = rec.jd
    if jd.metrics.is_file():
        records, metric_problems = read_metrics(jd.metrics)
        rec._problems(METRICS).extend(metric_problems)
        rec.metrics = metrics_facts(records)
    fe, fe_problem = read_final_eval(jd.final_eval)
    if fe_problem:
        rec._problems(FINAL_EVAL).append(fe_problem)
    rec.final_eval = fe
    rec.preflight = _read(read_json, jd.causality, rec._problems(CAUSALITY))


def _cross_check(rec: JobRecord) -> None:
    """Notes where one file's value is taken over another's."""
    fe = rec.final_eval
    stated = rec.summary.final_val_loss if rec.summary is not None else None
    if (
        fe is not None
        and stated is not None
        and math.isfinite(stated)
        and abs(stated - fe.loss) > 1e-6 * max(1.0, abs(fe.loss))
    ):
        rec.notes.append(
            f"summary.json's final_val_loss {stated:.6f} differs from final_eval.json's "
            f"{fe.loss:.6f}; the per-window file is used"
        )
    if (
        (rec.config is None or rec.config.architecture is None)
        and rec.summary is not None
        and rec.summary.architecture is not None
    ):
        rec.notes.append("no readable config.yaml; architecture label taken from summary.json")
