"""The config is the dataclasses at run time: what the trainer reads is a RunConfig (not a
DictConfig), its choices are enums that still read, compare, print and serialize as the plain
strings of config.yaml, and a stored config.yaml with a value outside an enum is one line."""

from __future__ import annotations

import json

import pytest
from helpers.train_helpers import make_job, run_cli, summary
from omegaconf import DictConfig

from ablate.config import (
    BudgetConfig,
    Device,
    HardwareConfig,
    Keep,
    Precision,
    RunConfig,
    config_yaml,
    load_job_config,
    to_container,
)
from ablate.errors import ConfigError
from ablate.train import run_job, trainer


def test_the_trainer_receives_a_run_config(tmp_path, monkeypatch):
    seen = []
    train = trainer.Trainer.train

    def spy(self):
        seen.append(self.cfg)
        return train(self)

    monkeypatch.setattr(trainer.Trainer, "train", spy)
    job = make_job(tmp_path, budget__max_iters=2, budget__eval_interval=2)
    assert run_job(job)["status"] == "completed"
    (cfg,) = seen
    assert isinstance(cfg, RunConfig) and not isinstance(cfg, DictConfig)
    assert isinstance(cfg.hardware, HardwareConfig) and isinstance(cfg.budget, BudgetConfig)
    assert cfg.hardware.device is Device.cpu and cfg.hardware.precision is Precision.auto
    assert cfg.budget.keep is Keep.weights
    assert cfg.budget.max_iters == 2 and isinstance(cfg.optim.lr, float)
    s = summary(job)
    assert s["precision"] == "fp32" and s["max_iters"] == 2 and s["box_seconds"] is None


def test_enum_values_read_and_write_as_their_plain_strings():
    d = Device.cuda
    assert d == "cuda" and "cuda" == d and d in ("auto", "cuda") and d != "cpu"
    assert str(d) == "cuda" and f"{d}" == "cuda" and f"{d:>5}" == " cuda"
    assert json.dumps({"device": d}) == '{"device": "cuda"}'
    cfg = RunConfig(hardware=HardwareConfig(device=Device.cuda, precision=Precision.bf16))
    text = config_yaml(cfg)
    assert (
        "  device: cuda\n" in text and "  precision: bf16\n" in text and "  keep: weights\n" in text
    )
    assert "Device" not in text and "!!" not in text
    assert (
        to_container(cfg.hardware)["device"] == "cuda"
        and type(to_container(cfg.hardware)["device"]) is str
    )


def test_a_stored_config_with_plain_strings_loads_as_enums(tmp_path):
    job = make_job(tmp_path, hardware__precision="fp32", budget__keep="none")
    text = (job / "config.yaml").read_text()
    assert "device: cpu" in text and "precision: fp32" in text and "keep: none" in text
    cfg = load_job_config(job / "config.yaml")
    assert cfg.hardware.device is Device.cpu and cfg.hardware.precision is Precision.fp32
    assert cfg.budget.keep is Keep.none
    assert config_yaml(cfg) == config_yaml(load_job_config(job / "config.yaml"))


@pytest.mark.parametrize(
    "key, bad, line",
    [
        ("device: cpu", "device: gpu", "hardware.device='gpu' must be one of auto, cuda, cpu"),
        (
            "precision: auto",
            "precision: fp16",
            "hardware.precision='fp16' must be one of auto, bf16, fp32",
        ),
    ],
)
def test_a_bad_enum_in_a_stored_config_is_refused_with_one_line(tmp_path, key, bad, line):
    job = make_job(tmp_path)
    path = job / "config.yaml"
    assert key in path.read_text()
    path.write_text(path.read_text().replace(key, bad))
    with pytest.raises(ConfigError) as e:
        load_job_config(path)
    assert str(e.value) == f"{path}: {line}"


def test_the_trainer_cli_refuses_a_bad_enum_in_config_yaml_with_one_line(tmp_path):
    job = make_job(tmp_path)
    path = job / "config.yaml"
    path.write_text(path.read_text().replace("device: cpu", "device: gpu"))
    r = run_cli(job)
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.strip()]
    assert errors == [f"error: {path}: hardware.device='gpu' must be one of auto, cuda, cpu"], (
        r.stderr
    )
