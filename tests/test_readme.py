"""README.md's commands are the ones CI runs, and every config name it mentions exists."""

from __future__ import annotations

import os
import re

import pytest
from readme_commands import REPO, readme_commands


def test_ci_runs_exactly_the_readme_test_command():
    _, test_cmd = readme_commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_cmd in ci, ".ci/run must run README.md's test command verbatim"


def test_run_command_is_the_four_step_smoke_matrix():
    run_cmd, _ = readme_commands()
    assert (
        "experiment=smoke" in run_cmd
        and "step=V0,V16,V17,V18" in run_cmd
        and "--multirun" in run_cmd
    )


def test_every_step_the_readme_names_has_a_config_file():
    text = (REPO / "README.md").read_text()
    examples = set(
        re.findall(r"conf/step/(V\d+)\.yaml", text)
    )  # written by test_readme_every_command, or in the user's own folder
    for step in set(re.findall(r"step=((?:V\d+,?)+)", text)):
        for name in set(step.strip(",").split(",")) - examples:
            assert (REPO / "conf" / "step" / f"{name}.yaml").is_file(), name


def test_the_readme_example_step_is_one_yaml_file_that_composes(tmp_path, monkeypatch):
    import shutil

    from ablate.compose import build_jobs

    text = (REPO / "README.md").read_text()
    block = re.search(r"`conf/step/(V\d+)\.yaml`.*?```yaml\n(.*?)```", text, flags=re.S)
    assert block, "README.md should show how to add a step"
    name, body = block.group(1), block.group(2)
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "step" / f"{name}.yaml").write_text(body)
    monkeypatch.setenv("ABLATE_CONF_DIR", str(conf))
    jobs = build_jobs(["experiment=smoke", f"step=V0,{name}"], multirun=True)
    assert [j.name for j in jobs] == ["V0", name]
    assert jobs[1].cfg.model.attention == "ra" and jobs[1].cfg.model.ra_rank == 8


def test_the_job_directory_names_the_readme_states_are_the_names_jobs_get():
    from ablate.compose import build_jobs

    text = (REPO / "README.md").read_text()
    stated = "(`V16` alone; `V16_seed1`, `V16_seed2` with `seed=1,2`)"
    assert stated in " ".join(text.split())
    one = build_jobs(["experiment=smoke", "step=V16"], multirun=True)
    two = build_jobs(["experiment=smoke", "step=V16", "seed=1,2"], multirun=True)
    assert [j.name for j in one] == ["V16"]
    assert [j.name for j in two] == ["V16_seed1", "V16_seed2"]


def _ci_checks() -> list[str]:
    """.ci/run's lint, format and type lines: after the dev install, before the test command."""
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("pip install -q -e")) + 1
    _, test_cmd = readme_commands()
    end = lines.index(test_cmd)
    return [ln for ln in lines[start:end] if ln.strip() and not ln.lstrip().startswith("#")]


@pytest.mark.parametrize("failing", ["check", "format", "mypy"])
def test_ci_stops_at_a_lint_format_or_type_finding(tmp_path, failing):
    """Each check in .ci/run ends the run when it finds something, before the suite starts (under
    `set -e` a failure on the left of an `&&` list would not)."""
    import subprocess

    checks = _ci_checks()
    assert {"ruff check .", "ruff format --check .", "mypy"} <= set(checks), checks
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "calls"
    for tool in ("ruff", "mypy"):
        (fake / tool).write_text(
            f'#!/bin/sh\necho "{tool} $*" >> {log}\n'
            f'case "{tool} $1" in *"{failing}"*) echo "1 finding"; exit 1;; esac\n'
        )
        (fake / tool).chmod(0o755)
    script = "set -euo pipefail\n" + "\n".join(checks) + "\necho SUITE_WOULD_RUN\n"
    proc = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "PATH": f"{fake}{os.pathsep}{os.environ['PATH']}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0 and "SUITE_WOULD_RUN" not in proc.stdout, proc.stdout
    assert log.read_text().splitlines()[-1].startswith("mypy" if failing == "mypy" else "ruff")
