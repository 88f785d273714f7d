"""Every bad input is one line and exit 2, before any directory is created; damaged result files
never crash a reader; unwritable places get one line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers.errors import assert_one_error_line

from ablate import results
from ablate.matrix.__main__ import main

BASE = ["experiment=smoke", "step=V0", "budget.max_iters=2"]


def _refused(capsys, argv, root: Path) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert not root.exists(), "a directory was created for a refused run"
    return err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("budget.box_seconds=nan", "budget.box_seconds=nan must be a finite number"),
        ("budget.box_seconds=inf", "budget.box_seconds=inf must be a finite number"),
        ("budget.box_seconds=-5", "budget.box_seconds=-5"),
        ("model.block_size=0", "model.block_size=0"),
        ("optim.tokens_per_iter=0", "optim.tokens_per_iter=0"),
        ("optim.tokens_per_iter=-512", "optim.tokens_per_iter=-512"),
        ("hardware.threads=0", "hardware.threads=0"),
        (
            "tracker.name=tensorbord",
            "tracker.name='tensorbord' must be one of none, tensorboard, wandb, mlflow",
        ),
        ("tracker.mode=bogus", "tracker.mode='bogus' must be one of online, offline, disabled"),
        ("hardware.micro_batch=0", "hardware.micro_batch=0"),
        ("optim.lr=-0.001", "optim.lr=-0.001"),
        ("optim.lr=nan", "optim.lr=nan"),
        ("optim.beta2=1.5", "optim.beta2=1.5"),
        ("optim.warmup_fraction=nan", "optim.warmup_fraction=nan"),
        ("optim.min_lr=1", "optim.min_lr=1.0 must not exceed"),
        ("seed=-1", "seed=-1"),
        ("hardware.nproc_per_node=0", "hardware.nproc_per_node=0"),
        ("launcher.slurm.nodes=0", "launcher.slurm.nodes=0"),
        ("launcher.name=bogus", "launcher.name='bogus' must be one of local, slurm"),
        ("budget.grace_seconds=inf", "budget.grace_seconds=inf"),
        ("data.verify=sometimes", "data.verify='sometimes'"),
        (
            "data.source=random",
            "data.source='random' must be one of embedded, finewebedu, shards, textdir, files",
        ),
        ("budget.keep=all", "budget.keep='all' must be one of weights, checkpoint, none"),
        ("model.block_size=100000000", "more than this machine's"),
    ],
)
def test_bad_value_is_one_line_before_any_directory(override, expected, tmp_path, capsys):
    root = tmp_path / "results"
    err = _refused(capsys, [*BASE, override, f"results_root={root}"], root)
    assert expected in err


# device and precision are enums of the schema: Hydra refuses the value while composing, and the
# line names the key and the allowed values (not Hydra's "Error merging override").
@pytest.mark.parametrize(
    "override, line",
    [
        ("hardware.device=gpu", "error: hardware.device='gpu' must be one of auto, cuda, cpu"),
        (
            "hardware.precision=fp16",
            "error: hardware.precision='fp16' must be one of auto, bf16, fp32",
        ),
    ],
)
def test_a_device_or_precision_outside_the_enum_is_one_line_from_the_real_cli(
    override, line, tmp_path
):
    root = tmp_path / "results"
    r = subprocess.run(
        [sys.executable, "-m", "ablate.matrix", *BASE, override, f"results_root={root}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [line], r.stderr
    assert not root.exists()


def test_a_preset_file_with_a_bad_device_is_one_line(tmp_path, capsys):
    conf = tmp_path / "conf" / "hardware"
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("device: gpu\nprecision: fp32\n")
    root = tmp_path / "results"
    err = _refused(
        capsys,
        [*BASE, "hardware=mine", "--config-dir", str(tmp_path / "conf"), f"results_root={root}"],
        root,
    )
    assert err == "error: hardware.device='gpu' must be one of auto, cuda, cpu\n"


@pytest.mark.parametrize("value", ["abc", "", "nan", "-3"])
def test_bad_environment_variable_is_one_line(value, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ABLATE_SMOKE_SECONDS", value)
    root = tmp_path / "results"
    err = _refused(capsys, ["experiment=smoke", "step=V0", f"results_root={root}"], root)
    assert "ABLATE_SMOKE_SECONDS" in err


def test_a_model_too_big_for_this_host_is_refused_without_building_it(
    tmp_path, capsys, monkeypatch
):
    import models

    built = []
    monkeypatch.setattr(models, "build_model", lambda cfg: built.append(cfg))
    root = tmp_path / "results"
    _refused(
        capsys,
        [
            *BASE,
            "model.n_embd=768",
            "model.n_head=12",
            "model.block_size=40000000",
            f"results_root={root}",
        ],
        root,
    )
    assert built == []


def test_ctrl_c_during_preflight_exits_quietly(tmp_path, capsys, monkeypatch):
    from ablate.matrix import runner

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "preflight", interrupted)
    root = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main([*BASE, f"results_root={root}"])
    assert e.value.code == 130
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert err.startswith("error: interrupted"), err
    assert not list(root.glob("test_matrix_results_*"))


# --------------------------------------------------------------------------- data checked before training


@pytest.fixture
def prepared(tmp_path) -> Path:
    """A prepared-shards folder (meta.json with sha256 per shard), copied from the embedded corpus."""
    from ablate.data import resolve_dataset
    from ablate.data.config import DataConfig

    ds = resolve_dataset(DataConfig(source="embedded"), 50304)
    dst = tmp_path / "prep"
    shutil.copytree(ds.root, dst)
    return dst


def _overwrite_ids(shard: Path, value: int, keep_mtime: bool = False) -> None:
    st = shard.stat()
    mm = np.memmap(shard, dtype=np.uint16, mode="r+", offset=1024)
    mm[100:200] = value
    mm.flush()
    del mm
    if keep_mtime:
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_shard_overwritten_in_place_is_refused_in_preflight(prepared, tmp_path, capsys):
    _overwrite_ids(prepared / "embedded_train_000001.bin", 60000)
    root = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main([*BASE, "data=files", f"data.path={prepared}", f"results_root={root}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert (
        "preflight failed for V0" in err and "token id 60000 >= the model's vocab_size 50304" in err
    )
    assert not list(root.glob("test_matrix_results_*"))


def test_sha256_catches_in_vocabulary_damage_and_full_mode_ignores_mtime(prepared):
    from ablate.data import resolve_dataset
    from ablate.data.config import DataConfig
    from ablate.data.verify import verify_dataset
    from ablate.errors import DataError

    cfg = DataConfig(source="files", path=str(prepared))
    ds = resolve_dataset(cfg, 50304)
    first = verify_dataset(ds, 64, 50304)
    assert first.shards == 2 and first.max_seconds >= 0
    _overwrite_ids(prepared / "embedded_train_000001.bin", 7)  # valid ids, wrong content
    with pytest.raises(DataError, match="sha256 differs"):
        verify_dataset(resolve_dataset(cfg, 50304), 64, 50304)
    shutil.copy(
        Path(ds.root if False else prepared) / "embedded_val_000000.bin", prepared / "x.bin"
    )
    _overwrite_ids(prepared / "embedded_val_000000.bin", 8, keep_mtime=True)
    ds = resolve_dataset(cfg, 50304)
    with pytest.raises(DataError, match="sha256 differs"):
        verify_dataset(ds, 64, 50304, mode="full")


def test_shards_too_short_for_one_window_are_not_ready(tmp_path, capsys):
    from ablate.data.__main__ import main as data_main
    from ablate.data.shards import write_shard

    write_shard(tmp_path / "s_val_000.bin", np.arange(3000, dtype=np.uint16))
    write_shard(tmp_path / "s_train_001.bin", np.arange(50, dtype=np.uint16))
    with pytest.raises(SystemExit) as e:
        data_main(["data=shards", f"data.path={tmp_path}/s_*.bin", "data.val_windows=1"])
    assert e.value.code == 2
    out = capsys.readouterr()
    assert "ready" not in out.out and "no training shard holds block_size+1" in out.err


# --------------------------------------------------------------------------- damaged results, unwritable places


def _done_matrix(tmp_path: Path) -> Path:

    from helpers.report_factory import make_matrix, seed_jobs

    return make_matrix(tmp_path, seed_jobs())


def test_damaged_manifest_entries_are_skipped_with_a_note(tmp_path, capsys):
    from ablate.report import build

    mdir = _done_matrix(tmp_path)
    data = json.loads((mdir / results.MANIFEST).read_text())
    data["jobs"] += [{"status": "completed"}, "V99", {"name": "../../etc"}, 7]
    (mdir / results.MANIFEST).write_text(json.dumps(data))
    coll, _ = build([mdir])
    assert sum("skipped" in n and "matrix.json" in n for n in coll.notes) == 4
    # resume reads the same file: a note per bad entry, not a KeyError/TypeError
    good = [
        j
        for j in data["jobs"]
        if isinstance(j, dict) and j.get("name") in ("V0", "V16", "V17", "V18")
    ]
    data["jobs"] = good + ["V0", {"status": "completed"}]
    (mdir / results.MANIFEST).write_text(json.dumps(data))
    assert main([f"resume={mdir}"]) == 0
    out = capsys.readouterr().out
    assert (
        "note:" in out
        and "jobs[4]" in out
        and "jobs[5]" in out
        and "4 job(s) finished, 0 to run" in out
    )
    assert json.loads((mdir / results.MANIFEST).read_text())["jobs"][-2:] == [
        "V0",
        {"status": "completed"},
    ], "damaged entries are kept in the file, not dropped"
    data["jobs"] = ["V0", "V16"]  # nothing usable at all: one line, not "0/0 completed"
    (mdir / results.MANIFEST).write_text(json.dumps(data))
    with pytest.raises(SystemExit) as e:
        main([f"resume={mdir}"])
    assert e.value.code == 2 and "no usable job" in capsys.readouterr().err


def test_wrong_typed_metrics_line_is_skipped_with_a_note(tmp_path):
    path = tmp_path / results.METRICS
    path.write_text(
        '{"kind": "train", "iter": 1, "loss/train": 3.0}\n'
        '{"kind": "train", "iter": "12x", "loss/train": 2.0}\n'
        '{"kind": "eval", "iter": 2, "loss/val": "low"}\n'
        '{"kind": "train", "iter": 3, "loss/train": 1.0}\n'
    )
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 3] and len(problems) == 2
    dropped = results.truncate_metrics_after(path, 10)  # what a resume does with the file
    assert len(dropped) == 2
    assert [r["iter"] for r in results.read_metrics(path)[0]] == [1, 3]


def test_report_out_under_a_file_is_one_line(tmp_path, capsys):
    from ablate.report.__main__ import main as report_main

    mdir = _done_matrix(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        report_main([str(mdir), "--out", str(blocker / "sub"), "--no-plots"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert err.startswith("error: cannot write the report into"), err


@pytest.fixture
def readonly_matrix(tmp_path):
    """A finished matrix on a read-only tmpfs (needs permission to mount; skipped otherwise)."""
    import subprocess

    mnt = tmp_path / "ro"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        mdir = _done_matrix(mnt)
        proc = subprocess.run(
            ["mount", "-o", "remount,ro", str(mnt)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")
        yield mdir
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_results_report_elsewhere_and_resume_says_so(readonly_matrix, tmp_path, capsys):
    from ablate.report.__main__ import main as report_main

    with pytest.raises(SystemExit) as e:
        report_main([str(readonly_matrix), "--no-plots"])
    assert e.value.code == 2 and "pass --out DIR" in capsys.readouterr().err
    out = tmp_path / "elsewhere"
    report_main([str(readonly_matrix), "--out", str(out), "--no-plots"])
    assert (out / results.REPORT).is_file()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main([f"resume={readonly_matrix}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "not writable")


# With the preflight (slow: it probes and reads the data first) and without it.
@pytest.mark.parametrize("extra", [pytest.param([], marks=pytest.mark.slow), ["preflight=false"]])
def test_results_root_under_a_file_is_one_line(extra, tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    with pytest.raises(SystemExit) as e:
        main([*BASE, f"results_root={blocker}/results", *extra])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err, "results_root")


def test_a_missing_dependency_is_one_line_not_a_traceback(tmp_path):
    # `import models` failing used to end in UnboundLocalError from the handler that named it.
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from ablate.matrix.__main__ import main\n"
        "main(['experiment=smoke', '--cfg', 'job'])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ},
    )
    assert proc.returncode == 2, proc.stderr
    assert_one_error_line(proc.stderr, "torch")
    assert proc.stderr.startswith("error: cannot import what ablate needs ("), proc.stderr
