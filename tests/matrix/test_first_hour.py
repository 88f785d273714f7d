"""What a new user types in the first hour: typos, a misplaced package header, --help, --plan, | head.

Every config group and every schema key is tried, not only the ones a user happened to mistype.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line

from ablate.compose import build_jobs, group_choices, parse_overrides
from ablate.errors import ConfigError
from ablate.matrix.__main__ import main, searchpath_override
from ablate.schema import check_overrides, misplaced_package_header, schema_keys

REPO = Path(__file__).resolve().parents[2]
GROUPS, DEFAULTS = group_choices()


def _error(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert_one_error_line(err)
    return err


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_an_option_that_does_not_exist_is_an_error_listing_the_options(group, capsys):
    err = _error(capsys, f"{group}=nosuch", "--plan")
    assert f"{group}=nosuch: no such {group}" in err
    assert f"the {group} options are: {', '.join(GROUPS[group])}" in err


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_a_one_letter_typo_of_each_option_names_the_option(group):
    for option in GROUPS[group]:
        typo = option[:-1]
        if typo in GROUPS[group] or len(typo) < 2:
            continue
        with pytest.raises(ConfigError) as info:
            build_jobs([f"{group}={typo}"], multirun=False)
        assert "did you mean" in str(info.value) and "no such" in str(info.value), str(info.value)


def _case_swapped(word: str) -> str:
    return word.swapcase()


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_option_in_the_wrong_case_names_the_option(group):
    # step=v16 for V16: refused (never guessed), with the option as it is spelled
    for option in GROUPS[group]:
        wrong = _case_swapped(option)
        if wrong == option or wrong in GROUPS[group]:
            continue
        with pytest.raises(ConfigError) as info:
            build_jobs([f"{group}={wrong}"], multirun=False)
        msg = str(info.value)
        assert f"{group}={wrong}: no such {group} (did you mean {option}?)" in msg, msg


def test_a_schema_key_in_the_wrong_case_names_the_key():
    checked = 0
    for key in _leaf_keys():
        wrong = key.upper()
        with pytest.raises(ConfigError) as info:
            check_overrides(parse_overrides([f"{wrong}=1"]), GROUPS)
        assert f"{wrong} is not a config key; did you mean {key}?" in str(info.value)
        checked += 1
    assert checked > 40


@pytest.mark.parametrize("table", ["arch", "attention", "mlp"])
def test_an_unknown_model_component_is_refused_by_cfg_job_with_the_nearest_name(table, capsys):
    from models import registry

    names = {"arch": registry.REGISTRY, "attention": registry.ATTENTION, "mlp": registry.MLPS}
    for name in sorted(names[table]):
        wrong = name.upper() if name.upper() != name else name.lower() + "x"
        with pytest.raises(SystemExit) as exit_info:
            main(["experiment=smoke", f"model.{table}={wrong}", "--cfg", "job"])
        out, err = capsys.readouterr()
        assert exit_info.value.code == 2, err
        assert_one_error_line(err, f"error: model.{table}={wrong!r} is unknown (allowed: ")
        assert f"did you mean {name!r}?" in err, err
        assert "# job" not in out  # nothing printed as if it would run


def test_experiment_typo_is_refused_although_the_group_is_optional(capsys):
    # Hydra skips a missing option of an `optional` group and trains the code defaults.
    assert "experiment" in GROUPS and DEFAULTS["experiment"] is None
    err = _error(capsys, "experiment=smok", "step=V0,V16", "--multirun", "--plan")
    assert "experiment=smok: no such experiment (did you mean smoke?)" in err
    err = _error(capsys, "experiment=smok")  # the run itself, not only the plan
    assert "did you mean smoke?" in err


def test_a_typo_in_one_sweep_value_is_refused():
    with pytest.raises(ConfigError, match="step=V61: no such step"):
        build_jobs(["experiment=smoke", "step=V0,V61"], multirun=True)


def _leaf_keys() -> list[str]:
    keys = schema_keys()
    return sorted(k for k in keys if not any(other.startswith(k + ".") for other in keys))


def test_every_schema_key_misspelled_gets_did_you_mean_and_never_the_plus_hint():
    # check_overrides is what compose_job runs before Hydra composes (test below goes end to end).
    keys = schema_keys()
    checked = 0
    for key in _leaf_keys():
        typo = key[:-1]  # the last letter dropped: budget.train_second
        if typo in keys or typo in GROUPS or len(key.rsplit(".", 1)[-1]) < 5:
            continue
        for spelled in (f"{typo}=1", f"+{typo}=1", f"++{typo}=1"):
            with pytest.raises(ConfigError) as info:
                check_overrides(parse_overrides([spelled]), GROUPS)
            msg = str(info.value)
            assert (
                f"{typo} is not a config key; did you mean " in msg and key in msg.split("?")[0]
            ), msg
            assert "+" not in msg, msg
        checked += 1
    assert checked > 40  # every section of the schema, not a sample


@pytest.mark.parametrize("spelled", ["budget.train_second=10", "+budget.train_second=10"])
def test_budget_train_second_is_the_reported_case(spelled, capsys):
    err = _error(capsys, spelled)
    assert (
        "did you mean budget.box_seconds (called budget.train_seconds before format 3)?" in err
        and "+budget" not in err
    )


def test_an_unknown_key_under_a_known_node_is_refused_even_with_plus():
    with pytest.raises(ConfigError, match="budget.foo is not a config key"):
        build_jobs(["+budget.foo=3"], multirun=False)


def test_an_unknown_key_inside_a_yaml_file_names_the_file_and_the_nearest_key(
    tmp_path, monkeypatch
):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    (conf / "experiment" / "typo.yaml").write_text(
        "# @package _global_\nbudgt:\n  box_seconds: 3\n"
    )
    monkeypatch.setenv("ABLATE_CONF_DIR", str(conf))
    with pytest.raises(ConfigError) as info:
        build_jobs(["experiment=typo"], multirun=False)
    msg = str(info.value)
    assert "experiment/typo.yaml" in msg and "did you mean budget?" in msg and "+" not in msg


# --------------------------------------------------------------------------- package header


def test_misplaced_package_header_is_detected_only_outside_the_header():
    assert misplaced_package_header("# @package _global_\nstep:\n  name: V0\n") is None
    assert misplaced_package_header("\n# @package _global_\n# a comment\n") is None
    assert misplaced_package_header("# conf/step/V19.yaml\n# @package _global_\nstep: {}\n") == 2
    assert misplaced_package_header("step: {}\n# @package _global_\n") == 2
    assert misplaced_package_header("# just a comment\nstep: {}\n") is None


@pytest.mark.parametrize("group", ["step", "experiment"])
def test_a_step_or_experiment_with_the_header_on_line_2_is_refused_with_the_fix(
    group, tmp_path, monkeypatch
):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    body = (
        "step:\n  name: V19\n  architecture: RA R=8\nmodel:\n  attention: ra\n"
        if group == "step"
        else "experiment: mine\n"
    )
    path = conf / group / ("V19.yaml" if group == "step" else "mine.yaml")
    path.write_text(f"# conf/{group}/{path.name}\n# @package _global_\n{body}")
    monkeypatch.setenv("ABLATE_CONF_DIR", str(conf))
    choice = f"{group}={path.stem}"
    with pytest.raises(ConfigError) as info:
        build_jobs([choice], multirun=False)
    msg = str(info.value)
    assert str(path) in msg and "line 2" in msg and "move it to the first line" in msg, msg
    # Chosen indirectly, through an experiment's defaults, it is named too.
    if group == "step":
        (conf / "experiment" / "via.yaml").write_text(
            "# @package _global_\ndefaults:\n  - override /step: V19\n"
        )
        with pytest.raises(ConfigError, match="move it to the first line"):
            build_jobs(["experiment=via"], multirun=False)
    # The fix the message gives works.
    path.write_text(f"# @package _global_\n# conf/{group}/{path.name}\n{body}")
    (job,) = build_jobs([choice], multirun=False)
    assert (job.cfg.step.name == "V19") if group == "step" else (job.cfg.experiment == "mine")


@pytest.mark.parametrize("group", ["step", "experiment"])
def test_a_step_or_experiment_without_the_header_is_told_line_1_must_be_it(group, tmp_path, capsys):
    # Without it Hydra puts the keys under the group (step.step), and "step.step is not a config
    # key" sent the user looking for a typo.
    (tmp_path / group).mkdir()
    body = "step:\n  name: NOPKG\n  architecture: x\n" if group == "step" else "seed: 3\n"
    path = tmp_path / group / "NOPKG.yaml"
    path.write_text(body)
    with pytest.raises(SystemExit) as e:
        main(["--config-dir", str(tmp_path), f"{group}=NOPKG", "--cfg", "job"])
    assert e.value.code == 2
    key = "step.step" if group == "step" else "experiment.seed"
    assert_one_error_line(
        capsys.readouterr().err, f"{path}: line 1 must be '# @package _global_'", f"e.g. {key}"
    )
    # The fix the message gives works.
    path.write_text("# @package _global_\n" + body)
    (job,) = build_jobs([f"{group}=NOPKG", searchpath_override([str(tmp_path)])], multirun=False)
    assert job.cfg.step.name == "NOPKG" if group == "step" else job.cfg.seed == 3


def test_a_misspelled_key_of_a_group_file_still_gets_the_nearest_key(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("n_layr: 3\n")  # no header: the group's keys
    with pytest.raises(SystemExit):
        main(["--config-dir", str(tmp_path), "model=mine", "--cfg", "job"])
    err = capsys.readouterr().err
    assert "did you mean model.n_layer?" in err and "@package" not in err, err


def test_a_step_file_whose_name_is_not_its_file_name_is_refused(tmp_path, capsys):
    # A user's MINE.yaml with step.name: V16 ran silently as job "V16" (a different model under
    # V16's name), or clashed with V16 in a sweep as "jobs would share a directory".
    (tmp_path / "step").mkdir()
    path = tmp_path / "step" / "MINE.yaml"
    path.write_text(
        "# @package _global_\nstep:\n  name: V16\n  architecture: mine\nmodel:\n  attention: ra\n"
    )
    for argv in (["step=MINE"], ["step=V16,MINE", "--multirun"]):
        with pytest.raises(SystemExit) as e:
            main(["--config-dir", str(tmp_path), "experiment=smoke", *argv, "--cfg", "job"])
        assert e.value.code == 2
        assert_one_error_line(
            capsys.readouterr().err,
            f"{path} sets step.name: V16, but its file is named MINE;",
            "set step.name: MINE, or rename the file to V16.yaml",
        )


def test_every_built_in_step_file_is_named_after_its_step():
    steps = sorted(p.stem for p in (REPO / "conf" / "step").glob("*.yaml"))
    assert steps
    for step in steps:
        (job,) = build_jobs([f"step={step}"], multirun=False)
        assert job.cfg.step.name == step


# --------------------------------------------------------------------------- --help


def test_help_lists_every_group_with_its_options_the_stable_keys_and_examples(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for group, options in GROUPS.items():
        line = next((ln for ln in out.splitlines() if ln.strip().startswith(group + " ")), None)
        assert line is not None, f"--help does not list the group {group}"
        for option in options:
            assert option in line
    for key in (
        "experiment",
        "step",
        "seed",
        "budget.box_seconds",
        "budget.max_iters",
        "results_root",
        "hardware.nproc_per_node",
    ):
        assert f"  {key} " in out
    assert "ra-ablation" in out  # the named matrices
    assert "python -m ablate.matrix experiment=smoke step=V0,V16,V17,V18 --multirun" in out
    for rst in ("::", "``", ".. "):
        assert rst not in out, f"RST markup {rst!r} in --help"


def test_every_example_in_help_composes(capsys):
    from ablate.matrix.__main__ import EXAMPLES, parse_argv

    for command, _ in EXAMPLES:
        args = command.split()[3:]
        if any(a.startswith(("resume=", "status=", "wait=", "--config-dir")) for a in args):
            continue  # test_matrix_e2e.py, test_progress.py, test_plugins.py and tests/slurm run these for real
        overrides, multirun, _ = parse_argv([a for a in args if a != "--cfg" and a != "job"])
        assert build_jobs(overrides, multirun)


# --------------------------------------------------------------------------- --plan


def test_plan_runs_the_preflight_and_reports_a_missing_data_directory_once(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    err = _error_multi(
        capsys,
        "experiment=smoke",
        "step=V0",
        "seed=1,2,3",
        "data=shards",
        f"data.path={missing}/*.bin",
        f"results_root={tmp_path / 'results'}",
        "--multirun",
        "--plan",
    )
    lines = [ln for ln in err.splitlines() if "nowhere" in ln]
    assert len(lines) == 1 and "all 3 jobs" in lines[0], err
    assert not (tmp_path / "results").exists()


def test_plan_names_the_jobs_a_problem_concerns(tmp_path, capsys):
    err = _error_multi(
        capsys,
        "experiment=smoke",
        "step=V0",
        "seed=1,2",
        "optim.tokens_per_iter=1000,2048",
        f"results_root={tmp_path}",
        "--multirun",
        "--plan",
    )
    lines = [ln for ln in err.splitlines() if "tokens_per_iter=1000 " in ln]
    assert (
        len(lines) == 1
        and "for V0_seed1_tokens_per_iter1000, V0_seed2_tokens_per_iter1000:" in lines[0]
    ), err


def test_plan_says_the_preflight_passed(tmp_path, capsys):
    assert (
        main(
            [
                "experiment=smoke",
                "step=V17",
                f"results_root={tmp_path / 'r'}",
                "--multirun",
                "--plan",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Preflight: passed (config, causality" in out and "causality V17: causal" in out
    assert not (tmp_path / "r").exists()
    # in the order things happened: the plan, the preflight's lines (the final eval's real size
    # from the validation shard among them), its verdict, and last that nothing was trained
    lines = out.strip().splitlines()
    assert lines[-1] == "Nothing was trained (--plan)." and out.count("Nothing was") == 1
    # the preflight's verdict, then the estimates timed on this machine, then the end
    assert out.index("Preflight: passed") < out.index("Timed on this machine (cpu")
    assert lines[-3].startswith("| V17 ") and lines[-2].startswith("Estimated: ~")
    (final,) = [ln for ln in lines if ln.startswith("data: final eval: ")]
    assert out.index("Plan: ") < out.index(final) < out.index("Preflight: passed")
    n, t = int(final.split()[3].replace(",", "")), int(final.split()[8].replace(",", ""))
    assert n > 0 and t == n * 128


def _error_multi(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert (
        "Nothing was trained (--plan)." in out
        and err.startswith("error: preflight failed")
        and "Traceback" not in err
    ), err
    return err


# --------------------------------------------------------------------------- closed pipe


def _into_closed_pipe(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run with stdout a pipe whose reader has already gone (what `| head` leaves behind)."""
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write)


def test_cfg_job_into_a_closed_pipe_exits_quietly(tmp_path):
    proc = _into_closed_pipe(
        ["-m", "ablate.matrix", "experiment=smoke", "step=V0,V16", "--multirun", "--cfg", "job"],
        tmp_path,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_help_into_a_closed_pipe_exits_quietly(tmp_path):
    proc = _into_closed_pipe(["-m", "ablate.matrix", "--help"], tmp_path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_report_into_a_closed_pipe_exits_quietly(tmp_path):
    from helpers.report_factory import make_matrix, seed_jobs

    mdir = make_matrix(
        tmp_path / "results", seed_jobs(), name="test_matrix_results_20251111_170325"
    )
    for extra in ([], ["--format", "csv"]):
        proc = _into_closed_pipe(["-m", "ablate.report", str(mdir), "--no-write", *extra], tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_matrix_messages_into_a_closed_pipe_do_not_stop_the_matrix(tmp_path):
    code = (
        "import sys\nfrom ablate import console\n"
        "for i in range(100):\n    console.emit('[ablate] a message line ' * 20)\n"
        "print('the matrix went on', file=sys.stderr)\n"
    )
    proc = _into_closed_pipe(["-c", code], tmp_path)
    assert proc.returncode == 0 and proc.stderr == "the matrix went on\n", proc.stderr


@pytest.mark.parametrize(
    "body, missing",
    [
        ("# @package _global_\nmodel:\n  attention: ra\n", "step.name and step.architecture"),
        ("# @package _global_\nstep:\n  name: V19\nmodel:\n  attention: ra\n", "step.architecture"),
        ("# @package _global_\nstep:\n  architecture: mine\n", "step.name"),
        ("description: group package, no name\n", "step.name and step.architecture"),
    ],
)
def test_a_step_file_that_does_not_name_itself_is_refused(body, missing, tmp_path, capsys):
    # Left out, the step would train and be reported as V0 / Baseline: a second "baseline".
    (tmp_path / "step").mkdir()
    (tmp_path / "step" / "V19.yaml").write_text(body)
    with pytest.raises(SystemExit) as e:
        main(["--config-dir", str(tmp_path), "experiment=smoke", "step=V19", "--cfg", "job"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, f"V19.yaml does not set {missing};")


def test_a_step_file_in_the_group_package_that_names_itself_composes(tmp_path):
    (tmp_path / "step").mkdir()
    (tmp_path / "step" / "V19.yaml").write_text("name: V19\narchitecture: mine\n")
    jobs = build_jobs(
        ["experiment=smoke", "step=V19", searchpath_override([str(tmp_path)])], multirun=False
    )
    assert jobs[0].cfg.step.name == "V19" and jobs[0].cfg.step.architecture == "mine"


def _selectable() -> list[tuple[str, str]]:
    return [(g, opts[0]) for g, opts in sorted(GROUPS.items()) if opts and "/" not in g]


@pytest.mark.parametrize("group,option", _selectable())
def test_an_option_defined_by_a_config_dir_and_by_ablate_is_refused_naming_both(
    group, option, tmp_path
):
    # Hydra takes the first folder on its search path silently: the user's file would not run.
    mine = tmp_path / "conf" / group / f"{option}.yaml"
    mine.parent.mkdir(parents=True)
    shutil.copy(REPO / "conf" / group / f"{option}.yaml", mine)
    search = searchpath_override([str(tmp_path / "conf")])
    with pytest.raises(ConfigError) as info:
        build_jobs([f"{group}={option}", search], multirun=False)
    msg = str(info.value)
    assert f"{group}={option} is defined by 2 config folders" in msg, msg
    assert str(mine) in msg and str(REPO / "conf" / group / f"{option}.yaml") in msg, msg
    # an option only the user's folder defines is theirs, no question asked (a step file named
    # as the message says: step.name is the file's name)
    renamed = mine.rename(mine.with_name(f"{option}_mine.yaml"))
    if group == "step":
        renamed.write_text(
            renamed.read_text().replace(f"name: {option}\n", f"name: {option}_mine\n")
        )
    build_jobs([f"{group}={option}_mine", search], multirun=False)
