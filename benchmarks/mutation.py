"""Mutation testing of the modules that carry ablate's claims, with mutmut (pinned in the dev extra).

    nice -n 19 python benchmarks/mutation.py lock verify     # some modules, one after another
    nice -n 19 python benchmarks/mutation.py --all           # every module (hours on 2 cores)
    python benchmarks/mutation.py --list                     # the modules, their files and tests
    python benchmarks/mutation.py lock --only 'ablate.lock.x_describe_holder*'   # a part of one
    nice -n 19 python benchmarks/mutation.py stats --minutes 30  # score what ran in 30 minutes
    nice -n 19 python benchmarks/mutation.py matched --sample 60 --seed 1 --minutes 20

Why: a check that is wrong but whose tests still pass is the bug this project cannot afford (a
leak called causal, noise called a verdict). mutmut plants small bugs (a flipped comparison, a
constant off by one, a dropped argument, a changed string) one at a time and runs the tests; a
mutant the tests do not notice ("survived") is a behaviour nothing checks.

Each module is mutated alone in its own work folder, build/mutation/<module>/ (src/, tests/,
conf/ and docs/ are symlinks to this checkout; pyproject.toml is this one's plus a [tool.mutmut] section
for the module), from scratch each run, and only the module's own fast tests run against its
mutants (mutmut runs, per mutant, those of them that call the mutated function). Per module it
prints mutants, killed, survived ("no tests" counts as survived), timeouts (counted as killed: the
tests stopped the mutant) and the share that survived, and writes every survivor with its diff to
build/mutation/<module>/survivors.md. Target: at most 10% survive.

A survivor no test can kill (an equivalent mutant: no input tells it from the original) or one
accepted on purpose is listed in EQUIVALENT below with why; every other survivor is a gap, and the
script says how many there are ("unexplained") and exits with 3. An entry names the function
(a glob of mutmut's mutant name) and the change (a line the mutant removes and the line it puts
there), never mutmut's number alone: numbers shift when the source changes, and an entry must not
excuse a different mutant. An entry no survivor matched is printed as stale.

A module too big to run whole on this machine is scored by a sample (``--sample K --seed S``):
K of its N mutants drawn uniformly at random (seeded, so the same K and S draw the same mutants
from the same source), run, and the share that survived given with its 95% Wilson interval, which
covers the share over all N (every mutant being equally likely to be drawn). mutmut runs the
cheapest mutants first, so a sample stopped by ``--minutes`` is no longer uniform: the script says
so, and only a finished sample's interval speaks for the module.
benchmarks/RESULTS.md records the last measured scores.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "build" / "mutation"
LINKED = ("src", "tests", "conf", "docs")  # docs: tests check the documented format


@dataclass(frozen=True)
class Module:
    name: str
    files: tuple[str, ...]  # source files to mutate, relative to the repo
    tests: tuple[str, ...]  # pytest arguments selecting the module's own fast tests
    only: tuple[str, ...] = ()  # mutant-name globs when only a part of the files is meant
    claim: str = ""


MODULES = [
    Module(
        "lock",
        ("src/ablate/lock.py",),
        ("tests/test_lock.py",),
        claim="one writer per matrix and job directory; a held lock is refused, never waited for",
    ),
    Module(
        "atomic",
        ("src/ablate/atomic.py",),
        ("tests/test_atomic.py",),
        claim="a reader sees the old file or the new one; a full disk is named",
    ),
    Module(
        "noise",
        ("src/ablate/report/noise.py",),
        ("tests/report/test_report_noise.py",),
        claim="each comparison's interval covers what it says it covers",
    ),
    Module(
        "stats",
        ("src/ablate/report/stats.py",),
        ("tests/report/test_report_stats.py",),
        claim="paired seeds, leaked and unchecked steps withheld",
    ),
    Module(
        "verdict",
        ("src/ablate/report/verdict.py",),
        ("tests/report/test_report_verdicts.py",),
        claim="better / worse / within noise from the Bonferroni-adjusted interval",
    ),
    Module(
        "warnings",
        ("src/ablate/report/warnings.py",),
        ("tests/report/test_report_warnings.py",),
        claim="the warnings that take a verdict away",
    ),
    Module(
        "matched",
        ("src/ablate/report/matched.py",),
        ("tests/report/test_report_matched.py",),
        claim="matched-work comparisons and the compute multiplier",
    ),
    Module(
        "fingerprint",
        ("src/ablate/data/loader.py",),
        ("tests/data/test_loader.py",),
        only=("*global_fingerprint*", "*global_starts*", "*TrainBatches*_starts*", "*fingerprint*"),
        claim="the batch fingerprint covers the whole global batch",
    ),
    Module(
        "verify",
        ("src/ablate/data/verify.py",),
        ("tests/data/test_verify.py",),
        claim="a dataset the model cannot train on is refused before any job starts",
    ),
    Module(
        "config",
        ("src/ablate/config.py", "src/ablate/data/config.py", "src/ablate/checks.py"),
        ("tests/test_config_problems.py",),
        only=("*problems*", "*_positive_seconds*", "*host_memory_bytes*", "ablate.checks.*"),
        claim="problems(): what a user typed wrong is refused, with the key that holds it",
    ),
    Module(
        "results",
        ("src/ablate/results/files.py", "src/ablate/results/metrics.py"),
        (
            "tests/test_results_format.py",
            "tests/test_results_metrics.py",
            "tests/train/test_writers_fail_midway.py",
        ),
        claim="results written atomically and incrementally, read back whole",
    ),
    Module(
        "causality",
        (
            "src/models/causality.py",
            "src/models/causality_probes.py",
            "src/models/causality_inputs.py",
        ),
        (
            "tests/models/test_models_causality.py",
            "tests/causality/test_zoo.py",
            "tests/causality/test_zoo_conditions.py",
            "-m",
            "not slow",
        ),
        claim="a model that sees later tokens or other rows is refused (slow: torch per mutant)",
    ),
]
BY_NAME = {m.name: m for m in MODULES}


@dataclass(frozen=True)
class Equivalent:
    """A surviving mutant that stays: ``mutant`` globs mutmut's name (module and function),
    ``removed`` is in a line the mutant takes out, ``added`` is the whole line it puts in
    (whitespace aside; "" when it only removes)."""

    mutant: str
    removed: str
    added: str
    why: str

    def matches(self, name: str, diff: str) -> bool:
        if not fnmatch.fnmatch(name, self.mutant):
            return False
        minus = [ln[1:] for ln in diff.splitlines() if ln.startswith("-")]
        plus = [ln[1:].strip() for ln in diff.splitlines() if ln.startswith("+")]
        return any(self.removed in ln for ln in minus) and (
            self.added.strip() in plus if self.added.strip() else not plus
        )


EQUIVALENT: tuple[Equivalent, ...] = (
    # lock (reasons from its last run; lock.py's retry and directory lock came later: rerun)
    *(
        Equivalent(
            "ablate.lock.x_probe__mutmut_*",
            'DirLock(directory, "job")',
            f"lock = DirLock(directory, {what})",
            "the word appears only in the messages of LockHeld and LockUnavailable, which probe "
            "catches",
        )
        for what in ("None", '"XXjobXX"', '"JOB"')
    ),
    *(
        Equivalent(
            "ablate.lock.x_read_holder__mutmut_*",
            'read_text(encoding="utf-8") or "{}"',
            f"obj = json.loads(Path(path).read_text({arg}) or {empty})",
            why,
        )
        for arg, empty, why in (
            ("encoding=None", '"{}"', "the holder writes json.dumps output, which is ASCII"),
            ('encoding="UTF-8"', '"{}"', "the same codec"),
            (
                'encoding="utf-8"',
                '"XX{}XX"',
                "an empty file then fails to parse, and the except gives the same {}",
            ),
        )
    ),
    Equivalent(
        "ablate.lock.xǁDirLockǁ__init____mutmut_*",
        "self.locked = False",
        "self.locked = None",
        "only ever read as a truth value",
    ),
    *(
        Equivalent(
            "ablate.lock.xǁDirLockǁ_no_locks__mutmut_*",
            "flush=True",
            line,
            "stderr is line-buffered and the warning is one whole line",
        )
        for line in ("flush=None,", "flush=False,", ")")
    ),
    Equivalent(
        "ablate.lock.xǁDirLockǁacquire__mutmut_*",
        "os.ftruncate(fd, 0)",
        "os.ftruncate(fd, 1)",
        "the holder line written at offset 0 right after is longer than 1 byte: the same file",
    ),
    Equivalent(
        "ablate.lock.xǁDirLockǁacquire__mutmut_*",
        "os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC",
        "dir_fd = os.open(self.directory, os.O_RDONLY & os.O_DIRECTORY | os.O_CLOEXEC)",
        "O_DIRECTORY only refuses a path that is not a directory, and _open_file has just "
        "opened the lock file inside self.directory, so it is one; O_CLOEXEC stays",
    ),
    # config
    *(
        Equivalent(
            "ablate.config.x__positive_seconds__mutmut_*",
            'finite("", value)',
            f"return not finite({name}, value)  # a finite number > 0",
            "only whether a problem is returned is used, never its text",
        )
        for name in ("None", '"XXXX"')
    ),
    *(
        Equivalent(
            f"ablate.config.xǁ{group}ǁproblems__mutmut_*",
            f'finite("{key}", self.{field}, strict=False)',
            f'out += finite("{key}", self.{field}, strict=None)',
            "the helper reads the flag as a truth value",
        )
        for group, key, field in (
            ("OptimConfig", "optim.min_lr", "min_lr"),
            ("OptimConfig", "optim.weight_decay", "weight_decay"),
            ("OptimConfig", "optim.grad_clip", "grad_clip"),
            ("BudgetConfig", "budget.grace_seconds", "grace_seconds"),
        )
    ),
    Equivalent(
        "ablate.data.config.xǁDataConfigǁproblems__mutmut_*",
        'share("data.val_fraction", self.val_fraction, closed_low=False)',
        'out += share("data.val_fraction", self.val_fraction, closed_low=None)',
        "the helper reads the flag as a truth value",
    ),
    *(
        Equivalent(
            "ablate.config.xǁOptimConfigǁproblems__mutmut_*",
            'share("optim.warmup_fraction", self.warmup_fraction, closed_low=True)',
            f"if share({name}, self.warmup_fraction, closed_low=True):",
            "only whether share() returns a problem is used; the line the user sees is written "
            "out beside it",
        )
        for name in ("None", '"XXoptim.warmup_fractionXX"', '"OPTIM.WARMUP_FRACTION"')
    ),
    # atomic
    Equivalent(
        "ablate.atomic.x__read_umask__mutmut_*",
        "os.umask(0o022)",
        "mask = os.umask(19)",
        "the probe value is set and restored at once; the mask read is the same",
    ),
    Equivalent(
        "ablate.atomic.x_atomic_write_bytes__mutmut_*",
        'atomic_open(path, "wb")',
        "with atomic_open(path, ) as f:",
        '"wb" is atomic_open\'s default mode',
    ),
    # verify
    Equivalent(
        "ablate.data.verify.x_verify_dataset__mutmut_*",
        '.get("shards", [])',
        'for s in (ds.meta or {}).get("shards", None) or []:',
        "followed by `or []`",
    ),
    Equivalent(
        "ablate.data.verify.x_verify_dataset__mutmut_*",
        '.get("shards", [])',
        'for s in (ds.meta or {}).get("shards", ) or []:',
        "followed by `or []`",
    ),
    *(
        Equivalent(
            "ablate.data.verify.x_verify_dataset__mutmut_*",
            "usable += 1",
            line,
            "usable is only compared with 0, and is 0 exactly when no training shard holds "
            "block_size + 1 tokens in every variant",
        )
        for line in ("usable = 1", "usable -= 1", "usable += 2")
    ),
    # noise
    *(
        Equivalent(
            "ablate.report.noise.xǁPartsǁhalf_width__mutmut_*",
            f"assert {a} is not None and self.{b} is not None",
            f"assert {a} is not None or self.{b} is not None",
            "parts_from_windows sets both for this kind (K >= 2); the assert is there for the "
            "type checker and holds either way",
        )
        for a, b in (("seed_var", "seed_df"), ("interaction_var", "window_df"))
    ),
    Equivalent(
        "ablate.report.noise.x_effect__mutmut_*",
        "first = evals[0][0]",
        "first = evals[0][1]",
        "a seed's two evals were checked pairable (block size, windows, fingerprint) just "
        "before, so either stands for the seed in the cross-seed check",
    ),
    Equivalent(
        "ablate.report.noise.x_effect__mutmut_*",
        "pairable(first, evals[i][0])",
        "other = next((i for i in range(1, K) if pairable(first, evals[i][1]) is not None), None)",
        "a seed's two evals were checked pairable just before, so either stands for the seed",
    ),
    Equivalent(
        "ablate.report.noise.x_effect__mutmut_*",
        "pairable(first, evals[i][0])",
        "other = next((i for i in range(K) if pairable(first, evals[i][0]) is not None), None)",
        "seed 0 always pairs with itself, so starting the search at 0 finds the same seed",
    ),
    Equivalent(
        "ablate.report.noise.x_effect__mutmut_*",
        "pairable(first, evals[other][0])",
        'why = f"seeds {pairs[0][0]} and {pairs[other][0]} scored different windows '
        '({pairable(first, evals[other][1])})"',
        "a seed's two evals were checked pairable just before: the same reason either way",
    ),
    Equivalent(
        "ablate.report.noise.x_effect__mutmut_*",
        "fe = evals[0][0]",
        "fe = evals[0][1]",
        "accepted: the two evals of a seed have the same windows by then; only "
        "periodic_windows (informational) could differ, if one step used another "
        "data.val_windows",
    ),
    Equivalent(
        "ablate.report.noise.xǁPartsǁhalf_width__mutmut_*",
        "np.full(np.shape(self.est), self.seed_df)",
        "h = t_half_quantile(confidence, np.full(np.shape(None), self.seed_df)) * self.se",
        "a 0-d array of the degrees of freedom broadcasts against self.se to the same values",
    ),
    Equivalent(
        "ablate.report.noise.x_parts_from_windows__mutmut_*",
        "np.where(lrv_m > 0, lrv_m, np.inf)",
        "n_eff = n * m.var(axis=-1) / np.where(lrv_m >= 0, lrv_m, np.inf)",
        "where lrv_m is 0 the next line sets n_eff to n whatever this one gave",
    ),
    *(
        Equivalent(
            "ablate.report.noise.x_batch_means__mutmut_*",
            "np.asarray(L, dtype=np.int64)",
            f"L = np.broadcast_to(np.asarray(L, {arg}), x.shape[:-1])",
            "every length is used through int(length); callers pass integer lengths",
        )
        for arg in ("dtype=None", "")
    ),
    Equivalent(
        "ablate.report.noise.x_batch_means__mutmut_*",
        "xs.reshape(xs.shape[:-1] + (k, int(length)))",
        "means = xs.reshape(xs.shape[:+1] + (k, int(length))).mean(axis=-1)",
        "x[sel] (a boolean mask over the leading axes) is always 2-D: [:1] is [:-1]",
    ),
    Equivalent(
        "ablate.report.noise.x_batch_means__mutmut_*",
        "means.var(axis=-1, ddof=1)",
        "lrv[sel] = int(length) * means.var(axis=+1, ddof=1)",
        "means is always 2-D here (x[sel] flattens the leading axes): axis 1 is axis -1",
    ),
    Equivalent(
        "ablate.report.noise.x_block_length__mutmut_*",
        "max(2, n // MIN_BLOCKS)",
        "return np.clip(need, 2, max(2, n / MIN_BLOCKS)).astype(np.int64)",
        "need is a whole number (np.ceil), so clipping it at n / MIN_BLOCKS and truncating to "
        "an int gives min(need, n // MIN_BLOCKS), the same",
    ),
    *(
        Equivalent(
            "ablate.report.noise.x_choose_block_length__mutmut_*",
            "np.zeros(L.shape, dtype=bool)",
            f"grow = np.zeros(L.shape, {arg})",
            "grow is only read as a truth value (grow.any(), np.where), and float zeros with the "
            "1.0 and 0.0 the comparisons store there read the same",
        )
        for arg in ("dtype=None", "")
    ),
    Equivalent(
        "ablate.report.noise.x_lag1__mutmut_*",
        'np.errstate(invalid="ignore", divide="ignore")',
        'with np.errstate(invalid="ignore", ):',
        "nothing divides by zero there (the divisor is den where den > 0, else 1.0); the state "
        "only silences warnings",
    ),
    # verdict
    Equivalent(
        "ablate.report.verdict.x_decide__mutmut_*",
        "np.full(low_adj.shape, WITHIN, dtype=object)",
        "out = np.full(low_adj.shape, WITHIN, dtype=None)",
        "a fixed-width str array of 'within noise' holds the four words (none is longer) and "
        "gives the same strings back",
    ),
    # warnings
    Equivalent(
        "ablate.report.warnings.x_collect_warnings__mutmut_*",
        "{100 * BOX_TOLERANCE:.0f}%",
        'f"trained more than {101 * BOX_TOLERANCE:.0f}% past the time box (more time, "',
        "5.05 prints as 5 at .0f, like 5",
    ),
    *(
        Equivalent(
            "ablate.report.warnings.x_collect_warnings__mutmut_*",
            'r["status"] != "leaked"',
            f'if r["status"] != {word} and r.get("causality_state") not in (R.CHECKED, R.LEAKED)',
            "a leaked job's causality state is leaked, which the same condition leaves out",
        )
        for word in ('"XXleakedXX"', '"LEAKED"')
    ),
    *(
        Equivalent(
            "ablate.report.warnings.x_collect_warnings__mutmut_*",
            "why[R.UNRECORDED])",
            f'reason = why.get(r.get("causality_state"), {default})',
            "every state that reaches it is a key of why: results.causality_state returns one "
            "of them and an unreadable job's row is set to UNRECORDED (report/load.py)",
        )
        for default in ("", "None")
    ),
    Equivalent(
        "ablate.report.warnings.x_collect_warnings__mutmut_*",
        'jobs.to_dict("records")',
        'rows = jobs.to_dict("RECORDS")  # plain dicts: iterrows is ~50x slower on a big matrix',
        "pandas reads the orient case-insensitively",
    ),
    Equivalent(
        "ablate.report.warnings.x__finite__mutmut_*",
        "return False",
        "return True",
        "no bool reaches it: the job readers type every numeric field and refuse a bool "
        "(results/summary.py _as_int and _as_float), leaving NaN",
    ),
    # matched
    Equivalent(
        "ablate.report.matched.x_multiplier_records__mutmut_*",
        "coll.baseline, coll.target_loss, stats)",
        "m = matched_work(coll.jobs, coll.curves, coll.order, coll.baseline, None, stats)",
        "the records read only m.multiplier, which matched_work computes without the target "
        "(the target sets only the work-to-target numbers)",
    ),
    # stats: step_stats
    Equivalent(
        "ablate.report.stats.x_step_stats__mutmut_*",
        'pd.to_numeric(sub["resumed"], errors="coerce").fillna(0)',
        'resumed = pd.to_numeric(sub["resumed"], errors="coerce").fillna(None)',
        "a NaN left in place is skipped by sum() and is not > 0: the same counts",
    ),
    Equivalent(
        "ablate.report.stats.x_step_stats__mutmut_*",
        'pd.to_numeric(sub["resumed"], errors="coerce").fillna(0)',
        'resumed = pd.to_numeric(sub["resumed"], ).fillna(0)',
        "no string reaches it: the reader types resumed as an int or None (JobSummary, "
        "report/load.py), which to_numeric takes without coercing",
    ),
    Equivalent(
        "ablate.report.stats.x__seed_order__mutmut_*",
        "return (1, 0.0, str(seed))",
        "return (1, 1.0, str(seed))",
        "every non-numeric seed gets the same middle value, whichever constant: they sort by "
        "their text after the numeric seeds (group 0) either way",
    ),
    # results
    *(
        Equivalent(
            f"ablate.results.files.x_{fn}__mutmut_*",
            'path.read_text(encoding="utf-8")',
            f"text = path.read_text(encoding={enc})",
            why,
        )
        for fn in ("read_yaml", "read_json")
        for enc, why in (
            ('"UTF-8"', "the same codec"),
            (
                "None",
                "accepted: the locale's encoding, which is UTF-8 wherever this runs (a UTF-8 "
                "locale, or Python's UTF-8 mode under the C locale); telling them apart needs a "
                "non-UTF-8 locale installed",
            ),
        )
    ),
    *(
        Equivalent(
            "ablate.results.files.x_read_yaml__mutmut_*",
            'getattr(yaml, "CSafeLoader", yaml.SafeLoader)',
            f"loader = {line}",
            "both safe loaders build the same mapping from the same text (the C one is only "
            "faster), and the installed PyYAML has the C one, so the fallback is never read",
        )
        for line in (
            'getattr(None, "CSafeLoader", yaml.SafeLoader)',
            'getattr(yaml, "CSafeLoader", None)',
            'getattr(yaml, "CSafeLoader", )',
            'getattr(yaml, "XXCSafeLoaderXX", yaml.SafeLoader)',
            'getattr(yaml, "csafeloader", yaml.SafeLoader)',
            'getattr(yaml, "CSAFELOADER", yaml.SafeLoader)',
        )
    ),
    *(
        Equivalent(
            "ablate.results.files.x_atomic_write_json__mutmut_*",
            "to_json(obj, indent=2)",
            f'atomic_write_text(path, to_json(obj, {arg}) + "\\n")',
            "accepted: the indent is layout only; every reader parses the JSON, and "
            "docs/results-format.md promises no layout",
        )
        for arg in ("indent=3", "indent=None", "")
    ),
    Equivalent(
        "ablate.results.files.x_to_json__mutmut_*",
        "allow_nan=False)",
        "return json.dumps(_clean(obj), indent=indent, default=_json_default, allow_nan=True)",
        "a safety net no value reaches: _clean turns every non-finite float (numpy's float64 "
        "too, a float) into a string first, and _json_default passes what it returns through "
        "_clean as well, so no NaN or inf reaches the encoder",
    ),
    # stats
    *(
        Equivalent(
            "ablate.report.stats.x__compare__mutmut_*",
            "if ref.values and step.values else math.nan",
            f"pct = 100.0 * diff / ref.mean if {cond} else math.nan",
            "a side without values has a NaN mean, so the difference and the percentage are NaN "
            "either way",
        )
        for cond in ("(ref.values and step.values) or True", "ref.values or step.values")
    ),
    # causality
    Equivalent(
        "models.causality_probes.x_gradient_probe__mutmut_*",
        "device = tokens.device",
        "device = None",
        "accepted: on the CPU (where the fast tests run) device None is the tokens' device; on a "
        "GPU the mutant's CPU zeros meet CUDA gradients in torch.maximum and the probe raises "
        "(a device mismatch), never passes a leak",
    ),
    Equivalent(
        "models.causality.x_check_causal__mutmut_*",
        "EVERY_CUT_FLOPS.get(device.type, EVERY_CUT_FLOPS['cpu'])",
        "f\"{device.type} (over {EVERY_CUT_FLOPS.get(None, EVERY_CUT_FLOPS['cpu']):.0e}); \"",
        "accepted: the limit a message states; on the CPU (the fast tests) the default is the "
        "cpu entry itself; on a GPU the message would state the CPU's limit while "
        "every_cut_affordable decided by the GPU's (a wrong number in a message, not a check)",
    ),
    Equivalent(
        "models.causality_inputs.x_stream_of__mutmut_*",
        "random_tokens(batch, length + 1, vocab, seed)",
        "return random_tokens(batch, length + 2, vocab, seed)",
        "only a stream's first `length` columns are read (causality._run: tokens = "
        "stream[:, :length]), so a longer random stream is "
        "another seeded uniform draw of the same tokens' distribution",
    ),
    Equivalent(
        "models.causality_probes.x_gradient_probe__mutmut_*",
        "if after.numel() else 0.0",
        "worst = float(after.max()) if (after.numel()) or True else 0.0",
        "cuts are in [0, T-2] (check_causal and cover_sets), so a row always has a position "
        "after its cut and `after` is never empty",
    ),
    Equivalent(
        "models.causality_probes.x__plain_float__mutmut_*",
        'float("inf")',
        'return float(x) if math.isfinite(x) else float("INF")',
        "float() reads inf in any letter case: the same infinity",
    ),
    Equivalent(
        "models.causality.x__run__mutmut_*",
        "embedding=_embedding_in(target, c.model, c.embedding), seed=c.seed + i,",
        "embedding=_embedding_in(target, c.model, c.embedding),",
        "accepted: every gradient pass then draws its projection, position weights and dropout "
        "masks from seed 0 instead of the check's seed + pass (its tokens still differ per pass "
        "and per seed, stream_of); a nonzero gradient at a forbidden position is orthogonal to "
        "a Gaussian projection with probability 0, so any one fixed draw sees the same leaks",
    ),
)


def _toml_list(items: tuple[str, ...] | list[str]) -> str:
    return (
        "["
        + ", ".join('"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"' for s in items)
        + "]"
    )


def prepare(mod: Module, root: Path = WORK) -> Path:
    """A fresh work folder for ``mod``: links to the checkout, and its own pyproject.toml."""
    work = root / mod.name
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for name in LINKED:
        (work / name).symlink_to(REPO / name)
    section = "\n".join(
        [
            "",
            "[tool.mutmut]",
            'source_paths = ["src"]',
            f"only_mutate = {_toml_list(mod.files)}",
            f"pytest_add_cli_args_test_selection = {_toml_list(mod.tests)}",
            'pytest_add_cli_args = ["-p", "no:cacheprovider"]',
            'also_copy = ["conf", "docs"]',
            # torch is not fork-safe once it has run: workers fork from a server that only imported
            'process_isolation = "forkserver"',
            "use_git_change_detection = false",
            "",
        ]
    )
    (work / "pyproject.toml").write_text((REPO / "pyproject.toml").read_text() + section)
    return work


def _command(*args: str) -> tuple[list[str], dict[str, str]]:
    exe = Path(sys.executable).with_name("mutmut")
    cmd = [str(exe) if exe.exists() else "mutmut", *args]
    # ABLATE_SLOW_LIST=off: a module's tests are the ones its scores in RESULTS.md were measured
    # with (tests/slow_tests.txt, which shapes the fast tier by time, would drop some of them).
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
        ABLATE_SLOW_LIST="off",
    )
    return cmd, env


def _mutmut(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd, env = _command(*args)
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)


def _mutmut_run(work: Path, args: list[str], log: Path, minutes: float | None) -> tuple[int, bool]:
    """``mutmut run`` (output to ``log``), stopped after ``minutes``: (exit code, stopped). mutmut
    records each mutant's result as it goes, so a stopped run's finished mutants still count."""
    cmd, env = _command("run", *args)
    with open(log, "w") as f:
        proc = subprocess.Popen(
            cmd, cwd=work, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=None if minutes is None else minutes * 60), False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)  # mutmut and the workers it forked
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return 0, True
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            raise


def statuses(work: Path, globs: tuple[str, ...]) -> dict[str, str]:
    """{mutant name: status} of the mutants matching ``globs`` (every one when empty)."""
    out = _mutmut(work, "results", "--all", "true").stdout
    found = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+): (.+)$", line)
        if m and (not globs or any(fnmatch.fnmatch(m.group(1), g) for g in globs)):
            found[m.group(1)] = m.group(2).strip()
    return found


KILLED = {"killed", "timeout", "caught by type check"}
SURVIVED = {"survived", "no tests", "suspicious"}


# mutmut's own diff of each mutant, read in one process (``mutmut show`` per mutant takes seconds).
_DIFFS = """
import json, sys
from mutmut.mutation.diff_apply import get_diff_for_mutant
out = {}
for name in json.load(sys.stdin):
    try:
        out[name] = get_diff_for_mutant(name)
    except Exception as e:
        out[name] = f"(no diff: {e!r})"
json.dump(out, sys.stdout)
"""


def diffs(work: Path, names: list[str]) -> dict[str, str]:
    """{mutant name: its changed lines}."""
    proc = subprocess.run(
        [sys.executable, "-c", _DIFFS],
        cwd=work,
        input=json.dumps(names),
        capture_output=True,
        text=True,
    )
    found = json.loads(proc.stdout or "{}")
    return {
        n: "\n".join(
            ln
            for ln in found.get(n, "(no diff)").splitlines()
            if ln[:1] in "+-(" and not ln.startswith(("+++", "---"))
        )
        for n in names
    }


def explain(
    survived: list[str], changed: dict[str, str], allow: tuple[Equivalent, ...] = EQUIVALENT
) -> tuple[dict[str, str], list[Equivalent]]:
    """({survivor: why it stays, or "" when nothing explains it}, the entries of ``allow`` whose
    function was mutated here but that matched no survivor: stale)."""
    why = {}
    used = set()
    for name in survived:
        hit = next((e for e in allow if e.matches(name, changed.get(name, ""))), None)
        why[name] = hit.why if hit else ""
        if hit:
            used.add(hit)
    return why, [e for e in allow if e not in used]


Z95 = 1.959963984540054  # the standard normal's 97.5% quantile: a two-sided 95% interval


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial share: ``k`` successes in ``n`` draws. Unlike
    p -+ z sqrt(p(1-p)/n) it stays inside [0, 1] and is not empty at k = 0 (0 survivors of 40
    still allows up to 8.8%)."""
    if n <= 0:
        return (0.0, 1.0)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def draw(names: list[str] | set[str], k: int, seed: int) -> list[str]:
    """``k`` of ``names`` drawn uniformly without replacement, in a random order (so that any first
    part of the draw is a uniform sample too); the same for the same names, k and seed whatever
    order the names come in; all of them, shuffled, when k >= their number."""
    pool = sorted(names)
    return random.Random(seed).sample(pool, min(k, len(pool)))


NO_SUCH_MUTANT = "ablate_mutation_list_only__mutmut_0"  # matches nothing: mutmut then only lists


def population(work: Path, jobs: int, globs: tuple[str, ...], minutes: float | None) -> list[str]:
    """Every mutant of the module (within ``globs``): mutmut generates them and collects which
    tests call what (kept for the run that follows), then stops at a name that matches none."""
    code, stopped = _mutmut_run(
        work, ["--max-children", str(jobs), NO_SUCH_MUTANT], work / "list.log", minutes
    )
    log = (work / "list.log").read_text(errors="replace")
    if stopped or "nothing matches" not in log:
        raise RuntimeError(
            f"listing the mutants failed (exit {code}{', stopped' if stopped else ''}); "
            f"{work / 'list.log'}:\n{log[-3000:]}"
        )
    return sorted(statuses(work, globs))


def run_module(
    mod: Module,
    only: tuple[str, ...],
    jobs: int,
    root: Path = WORK,
    minutes: float | None = None,
    sample: int | None = None,
    seed: int = 0,
    chunk: int = 10,
) -> dict[str, object]:
    globs = only or mod.only
    work = prepare(mod, root)
    t0 = time.monotonic()
    print(f"== {mod.name}: mutating {', '.join(mod.files)} with {' '.join(mod.tests)}", flush=True)
    if sample is not None:
        try:
            every = population(work, jobs, globs, minutes)
        except RuntimeError as e:
            print(f"{mod.name}: {e}")
            return {"module": mod.name, "error": "listing"}
        drawn = draw(every, sample, seed)
        meta = {"population": len(every), "seed": seed, "drawn": drawn, "run": []}
        (work / "sample.json").write_text(json.dumps(meta, indent=1))
        print(
            f"{mod.name}: sampled {len(drawn)} of {len(every)} mutants (seed {seed}); "
            f"listing took {(time.monotonic() - t0) / 60:.1f} min",
            flush=True,
        )
        # mutmut runs the cheapest mutants of a run first, so a run stopped midway would keep a
        # cheap, not a uniform, part: the sample runs in chunks in the draw's random order, and a
        # stop keeps only the chunks run whole (a first part of a random order: uniform too)
        deadline = None if minutes is None else t0 + 60 * minutes
        stopped = False
        for i in range(0, len(drawn), chunk):
            part = drawn[i : i + chunk]
            left = None if deadline is None else (deadline - time.monotonic()) / 60
            if left is not None and left < 0.5:
                stopped = True
                break
            log = work / f"run{i // chunk}.log"
            code, stopped = _mutmut_run(work, ["--max-children", str(jobs), *part], log, left)
            if code != 0:
                tail = log.read_text(errors="replace")[-3000:]
                print(f"{mod.name}: mutmut failed (exit {code}); {log}:\n{tail}")
                return {"module": mod.name, "error": code}
            if stopped:
                break
            meta["run"] = drawn[: i + len(part)]
            (work / "sample.json").write_text(json.dumps(meta, indent=1))
        if stopped:
            print(
                f"{mod.name}: stopped after {minutes} min (--minutes); scored over the "
                f"{len(meta['run'])} mutants of the chunks run whole",
                flush=True,
            )
        return score(mod, work, tuple(meta["run"]), time.monotonic() - t0)
    code, stopped = _mutmut_run(
        work, ["--max-children", str(jobs), *globs], work / "run.log", minutes
    )
    if code != 0:
        tail = (work / "run.log").read_text(errors="replace")[-3000:]
        print(f"{mod.name}: mutmut failed (exit {code}); {work / 'run.log'}:\n{tail}")
        return {"module": mod.name, "error": code}
    if stopped:
        print(
            f"{mod.name}: stopped after {minutes} min (--minutes); the mutants not run yet "
            "are counted as not run",
            flush=True,
        )
    return score(mod, work, globs, time.monotonic() - t0)


def _last_names(work: Path, globs: tuple[str, ...]) -> tuple[str, ...]:
    """The mutants the last run in ``work`` meant: its sample's, else ``globs``."""
    meta = work / "sample.json"
    return tuple(json.loads(meta.read_text())["run"]) if meta.is_file() else globs


def score(mod: Module, work: Path, globs: tuple[str, ...], seconds: float) -> dict[str, object]:
    """Count, explain and list the survivors of the run in ``work`` (finished or stopped)."""
    st = statuses(work, globs)
    if not st:
        print(f"{mod.name}: no mutant results in {work}")
        return {"module": mod.name, "error": "no results"}
    killed = sorted(n for n, s in st.items() if s in KILLED)
    survived = sorted(n for n, s in st.items() if s in SURVIVED)
    other = sorted(n for n, s in st.items() if s not in KILLED | SURVIVED)
    timeouts = sum(1 for s in st.values() if s == "timeout")
    checked = len(killed) + len(survived)
    share = 100.0 * len(survived) / checked if checked else 0.0
    changed = diffs(work, survived)
    why, unused = explain(survived, changed, EQUIVALENT)
    unexplained = [n for n in survived if not why[n]]
    # stale: an entry for a function whose every mutant ran here, matched by no survivor: that
    # mutant is killed now, or its line changed
    done = KILLED | SURVIVED
    # a sample or --only runs a few of a function's mutants: an entry is stale only once all of
    # them ran (the others are listed "not checked"), not when the few named ones did
    every = statuses(work, ()) if globs else st
    stale = [
        e
        for e in unused
        if (mine := [x for n, x in every.items() if fnmatch.fnmatch(n, e.mutant)])
        and all(x in done for x in mine)
    ]
    lo, hi = wilson(len(survived), checked)
    interval = f"95% interval {100 * lo:.1f}-{100 * hi:.1f}%"
    sampled = ""
    if (meta := work / "sample.json").is_file():
        info = json.loads(meta.read_text())
        sampled = (
            f"sampled {len(info['drawn'])} of {info['population']} (seed {info['seed']}), "
            f"{checked} run"
            + ("" if checked == len(info["drawn"]) else " (the first chunks of a random order)")
            + "; "
        )
    lines = [
        f"# {mod.name}: {sampled}{len(survived)} of {checked} mutants survived ({share:.1f}%, "
        f"{interval}), {len(unexplained)} unexplained",
        "",
    ]
    for name in unexplained + [n for n in survived if why[n]]:
        reason = (
            why[name] or "UNEXPLAINED: a test of the property it breaks, or an EQUIVALENT entry"
        )
        lines += [f"## {name} ({st[name]})", "", reason, "", "```diff", changed[name], "```", ""]
    for e in stale:
        lines += [f"## stale entry: {e.mutant} ({e.removed!r} -> {e.added!r})", "", e.why, ""]
    (work / "survivors.md").write_text("\n".join(lines))
    row = {
        "module": mod.name,
        "mutants": len(st),
        "killed": len(killed),
        "timeouts": timeouts,
        "survived": len(survived),
        "unexplained": len(unexplained),
        "stale": len(stale),
        "not run": len(other),
        "survived_pct": share,
        "interval": (100 * lo, 100 * hi),
        "sampled": sampled,
        "minutes": seconds / 60,
    }
    print(
        f"{mod.name}: {sampled}{len(st)} mutants, {len(killed)} killed ({timeouts} by timeout), "
        f"{len(survived)} survived = {share:.1f}% ({interval}; {len(unexplained)} unexplained, "
        f"{len(stale)} stale entries), {len(other)} not run, {seconds / 60:.1f} min; "
        f"survivors: {work / 'survivors.md'}",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("modules", nargs="*", help=f"modules to mutate: {', '.join(BY_NAME)}")
    p.add_argument("--all", action="store_true", help="every module, in the order listed")
    p.add_argument("--list", action="store_true", help="print the modules and exit")
    p.add_argument("--only", action="append", default=[], help="mutant-name glob (repeatable)")
    p.add_argument("-j", "--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    p.add_argument("--work", type=Path, default=WORK, help=f"work folders (default {WORK})")
    p.add_argument(
        "--rescore",
        action="store_true",
        help="score the modules' last runs again without running (a run stopped by hand, or "
        "after editing EQUIVALENT)",
    )
    p.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="stop each module's run after this long and score the mutants run so far",
    )
    p.add_argument(
        "--sample",
        type=int,
        default=None,
        metavar="K",
        help="run K of the module's mutants drawn uniformly at random and give the survived "
        "share with its 95%% interval over the whole module",
    )
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    p.add_argument(
        "--chunk",
        type=int,
        default=10,
        help="a sample runs this many mutants per mutmut run (default 10); --minutes keeps "
        "the chunks run whole",
    )
    args = p.parse_args(argv)
    # a SIGTERM to this script stops mutmut and its workers too (_mutmut_run's cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.list:
        for m in MODULES:
            part = f" (only {', '.join(m.only)})" if m.only else ""
            print(f"{m.name}: {', '.join(m.files)}{part}\n    tests: {' '.join(m.tests)}")
            print(f"    claim: {m.claim}")
        return 0
    unknown = [n for n in args.modules if n not in BY_NAME]
    if unknown:
        p.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    chosen = MODULES if args.all else [BY_NAME[n] for n in args.modules]
    if not chosen:
        p.error("name the modules to mutate (or --all, or --list to see them)")
    if args.only and len(chosen) != 1:
        p.error("--only applies to one module at a time")
    if args.sample is not None and args.sample < 1:
        p.error("--sample takes a positive number of mutants")
    if args.sample is not None and args.rescore:
        p.error("--rescore reads the last run's sample.json; leave --sample out")
    if shutil.which("mutmut") is None and not Path(sys.executable).with_name("mutmut").exists():
        p.error("mutmut is not installed: pip install -e '.[dev]'")
    if args.rescore:
        rows = [
            score(
                m,
                args.work.resolve() / m.name,
                _last_names(args.work.resolve() / m.name, tuple(args.only) or m.only),
                math.nan,
            )
            for m in chosen
        ]
    else:
        rows = [
            run_module(
                m,
                tuple(args.only),
                args.jobs,
                args.work.resolve(),
                args.minutes,
                args.sample,
                args.seed,
                args.chunk,
            )
            for m in chosen
        ]
    print(
        "\n| Module | Mutants | Killed (timeouts) | Survived (unexplained) | Survived % "
        "| 95% interval | Minutes | Not run | Sample |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        if "error" in r:
            print(f"| {r['module']} | mutmut failed (exit {r['error']}) | | | | | | | |")
            continue
        lo, hi = r["interval"]  # type: ignore[misc]
        print(
            f"| {r['module']} | {r['mutants']} | {r['killed']} ({r['timeouts']}) | {r['survived']} "
            f"({r['unexplained']}) | {r['survived_pct']:.1f}% | {lo:.1f}-{hi:.1f}% "
            f"| {r['minutes']:.0f} | {r['not run']} | {str(r['sampled']).rstrip('; ')} |"
        )
    if any("error" in r for r in rows):
        return 1
    return 3 if any(r["unexplained"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
