"""The Hydra app's composition: steps from config, sweep naming, plan, and bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers.errors import assert_one_error_line

from ablate.compose import build_jobs, expand_matrix_file
from ablate.matrix.__main__ import main, parse_argv


def test_steps_compose_with_their_labels_and_model_options():
    jobs = build_jobs(["experiment=smoke", "step=V0,V16,V17,V18"], multirun=True)
    by_step = {j.step: j.cfg for j in jobs}
    assert [j.name for j in jobs] == ["V0", "V16", "V17", "V18"]
    assert by_step["V0"].step.architecture == "Baseline"
    assert by_step["V16"].step.architecture == "RA v5 only"
    assert by_step["V17"].step.architecture == "RA + frozen"
    assert by_step["V18"].step.architecture == "RA + R-MLP"
    assert (by_step["V0"].model.attention, by_step["V0"].model.mlp) == ("causal", "standard")
    assert (by_step["V16"].model.attention, by_step["V16"].model.mlp) == ("ra", "standard")
    assert by_step["V17"].model.mlp == "rmlp" and by_step["V17"].model.rmlp_frozen is True
    assert by_step["V18"].model.mlp == "rmlp" and by_step["V18"].model.rmlp_frozen is False


def test_sweep_over_steps_and_seeds_names_jobs_by_step_and_seed():
    jobs = build_jobs(["experiment=smoke", "step=V0,V16", "seed=1,2"], multirun=True)
    assert [j.name for j in jobs] == ["V0_seed1", "V0_seed2", "V16_seed1", "V16_seed2"]
    assert [j.seed for j in jobs] == [1, 2, 1, 2]


def test_seed_preset_is_the_seed_papers_setup():
    (job,) = build_jobs(["experiment=ra_ablation"], multirun=False)
    c = job.cfg
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.block_size) == (
        12,
        12,
        768,
        1024,
    )
    assert c.model.dropout == 0.1 and c.data.source == "finewebedu"
    assert (c.hardware.micro_batch, c.optim.tokens_per_iter, c.hardware.nproc_per_node) == (
        8,
        65536,
        4,
    )
    # the R-MLP table's 200 warmup iterations of its ~2,000-4,000 in 2 hours, as a share of the
    # box: the first 5% (6 minutes), whatever the iteration rate
    assert (c.optim.lr, c.optim.warmup_fraction, c.optim.min_lr) == (6e-4, 0.05, 6e-5)
    assert c.optim.warmup_iters is None
    assert (c.budget.box_seconds, c.budget.eval_interval) == (7200, 100)
    assert c.hardware.precision == "bf16" and c.hardware.compile is True


def test_named_matrix_expands_to_its_command_line():
    assert expand_matrix_file("ra-ablation") == [
        "experiment=ra_ablation",
        "step=V0,V16,V17,V18",
        "seed=1",
    ]
    overrides, multirun, _ = parse_argv(["matrix=smoke", "budget.box_seconds=5"])
    assert (
        multirun and "step=V0,V16,V17,V18" in overrides and overrides[-1] == "budget.box_seconds=5"
    )


def test_smoke_box_can_be_shortened_by_environment(monkeypatch):
    monkeypatch.setenv("ABLATE_SMOKE_SECONDS", "7")
    (job,) = build_jobs(["experiment=smoke"], multirun=False)
    assert job.cfg.budget.box_seconds == 7.0


@pytest.mark.parametrize(
    "args, expected",
    [
        (["step=V99"], "the step options are: V0, V16, V17, V18"),
        (["model.n_layr=3"], "model.n_layr is not a config key; did you mean model.n_layer?"),
        (["budget.box_seconds=abc"], "box_seconds"),
        (["step=V0,V16"], "--multirun"),
        (["matrix=nope"], "unknown matrix 'nope'; available:"),
        (["matrix=cpu1"], "unknown matrix 'cpu1' (did you mean cpu1h?)"),
        (["matrix=SMOKE"], "unknown matrix 'SMOKE' (did you mean smoke?)"),
        (["--bogus"], "unknown option --bogus"),
    ],
)
def test_bad_input_is_one_clear_line(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert_one_error_line(capsys.readouterr().err, expected)


def test_plan_prints_jobs_and_cost_and_runs_nothing(tmp_path, capsys):
    results_root = tmp_path / "results"
    with pytest.raises(
        SystemExit
    ) as exit_info:  # no FineWebEdu shards here: the plan says it would fail
        main(
            [
                "experiment=ra_ablation",
                "step=V0,V16,V17,V18",
                f"results_root={results_root}",
                f"data.path={tmp_path / 'no_data'}",
                "--plan",
                "--multirun",
            ]
        )
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and "Traceback" not in err
    data_lines = [ln for ln in err.splitlines() if "no_data" in ln]
    assert len(data_lines) == 1 and "for all 4 jobs:" in data_lines[0], err  # once, naming the jobs
    for step in ("V0", "V16", "V17", "V18"):
        assert f"| {step} " in out
    assert "4 x cuda" in out and "8.00" in out  # 4 GPUs x 2 h per job
    assert "Total: 32.00 device-hours" in out
    # Eval cost next to the box: 8 x 1024 tokens every 100 iterations of 65,536 (a forward costs
    # ~1/3 of a training token): 0.04% of training; the final 2M-token eval ~ 2,097,152 / 3 / 65,536.
    assert "| 0.0%" in out and "<= 2,097,152 (~11 iters)" in out
    assert not results_root.exists()  # the plan writes nothing, not even the results folder
    assert "warning:" not in out


def test_plan_flags_a_budget_too_short_for_its_warmup(tmp_path, capsys):
    rc = main(
        [
            "experiment=smoke",
            "budget.max_iters=12",
            "optim.warmup_iters=20",
            f"results_root={tmp_path}",
            "--plan",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert (
        "warning: V0: optim.warmup_iters=20 >= budget.max_iters=12: the run ends in warmup" in out
    )


def test_a_time_box_refuses_a_warmup_counted_in_iterations(tmp_path, capsys):
    """A time box's warmup is a share of the box; an iteration count would have to be turned into
    seconds at some measured rate, which a busy machine bends (issue 21): one error line."""
    with pytest.raises(SystemExit) as e:
        main(
            [
                "experiment=smoke",
                "budget.box_seconds=2",
                "optim.warmup_iters=100",
                f"results_root={tmp_path}",
                "--plan",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err)
    assert "optim.warmup_iters=100 counts iterations, but this job has a time box" in err
    assert "drop optim.warmup_iters or set budget.max_iters" in err
    (job,) = build_jobs(
        ["experiment=smoke", "budget.max_iters=50", "optim.warmup_iters=20"], multirun=False
    )
    assert job.cfg.optim.warmup_iters == 20  # an iteration budget takes it


def test_plan_for_slurm_shows_the_submission(tmp_path, capsys):
    rc = main(
        [
            "experiment=ra_ablation",
            "launcher=slurm",
            "launcher.slurm.partition=gpu",
            "step=V0,V16",
            f"results_root={tmp_path}",
            "preflight=false",
            "--plan",
            "--multirun",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "one job array of 2 task(s)" in out
    assert "ntasks_per_node = 4" in out and "gpus_per_node = 4" in out and "partition = gpu" in out
    assert "time = 165" in out  # 120 min box + 30 min grace + 15 min margin


@pytest.mark.parametrize("value", ["gpu\n#SBATCH --uid=0", "gpu --exclusive", "a;rm"])
def test_slurm_names_cannot_smuggle_lines_into_the_sbatch_script(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "experiment=ra_ablation",
                "launcher=slurm",
                f"launcher.slurm.partition={value}",
                "step=V0",
                f"results_root={tmp_path}",
                "--plan",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert_one_error_line(err, "launcher.slurm.partition=")


def test_cfg_job_prints_the_resolved_config(capsys):
    assert main(["experiment=smoke", "step=V18", "--cfg", "job"]) == 0
    out = capsys.readouterr().out
    assert "architecture: RA + R-MLP" in out and "mlp: rmlp" in out


def test_module_entry_point_reports_errors_without_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "ablate.matrix", "step=V99"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert_one_error_line(proc.stderr)


def test_a_slurm_log_folder_with_a_space_is_refused_before_submitting(tmp_path):
    from omegaconf import OmegaConf

    from ablate import results
    from ablate.errors import ConfigError
    from ablate.launch import slurm

    mdir = tmp_path / "my results"
    mdir.mkdir()
    manifest = results.Manifest.create(mdir)
    cfg = OmegaConf.create({"launcher": {"slurm": {"folder": None}}})
    with pytest.raises(ConfigError, match="spaces or control characters"):
        slurm.log_folder(manifest, cfg)


def test_preflight_refuses_a_slurm_results_root_with_a_space(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(
            [
                "experiment=smoke",
                "launcher=slurm",
                f"results_root={tmp_path / 'my results'}",
                "step=V0",
            ]
        )
    err = capsys.readouterr().err
    assert e.value.code == 2 and "spaces or control characters" in err and "Traceback" not in err
    assert not list((tmp_path / "my results").glob("test_matrix_results_*")), (
        "nothing may be created"
    )


# --------------------------------------------------------------------------- Hydra's public API only

SWEEPS = [
    ["step=V0,V16", "seed=1,2"],
    ["seed=1,2", "step=V0,V16", "seed=3"],  # a repeated key: first position, last value
    ["experiment=smoke", "step=V0,V16,V17", "seed=range(1,4)", "optim.lr=0.001,0.002"],
    ["step=choice(V0,V16)", "model.dropout=0.0", "+x=1,2", "~y"],
    ["c='a,b'", "d=[1,2],[3,4]", "e={a:1,b:2}", "f=null", 'g="x y",z'],
    ["seed=range(5,1,-2)", "hydra.searchpath=['file:///x']", "h=sort(3,1,2)"],
    ["budget.box_seconds=10,20", "seed=tag(a,choice(1,2))"],
    ["seed=1,,2"],  # not the grammar
    ["optim.lr=interval(0,1)"],  # continuous: no list of jobs
    [],
]


@pytest.mark.parametrize("args", SWEEPS, ids=lambda a: " ".join(a) or "none")
def test_sweeps_expand_exactly_as_hydras_basic_sweeper(args):
    """Same job list, in the same order, as Hydra's BasicSweeper (a private class, used here only
    as the oracle), and the same cases refused."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    from ablate.compose import expand_sweeps
    from ablate.errors import ConfigError

    sweeper = pytest.importorskip("hydra._internal.core_plugins.basic_sweeper").BasicSweeper
    try:
        want = sweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]
    except HydraException:
        with pytest.raises(ConfigError) as e:
            expand_sweeps(args, multirun=True)
        assert "\n" not in str(e.value)  # one line
        if "interval" in " ".join(args):
            assert "cannot be expanded into jobs" in str(e.value)
        return
    assert expand_sweeps(args, multirun=True) == want


@pytest.mark.parametrize("config_dir", [False, True], ids=["conf", "conf+config-dir"])
def test_config_sources_see_what_hydra_sees(tmp_path, config_dir):
    """Groups, options, sources and option files as Hydra's own (private) repository has them,
    with and without a --config-dir folder on the search path."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.object_type import ObjectType

    from ablate.compose import conf_dir
    from ablate.config import register_configs
    from ablate.matrix.__main__ import searchpath_override
    from ablate.schema import ConfigSources

    overrides = []
    if config_dir:
        (tmp_path / "step").mkdir()
        (tmp_path / "step" / "V19.yaml").write_text("# @package _global_\nstep: {name: V19}\n")
        (tmp_path / "mygroup").mkdir()
        (tmp_path / "mygroup" / "a.yaml").write_text("x: 1\n")
        overrides = [searchpath_override([str(tmp_path)])]
    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            loader = GlobalHydra.instance().config_loader()
            hydras = loader._parse_overrides_and_create_caching_repo("config", overrides)[1]
            ours = ConfigSources(overrides)
            assert [(s.provider, s.path, s.scheme()) for s in ours.get_sources()] == [
                (s.provider, s.path, s.scheme()) for s in hydras.get_sources()
            ]
            groups = hydras.get_group_options("", ObjectType.GROUP)
            assert ours.get_group_options("", ObjectType.GROUP) == groups
            assert ("mygroup" in groups) == config_dir
            for group in groups:
                assert ours.get_group_options(group) == hydras.get_group_options(group)
                for option in hydras.get_group_options(group) if group != "hydra" else []:
                    a, b = (
                        ours.load_config(f"{group}/{option}"),
                        hydras.load_config(f"{group}/{option}"),
                    )
                    assert (a.path, a.header) == (b.path, b.header)
                    ours_cfg = {k: a.config[k] for k in a.config if k != "defaults"}
                    assert ours_cfg == b.config  # Hydra's repository takes the defaults list out
            assert ours.load_config("step/nosuch") is None
    finally:
        GlobalHydra.instance().clear()


def test_no_private_hydra_api_in_the_package():
    import ast
    from pathlib import Path

    src = Path(__file__).resolve().parents[2] / "src"
    private = []
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute) and node.attr.startswith("_"):
                if not node.attr.startswith("__"):
                    names = []  # our own private helpers are fine; Hydra's are checked by module
            private += [
                f"{path.relative_to(src)}: {n}"
                for n in names
                if n.split(".")[0] == "hydra" and any(p.startswith("_") for p in n.split("."))
            ]
        text = path.read_text()
        if "_parse_overrides_and_create_caching_repo" in text or "BasicSweeper" in text:
            private.append(f"{path.relative_to(src)}: a private Hydra name")
    assert not private, private
