"""Axes before a matrix runs (ablate.matrix.axes): --plan lists them and the job count, a large
sweep asks for --yes, tuned keys must be swept, the lr matrix file and the size ladder compose."""

from __future__ import annotations

import pytest
from helpers.errors import assert_one_error_line

from ablate.compose import build_jobs, compose_job, expand_matrix_file
from ablate.errors import ConfigError
from ablate.matrix import axes as A
from ablate.matrix.__main__ import main
from ablate.matrix.plan import format_plan

SWEEP = ["experiment=smoke", "step=V0,V16", "optim.lr=1e-3,3e-3", "model.n_layer=1,2"]


def test_the_plan_lists_the_axes_the_job_count_and_the_cost():
    jobs = build_jobs(SWEEP, multirun=True)
    assert len(jobs) == 8
    text = format_plan(jobs, jobs.settings)
    lines = text.splitlines()
    axes = next(ln for ln in lines if ln.startswith("Axes"))
    assert "optim.lr (2: 0.001, 0.003)" in axes and "model.n_layer (2: 1, 2)" in axes
    assert "Jobs: 2 step(s) x 1 seed(s) x 4 combination(s) of axis values = 8 job(s)." in lines
    assert any(ln.startswith("Total: ") and "device-hours" in ln for ln in lines)
    assert "--yes" not in text  # 8 jobs: under confirm_jobs


def test_a_plan_without_axes_says_so():
    jobs = build_jobs(["experiment=smoke", "step=V0,V16", "seed=1,2"], multirun=True)
    lines = A.plan_lines(jobs, jobs.settings)
    assert "Axes: none (only steps and seeds are swept)." in lines
    assert "Jobs: 2 step(s) x 2 seed(s) = 4 job(s)." in lines


def test_the_plan_command_prints_the_axes(tmp_path, capsys):
    rc = main([*SWEEP, f"results_root={tmp_path / 'r'}", "preflight=false", "--multirun", "--plan"])
    out = capsys.readouterr().out
    assert rc == 0 and "Axes (swept keys other than step and seed" in out and "= 8 job(s)" in out
    assert not (tmp_path / "r").exists()


def test_a_sweep_over_confirm_jobs_starts_only_with_yes(tmp_path, capsys):
    root = tmp_path / "results"
    args = [*SWEEP, f"results_root={root}", "preflight=false", "confirm_jobs=4", "--multirun"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "= 8 job(s), more than confirm_jobs=4", "--yes")
    assert err.startswith("error: this matrix makes 2 step(s)"), err
    assert not root.exists()  # refused before anything is written
    # --plan says it, and --yes is what lets it start
    assert main([*args, "--plan"]) == 0
    assert "starts only with --yes" in capsys.readouterr().out
    jobs = build_jobs([*SWEEP, "confirm_jobs=4"], multirun=True)
    A.check_confirmed(jobs, jobs.settings, yes=True)
    with pytest.raises(ConfigError):
        A.check_confirmed(jobs, jobs.settings, yes=False)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["tune=[optim.lr]"], "optim.lr is not swept in this matrix"),
        (["tune=[seed]", "optim.lr=1e-3,3e-3"], "'seed' cannot be tuned"),
        (["tune=[model]", "optim.lr=1e-3,3e-3"], "its axes are optim.lr"),
    ],
)
def test_a_tuned_key_must_be_an_axis(args, expected, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["experiment=smoke", "step=V0,V16", *args, f"results_root={tmp_path}"]
            + ["preflight=false", "--multirun", "--plan"]
        )
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, expected)


def test_the_lr_matrix_file_sweeps_three_learning_rates_tuned():
    args = expand_matrix_file("ra-ablation-lr")
    assert args == [
        "experiment=ra_ablation",
        "step=V0,V16,V17,V18",
        "seed=1,2,3",
        "optim.lr=3e-4,6e-4,1.2e-3",
        "tune=[optim.lr]",
    ]
    jobs = build_jobs(args, multirun=True)
    assert len(jobs) == 36 and jobs.settings.tune == ["optim.lr"]
    assert sorted({j.cfg.optim.lr for j in jobs}) == [3e-4, 6e-4, 1.2e-3]
    lines = A.plan_lines(jobs, jobs.settings)
    assert "Tuned in the report: each step at its best optim.lr." in lines
    assert "Jobs: 4 step(s) x 3 seed(s) x 3 combination(s) of axis values = 36 job(s)." in lines
    # the table's own lr is the default group, shown first by the report
    assert {k: float(v) for k, v in A.axis_defaults(jobs).items()} == {"optim.lr": 6e-4}


def test_a_tune_key_of_the_wrong_shape_in_a_matrix_file_is_refused(tmp_path):
    (tmp_path / "bad.yaml").write_text("experiment: smoke\nsteps: [V0]\ntune: optim.lr\n")
    with pytest.raises(ConfigError, match="'tune' must be a list of swept keys"):
        expand_matrix_file(str(tmp_path / "bad.yaml"))


def test_the_named_sizes_form_a_ladder():
    widths = [compose_job([f"model={m}"]).model for m in ("tiny", "small", "gpt2", "medium")]
    assert [(m.n_layer, m.n_embd) for m in widths] == [(4, 128), (6, 384), (12, 768), (24, 1024)]


def test_the_plan_gives_the_final_eval_size_the_validation_shard_holds():
    """The smoke corpus's validation shard holds far fewer tokens than the default 2M budget: the
    plan's column gives what the job's final eval will score, not the bound."""
    from ablate.data import final_val_windows, resolve_dataset
    from ablate.data.config import DEFAULT_VAL_TOKENS

    jobs = build_jobs(["experiment=smoke", "step=V0,V16"], multirun=True)
    cfg = jobs[0].cfg
    T = cfg.model.block_size
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size, T)
    n, _ = final_val_windows(ds.val_path, T, cfg.data.val_tokens, cfg.data.val_windows)
    assert n * T < DEFAULT_VAL_TOKENS  # else the bound and the size would agree
    text = format_plan(jobs, jobs.settings)
    for step in ("V0", "V16"):
        row = next(ln for ln in text.splitlines() if ln.startswith(f"| {step} "))
        assert f"| {n * T:,} (~" in row and "<=" not in row, row
