"""What a command line may say: the config groups with their options, and the schema's keys.

Hydra accepts a missing option of an ``optional`` group (``experiment=smok`` silently composes
the code defaults) and answers an unknown key with a hint to add it with ``+``. Both send a
typo into a training run, so every override is checked here before Hydra composes it: a group
choice must be one of the group's options, a key must exist in the schema (``ablate.config``),
and a near miss is named ("did you mean budget.box_seconds?"); a value must fit its key's type
(``budget.max_iters=abc`` names the key, the type and the value, where OmegaConf would say
"Error merging override"). An override the grammar cannot parse is named with how to quote it.

Groups and options come from Hydra's config sources (``ConfigSources``, built from Hydra's public
API), so every directory on its search path counts, not only ``conf/``.

Over 400 lines on purpose: the group check, the key check and the value check share one parse
of the override and one list of near misses; apart they would each reparse and disagree.
"""

from __future__ import annotations

import copy
import difflib
import enum
import functools
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Protocol, get_type_hints

import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.object_type import ObjectType
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.errors import HydraException
from hydra.plugins.config_source import ConfigResult, ConfigSource
from omegaconf import OmegaConf

from ablate.config import ComposedConfig
from ablate.errors import ConfigError
from ablate.results import RENAMED_CONFIG_KEYS

# Hydra's own groups and keys (hydra/launcher, hydra.run.dir, ...) are not ours to check.
_HYDRA_PREFIX = "hydra"

# python -m ablate.matrix resume=DIR / status=DIR / wait=DIR: commands, not config keys (the entry
# point takes them before composing); named only so that a misspelled one gets a suggestion.
COMMANDS = ("resume", "status", "wait")


class ConfigRepo(Protocol):
    """What the checks read of Hydra's config sources (ablate.compose.ConfigSources)."""

    def get_group_options(
        self, group: str, results_filter: ObjectType | None = ObjectType.CONFIG
    ) -> list[str]: ...

    def get_sources(self) -> list[ConfigSource]: ...

    def load_config(self, path: str) -> ConfigResult | None: ...


class ConfigSources:
    """Hydra's config sources as a composition with these overrides sees them: the initialized
    Hydra's search path, with the ``hydra.searchpath`` of the command line (else of the primary
    config) before the structured-config schema, as Hydra orders it. Built from Hydra's public
    API (the config loader's search path, the ConfigSource plugins); the groups, options and
    option files the override checks (ablate.schema) read from it."""

    def __init__(self, overrides: list[str]):
        loader = GlobalHydra.instance().config_loader()
        base = [(e.provider or "", e.path or "") for e in loader.get_search_path().get_path()]
        self.sources = [self._source(provider, path) for provider, path in base]
        searchpath, provider = (
            self._command_line_searchpath(overrides),
            "hydra.searchpath in command-line",
        )
        if searchpath is None:
            primary = self.load_config("config")
            found = OmegaConf.select(primary.config, "hydra.searchpath") if primary else None
            searchpath = list(found) if found is not None else None
            provider = "hydra.searchpath in main"
        if searchpath:
            schema = self.sources.pop()  # Hydra keeps the structured-config schema last
            self.sources += [self._source(provider, str(p)) for p in searchpath] + [schema]

    @staticmethod
    def _command_line_searchpath(overrides: list[str]) -> list[str] | None:
        for o in _parse([x for x in overrides if "hydra.searchpath" in x]):
            if o.get_key_element() == "hydra.searchpath":  # the first one, as Hydra reads it
                value = o.value()
                if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                    raise ConfigError(f"hydra.searchpath must be a list of strings, got {value!r}")
                return [str(p) for p in value]
        return None

    @staticmethod
    def _source(provider: str, path: str) -> ConfigSource:
        scheme = path.split("://", 1)[0] if "://" in path else "file"
        types = {
            t.scheme(): t
            for t in Plugins.instance().discover(ConfigSource)
            if issubclass(t, ConfigSource)
        }
        if scheme not in types:
            raise ConfigError(
                f"search path {path}: no config source for {scheme}:// "
                f"(known: {', '.join(sorted(types))})"
            )
        source: ConfigSource = types[scheme](provider, path)
        return source

    def get_sources(self) -> list[ConfigSource]:
        return list(self.sources)

    def get_group_options(
        self, group: str, results_filter: ObjectType | None = ObjectType.CONFIG
    ) -> list[str]:
        """The options (or sub-groups) of ``group`` over every source, sorted, once each."""
        found: set[str] = set()
        for source in self.sources:
            if source.is_group(group):
                found.update(source.list(group, results_filter))
        return sorted(found)

    def load_config(self, path: str) -> ConfigResult | None:
        """``group/option`` (or the primary config) from the first source that has it, as the
        file says (its defaults list included)."""
        for source in self.sources:
            if source.is_config(path):
                return source.load_config(path)
        return None


def _parse(args: list[str]) -> list[Override]:
    try:
        return OverridesParser.create().parse_overrides(args)
    except HydraException as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise ConfigError(lines[0] if lines else type(e).__name__) from None


def schema_keys() -> set[str]:
    """Every dotted key a command line may set, nodes included (``budget``, ``budget.box_seconds``):
    a job's (RunConfig) and the matrix settings (MatrixSettings)."""
    keys: set[str] = set()

    def walk(obj: Any, prefix: str) -> None:
        for f in fields(obj):
            key = f"{prefix}{f.name}"
            keys.add(key)
            value = getattr(obj, f.name)
            if is_dataclass(value):
                walk(value, key + ".")

    walk(ComposedConfig(), "")
    return keys


def config_groups(repo: ConfigRepo) -> dict[str, list[str]]:
    """{group: sorted options} from Hydra's config repository (inside an initialized Hydra)."""
    groups: dict[str, list[str]] = {}
    for group in _all_groups(repo):
        if group == _HYDRA_PREFIX or group.startswith(_HYDRA_PREFIX + "/"):
            continue
        groups[group] = sorted(repo.get_group_options(group))
    return groups


def _all_groups(repo: ConfigRepo, parent: str = "") -> list[str]:
    out = []
    for name in repo.get_group_options(parent, ObjectType.GROUP):
        group = f"{parent}/{name}" if parent else name
        out.append(group)
        out += _all_groups(repo, group)
    return sorted(set(out))


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to ``word`` (also matching on the last dotted part), or None.
    Case is ignored in the matching (``v16`` suggests ``V16``), never in what is accepted."""
    # A node that only prefixes the word ("budget" for "budget.foo") is no suggestion.
    candidates = sorted(c for c in set(candidates) if not word.startswith(c + "."))
    folded: dict[str, list[str]] = {}
    for c in candidates:
        folded.setdefault(c.casefold(), []).append(c)
    key = word.casefold()
    if key in folded and word not in folded[key]:
        return " or ".join(folded[key])
    close = difflib.get_close_matches(key, list(folded), n=4, cutoff=0.75)
    if close:
        top = difflib.SequenceMatcher(None, key, close[0]).ratio()
        tied = [c for c in close if difflib.SequenceMatcher(None, key, c).ratio() == top]
        return " or ".join(o for c in tied for o in folded[c])  # optim.beta1 or optim.beta2
    last = key.rsplit(".", 1)[-1]
    by_last: dict[str, list[str]] = {}
    for c in candidates:
        by_last.setdefault(c.rsplit(".", 1)[-1].casefold(), []).append(c)
    close = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.8)
    if close and len(by_last[close[0]]) == 1:
        return by_last[close[0]][0]
    return None


def unknown_key_message(key: str, groups: Iterable[str] = ()) -> str:
    if key in RENAMED_CONFIG_KEYS:  # a name from an older version: say the new one, never guess
        new, version = RENAMED_CONFIG_KEYS[key]
        return (
            f"{key} is now called {new} (renamed in ablate's results format {version}); write {new}"
        )
    guess = did_you_mean(
        key, schema_keys() | set(groups) | set(COMMANDS) | set(RENAMED_CONFIG_KEYS)
    )
    if guess:  # a near miss of an old name means its new name
        guess = " or ".join(
            f"{RENAMED_CONFIG_KEYS[g][0]} (called {g} before format {RENAMED_CONFIG_KEYS[g][1]})"
            if g in RENAMED_CONFIG_KEYS
            else g
            for g in guess.split(" or ")
        )
    return (
        f"{key} is not a config key{f'; did you mean {guess}?' if guess else ''} "
        "(python -m ablate.matrix --help lists the groups and common keys; "
        "--cfg job prints every key of a job)"
    )


def check_overrides(overrides: Iterable[Any], groups: dict[str, list[str]]) -> None:
    """Refuse a group choice that does not exist and a key the schema does not have.

    ``overrides`` are Hydra ``Override`` objects (sweeps included, so a typo in one sweep value is
    reported once, before any job is composed).
    """
    keys = schema_keys()
    for o in overrides:
        name = o.key_or_group
        if name == _HYDRA_PREFIX or name.startswith((_HYDRA_PREFIX + ".", _HYDRA_PREFIX + "/")):
            continue
        if name in groups and o.package is None:
            if o.is_delete():
                continue
            options = groups[name]
            for value in _values(o):
                if value is None:
                    raise ConfigError(
                        f"{name}=null: choose one of the {name} options "
                        f"({', '.join(options)}) or leave {name} out"
                    )
                if str(value) not in options:
                    guess = did_you_mean(str(value), options)
                    raise ConfigError(
                        f"{name}={value}: no such {name}"
                        + (f" (did you mean {guess}?)" if guess else "")
                        + f"; the {name} options are: {', '.join(options) or 'none'} (files in conf/{name}/)"
                    )
            continue
        if name in keys:
            if not o.is_delete():
                check_value_type(name, o)
            continue
        raise ConfigError(unknown_key_message(name, groups))


def _values(o: Override) -> list[Any]:
    if o.is_sweep_override():
        return list(o.sweep_string_iterator())
    value = o.value()
    return [value]


# --------------------------------------------------------------------------- value types


def field_type(key: str) -> Any:
    """The annotated type of a dotted schema key (``budget.max_iters`` -> ``int | None``)."""
    obj: Any = ComposedConfig
    kind: Any = None
    for part in key.split("."):
        hints = get_type_hints(obj if isinstance(obj, type) else type(obj))
        kind = hints[part]
        obj = _dataclass_in(kind)
    return kind


def _dataclass_in(kind: Any) -> Any:
    for k in (kind, *typing.get_args(kind)):
        if isinstance(k, type) and is_dataclass(k):
            return k
    return None


def describe_type(kind: Any) -> str:
    """What a value of this annotated type is, in words ("an integer or null")."""
    args = typing.get_args(kind)
    if args and type(None) in args and (typing.get_origin(kind) in (typing.Union, types.UnionType)):
        rest = [a for a in args if a is not type(None)]
        inner = describe_type(rest[0]) if len(rest) == 1 else " or ".join(map(describe_type, rest))
        return f"{inner} or null"
    origin = typing.get_origin(kind)
    if origin in (list, tuple):
        return (
            f"a list ([a,b]) of {describe_type(args[0]).removeprefix('a ').removeprefix('an ')}s"
            if args
            else "a list"
        )
    if origin is dict:
        return "a mapping ({key: value})"
    if kind is bool:
        return "true or false"
    if kind is int:
        return "an integer"
    if kind is float:
        return "a number"
    if kind is str:
        return "a string"
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return "one of " + ", ".join(str(m.value) for m in kind)
    if _dataclass_in(kind) is not None:
        return "a group of keys"
    return getattr(kind, "__name__", str(kind))


def check_value_type(key: str, o: Any) -> None:
    """Refuse a value the key's type cannot take (``budget.max_iters=abc``, ``hardware.compile=maybe``,
    ``budget.max_iters=2.5``), each value of a sweep included, in one line: key, expected type and
    value. OmegaConf decides, with the rules it will apply when composing (``"12"`` is an
    integer, ``yes`` is true); interpolations (``${...}``) are left to composition."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    kind = field_type(key)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return  # enums: composition names the key and its values (ablate.config.choice_error)
    values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
    for value in values:
        if isinstance(value, str) and "${" in value:
            continue
        node = copy.deepcopy(_schema_node())  # a fresh node: each value is checked alone
        try:
            OmegaConf.update(node, key, value, merge=True)
        except OmegaConfBaseException:
            shown = "null" if value is None else value
            raise ConfigError(
                f"{key}={shown!s}: {key} takes {describe_type(kind)}, not {_shown(value)}"
            ) from None


@functools.cache
def _schema_node() -> Any:
    """The schema as an OmegaConf node, built once: building it costs about 10 times a copy, and
    every typed override of every composed job is checked on one."""
    return OmegaConf.structured(ComposedConfig)


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str):
        return repr(value)
    return f"{value!r} ({type(value).__name__})"


# --------------------------------------------------------------------------- override grammar


def parse_error_message(args: list[str], error: BaseException) -> str:
    """One line for an override Hydra's grammar cannot parse: which one, and how to quote it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for arg in args:
        try:
            parser.parse_overrides([arg])
        except Exception:
            key, _, value = _printable(arg).partition("=")
            if _printable(arg) != arg:
                return (
                    f"{_printable(arg)}: a value on the command line cannot hold control "
                    "characters (a newline, a tab); remove them"
                )
            if any(ord(c) > 127 for c in value):
                return (
                    f"{arg}: Hydra's override grammar takes characters outside ASCII only inside "
                    f"quotes; write {key}='{value}'"
                )
            return (
                f"{arg}: not an override Hydra can parse ({_printable(_first(error))}); quote a value with "
                f"spaces or any of , [ ] {{ }} ( ) = ' \" : {key}='{value}'"
            )
    return _first(error)


def _printable(text: str) -> str:
    """``text`` with control characters written as escapes (a newline as \\n): one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _first(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


# --------------------------------------------------------------------------- package header

_PACKAGE_LINE = re.compile(r"^\s*#\s*@package\b")


def misplaced_package_header(text: str) -> int | None:
    """Line number (1-based) of a ``# @package`` line Hydra will not read, else None.

    Hydra reads ``# @...`` directives only from the file's leading lines (blank lines aside); any
    other line, a comment included, ends the header, and a later ``# @package _global_`` is then
    an ordinary comment: the file's keys land under its group (``step.step.name``).
    """
    in_header = True
    for i, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if in_header:
            if not stripped or re.match(r"^\s*#\s*@", stripped):
                continue
            in_header = False
        if _PACKAGE_LINE.match(stripped):
            return i
    return None


def check_package_headers(
    repo: ConfigRepo, groups: dict[str, list[str]], chosen: dict[str, set[str]] | None = None
) -> None:
    """Refuse a group option file whose ``# @package`` line is not in its header.

    ``chosen`` limits the check to those options ({group: {option}}); None checks every option.
    Only file-system config sources are read (packaged configs are ours and tested).
    """
    for source in repo.get_sources():
        if source.scheme() != "file":
            continue
        root = Path(source.path)
        for group, options in groups.items():
            for option in options:
                if chosen is not None and option not in chosen.get(group, set()):
                    continue
                for suffix in (".yaml", ".yml"):
                    path = root / group / f"{option}{suffix}"
                    if not path.is_file():
                        continue
                    try:
                        text = path.read_text(encoding="utf-8")
                    except (OSError, UnicodeDecodeError):
                        continue
                    line = misplaced_package_header(text)
                    if line is not None:
                        raise ConfigError(
                            f"{path}: '# @package' is on line {line}, where Hydra ignores it; "
                            "move it to the first line of the file (a comment before it ends the header)"
                        )


def check_missing_package_header(repo: ConfigRepo, group: str, option: str) -> None:
    """Refuse a group option file without a ``# @package`` header that sets the config's own
    top-level keys (``step:``, ``model:``, ``seed:``, as a step or experiment file does): without
    ``# @package _global_`` Hydra puts them under the group (``step.step``), and its "not a config
    key" would send the user looking for a typo instead of the missing line. Called when
    composing that file failed."""
    keys = schema_keys()
    top = {k.split(".")[0] for k in keys}
    own = {k[len(group) + 1 :].split(".")[0] for k in keys if k.startswith(f"{group}.")}
    for source in repo.get_sources():
        if source.scheme() != "file":
            continue
        for suffix in (".yaml", ".yml"):
            path = Path(source.path) / group / f"{option}{suffix}"
            try:
                text = path.read_text(encoding="utf-8")
                loaded = yaml.safe_load(text)
            except (OSError, UnicodeDecodeError, yaml.YAMLError):
                continue
            if any(_PACKAGE_LINE.match(line.strip()) for line in text.splitlines()):
                return  # a header there, misplaced or not: check_package_headers' case
            misplaced = [
                k for k in (loaded if isinstance(loaded, dict) else {}) if k in top and k not in own
            ]
            if misplaced:
                raise ConfigError(
                    f"{path}: line 1 must be '# @package _global_' (without it Hydra puts the "
                    f"file's keys under '{group}.', e.g. {group}.{misplaced[0]})"
                )
            return


# --------------------------------------------------------------------------- step files

STEP_IDENTITY = ("name", "architecture")


def check_shadowed(repo: ConfigSources, choices: Any) -> None:
    """Refuse an option the job uses that two config folders define (ablate's ``conf/`` and a
    ``--config-dir`` folder, or two of those): Hydra takes the first on its search path without
    a word, so a user's own ``step/V19.yaml`` would silently train ablate's V19."""
    for group, option in sorted((dict(choices) if choices else {}).items()):
        if not option or not isinstance(option, str) or group.split("/")[0] == _HYDRA_PREFIX:
            continue
        path = f"{group}/{option}"
        files = [
            f"{source.path.removeprefix('file://')}/{path}.yaml"
            for source in repo.get_sources()
            if source.scheme() == "file" and source.is_config(path)
        ]
        if len(files) > 1:
            raise ConfigError(
                f"{group}={option} is defined by {len(files)} config folders ({', '.join(files)}); "
                f"Hydra would silently use the first: give yours another name (e.g. "
                f"{group}/{option}_mine.yaml{' with step.name: ' + option + '_mine' if group == 'step' else ''})"
            )


def check_step_file(repo: ConfigRepo, choice: str | None) -> None:
    """Refuse a step option file that does not say which step it is.

    StepConfig's defaults are V0's name and label, so a new step file (a copy of V16.yaml with the
    ``step:`` lines left out) would otherwise train and be reported as "V0 / Baseline": a second
    baseline that is really the new model. Each step file sets ``step.name`` and
    ``step.architecture`` itself.
    """
    if not choice:
        return
    result = repo.load_config(f"step/{choice}")
    if result is None:
        return
    package = (result.header or {}).get("package")
    config: Any = result.config  # a DictConfig for a YAML mapping (a ListConfig otherwise)
    node = config.get("step") if package == "_global_" and hasattr(config, "get") else config
    missing = [f"step.{k}" for k in STEP_IDENTITY if not (hasattr(node, "keys") and k in node)]
    where = (
        f"{result.path.removeprefix('file://')}/step/{choice}.yaml"
        if result.path
        else f"step/{choice}"
    )
    if not missing and str(node["name"]) != choice:
        # the job would be named, stored and reported as the other step (and clash with it in a sweep)
        raise ConfigError(
            f"{where} sets step.name: {node['name']}, but its file is named {choice}; a step "
            f"file's step.name is its file name (set step.name: {choice}, or rename the file "
            f"to {node['name']}.yaml)"
        )
    if missing:
        raise ConfigError(
            f"{where} does not set {' and '.join(missing)}; a step file names itself "
            f"(step: {{name: {choice}, architecture: <the report's label>}}), otherwise its jobs would run "
            "under the defaults' name and label (V0, Baseline)"
        )
