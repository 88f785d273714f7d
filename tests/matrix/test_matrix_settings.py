"""Matrix-wide settings (ablate.config.MatrixSettings): one set per matrix, stored in matrix.json.

launcher, results_root, plan, preflight, report and progress are set on the same command line as
a job's keys, but they belong to the matrix: a job's config.yaml does not hold them, a sweep may
not vary them, and resume=/wait=/status= read them from matrix.json. A matrix directory written
before that (format 1/2: the settings copied into every job's config.yaml, none in matrix.json;
tests/fixtures/format2) still resumes and reports, with the settings it was started with.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from helpers.errors import assert_one_error_line
from helpers.tiny import TINY_BATCH, TINY_MODEL

from ablate import results
from ablate.config import RunConfig, load_job_config
from ablate.matrix import runner
from ablate.matrix.__main__ import main
from ablate.report.__main__ import main as report_main

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    *TINY_BATCH,
    "data.val_windows=4",
    "data.val_tokens=1024",
    "budget.eval_interval=2",
    "budget.log_interval=2",
    "budget.max_iters=4",
]


def _capture_launch(monkeypatch) -> list[tuple]:
    """Replace the launch by a recorder of what the runner would launch: (cfgs, settings)."""
    seen: list[tuple] = []
    monkeypatch.setattr(
        runner,
        "_launch_and_report",
        lambda manifest, cfgs, settings: seen.append((cfgs, settings)) or 0,
    )
    return seen


def _only_matrix_dir(root: Path) -> Path:
    dirs = sorted(root.glob("test_matrix_results_*"))
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.mark.parametrize(
    "sweep, key",
    [
        (["results_root={a},{b}"], "results_root"),
        (["launcher=local,slurm"], "launcher.name"),
        (["report=true,false"], "report"),
        (["launcher=slurm", "launcher.slurm.partition=p1,p2"], "launcher.slurm.partition"),
    ],
)
def test_a_sweep_that_varies_a_matrix_setting_is_refused_in_one_line(sweep, key, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    args = [s.format(a=a, b=b) for s in sweep]
    if not any(s.startswith("results_root=") for s in args):
        args.append(f"results_root={a}")
    with pytest.raises(SystemExit) as e:
        main([*TINY, "step=V0,V16", *args, "--multirun"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err)
    assert err.startswith(
        f"error: {key} is a setting of the whole matrix (one value per matrix), "
        f"but this sweep gives it 2 values"
    ), err
    assert not a.exists() and not b.exists(), "nothing may be created"


def test_a_sweep_of_job_keys_beside_one_matrix_setting_is_fine(tmp_path, monkeypatch):
    seen = _capture_launch(monkeypatch)
    assert (
        main(
            [
                *TINY,
                "step=V0,V16",
                "seed=1,2",
                "launcher.slurm.partition=p1",
                "preflight=false",
                f"results_root={tmp_path}",
                "--multirun",
            ]
        )
        == 0
    )
    ((cfgs, settings),) = seen
    assert len(cfgs) == 4 and settings.launcher.slurm.partition == "p1"


def test_job_config_holds_only_the_job_and_matrix_json_holds_the_settings(tmp_path, monkeypatch):
    seen = _capture_launch(monkeypatch)
    assert (
        main(
            [
                *TINY,
                "step=V0,V16",
                f"results_root={tmp_path}",
                "preflight=false",
                "report=false",
                "progress=false",
                "launcher.slurm.partition=gpu",
                "launcher.slurm.wait=false",
                "--multirun",
            ]
        )
        == 0
    )
    mdir = _only_matrix_dir(tmp_path)
    job_keys = {f.name for f in fields(RunConfig)}
    for name in ("V0", "V16"):
        stored = yaml.safe_load((mdir / name / results.CONFIG).read_text())
        assert set(stored) == job_keys, set(stored) ^ job_keys
        for key in (*results.MATRIX_SETTINGS_KEYS, "resume"):
            assert key not in stored
    data = json.loads((mdir / results.MANIFEST).read_text())
    s = data["settings"]
    assert set(s) == set(results.MATRIX_SETTINGS_KEYS)
    assert s["results_root"] == str(tmp_path) and s["preflight"] is False and s["report"] is False
    assert s["progress"] is False and "plan" not in s  # --plan is a flag, never stored
    assert s["launcher"]["name"] == "local" == data["launcher"]
    assert s["launcher"]["slurm"]["partition"] == "gpu" and s["launcher"]["slurm"]["wait"] is False
    # The run itself was handed the same one settings object.
    ((_, settings),) = seen
    assert settings.report is False and settings.launcher.slurm.partition == "gpu"

    # resume= reads them back from matrix.json, not from a job (no job config has them).
    seen.clear()
    assert main([f"resume={mdir}"]) == 0
    ((cfgs, settings),) = seen
    assert sorted(cfgs) == ["V0", "V16"] and not hasattr(
        cfgs["V0"], "launcher"
    )  # a RunConfig: the job only
    assert settings.report is False and settings.progress is False
    assert settings.launcher.slurm.partition == "gpu" and settings.launcher.slurm.wait is False


def test_cfg_job_prints_each_job_and_the_matrix_settings_once(capsys):
    assert (
        main([*TINY, "step=V0,V16", "results_root=/somewhere", "--multirun", "--cfg", "job"]) == 0
    )
    out = capsys.readouterr().out
    jobs_part, settings_part = out.split("# matrix settings", 1)
    assert jobs_part.count("# job ") == 2
    job_yaml = "\n".join(line for line in jobs_part.splitlines() if not line.startswith("# job "))
    assert "results_root" not in job_yaml and "launcher" not in job_yaml
    assert "results_root: /somewhere" in settings_part and "launcher:" in settings_part
    assert "# job " not in settings_part


def test_settings_of_an_old_matrix_come_from_its_first_readable_job_config(tmp_path):
    mdir = tmp_path / "test_matrix_results_20250101_000000"
    mdir.mkdir()
    m = results.Manifest.create(mdir, launcher="slurm")
    m.add_job("V0", ["step=V0"])
    m.add_job("V16", ["step=V16"])
    # Neither job has a readable config: the defaults, with matrix.json's launcher.
    stored, source = results.read_matrix_settings(results.Manifest.load(mdir))
    assert stored == {"launcher": {"name": "slurm"}} and source == mdir / results.MANIFEST
    (mdir / "V16").mkdir()
    (mdir / "V16" / results.CONFIG).write_text(
        yaml.safe_dump(
            {
                "seed": 1,
                "report": False,
                "resume": None,
                "launcher": {"name": "slurm", "slurm": {"nodes": 2}},
            }
        )
    )
    stored, source = results.read_matrix_settings(results.Manifest.load(mdir))
    assert stored == {"report": False, "launcher": {"name": "slurm", "slurm": {"nodes": 2}}}
    assert source == mdir / "V16" / results.CONFIG


FORMAT2 = Path(__file__).parents[1] / "fixtures" / "format2" / "test_matrix_results_20261201_175006"
"""A real format-2 matrix directory (tests/test_old_results.py): V0, V16 completed, V17 pending;
every job's config.yaml carries the settings (results_root: /tmp/oldfmt, progress: false, ...)."""


@pytest.fixture
def old_dir(tmp_path) -> Path:
    dst = tmp_path / FORMAT2.name
    shutil.copytree(FORMAT2, dst)
    return dst


def _set_old_setting(job_dir: Path, key: str, value: object) -> None:
    path = job_dir / results.CONFIG
    cfg = yaml.safe_load(path.read_text())
    cfg[key] = value
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def test_an_old_job_config_loads_without_the_matrix_settings(old_dir):
    assert "results_root" in (old_dir / "V0" / results.CONFIG).read_text()  # the old layout
    cfg = load_job_config(old_dir / "V0" / results.CONFIG)
    for key in (*results.MATRIX_SETTINGS_KEYS, "resume"):
        assert not hasattr(cfg, key)  # a RunConfig: the job's fields only
    assert cfg.step.name == "V0" and cfg.budget.max_iters == 6


def test_an_old_matrix_reads_its_settings_from_its_first_job(old_dir):
    _set_old_setting(old_dir / "V16", "report", False)  # only the first job's copy counts
    settings = runner.matrix_settings(results.Manifest.load(old_dir))
    assert (
        settings.results_root == "/tmp/oldfmt"
        and settings.progress is False
        and settings.report is True
    )
    assert settings.launcher.name == "local"


@pytest.mark.slow
def test_an_old_matrix_resumes_with_its_settings_reports_and_shows_status(old_dir, capsys):
    _set_old_setting(old_dir / "V0", "report", False)
    # Resume trains the pending job from its old config.yaml, with the old settings (report=false).
    assert main([f"resume={old_dir}"]) == 0, capsys.readouterr()
    assert results.JobDir(old_dir / "V17").read_summary()["status"] == results.COMPLETED
    assert not (old_dir / results.REPORT).exists(), (
        "report=false of the old config.yaml was not honoured"
    )
    assert "results_root" in (old_dir / "V17" / results.CONFIG).read_text(), (
        "resume rewrote an old config.yaml"
    )

    capsys.readouterr()
    assert main([f"status={old_dir}"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("V0", "V16", "V17"))

    report_main([str(old_dir)])
    assert "| V17 " in (old_dir / results.REPORT).read_text()

    # The same directory saying report=true: a resume with nothing to run writes the missing report.
    (old_dir / results.REPORT).unlink()
    _set_old_setting(old_dir / "V0", "report", True)
    assert main([f"resume={old_dir}"]) == 0
    assert (old_dir / results.REPORT).is_file()


@pytest.mark.parametrize(
    "sweep, key",
    [
        ("budget.box_seconds=60,7200", "time (46 and 165 min)"),
        ("hardware.nproc_per_node=1,2", "gpus_per_node (1 and 2)"),  # (and ntasks_per_node)
    ],
)
@pytest.mark.parametrize("plan", [True, False])
def test_a_slurm_matrix_whose_jobs_need_different_sbatch_scripts_is_refused(
    sweep, key, plan, tmp_path, capsys
):
    """One job array, one sbatch script: a second job under the first one's time limit or task
    count would be killed early or run with the wrong ranks."""
    with pytest.raises(SystemExit) as e:
        main(
            [
                "experiment=ra_ablation",
                "launcher=slurm",
                "step=V0",
                sweep,
                f"results_root={tmp_path}",
                "preflight=false",
                "--multirun",
                *(["--plan"] if plan else []),
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err, "one job array with one sbatch script", f"need different {key}")
    assert not list(tmp_path.glob("test_matrix_results_*")), "nothing may be created"


# --------------------------------------------------------------------------- --plan is a flag


@pytest.mark.parametrize("arg", ["plan=true", "plan=false", "+plan=1", "plan=True"])
def test_plan_as_a_setting_is_refused_with_the_flag_to_use(arg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["experiment=smoke", arg, f"results_root={tmp_path}"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err, "write --plan")
    assert err.startswith(f"error: {arg}:"), err
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


@pytest.mark.parametrize("command", ["resume", "status", "wait"])
def test_plan_does_not_combine_with_a_command_on_an_existing_matrix(command, old_dir, capsys):
    with pytest.raises(SystemExit) as e:
        main([f"{command}={old_dir}", "--plan"])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err, "--plan")


def test_a_matrix_json_that_stored_plan_still_loads_its_settings(old_dir):
    manifest = results.Manifest.load(old_dir)
    manifest.update(settings={"plan": True, "report": False, "results_root": "/x"})
    settings = runner.matrix_settings(results.Manifest.load(old_dir))
    assert settings.report is False and settings.results_root == "/x"
    assert not hasattr(settings, "plan")
    _set_old_setting(old_dir / "V0", "plan", True)  # an old config.yaml with it: dropped too
    assert not hasattr(load_job_config(old_dir / "V0" / results.CONFIG), "plan")
