"""``python -m ablate.matrix [overrides] [--multirun] [--plan] [--cfg job]``

Examples::

    python -m ablate.matrix experiment=smoke step=V0,V16,V17,V18 --multirun
    python -m ablate.matrix matrix=ra-ablation              # a named matrix from matrix/
    python -m ablate.matrix matrix=ra-ablation --plan       # what would run, and its cost
    python -m ablate.matrix experiment=smoke step=V16 --cfg job
    python -m ablate.matrix resume=results/test_matrix_results_20251111_170325
    python -m ablate.matrix status=results/test_matrix_results_20251111_170325   # progress, from the files

Your own steps and code, outside this repository::

    python -m ablate.matrix --config-dir ~/myidea/conf plugins=[my_attention] plugin_path=[~/myidea] \
        experiment=smoke step=V0,V19 --multirun

``--config-dir DIR`` adds DIR to Hydra's search path (same as ``hydra.searchpath=[file://DIR]``):
its ``step/V19.yaml`` etc. are found next to ours. ``plugins`` are imported in this process, the
preflight and every job.
"""

from __future__ import annotations

import sys

from ablate.errors import AblateError, die

USAGE = __doc__


def parse_argv(argv: list[str]) -> tuple[list[str], bool, bool]:
    """Split our flags from Hydra overrides. Returns (overrides, multirun, show_cfg)."""
    from ablate.matrix.compose import expand_matrix_file

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
                raise AblateError("--config-dir needs a folder (one holding step/, model/, ... YAML groups)")
            config_dirs.append(value)
        elif arg == "--plan":
            overrides.append("plan=true")
        elif arg in ("--cfg", "-c"):
            what = next(it, "job")
            if what != "job":
                raise AblateError(f"--cfg {what}: only '--cfg job' is supported (prints each job's config)")
            show_cfg = True
        elif arg.startswith("matrix="):
            overrides += expand_matrix_file(arg.split("=", 1)[1])
            multirun = True
        elif arg.startswith("-"):
            raise AblateError(f"unknown option {arg}; see python -m ablate.matrix --help")
        else:
            overrides.append(arg)
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
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        from ablate.plugins import check_models_package

        check_models_package()  # before `import models`: a user's own package of that name must not load
        import models
        from ablate.matrix import runner
        from ablate.matrix.compose import build_jobs, config_yaml

        overrides, multirun, show_cfg = parse_argv(argv)
        resume = [o for o in overrides if o.startswith("resume=")]
        if resume:
            others = [o for o in overrides if not o.startswith("resume=")]
            if others:
                raise AblateError(
                    f"resume= runs a matrix as it was configured; drop the other overrides ({' '.join(others)})"
                )
            return runner.run_resume(resume[0].split("=", 1)[1])
        status = [o for o in overrides if o.startswith("status=")]
        if status:
            if len(overrides) > 1:
                raise AblateError("status=DIR prints a matrix's progress; it takes no other overrides")
            from ablate.matrix.progress import status as print_status

            return print_status(status[0].split("=", 1)[1])
        jobs = build_jobs(overrides, multirun)
        if show_cfg:
            for job in jobs:
                print(f"# job {job.name}: {' '.join(job.overrides)}")
                print(config_yaml(job.cfg))
            return 0
        return runner.run_new(jobs, argv)
    except AblateError as e:
        die(str(e))
    except models.ModelConfigError as e:
        die(str(e))


if __name__ == "__main__":
    sys.exit(main())
