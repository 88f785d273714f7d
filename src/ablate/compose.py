"""From a command line to a list of composed job configs.

The command line uses Hydra's override grammar (``step=V0,V16 seed=1,2 model.dropout=0.1``).
Sweeps are expanded the way Hydra's basic sweeper does (cartesian product, in the order given),
and each job is composed with Hydra's compose API against ``conf/``; only Hydra's public API is
used (the override parser, compose, the config loader's search path and config sources). We drive composition
ourselves instead of through Hydra's launcher plugin mechanism because the matrix must see every
job before any of them trains: preflight all, then create one matrix directory, then launch.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

import models
from ablate import plugins, schema
from ablate.config import (
    MatrixSettings,
    RunConfig,
    check_environment,
    choice_error,
    config_yaml,  # noqa: F401 (config_yaml: re-exported)
    register_configs,
    to_container,
    validate_run,
    validate_settings,
)
from ablate.errors import ConfigError
from ablate.results import job_name

_REPO_ROOT = Path(__file__).resolve().parents[2]


def conf_dir() -> Path:
    """The Hydra config root: $ABLATE_CONF_DIR, else ``conf/`` at the repository root."""
    env = os.environ.get("ABLATE_CONF_DIR")
    path = Path(env) if env else _REPO_ROOT / "conf"
    if not (path / "config.yaml").is_file():
        raise ConfigError(
            f"config root {path} has no config.yaml; install ablate from its repository "
            "(pip install -e .) or set ABLATE_CONF_DIR to the conf/ folder"
        )
    return path


def matrix_file(name: str) -> Path:
    """A named matrix: ``matrix/<name>.yaml`` (cwd first, then the repository), or a path."""
    candidates = [Path(name)]
    if not name.endswith((".yaml", ".yml")):
        candidates += [
            Path.cwd() / "matrix" / f"{name}.yaml",
            _REPO_ROOT / "matrix" / f"{name}.yaml",
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = matrix_names()
    guess = schema.did_you_mean(name, known)
    raise ConfigError(
        f"unknown matrix {name!r}{f' (did you mean {guess}?)' if guess else ''}; "
        f"available: {', '.join(known) or 'none'} (files in matrix/)"
    )


def matrix_names() -> list[str]:
    """Names of the matrix files in ``matrix/`` (the current directory's and the repository's)."""
    dirs = {Path.cwd() / "matrix", _REPO_ROOT / "matrix"}
    return sorted({p.stem for d in dirs for p in d.glob("*.yaml")})


_MATRIX_KEYS = {"experiment", "steps", "seeds", "overrides", "description", "tune"}


def expand_matrix_file(name: str) -> list[str]:
    """A matrix file stands for a command line; return its overrides (sweeps included)."""
    path = matrix_file(name)
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {sorted(_MATRIX_KEYS)}")
    unknown = set(spec) - _MATRIX_KEYS
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(_MATRIX_KEYS)}"
        )
    out: list[str] = []
    if spec.get("experiment"):
        out.append(f"experiment={spec['experiment']}")
    steps = spec.get("steps") or []
    if steps:
        out.append("step=" + ",".join(str(s) for s in steps))
    seeds = spec.get("seeds") or []
    if seeds:
        out.append("seed=" + ",".join(str(s) for s in seeds))
    out += [str(o) for o in spec.get("overrides") or []]
    tune = spec.get("tune")
    if tune is not None:
        if not isinstance(tune, list) or not all(isinstance(k, str) and k for k in tune):
            raise ConfigError(f"{path}: 'tune' must be a list of swept keys, e.g. [optim.lr]")
        out.append("tune=[" + ",".join(tune) + "]")
    return out


@dataclass
class JobSpec:
    """One cell of the matrix: its name, the overrides that make it, and its composed config."""

    name: str
    overrides: list[str]
    cfg: RunConfig
    swept: dict[str, str] = field(default_factory=dict)

    @property
    def step(self) -> str:
        return self.cfg.step.name

    @property
    def seed(self) -> int:
        return self.cfg.seed


def parse_overrides(args: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        raise ConfigError(schema.parse_error_message(args, e)) from None


def expand_sweeps(args: list[str], multirun: bool) -> list[list[str]]:
    """One override list per job: the cartesian product of the sweeps, in the order Hydra's basic
    sweeper gives (keys in order of first appearance, a repeated key's last value winning, the
    first key varying slowest)."""
    overrides = parse_overrides(args)
    has_sweep = any(o.is_sweep_override() for o in overrides)
    if has_sweep and not multirun:
        swept = [o.input_line or o.key_or_group for o in overrides if o.is_sweep_override()]
        raise ConfigError(
            f"{' '.join(swept)}: a list of values needs --multirun (one job per value)"
        )
    if not multirun:
        return [list(args)]
    values: dict[str, list[str]] = {}
    for o in overrides:
        key = o.get_key_element()
        if not o.is_sweep_override():
            values[key] = [f"{key}={o.get_value_element_as_str()}"]
            continue
        if not o.is_discrete_sweep():  # interval(0,1): a continuous range has no list of jobs
            kind = o.value_type.name if o.value_type is not None else "this"
            raise ConfigError(
                f"{o.input_line}: a sweep of type {kind} cannot be expanded into jobs; list the "
                f"values (key=a,b,c) or use range(start,stop,step)"
            )
        try:
            values[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        except HydraException as e:
            raise ConfigError(_first_line(e)) from None
    return [list(job) for job in itertools.product(*values.values())]


class Matrix(list[JobSpec]):
    """The jobs of one matrix (a list of JobSpec) and its one ``settings`` (MatrixSettings)."""

    def __init__(self, jobs: list[JobSpec], settings: MatrixSettings):
        super().__init__(jobs)
        self.settings = settings


def compose_job(overrides: list[str]) -> RunConfig:
    """One job's config (RunConfig) from a command line; the matrix settings on it are dropped."""
    return split_settings(compose_config(overrides))[0]


def split_settings(cfg: DictConfig) -> tuple[RunConfig, MatrixSettings]:
    """A composed root (ComposedConfig) as (the job's RunConfig, the matrix's MatrixSettings), as
    the dataclasses of ``ablate.config`` that every later stage reads (typed values, enums).

    Resolved first: an interpolation may refer across the split."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as e:  # e.g. an ${oc.env:...} interpolation that does not resolve
        raise ConfigError(_composition_message(e, {})) from None

    def part(schema: type) -> Any:
        return OmegaConf.to_object(
            OmegaConf.merge(
                OmegaConf.structured(schema), {f.name: cfg[f.name] for f in fields(schema)}
            )
        )

    return part(RunConfig), part(MatrixSettings)


def compose_config(overrides: list[str]) -> DictConfig:
    """Compose one command line (a job's keys and the matrix settings, ComposedConfig); Hydra's
    own error (e.g. the list of step options) becomes one line.

    Every override is checked first (``ablate.schema``): a group option that does not
    exist, optional groups included, and a key the schema lacks are errors that name the options
    or the nearest key, never something Hydra would skip or tell the user to add with ``+``.
    """
    check_environment()

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            repo = schema.ConfigSources(overrides)
            groups = schema.config_groups(repo)
            parsed = parse_overrides(list(overrides))
            schema.check_overrides(parsed, groups)
            chosen: dict[str, set[str]] = {}
            for o in parsed:
                value = o.value()
                if o.key_or_group in groups and isinstance(value, str):
                    chosen.setdefault(o.key_or_group, set()).add(value)
            schema.check_package_headers(repo, groups, chosen)
            try:
                cfg = compose(
                    config_name="config", overrides=list(overrides), return_hydra_config=True
                )
            except (HydraException, OmegaConfBaseException) as e:
                # Hydra names the file it was merging ("In 'step/V19': ..."); a file chosen
                # indirectly (an experiment's defaults) may have its package header misplaced.
                where = re.match(r"In '(.+)/([^/']+)'", str(e))
                if where:
                    schema.check_package_headers(repo, groups, {where.group(1): {where.group(2)}})
                    schema.check_missing_package_header(repo, where.group(1), where.group(2))
                raise ConfigError(_composition_message(e, groups)) from None
            schema.check_shadowed(repo, cfg.hydra.runtime.choices)
            schema.check_step_file(repo, cfg.hydra.runtime.choices.get("step"))
            with open_dict(
                cfg
            ):  # the choices were needed for the check above; a job's config has no hydra node
                del cfg["hydra"]
    except HydraException as e:
        raise ConfigError(_composition_message(e, {})) from None
    finally:
        GlobalHydra.instance().clear()
    OmegaConf.set_readonly(cfg, False)
    return cfg


def group_choices(
    overrides: list[str] | None = None,
) -> tuple[dict[str, list[str]], dict[str, str | None]]:
    """({group: options}, {group: default option}) of the config root, as Hydra sees it
    (``overrides``: a ``hydra.searchpath=`` override adds folders)."""

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
            groups = schema.config_groups(schema.ConfigSources(list(overrides or [])))
            cfg = compose(
                config_name="config", overrides=list(overrides or []), return_hydra_config=True
            )
            defaults = {g: cfg.hydra.runtime.choices.get(g) for g in groups}
    finally:
        GlobalHydra.instance().clear()
    return groups, defaults


def build_jobs(args: list[str], multirun: bool) -> Matrix:
    """Expand and compose every job; name each after its step and the other swept values.

    The matrix settings must come out the same for every job (a matrix has one launcher, one
    results folder, ...): a sweep that varies them is refused here."""
    job_overrides = expand_sweeps(args, multirun)
    swept_keys = _swept_keys(job_overrides)
    jobs: list[JobSpec] = []
    settings: list[MatrixSettings] = []
    for overrides in job_overrides:
        cfg, matrix = split_settings(compose_config(overrides))
        resolve_plugins(cfg)
        swept = {k: v for k, v in (_split(o) for o in overrides) if k in swept_keys}
        jobs.append(JobSpec(name="", overrides=overrides, cfg=cfg, swept=swept))
        settings.append(matrix)
    _check_one_setting(settings)
    validate_settings(settings[0])
    _name_jobs(jobs)
    for job in jobs:  # every value checked once, here, before any directory exists
        try:
            validate_run(job.cfg)
            # after resolve_plugins: the plugins' names are registered; no component is imported
            models.check_names(job.cfg.model, job.cfg.plugins)
        except (ConfigError, models.ModelConfigError) as e:
            raise ConfigError(f"{e}" + (f" (job {job.name})" if len(jobs) > 1 else "")) from None
    return Matrix(jobs, settings[0])


def _check_one_setting(settings: list[MatrixSettings]) -> None:
    values: dict[str, list[Any]] = {}
    for one in settings:
        for key, value in _flat(to_container(one)).items():
            if value not in values.setdefault(key, []):
                values[key].append(value)
    for key, seen in values.items():
        if len(seen) > 1:
            raise ConfigError(
                f"{key} is a setting of the whole matrix (one value per matrix), but this sweep gives it "
                f"{len(seen)} values ({', '.join(str(v) for v in seen)}); run one matrix per value"
            )


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resolve_plugins(cfg: RunConfig) -> None:
    """Store plugin_path absolute (jobs run elsewhere) and import the plugins here, so a missing
    module is one error line before anything runs and the preflight sees what they register."""

    if cfg.plugins:
        cfg.plugin_path = plugins.resolve_paths(cfg.plugin_path)
        plugins.load_for(cfg)


def _name_jobs(jobs: list[JobSpec]) -> None:

    for job in jobs:
        others = {k: v for k, v in job.swept.items() if k != "step"}
        job.name = job_name(job.step, others)
    seen: dict[str, int] = {}
    for job in jobs:
        seen[job.name] = seen.get(job.name, 0) + 1
    dupes = sorted(n for n, c in seen.items() if c > 1)
    if dupes:
        raise ConfigError(
            f"jobs would share a directory ({', '.join(dupes)}): two sweep values give the same step "
            "and seed; remove the duplicate values"
        )


def _swept_keys(job_overrides: list[list[str]]) -> set[str]:
    values: dict[str, set[str]] = {}
    for overrides in job_overrides:
        for o in overrides:
            k, v = _split(o)
            values.setdefault(k, set()).add(v)
    return {k for k, vs in values.items() if len(vs) > 1}


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _option_file(option: str) -> str:
    """Where Hydra found ``group/option`` (its message names only that): conf/ first, as Hydra looks
    there first; else a --config-dir folder, which the message cannot name."""
    path = conf_dir() / f"{option}.yaml"
    return str(path) if path.is_file() else f"{option}.yaml (in a --config-dir folder)"


def _composition_message(e: BaseException, groups: dict[str, list[str]]) -> str:
    """Hydra's message for a missing group option lists the options on later lines; keep them.
    An unknown key in a YAML file gets the schema's nearest key instead of Hydra's '+' hint."""

    choice = choice_error(e)  # hardware.device=gpu: the enum's values, not "Error merging override"
    if choice:
        return choice
    if isinstance(e, MissingConfigException) and e.options:
        first = _first_line(e)
        return f"{first} Available: {', '.join(sorted(e.options))}"
    text = " ".join(str(e).split())
    full_key = getattr(e, "full_key", None)
    if (
        not full_key and "ConfigKeyError" in text
    ):  # Hydra wraps it: "In 'experiment/x': ConfigKeyError ..."
        found = re.search(r"full_key: (\S+)", text)
        full_key = found.group(1) if found else None
    if (
        (isinstance(e, ConfigKeyError) or "ConfigKeyError" in text)
        and full_key
        and full_key not in schema.schema_keys()
    ):
        where = re.match(r"In '([^']+)'", text)
        prefix = f"{_option_file(where.group(1))}: " if where else ""
        return prefix + schema.unknown_key_message(str(full_key), groups)
    text = text.split(" To append to your config use +")[0]
    # OmegaConf appends "full_key: ..., object_type=..." detail; the first sentence carries the fix.
    return text.split(" full_key:")[0]
