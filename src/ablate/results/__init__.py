"""The results-directory format: one package owns it, the trainer writes it, the reporter reads it.

Layout (documented for users in docs/results-format.md)::

    results/test_matrix_results_YYYYMMDD_HHMMSS[_N]/
      matrix.json           manifest of the matrix (jobs, overrides, status, times, exit codes)
      REPORT.md, *.png      the report
      <job>/                one directory per job, named after its step and swept values
        config.yaml         resolved config that ran
        env.json            what it ran on (EnvRecord): git SHA, versions, host, devices, batch
        identity.json       the run's identity: digest and components (ablate.identity)
        reused.json         only in a job filled from an earlier run: where it came from
        metrics.jsonl       one JSON object per line; appended as training goes
        summary.json        status and results (JobSummary); rewritten atomically after every eval
        final_eval.json     the final full-set eval's per-window losses (the report's noise)
        train.log           the job's log (local launcher: everything it printed)
        checkpoint.pt       latest checkpoint (atomic); deleted after DONE unless budget.keep=checkpoint
        model.safetensors   the final model weights, written before DONE (budget.keep=weights|checkpoint)
        DONE                written last, when the job completed

Modules: ``names`` (format version, file names, statuses, directory names), ``files`` (JSON/YAML
reading and atomic writing), ``summary`` (JobSummary: summary.json's keys, defined only there),
``env`` (EnvRecord: env.json's keys, defined only there), ``job`` (JobDir), ``final_eval``, ``metrics``, ``manifest`` (matrix.json, finding directories),
``causality`` (records and the state a report shows), ``identity`` (identity.json: a run's
stored identity and what differs between two; reused.json), ``axes`` (which swept keys are axes,
each job's values), ``legacy`` (the one place that knows older
layouts) and ``reader`` (``read_job``: the one reader of a job directory). Everything is
importable from ``ablate.results`` itself, which is how the rest of ablate imports it.
"""

from __future__ import annotations

from ablate.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_text,
    disk_full_error,
    is_disk_full,
)
from ablate.results.axes import (
    NOT_AXES,
    axes_of_overrides,
    axis_defaults,
    matrix_axes,
    override_pairs,
)
from ablate.results.causality import (
    CAUSALITY_STATES,
    CHECKED,
    TRAINED_UNCHECKED,
    UNCHECKED,
    UNRECORDED,
    causality_entry,
    causality_records,
    causality_state,
    read_causality_init,
    write_causality_init,
)
from ablate.results.env import ENV_KEYS, EnvRecord
from ablate.results.files import (
    PathLike,
    ResultsFormatError,
    as_float,
    atomic_write_json,
    read_json,
    read_yaml,
    to_json,
)
from ablate.results.final_eval import FinalEval, read_final_eval, write_final_eval
from ablate.results.identity import (
    Difference,
    ReusedFrom,
    RunIdentity,
    canonical,
    digest,
    load_identity,
    read_identity,
    read_reused,
    short,
)
from ablate.results.job import JobDir
from ablate.results.legacy import (
    MATRIX_SETTINGS_KEYS,
    RENAMED_CONFIG_KEYS,
    read_job_config,
    read_matrix_settings,
    upgrade_job_config,
)
from ablate.results.manifest import Manifest, find_matrix_dirs, iter_job_dirs
from ablate.results.metrics import (
    EvalPoint,
    MetricsFacts,
    MetricsWriter,
    TrainPoint,
    last_train_record,
    metrics_facts,
    read_metrics,
    truncate_metrics_after,
)
from ablate.results.names import (
    CAUSALITY,
    CHECKPOINT,
    COMPLETED,
    CONFIG,
    DONE,
    ENV,
    FAILED,
    FINAL_EVAL,
    FORMAT_VERSION,
    IDENTITY,
    INTERRUPTED,
    LEAKED,
    LOCK,
    LOG,
    LOG_CAPTURED_ENV,
    MANIFEST,
    MATRIX_PREFIX,
    METRICS,
    PENDING,
    READABLE_VERSIONS,
    REPORT,
    REUSED,
    RUNNING,
    SBATCH,
    STAGE,
    STATUSES,
    STDOUT,
    SUBMITIT,
    SUMMARY,
    WEIGHTS,
    is_matrix_dir,
    job_name,
    new_matrix_dir,
    now_iso,
    sanitize_name,
)
from ablate.results.reader import COMPARED_FILES, ConfigFacts, EnvFacts, JobRecord, read_job
from ablate.results.stage import STAGES, Stage, read_stage, write_stage
from ablate.results.summary import (
    SUMMARY_KEYS,
    JobSummary,
    budget_note_kind,
    describes_the_final_eval,
    load_summary,
)

__all__ = [
    "canonical",
    "digest",
    "short",
    "CAUSALITY",
    "CAUSALITY_STATES",
    "CHECKED",
    "CHECKPOINT",
    "COMPLETED",
    "CONFIG",
    "DONE",
    "ENV",
    "FAILED",
    "FINAL_EVAL",
    "FORMAT_VERSION",
    "IDENTITY",
    "INTERRUPTED",
    "LEAKED",
    "LOCK",
    "LOG",
    "LOG_CAPTURED_ENV",
    "MANIFEST",
    "MATRIX_PREFIX",
    "MATRIX_SETTINGS_KEYS",
    "METRICS",
    "NOT_AXES",
    "PENDING",
    "READABLE_VERSIONS",
    "RENAMED_CONFIG_KEYS",
    "REPORT",
    "REUSED",
    "RUNNING",
    "SBATCH",
    "STAGE",
    "STATUSES",
    "STDOUT",
    "SUBMITIT",
    "SUMMARY",
    "SUMMARY_KEYS",
    "TRAINED_UNCHECKED",
    "UNCHECKED",
    "UNRECORDED",
    "WEIGHTS",
    "ConfigFacts",
    "Difference",
    "ENV_KEYS",
    "EnvFacts",
    "EnvRecord",
    "EvalPoint",
    "TrainPoint",
    "FinalEval",
    "JobDir",
    "JobRecord",
    "COMPARED_FILES",
    "JobSummary",
    "Manifest",
    "MetricsFacts",
    "MetricsWriter",
    "PathLike",
    "ResultsFormatError",
    "ReusedFrom",
    "RunIdentity",
    "as_float",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "axes_of_overrides",
    "axis_defaults",
    "causality_entry",
    "causality_records",
    "causality_state",
    "disk_full_error",
    "find_matrix_dirs",
    "is_disk_full",
    "is_matrix_dir",
    "iter_job_dirs",
    "job_name",
    "last_train_record",
    "load_identity",
    "load_summary",
    "STAGES",
    "Stage",
    "read_stage",
    "write_stage",
    "budget_note_kind",
    "describes_the_final_eval",
    "matrix_axes",
    "metrics_facts",
    "new_matrix_dir",
    "now_iso",
    "override_pairs",
    "read_causality_init",
    "read_final_eval",
    "read_identity",
    "read_job",
    "read_job_config",
    "read_json",
    "read_matrix_settings",
    "read_metrics",
    "read_reused",
    "read_yaml",
    "sanitize_name",
    "to_json",
    "truncate_metrics_after",
    "upgrade_job_config",
    "write_causality_init",
    "write_final_eval",
]
