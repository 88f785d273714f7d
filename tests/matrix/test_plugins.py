"""A researcher's own folder outside the repository: their step YAML and their attention module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line
from helpers.plugins import USER_ATTENTION
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.matrix.__main__ import main

REPO = Path(__file__).resolve().parents[2]
TINY = [
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",  # a small validation split: the final eval reads all of it
    "budget.eval_interval=3",
    "budget.log_interval=3",
]

ATTENTION = USER_ATTENTION


def make_user_folder(root: Path, step: str, causal: bool = True) -> tuple[Path, str, str]:
    """<root>/conf/step/<step>.yaml and <root>/<module>.py; returns (folder, module, attention name)."""
    tag = uuid.uuid4().hex[:8]  # fresh names: modules and registry entries live on in this process
    module, attn = f"my_attention_{tag}", f"my_ra_{tag}"
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(ATTENTION.format(name=attn, causal=causal))
    (root / "conf" / "step").mkdir(parents=True)
    (root / "conf" / "step" / f"{step}.yaml").write_text(
        textwrap.dedent(f"""\
        # @package _global_
        step:
          name: {step}
          architecture: My RA ({attn})
        model:
          attention: {attn}
        """)
    )
    assert REPO not in root.resolve().parents
    return root, module, attn


@pytest.fixture
def clean_imports(monkeypatch):
    from models import registry

    monkeypatch.setattr(sys, "path", list(sys.path))  # the user's folders go in the copy
    mods = set(sys.modules)
    tables = [(t, dict(t)) for t in (registry.REGISTRY, registry.ATTENTION, registry.MLPS)]
    yield
    for table, before in tables:  # the user's registrations must not leak into later tests
        table.clear()
        table.update(before)
    for name in set(sys.modules) - mods:
        if name.startswith("my_attention_"):
            del sys.modules[name]


@pytest.mark.slow
def test_user_folder_outside_the_repo_runs_a_matrix_and_gets_a_report(tmp_path):
    user, module, attn = make_user_folder(tmp_path / "myidea", "V19")
    elsewhere = tmp_path / "elsewhere"  # not the user folder: jobs must find it through the config
    elsewhere.mkdir()
    out = tmp_path / "results"
    proc = _run_cli(
        [
            "--config-dir",
            str(user / "conf"),
            f"plugins=[{module}]",
            f"plugin_path=[{user}]",
            "experiment=smoke",
            "step=V0,V19",
            "--multirun",
            "budget.max_iters=6",
            "budget.box_seconds=30",
            f"results_root={out}",
            *TINY,
        ],
        cwd=elsewhere,
    )
    text = proc.stdout
    assert proc.returncode == 0, text[-3000:] + proc.stderr[-2000:]
    # Piped output (this run's stdout is a pipe): plain lines, no live progress view.
    assert "[matrix]" not in text and "\x1b[" not in text and "[V19] " in text
    mdir = next(out.glob("test_matrix_results_*"))
    assert all(j["status"] == "completed" for j in results.Manifest.load(mdir).jobs)
    # The job process imported the user's module (recorded with its hash) and trained with it.
    env = results.read_json(mdir / "V19" / "env.json")
    assert env["plugins"][module]["file"] == str(user / f"{module}.py")
    assert len(env["plugins"][module]["sha256"]) == 64
    cfg = (mdir / "V19" / "config.yaml").read_text()
    assert f"attention: {attn}" in cfg and str(user) in cfg
    report = (mdir / results.REPORT).read_text()
    assert "| V19" in report and f"My RA ({attn})" in report


@pytest.mark.parametrize("plan", [[], ["--plan"]], ids=["run", "plan"])
def test_a_leaking_user_module_is_refused_by_the_preflight(
    tmp_path, monkeypatch, clean_imports, capsys, plan
):
    user, module, _ = make_user_folder(tmp_path / "myidea", "VLEAK", causal=False)
    monkeypatch.chdir(user)  # plugin_path defaults to the working directory
    out = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "--config-dir",
                str(user / "conf"),
                f"plugins=[{module}]",
                "experiment=smoke",
                "step=V0,VLEAK",
                "--multirun",
                f"results_root={out}",
                *TINY,
                *plan,
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert "preflight failed for VLEAK: model is not causal" in err
    assert "preflight failed for V0" not in err
    assert not list(out.glob("test_matrix_results_*")), "nothing may run when preflight fails"


def test_hydra_searchpath_override_finds_the_user_steps(tmp_path, clean_imports):
    from ablate.compose import build_jobs

    user, module, attn = make_user_folder(tmp_path / "myidea", "V19")
    jobs = build_jobs(
        [
            f"hydra.searchpath=[file://{user / 'conf'}]",
            "step=V19",
            f"plugins=[{module}]",
            f"plugin_path=[{user}]",
        ],
        multirun=False,
    )
    assert jobs[0].cfg.model.attention == attn and jobs[0].cfg.step.name == "V19"
    import models

    assert attn in models.ATTENTION  # imported in this (the matrix) process, for the preflight


def _run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src")
    return subprocess.run(
        [sys.executable, "-m", "ablate.matrix", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_missing_plugin_module_is_one_line_before_any_job(tmp_path):
    proc = _run_cli(
        ["experiment=smoke", "plugins=[no_such_module_xyz]", f"results_root={tmp_path / 'r'}"],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert_one_error_line(proc.stderr, str(tmp_path))  # says where it looked
    assert proc.stderr.startswith("error: plugin module 'no_such_module_xyz' not found"), (
        proc.stderr
    )
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").glob("test_matrix_results_*"))


def test_a_plugin_that_raises_on_import_is_one_line(tmp_path):
    (tmp_path / "broken_idea.py").write_text(
        "import math\nraise RuntimeError('forgot to finish this')\n"
    )
    proc = _run_cli(["experiment=smoke", "plugins=[broken_idea]", "--plan"], cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: plugin module 'broken_idea' failed to import: RuntimeError: forgot to finish this"
    ), proc.stderr


def test_a_users_own_models_package_is_refused_not_mixed_up(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("X = 1\n")
    # In the working directory, it would shadow ablate's models for python -m.
    proc = _run_cli(["experiment=smoke", "--plan"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "shadows ablate's own 'models'" in proc.stderr and "Traceback" not in proc.stderr, (
        proc.stderr
    )
    # On plugin_path, it is refused too.
    other = tmp_path / "run"
    other.mkdir()
    proc = _run_cli(
        ["experiment=smoke", "plugins=[x]", f"plugin_path=[{tmp_path}]", "--plan"], cwd=other
    )
    assert proc.returncode == 2
    assert "is named 'models', the name of ablate's model package" in proc.stderr, proc.stderr
