"""Whether a job's tracker can start, checked by the matrix before any job trains (a run and
``resume=``): installed; W&B online with an API key (or offline/disabled); an MLflow store that the
installed client can open and that answers. Without these checks each job would train with its
tracker switched off (``ablate.train.trackers`` never lets a tracker cost a result)."""

from __future__ import annotations

import importlib.util
import netrc
import os
from pathlib import Path
from urllib.parse import urlsplit

from ablate.config import TrackerConfig
from ablate.errors import ConfigError
from ablate.train.trackers import check_installed


def check_trackers(trackers: list[TrackerConfig]) -> None:
    """:func:`check_usable` once per distinct tracker setting of a matrix's jobs."""
    seen: set[tuple[str, str | None, str | None]] = set()
    for t in trackers:
        key = (t.name, t.mode, t.uri)
        if key not in seen:
            seen.add(key)
            check_usable(t)


def check_usable(tracker: TrackerConfig) -> None:
    """One line, before any job starts, when a job's tracker could not start: not installed; W&B
    online without an API key; an MLflow store the installed client cannot open or reach.
    (Without this check each job would train with its tracker switched off.) ``tracker`` is a
    job's TrackerConfig."""
    check_installed(tracker.name)
    if tracker.name == "wandb":
        _check_wandb(tracker)
    elif tracker.name == "mlflow":
        _check_mlflow(tracker)


def _wandb_settings() -> tuple[str, str, str | None]:
    """(mode, server URL, API key from W&B's settings files) as W&B itself will resolve them
    from its environment variables and settings files (``wandb offline``, ``wandb login --host``)."""
    try:
        import wandb

        s = wandb.Settings()
        s.update_from_system_settings()
        s.update_from_env_vars(dict(os.environ))
        return str(s.mode), str(s.base_url), s.api_key
    except Exception:  # a W&B version without these: its documented environment variables
        mode = os.environ.get("WANDB_MODE") or "online"
        return mode, os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai", None


def _netrc_has(url: str) -> bool:
    """Whether ~/.netrc (or $NETRC) holds credentials for the W&B server at ``url``."""
    hosts = {urlsplit(url).netloc}
    try:
        from wandb.sdk.lib import urls

        hosts.add(urlsplit(urls.forge_upstream_url(url)).netloc)
    except Exception:
        pass
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        found = netrc.netrc(str(path))
    except (OSError, netrc.NetrcParseError):
        return False
    return any(h and found.authenticators(h) for h in hosts)


def _check_wandb(tracker: TrackerConfig) -> None:
    mode, url, settings_key = _wandb_settings()
    mode = tracker.mode or mode
    if mode != "online":  # offline, disabled (or W&B's old dryrun): no server, no key
        return
    if (
        os.environ.get("WANDB_API_KEY")
        or os.environ.get("WANDB_IDENTITY_TOKEN_FILE")
        or settings_key
        or _netrc_has(url)
    ):
        return
    raise ConfigError(
        f"tracker=wandb runs online (tracker.mode / $WANDB_MODE) but finds no W&B API key for {url} "
        "($WANDB_API_KEY, or `wandb login`, which stores it in ~/.netrc); log in, or set "
        "tracker.mode=offline (runs are kept in <matrix dir>/wandb for `wandb sync`), or tracker=none"
    )


_DB_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


def _check_mlflow(tracker: TrackerConfig) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracker.uri or mlflow.get_tracking_uri()
    where = (
        f"tracker.uri={uri}"
        if tracker.uri
        else f"{uri} ($MLFLOW_TRACKING_URI)"
        if os.environ.get("MLFLOW_TRACKING_URI")
        else f"{uri} (MLflow's default: tracker.uri and $MLFLOW_TRACKING_URI are unset)"
    )
    scheme = urlsplit(uri).scheme.split("+")[0]
    if scheme in _DB_SCHEMES and importlib.util.find_spec("sqlalchemy") is None:
        raise ConfigError(
            f"tracker=mlflow: its tracking store {where} is a database, which the installed MLflow "
            "client cannot open (mlflow-skinny, from .[mlflow], has no database stores): "
            "pip install mlflow (the full package), or run an MLflow server and set "
            "tracker.uri=http://HOST:5000, or tracker=none"
        )
    # One request, no retries: a server that is down is reported now, not after minutes of them.
    saved = {k: os.environ.get(k) for k in _MLFLOW_QUICK}
    os.environ.update(_MLFLOW_QUICK)
    try:
        MlflowClient(tracking_uri=uri).search_experiments(max_results=1)
    except Exception as e:
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(
            f"tracker=mlflow cannot use its tracking store {where} ({type(e).__name__}: {msg}); "
            "fix the store or set tracker.uri, or tracker=none"
        ) from None
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_MLFLOW_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
