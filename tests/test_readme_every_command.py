"""Every command README.md shows is exercised: run here, or named to the test that runs it.

A command added to the README that no rule below covers fails this test, so the README cannot
drift into advice nobody has tried.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from readme_commands import REPO, readme_commands

TESTS = REPO / "tests"


def _readme_blocks() -> list[tuple[str, str, str]]:
    """The code blocks a user would paste, in README order: ("yaml", path, body) for a config file
    (its path is the last `conf/...yaml` named in the text before it) and ("bash", command, "")
    for each command line."""
    text = (REPO / "README.md").read_text()
    out: list[tuple[str, str, str]] = []
    previous_end = 0
    for m in re.finditer(r"```(\w*)\n(.*?)\n```", text, flags=re.S):
        lang, body = m.group(1), m.group(2)
        before = text[previous_end : m.start()]
        previous_end = m.end()
        if lang == "yaml":
            paths = re.findall(r"`(conf/[\w/.-]+\.yaml)`", before)
            assert paths, (
                f"README.md: say where this YAML goes (`conf/.../NAME.yaml`) before it:\n{body}"
            )
            out.append(("yaml", paths[-1], body + "\n"))
        elif lang == "bash":
            for line in body.splitlines():
                line = line.split("  #", 1)[0].strip()  # trailing "# comment"
                if line and not line.startswith("#"):
                    out.append(("bash", line, ""))
    return out


def _readme_commands() -> list[str]:
    return [what for kind, what, _ in _readme_blocks() if kind == "bash"]


def _test_exists(nodeid: str) -> bool:
    path, name = nodeid.split("::")
    return f"def {name}(" in (REPO / path).read_text()


# Commands a test elsewhere runs for real (training jobs, a fresh venv, a Slurm cluster).
COVERED_ELSEWHERE = {
    "resume=": "tests/matrix/test_matrix_e2e.py::test_resume_after_killing_the_runner_reruns_only_unfinished_jobs",
    "status=": "tests/matrix/test_progress.py::test_status_command_prints_every_job_and_says_it_is_still_running",
    "plugins=[my_attention]": "tests/matrix/test_plugins.py::"
    "test_user_folder_outside_the_repo_runs_a_matrix_and_gets_a_report",
    "benchmarks/gpu_checks.py": "tests/test_gpu_checks.py::test_gpu_checks_dry_run_runs_every_part_and_writes_the_files",
    "benchmarks/mutation.py": "tests/test_mutation_script.py::test_a_real_run_over_one_function",
    "python -m ablate.matrix wait=": "tests/slurm/test_matrix_slurm.py::"
    "test_queued_mode_returns_at_once_then_status_and_report_come_from_the_files",
}


def _run(
    args: list[str], cwd: Path, timeout: int = 300, conf: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    if conf is not None:
        env["ABLATE_CONF_DIR"] = str(conf)
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def _matrix_in_process(
    args: list[str], conf: Path, capsys, monkeypatch
) -> subprocess.CompletedProcess:
    """``python -m ablate.matrix ARGS`` run in this process (the same ``main`` the module runs):
    a subprocess per command paid torch's import and the plan's real step timing each time, about
    half of this test's minutes; the timing here is the suite's fixed one (conftest)."""
    from ablate.matrix.__main__ import main

    capsys.readouterr()
    with monkeypatch.context() as m:
        m.setenv("ABLATE_CONF_DIR", str(conf))
        m.setenv("HF_HUB_OFFLINE", "1")
        m.setenv("HF_DATASETS_OFFLINE", "1")
        m.chdir(REPO)
        try:
            rc = main(args)
        except SystemExit as e:  # argparse-style exits of a CLI
            rc = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["ablate.matrix", *args], rc, out, err)


def _environment_problem(line: str) -> bool:
    return "no CUDA GPU is visible" in line or "prepare them with: python -m ablate.data" in line


def _python_module_args(command: str) -> list[str]:
    argv = shlex.split(command)
    assert argv[:2] == ["python", "-m"], f"README command {command!r}: expected 'python -m ...'"
    return argv[1:]


@pytest.fixture(scope="module")
def seed_matrix(tmp_path_factory):
    """A results/ folder holding one matrix in the documented format, named as the README names it."""
    from helpers.report_factory import make_matrix, seed_jobs

    cwd = tmp_path_factory.mktemp("readme")
    make_matrix(cwd / "results", seed_jobs(), name="test_matrix_results_20251111_170325")
    return cwd


@pytest.fixture(scope="module")
def sweep_matrix(tmp_path_factory):
    """A results/ folder holding one learning-rate sweep (an axis) with per-window losses, named
    as the README's tuning example names it."""
    import numpy as np
    from helpers.report_factory import Job, make_matrix

    rng = np.random.default_rng(0)
    jobs = [
        Job(
            step,
            arch,
            None,
            seed=seed,
            axes={"optim.lr": lr},
            window_losses=list(3.5 - gain + 0.01 * rng.standard_normal(64)),
        )
        for lr in ("3e-4", "6e-4", "1.2e-3")
        for step, arch, gain in (("V0", "Baseline", 0.0), ("V18", "RA + R-MLP", 0.03))
        for seed in (1, 2, 3)
    ]
    cwd = tmp_path_factory.mktemp("readme_sweep")
    make_matrix(cwd / "results", jobs, name="test_matrix_results_20251112_090000")
    return cwd


# Slow: every --plan here times a few training steps of each model (ablate.matrix.timing);
# tests/test_readme.py keeps the README's commands and names true in the fast tier.
@pytest.mark.slow
# Every README command in one sequence, about twenty of them --plan runs with their preflight and
# timed steps: past the suite's 600 s per test on a loaded 2-core machine (601 s measured at load
# 2-4 on 2026-12-03, with the cpu1h and gpu1h plans added).
@pytest.mark.timeout(1800)
def test_every_readme_block_runs_in_order(seed_matrix, sweep_matrix, tmp_path, capsys, monkeypatch):
    """YAML blocks are written where the README says (into a copy of conf/), then every command
    after them runs against that copy, as a user pasting the README top to bottom would."""
    import shutil

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    run_cmd, test_cmd = readme_commands()
    unexplained = []
    for kind, command, body in _readme_blocks():
        if kind == "yaml":
            target = conf / Path(command).relative_to("conf")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(body)
            continue
        if command in (run_cmd, test_cmd):
            continue  # CI runs the test command; tests/test_newcomer.py runs the run command
        covered = [t for key, t in COVERED_ELSEWHERE.items() if key in command]
        if covered:
            assert _test_exists(covered[0]), covered[0]
            continue
        if command.startswith("python -m ablate.matrix"):
            args = _python_module_args(command)
            if "--plan" not in args and "--cfg" not in args:
                # Compose and show every job the command would run; train nothing. The preflight
                # (a causality check per step) runs for --plan as written and for smoke commands.
                args += ["--plan"] + ([] if "experiment=smoke" in command else ["preflight=false"])
            proc = _matrix_in_process(args[2:], conf, capsys, monkeypatch)
            assert "Nothing was trained (--plan)." in proc.stdout or "# job " in proc.stdout, (
                f"{command}\n{proc.stderr[-2000:]}"
            )
            if proc.returncode != 0:
                # The plan runs the preflight: on this machine the real setup has no FineWebEdu shards
                # and no GPU. Those, and only those, may stop it.
                assert proc.returncode == 2, f"{command}\n{proc.stderr[-2000:]}"
                problems = [
                    ln for ln in proc.stderr.splitlines() if ln.startswith(("error:", "preflight"))
                ]
                assert problems and all(_environment_problem(p) for p in problems), proc.stderr[
                    -3000:
                ]
        elif command.startswith("python -m ablate.report"):
            tuned = "--tune" in command  # tuning needs a swept key: the sweep matrix
            proc = _run(_python_module_args(command), cwd=sweep_matrix if tuned else seed_matrix)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            assert "V18" in proc.stdout, command
            if tuned:
                report = (
                    sweep_matrix / "results" / "test_matrix_results_20251112_090000"
                ).joinpath("REPORT.md")
                assert "## Tuned comparison" in report.read_text(), command
        elif command.startswith("python -m ablate.runs"):
            # The runs index over the README's results folder (the seeded matrix).
            first = _run(["-m", "ablate.runs", "roots", "--root", "results"], cwd=seed_matrix)
            assert first.returncode == 0, first.stderr[-2000:]
            proc = _run(_python_module_args(command), cwd=seed_matrix)
            assert proc.returncode == 0, f"{command}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
        elif command.startswith("python -m ablate.data"):
            # The hub is unreachable here: the command must get as far as asking for the data and
            # stop with one clear line (tests/data run the same code path on local files).
            proc = _run(_python_module_args(command), cwd=seed_matrix, timeout=120)
            err = proc.stderr.strip().splitlines()
            assert proc.returncode != 0 and err and err[-1].startswith("error:"), (
                f"{command}\n{proc.stderr[-2000:]}"
            )
            assert "Traceback" not in proc.stderr and "usage:" not in proc.stderr, proc.stderr[
                -2000:
            ]
        else:
            unexplained.append(command)
    assert not unexplained, f"README commands no test exercises: {unexplained}"


def test_the_readme_step_example_is_refused_when_its_header_is_moved(tmp_path):
    """The fix the README gives for the package header is the one the tool enforces."""
    import shutil

    ((kind, path, body),) = [b for b in _readme_blocks() if b[0] == "yaml" and "conf/step/" in b[1]]
    assert body.startswith("# @package _global_\n")
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    target = conf / Path(path).relative_to("conf")
    lines = body.splitlines(keepends=True)
    target.write_text(
        lines[1] + lines[0] + "".join(lines[2:])
    )  # the comment first, as the old README had it
    proc = _run(
        [
            "-m",
            "ablate.matrix",
            "experiment=smoke",
            f"step=V0,{target.stem}",
            "--multirun",
            "--plan",
        ],
        cwd=REPO,
        conf=conf,
    )
    assert proc.returncode == 2 and "move it to the first line" in proc.stderr, proc.stderr[-2000:]
