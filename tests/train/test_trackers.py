"""Trackers get exactly metrics.jsonl's values, read back from their own files, with no network;
a tracker that breaks mid-run costs neither the job nor a metrics line."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from helpers.train_helpers import make_job, records, run_cli, summary

from ablate.train import run_job, trackers

GATES = {"model__attention": "ra", "model__mlp": "rmlp"}  # per-layer (and per-head) gate values too


def expected(job: Path) -> dict[tuple[str, int], float]:
    """What every tracker must hold: (key, iter) -> value, for every numeric value in metrics.jsonl."""
    out: dict[tuple[str, int], float] = {}
    for rec in records(job):
        for key, value in trackers.values(rec):
            out[(key, int(rec["iter"]))] = value
    return out


def assert_same(got: dict[tuple[str, int], float], job: Path) -> None:
    want = expected(job)
    assert any(k.startswith("gates/") for k, _ in want) and any(k == "loss/val" for k, _ in want)
    assert set(got) == set(want), (
        sorted(set(want) - set(got))[:5],
        sorted(set(got) - set(want))[:5],
    )
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=1e-6, abs_tol=1e-9), (key, got[key], value)


def _matrix_job(tmp_path: Path, **overrides) -> Path:
    return make_job(
        tmp_path / "test_matrix_results_20260101_000000",
        "V16",
        step__name="V16",
        **GATES,
        **overrides,
    )


@pytest.mark.slow
def test_tensorboard_event_files_equal_metrics_from_rank_0_only(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job = _matrix_job(tmp_path, tracker__name="tensorboard", optim__tokens_per_iter=128)
    proc = run_cli(job, nproc=2, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = job.parent / "tensorboard" / "V16"
    assert len(list(run_dir.glob("events.out.tfevents.*"))) == 1, (
        "only rank 0 streams to the tracker"
    )
    assert [p.name for p in (job.parent / "tensorboard").iterdir()] == ["V16"]
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    got = {(tag, e.step): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert_same(got, job)
    text = {
        tag: acc.Tensors(tag)[0].tensor_proto.string_val[0].decode()
        for tag in acc.Tags()["tensors"]
    }
    assert (
        "step=V16 seed=1" in text["tags/text_summary"]
        and "attention: ra" in text["config/text_summary"]
    )


def _wandb_records(path: Path):
    """Records of a W&B transaction log (.wandb: LevelDB log format, 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    ident, magic, version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, (ident, magic)
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            rec = wandb_internal_pb2.Record()
            rec.ParseFromString(pending)
            yield rec
            pending = b""


@pytest.mark.slow
def test_wandb_offline_run_files_equal_metrics(tmp_path, monkeypatch):
    for var, sub in (
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
    ):
        monkeypatch.setenv(var, str(tmp_path / sub))
    monkeypatch.setenv("WANDB_SILENT", "true")
    job = _matrix_job(tmp_path, tracker__name="wandb", tracker__mode="offline")
    s = run_job(job)
    assert s["status"] == "completed" and not s["notes"], s["notes"]
    [log] = list((job.parent / "wandb").glob("offline-run-*/run-*.wandb"))
    got, run, config = {}, None, {}
    for rec in _wandb_records(log):
        which = rec.WhichOneof("record_type")
        if which == "history":
            items = {
                (i.key or "/".join(i.nested_key)): json.loads(i.value_json)
                for i in rec.history.item
            }
            step = items.pop("iter")  # the x-axis; W&B's _step counts log calls
            assert (step, "iter") not in got
            got.update({(k, step): v for k, v in items.items() if not k.startswith("_")})
        elif which == "run":
            run = rec.run
            config.update(
                {
                    u.key or "/".join(u.nested_key): json.loads(u.value_json)
                    for u in rec.run.config.update
                }
            )
        elif which == "config":
            config.update(
                {
                    u.key or "/".join(u.nested_key): json.loads(u.value_json)
                    for u in rec.config.update
                }
            )
    assert_same(got, job)
    assert run.run_group == "test_matrix_results_20260101_000000" and run.display_name == "V16"
    assert set(run.tags) == {"step:V16", "seed:1"}
    assert config["model"]["attention"] == "ra" and config["seed"] == 1


@pytest.mark.slow
def test_mlflow_local_file_store_equals_metrics(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = (tmp_path / "mlruns").as_uri()
    job = _matrix_job(tmp_path, tracker__name="mlflow", tracker__uri=uri)
    s = run_job(job)
    assert s["status"] == "completed" and not s["notes"], s["notes"]
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("test_matrix_results_20260101_000000")
    [run] = client.search_runs([exp.experiment_id])
    assert run.info.run_name == "V16" and run.info.status == "FINISHED"
    assert run.data.tags["step"] == "V16" and run.data.tags["seed"] == "1"
    assert run.data.params["model.attention"] == "ra"
    got = {
        (key, m.step): m.value
        for key in run.data.metrics
        for m in client.get_metric_history(run.info.run_id, key)
    }
    assert_same(got, job)


class _Boom(OSError):
    pass


def test_a_tracker_that_raises_mid_run_costs_no_metrics(tmp_path, monkeypatch):
    calls = []

    class Flaky(trackers.Tracker):
        def __init__(self, *a, **k):
            pass

        def log(self, step, vals):
            calls.append(step)
            if step >= 5:
                raise _Boom(28, "No space left on device")

    monkeypatch.setattr(trackers, "TensorBoardTracker", Flaky)
    monkeypatch.setattr(trackers, "check_installed", lambda name: None)
    job = make_job(tmp_path, "V0", tracker__name="tensorboard")
    s = run_job(job)
    assert s["status"] == "completed" and s["exit_code"] == 0
    assert [r["iter"] for r in records(job, "train")] == list(
        range(1, 13)
    )  # every line, after the failure too
    assert [r["iter"] for r in records(job, "eval")] == [6, 12]
    assert max(calls) == 5, "a failed tracker is switched off, not retried every iteration"
    assert any(
        "tracker tensorboard failed at iteration 5" in n and "No space left" in n
        for n in summary(job)["notes"]
    )
    assert "tracker tensorboard failed" in (job / "train.log").read_text()


def test_a_tracker_that_cannot_start_costs_nothing(tmp_path, monkeypatch):
    def broken(*a, **k):
        raise ConnectionError("server down")

    monkeypatch.setattr(trackers, "MlflowTracker", broken)
    monkeypatch.setattr(trackers, "check_installed", lambda name: None)
    job = make_job(tmp_path, "V0", tracker__name="mlflow", budget__max_iters=4)
    s = run_job(job)
    assert s["status"] == "completed" and len(records(job, "train")) == 4
    assert any(
        "tracker mlflow failed at start (ConnectionError: server down)" in n for n in s["notes"]
    )


def test_a_tracker_not_installed_is_one_line_before_any_job(tmp_path, monkeypatch, capsys):
    from ablate.matrix.__main__ import main

    monkeypatch.setitem(trackers.PACKAGES, "wandb", "wandb_is_not_installed_here")
    with pytest.raises(SystemExit) as e:
        main(
            [
                "experiment=smoke",
                "tracker=wandb",
                "step=V0,V16",
                "--multirun",
                f"results_root={tmp_path}",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2
    assert err == [
        "error: tracker=wandb needs the wandb_is_not_installed_here package, which is not installed: "
        "pip install -e '.[wandb]' (or tracker=none)"
    ]
    assert not list(tmp_path.glob("test_matrix_results_*"))


def test_tracker_group_lists_its_options(tmp_path, capsys):
    from ablate.matrix.__main__ import main

    with pytest.raises(SystemExit):
        main(["experiment=smoke", "tracker=tensorbord", f"results_root={tmp_path}"])
    err = capsys.readouterr().err
    assert "mlflow" in err and "tensorboard" in err and "wandb" in err and "none" in err


def test_a_hanging_tracker_never_stalls_training(tmp_path, monkeypatch):
    release = __import__("threading").Event()

    class Hangs(trackers.Tracker):
        def __init__(self, *a, **k):
            pass

        def log(self, step, vals):
            release.wait(60)  # a tracking server that does not answer

    monkeypatch.setattr(trackers, "TensorBoardTracker", Hangs)
    monkeypatch.setattr(trackers, "check_installed", lambda name: None)
    monkeypatch.setattr(trackers.TrackedMetrics, "WAIT_S", 0.2)
    job = make_job(tmp_path, "V0", tracker__name="tensorboard")
    try:
        s = run_job(job)
    finally:
        release.set()
    assert s["status"] == "completed"
    assert [r["iter"] for r in records(job, "train")] == list(range(1, 13))
    assert any("tracker tensorboard did not keep up" in n for n in s["notes"])
