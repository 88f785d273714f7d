"""``python -m ablate.matrix [KEY=VALUE ...] [--multirun] [--plan] [--cfg job]``; ``--help`` for more."""

from __future__ import annotations

import importlib
import sys
from typing import Any

from ablate.errors import AblateError, die, exit_quietly_on_closed_pipe
from ablate.plugins import check_models_package

# Keys the README, scripts and users rely on; they keep their names across versions.
STABLE_KEYS = [
    ("experiment", "preset of groups and values (an experiment option, e.g. smoke)"),
    ("step", "architecture step (a step option, e.g. V0,V16,V17,V18 with --multirun)"),
    ("seed", "random seed of init, dropout and data order (e.g. seed=1,2,3 with --multirun)"),
    ("budget.box_seconds", "time box in seconds of training iterations"),
    ("budget.max_iters", "iteration budget (with box_seconds: whichever ends first)"),
    ("results_root", "where new matrix directories are created (default: results)"),
    ("hardware.nproc_per_node", "processes (GPUs) per job"),
]

EXAMPLES = [
    (
        "python -m ablate.matrix experiment=smoke step=V0,V16,V17,V18 --multirun",
        "the four-step CPU smoke matrix",
    ),
    ("python -m ablate.matrix matrix=ra-ablation", "a named matrix from matrix/"),
    (
        "python -m ablate.matrix matrix=ra-ablation --plan",
        "what would run, its cost, what would fail",
    ),
    (
        "python -m ablate.matrix experiment=smoke step=V16 --cfg job",
        "the resolved config of one job",
    ),
    (
        "python -m ablate.matrix resume=results/test_matrix_results_20251111_170325",
        "run the unfinished jobs of a matrix",
    ),
    (
        "python -m ablate.matrix status=results/test_matrix_results_20251111_170325",
        "progress of a matrix, read from its files (and from Slurm for a Slurm matrix)",
    ),
    (
        "python -m ablate.matrix wait=results/test_matrix_results_20251111_170325",
        "wait for a queued Slurm matrix's jobs, then write its report",
    ),
    (
        "python -m ablate.matrix --config-dir ~/myidea/conf plugins=[my_attention] plugin_path=[~/myidea] "
        "experiment=smoke step=V0,V30 --multirun",
        "your own step and model code, outside this repository",
    ),
]


def help_text(argv: list[str] | None = None) -> str:
    """Plain text, in the spirit of Hydra's --help: groups and their options, keys, examples.

    With ``--config-dir DIR`` (or ``hydra.searchpath=``) on the command line, the groups listed
    include that folder's options."""
    out = [
        "usage: python -m ablate.matrix [KEY=VALUE ...] [--multirun] [--plan] [--yes] [--cfg job] [--config-dir DIR]",
        "       python -m ablate.matrix matrix=NAME [--plan]",
        "       python -m ablate.matrix resume=MATRIX_DIR",
        "       python -m ablate.matrix status=MATRIX_DIR",
        "       python -m ablate.matrix wait=MATRIX_DIR      (a Slurm matrix queued with launcher.slurm.wait=false)",
        "",
        "Run an architecture-ablation matrix: one time-boxed training job per step x seed (x any other",
        "swept value). Every job is checked before any trains (config, causality, data, devices, batch);",
        "results go to <results_root>/test_matrix_results_<timestamp>/, the report to REPORT.md there.",
        "Overrides use Hydra's grammar: GROUP=OPTION chooses a config file, KEY=VALUE sets a value,",
        "a comma-separated list (step=V0,V16) sweeps it with --multirun.",
        "",
    ]
    try:
        # deferred: compose imports `models` (via ablate.config), which must come after check_models_package()
        from ablate.compose import group_choices, matrix_names

        searchpath = []
        try:
            overrides, _, _ = parse_argv(list(argv or []))
            searchpath = [o for o in overrides if o.startswith("hydra.searchpath=")]
        except AblateError:
            pass
        groups, defaults = group_choices(searchpath)
        width = max(len(g) for g in groups) if groups else 0
        out.append("Config groups (GROUP=OPTION; one YAML file per option in conf/GROUP/):")
        for group, options in groups.items():
            default = defaults.get(group)
            out.append(f"  {group:<{width}}  {', '.join(options)}  (default: {default or 'none'})")
        out.append("")
        names = matrix_names()
        if names:
            out += ["Named matrices (matrix=NAME; files in matrix/):", "  " + ", ".join(names), ""]
    except AblateError as e:  # help must still print without a config root
        out += [f"Config groups: not available ({e})", ""]
    width = max(len(k) for k, _ in STABLE_KEYS)
    out.append("Stable keys (their names do not change between versions):")
    out += [f"  {k:<{width}}  {what}" for k, what in STABLE_KEYS]
    out += [
        "Every other key, with its value for one job: python -m ablate.matrix experiment=smoke --cfg job",
        "(every key, its type, default and meaning: docs/config-keys.md). A misspelled key or option is an error that",
        "names the nearest one.",
        "",
        "Options:",
        "  --multirun, -m    one job per combination of the comma-separated values",
        "  --plan            list the jobs, axes and cost and run the preflight; train nothing",
        "  --yes             start a matrix of more than confirm_jobs jobs (64 by default)",
        "  --cfg job         print the resolved config of every job, then the matrix settings once; train nothing",
        "  --config-dir DIR  also look for config groups in DIR (your own step/V30.yaml, ...);",
        "                    with plugins=[module] plugin_path=[folder] your own model code is imported",
        "  -h, --help        this text (add --config-dir DIR to list that folder's options too)",
        "",
        "Exit codes: 0 every job completed (or --plan / --cfg job printed what would run); 1 a job failed or",
        "leaked; 2 refused before anything ran (the error line says why); 3 not finished, nothing wrong: the",
        "jobs left were stopped after checkpointing (resume= continues them) or are still queued or running.",
        "",
        "Examples:",
    ]
    for cmd, what in EXAMPLES:
        out += [f"  {cmd}", f"      {what}"]
    return "\n".join(out)


def parse_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """Split our flags from Hydra overrides. Returns (overrides, multirun, show_cfg)."""
    from ablate.compose import expand_matrix_file  # deferred: as in help_text

    overrides: list[str] = []
    config_dirs: list[str] = []
    multirun = False
    show_cfg = False
    it = iter(argv)
    for arg in it:
        if arg in ("--multirun", "-m"):
            multirun = True
        elif arg in ("--config-dir", "-cd") or arg.startswith("--config-dir="):
            value = arg.split("=", 1)[1] if "=" in arg else next(it, None)
            if not value:
                raise AblateError(
                    "--config-dir needs a folder (one holding step/, model/, ... YAML groups)"
                )
            config_dirs.append(value)
        elif arg == "--plan":
            pass  # flags of the command (_main reads them), not settings of the matrix
        elif arg == "--yes":
            pass
        elif arg in ("--cfg", "-c"):
            what = next(it, "job")
            if what != "job":
                raise AblateError(
                    f"--cfg {what}: only '--cfg job' is supported (prints each job's config)"
                )
            show_cfg = True
        elif arg.startswith("matrix="):
            overrides += expand_matrix_file(arg.split("=", 1)[1])
            multirun = True
        elif arg.startswith("-"):
            raise AblateError(f"unknown option {arg}; see python -m ablate.matrix --help")
        else:
            overrides.append(arg)
    for o in overrides:  # a setting before it became the --plan flag
        if o.split("=", 1)[0].lstrip("+~") == "plan":
            raise AblateError(
                f"{o}: the plan is a flag of the command, not a setting; write --plan"
            )
    if config_dirs:
        if any(o.startswith("hydra.searchpath=") for o in overrides):
            raise AblateError("use either --config-dir or hydra.searchpath=, not both")
        overrides.append(searchpath_override(config_dirs))
    return overrides, multirun, show_cfg


def searchpath_override(folders: list[str]) -> str:
    """``hydra.searchpath=['file:///abs/conf', ...]`` for --config-dir folders (quoted: any path)."""
    from pathlib import Path

    entries = []
    for folder in folders:
        path = Path(folder).expanduser().resolve()
        if not path.is_dir():
            raise AblateError(f"--config-dir {folder}: no such folder")
        quoted = str(path).replace("\\", "\\\\").replace("'", "\\'")
        entries.append(f"'file://{quoted}'")
    return "hydra.searchpath=[" + ",".join(entries) + "]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except BrokenPipeError:  # `... --cfg job | head`: the reader has what it wanted
        exit_quietly_on_closed_pipe()
        return 0


def _install_problem(e: ImportError) -> AblateError:
    return AblateError(
        f"cannot import what ablate needs ({e}); install it with its dependencies "
        "as README.md says (pip install torch==... && pip install -e .)"
    )


def _torch_part(name: str) -> Any:
    """``ablate.matrix.<name>``, imported only when a command needs it: these import torch
    (seconds), which composing a config, --help and a typo never wait for."""
    try:
        return importlib.import_module(f"ablate.matrix.{name}")
    except ImportError as e:  # torch missing: an installation problem, not a bug
        raise _install_problem(e) from None


def _main(argv: list[str]) -> int:
    if any(a in ("-h", "--help") for a in argv):
        print(help_text([a for a in argv if a not in ("-h", "--help")]), flush=True)
        return 0
    try:
        check_models_package()  # before `import models`: a user's own package of that name must not load
        try:
            # deferred: everything below imports `models`, which must come after check_models_package()
            import models  # importing it is the check (it does not import torch)
            from ablate.compose import build_jobs, config_yaml  # deferred: see above
            from ablate.config import check_environment  # deferred: see above
        except ImportError as e:  # hydra, ... missing: an installation problem, not a bug
            raise _install_problem(e) from None

        check_environment()  # resume= composes nothing, so check here too
        overrides, multirun, show_cfg = parse_argv(argv)
        plan = "--plan" in argv
        commands = [o for o in overrides if o.startswith(("resume=", "status=", "wait="))]
        if plan and commands:
            raise AblateError(
                f"--plan shows what a new matrix would run; it does not combine with {commands[0]}"
            )
        resume = [o for o in overrides if o.startswith("resume=")]
        if resume:
            others = [o for o in overrides if not o.startswith("resume=")]
            if others:
                raise AblateError(
                    f"resume= runs a matrix as it was configured; drop the other overrides ({' '.join(others)})"
                )
            return _torch_part("resume").run_resume(resume[0].split("=", 1)[1])
        for command in ("status", "wait"):
            given = [o for o in overrides if o.startswith(f"{command}=")]
            if not given:
                continue
            if len(overrides) > 1:
                raise AblateError(
                    f"{command}=DIR reads a matrix directory; it takes no other overrides"
                )
            path = given[0].split("=", 1)[1]
            if command == "status":
                return _torch_part("status").status(path)
            return _torch_part("runner").run_wait(path)
        # Composing needs no torch: a typo or a bad value is answered before torch's import.
        jobs = build_jobs(overrides, multirun)
        if show_cfg:
            from ablate.matrix.reuse import (  # deferred: see above
                describe_identity,
                expected_identities,
            )

            for job in jobs:  # what --plan would refuse (an unknown attention, ...) is refused here
                models.check_config(job.cfg.model)
            identities = expected_identities(jobs, jobs.settings)
            for job in jobs:
                print(f"# job {job.name}: {' '.join(job.overrides)}  (its config.yaml)")
                print(config_yaml(job.cfg), flush=True)
                print("\n".join(describe_identity(identities[job.name])) + "\n", flush=True)
            # One block, not one per job: launcher, results_root, ... are the matrix's (matrix.json).
            print(
                '# matrix settings, one set for the whole matrix (matrix.json "settings", not in a job\'s config.yaml)'
            )
            print(config_yaml(jobs.settings), flush=True)
            return 0
        return _torch_part("runner").run_new(
            jobs, jobs.settings, argv, plan=plan, yes="--yes" in argv
        )
    except AblateError as e:
        die(str(e))
    except ImportError as e:  # torch (imported on first use) or another dependency missing
        die(str(_install_problem(e)))
    except KeyboardInterrupt:
        if any(a.startswith(("wait=", "status=")) for a in argv):
            die(
                "interrupted; the Slurm jobs are not affected (status=/wait= again later)", code=130
            )
        die(
            "interrupted; no job was left half-written (a matrix directory, if one was created, "
            "continues with resume=<matrix dir>)",
            code=130,
        )
    except Exception as e:
        # `models` may not have been imported at all (the import above failed): look it up, never by name.
        loaded = sys.modules.get("models")
        if loaded is not None and isinstance(e, loaded.ModelConfigError):
            die(str(e))
        raise


if __name__ == "__main__":
    sys.exit(main())
