"""Trackers are checked before any job trains: W&B online needs an API key (or offline mode), an
MLflow store must be one the installed client can open and reach. Otherwise one `error:` line and
nothing is created; without the check every job trained with its tracker switched off."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers.errors import assert_one_error_line
from helpers.tiny import TINY_MODEL

from ablate.config import TrackerConfig
from ablate.errors import ConfigError
from ablate.matrix import runner
from ablate.matrix.__main__ import main
from ablate.train.tracker_checks import check_usable

TINY = [
    "experiment=smoke",
    "step=V0",
    *TINY_MODEL,
    "preflight=false",
]


@pytest.fixture
def bare_home(tmp_path, monkeypatch) -> Path:
    """No W&B or MLflow settings of the machine's user leak into the test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(home)
    for var in (
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_BASE_URL",
        "WANDB_IDENTITY_TOKEN_FILE",
        "WANDB_CONFIG_DIR",
        "NETRC",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_ALLOW_FILE_STORE",
    ):
        monkeypatch.delenv(var, raising=False)
    return home


def _wandb(**kw) -> TrackerConfig:
    return TrackerConfig(name="wandb", **kw)


def test_wandb_online_without_a_key_is_refused(bare_home):
    pytest.importorskip("wandb")
    with pytest.raises(ConfigError, match="no W&B API key.*tracker.mode=offline"):
        check_usable(_wandb())


def test_wandb_with_a_key_or_offline_passes(bare_home, monkeypatch):
    pytest.importorskip("wandb")
    check_usable(_wandb(mode="offline"))
    check_usable(_wandb(mode="disabled"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_usable(_wandb())
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    check_usable(_wandb())
    monkeypatch.delenv("WANDB_API_KEY")
    # `wandb login` stores the key in ~/.netrc for the W&B server
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")
    (bare_home / ".netrc").write_text("machine wandb.example.org login user password " + "k" * 40)
    (bare_home / ".netrc").chmod(0o600)
    check_usable(_wandb())
    monkeypatch.setenv("WANDB_BASE_URL", "https://other.example.org")
    with pytest.raises(ConfigError, match="other.example.org"):
        check_usable(_wandb())


def test_mlflow_database_store_with_the_skinny_client_is_refused(bare_home):
    pytest.importorskip("mlflow")
    import importlib.util

    if importlib.util.find_spec("sqlalchemy") is not None:
        pytest.skip("the full mlflow package is installed: its database stores work")
    with pytest.raises(ConfigError) as e:
        check_usable(TrackerConfig(name="mlflow"))  # MLflow's default: sqlite:///mlflow.db
    msg = str(e.value)
    assert "is a database" in msg and "mlflow-skinny" in msg and "pip install mlflow" in msg
    assert "MLflow's default" in msg
    with pytest.raises(ConfigError, match="tracker.uri=postgresql://h/db is a database"):
        check_usable(TrackerConfig(name="mlflow", uri="postgresql://h/db"))
    assert not (bare_home / "mlflow.db").exists()


def test_mlflow_store_that_cannot_be_used_is_refused_and_a_usable_one_passes(
    bare_home, monkeypatch, tmp_path
):
    pytest.importorskip("mlflow")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConfigError, match=f"tracker.uri=http://127.0.0.1:{port} "):
        check_usable(TrackerConfig(name="mlflow", uri=f"http://127.0.0.1:{port}"))
    store = (tmp_path / "mlruns").as_uri()
    with pytest.raises(ConfigError, match="cannot use its tracking store"):
        check_usable(TrackerConfig(name="mlflow", uri=store))  # MLflow refuses file stores now
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_usable(TrackerConfig(name="mlflow", uri=store))


def test_the_matrix_refuses_before_creating_anything(bare_home, tmp_path, monkeypatch, capsys):
    pytest.importorskip("wandb")
    launched = []
    monkeypatch.setattr(runner, "_launch_and_report", lambda *a: launched.append(a) or 0)
    root = tmp_path / "results"
    with pytest.raises(SystemExit) as e:
        main([*TINY, "tracker=wandb", f"results_root={root}"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert err.startswith("error: tracker=wandb runs online"), err
    assert not root.exists() and launched == []
    assert main([*TINY, "tracker=wandb", "tracker.mode=offline", f"results_root={root}"]) == 0
    assert len(launched) == 1
