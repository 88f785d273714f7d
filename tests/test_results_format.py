"""The results-directory format (src/ablate/results/): atomic writes, names, corrupt inputs,
summary.json's one definition (JobSummary) and its reading."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
import stat
import typing
from pathlib import Path

import pytest

from ablate import results
from ablate.errors import AblateError


def test_atomic_write_replaces_whole_files_and_honours_the_umask(tmp_path, monkeypatch):
    import ablate.atomic

    path = tmp_path / "sub" / "summary.json"
    results.atomic_write_json(path, {"best_val_loss": 3.5, "nan": float("nan")})
    monkeypatch.setattr(ablate.atomic, "_UMASK", 0o027)  # the umask is read once, at import
    results.atomic_write_json(path, {"best_val_loss": 3.4})
    assert json.loads(path.read_text()) == {"best_val_loss": 3.4}
    assert stat.S_IMODE(path.stat().st_mode) == 0o640  # not mkstemp's 0600
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]  # no temp file left


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "summary.json"
    results.atomic_write_json(path, {"best_val_loss": 3.5})

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        results.atomic_write_json(path, {"x": Unserialisable()})
    assert json.loads(path.read_text()) == {"best_val_loss": 3.5}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_non_finite_numbers_round_trip_as_strings(tmp_path):
    path = tmp_path / "s.json"
    results.atomic_write_json(path, {"loss": float("nan"), "best": float("inf")})
    obj = results.read_json(path)  # strict JSON: no bare NaN in the file
    assert "NaN" not in path.read_text()
    assert results.as_float(obj["best"]) == float("inf")
    assert results.as_float(obj["loss"]) != results.as_float(obj["loss"])


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"status": "comp', "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_corrupt_json_names_the_file(tmp_path, content, message):
    path = tmp_path / "summary.json"
    path.write_text(content)
    with pytest.raises(results.ResultsFormatError) as e:
        results.read_json(path)
    assert str(path) in str(e.value) and message in str(e.value)


def test_metrics_torn_last_line_and_corrupt_middle_line_are_reported_not_fatal(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with results.MetricsWriter(path) as w:
        for i in (1, 2, 3):
            w.write({"iter": i, "kind": "train", "train/loss": 5.0 - i})
    text = path.read_text().splitlines()
    path.write_text(text[0] + "\n" + "{garbage\n" + text[1] + "\n" + text[2][:7])
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 2]
    assert len(problems) == 2 and "line 2" in problems[0] and "truncated" in problems[1]


def test_truncate_metrics_after_drops_later_iterations_and_torn_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with results.MetricsWriter(path) as w:
        for i in range(1, 6):
            w.write({"iter": i})
    with open(path, "a") as f:
        f.write('{"iter": 6, "los')
    results.truncate_metrics_after(path, 3)
    records, problems = results.read_metrics(path)
    assert [r["iter"] for r in records] == [1, 2, 3] and problems == []


@pytest.mark.parametrize(
    "raw, safe",
    [
        ("V16", "V16"),
        ("../../etc/passwd", "etc-passwd"),
        ("V16 seed=2/x", "V16-seed=2-x"),
        (".hidden", "hidden"),
    ],
)
def test_names_are_sanitized_before_they_become_paths(raw, safe):
    assert results.sanitize_name(raw) == safe
    assert "/" not in results.sanitize_name(raw)


def test_a_name_with_nothing_usable_is_refused():
    with pytest.raises(AblateError, match="no usable characters"):
        results.sanitize_name("///")


def test_job_names_carry_swept_values():
    assert results.job_name("V16", {"step": "V16", "seed": 2}) == "V16_seed2"
    assert results.job_name("V0", {"optim.lr": 0.001}) == "V0_lr0.001"


def test_two_matrices_in_the_same_second_get_distinct_directories(tmp_path):
    now = dt.datetime(2026, 11, 28, 12, 0, 0)
    a = results.new_matrix_dir(tmp_path, now)
    b = results.new_matrix_dir(tmp_path, now)
    assert a.name == "test_matrix_results_20261128_120000"
    assert b != a and b.is_dir() and b.name.startswith(a.name)


def test_manifest_is_current_on_disk_and_corrupt_manifests_are_refused(tmp_path):
    m = results.Manifest.create(tmp_path, experiment="smoke")
    m.add_job("V0", ["step=V0"])
    m.update_job("V0", status=results.COMPLETED, exit_code=0)
    again = results.Manifest.load(tmp_path)
    assert again.job("V0")["status"] == results.COMPLETED and again.data["experiment"] == "smoke"
    (tmp_path / results.MANIFEST).write_text('{"jobs": 3}')
    with pytest.raises(results.ResultsFormatError, match="no 'jobs' list"):
        results.Manifest.load(tmp_path)
    with pytest.raises(results.ResultsFormatError, match="not a matrix directory"):
        results.Manifest.load(tmp_path / "..")


# --------------------------------------------------------------------------- summary.json: JobSummary

REPO = Path(__file__).resolve().parents[1]
JUNK = ["x", 7, 1.5, True, [1, "a"], {"a": 1}, "nan", 12.0]


def _section(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split(end, 1)[0]


def _documented_keys(section: str) -> set[str]:
    """Backticked names in the first column of the section's tables."""
    keys: set[str] = set()
    for line in section.splitlines():
        cells = line.split("|")
        if line.startswith("| `") and len(cells) > 2:
            keys |= set(re.findall(r"`([a-z_][a-z0-9_]*)`", cells[1]))
    return keys


def test_summary_keys_are_the_dataclass_fields_and_the_documented_keys():
    fields = [f.name for f in dataclasses.fields(results.JobSummary) if f.name != "extra"]
    assert list(results.SUMMARY_KEYS) == fields
    docs = (REPO / "docs" / "results-format.md").read_text()
    documented = _documented_keys(_section(docs, "\n## summary.json\n", "\n### causality\n"))
    assert documented == set(fields), (
        f"in the dataclass only: {sorted(set(fields) - documented)}; "
        f"documented only: {sorted(documented - set(fields))}"
    )


def test_env_keys_are_the_record_fields_and_the_documented_keys():
    docs = (REPO / "docs" / "results-format.md").read_text()
    documented = _documented_keys(_section(docs, "\n## env.json\n", "\n## identity.json\n"))
    documented -= {"git_sha", "git_dirty", "device_name"}  # early versions' flat keys (legacy)
    assert documented == set(results.ENV_KEYS), (
        f"in EnvRecord only: {sorted(set(results.ENV_KEYS) - documented)}; "
        f"documented only: {sorted(documented - set(results.ENV_KEYS))}"
    )
    record = results.EnvRecord(**{k: None for k in results.ENV_KEYS})  # type: ignore[arg-type]
    assert "previous" not in record.to_dict()  # a first start has no earlier records
    assert list(dataclasses.replace(record, previous=[{}]).to_dict()) == list(results.ENV_KEYS)
    with pytest.raises(TypeError):
        results.EnvRecord(**{k: None for k in results.ENV_KEYS}, hostnmae="x")  # type: ignore[arg-type]


def test_a_summary_key_the_dataclass_does_not_have_is_refused_when_building_one():
    with pytest.raises(TypeError):
        results.JobSummary(best_val_los=3.0)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        dataclasses.replace(results.JobSummary(), stoped_by="SIGTERM")


def _accepts(hint: object, value: object) -> bool:
    """Whether a value of this type is a valid stored value for a field typed ``hint``."""
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    kind = typing.get_origin(base[0]) or base[0]
    if kind is float:
        return type(value) in (int, float) or value == "nan"
    if kind is int:
        return type(value) is int or (type(value) is float and value.is_integer())
    return type(value) is kind


@pytest.mark.parametrize("junk", JUNK, ids=repr)
def test_every_summary_field_reads_every_kind_of_value_without_raising(junk):
    hints = typing.get_type_hints(results.JobSummary)
    for key in results.SUMMARY_KEYS:
        summary, problems = results.JobSummary.parse({key: junk}, "s.json")
        value = getattr(summary, key)
        if key == "notes":
            assert isinstance(value, list) and all(isinstance(n, str) for n in value)
            continue
        if _accepts(hints[key], junk):
            assert problems == [] and value is not None, (key, junk)
            assert _accepts(hints[key], value) and not (type(value) is float and key == "seed")
        else:
            assert value is None, (key, junk, value)
            assert len(problems) == 1 and f"'{key}'" in problems[0] and "s.json" in problems[0]


def test_summary_round_trips_and_keeps_keys_it_does_not_know(tmp_path):
    jd = results.JobDir(tmp_path)
    s = results.JobSummary(
        step="V16",
        seed=2,
        status=results.COMPLETED,
        best_val_loss=float("nan"),
        iterations=12,
        gates={"rmlp_w_rec": [0.1, -0.2]},
        notes=["resumed once"],
    )
    s.extra["from_a_newer_version"] = {"x": 1}
    jd.write_summary(s)
    data = json.loads(jd.summary.read_text())
    assert list(data) == [*results.SUMMARY_KEYS, "from_a_newer_version"]  # every key, no other
    assert data["format_version"] == results.FORMAT_VERSION and data["best_val_loss"] == "nan"
    back, problems = results.load_summary(jd.summary)
    assert problems == [] and back is not None
    assert back.extra == {"from_a_newer_version": {"x": 1}} and back.iterations == 12
    assert math.isnan(back.best_val_loss) and back.gates == s.gates and back.notes == s.notes


def test_summaries_written_by_an_older_version_read_without_problems():
    fixture = REPO / "tests" / "fixtures" / "format2"
    paths = sorted(fixture.rglob(results.SUMMARY))
    assert len(paths) == 2
    for path in paths:
        summary, problems = results.load_summary(path)
        assert problems == [] and summary is not None and summary.status == results.COMPLETED
        assert summary.format_version == 2 and summary.extra == {}


@pytest.mark.parametrize(
    "content", ['{"status": "comp', "[1, 2]", "", "\xff\xfe", "null"], ids=repr
)
def test_an_unreadable_summary_is_none_with_the_reason(tmp_path, content):
    path = tmp_path / results.SUMMARY
    path.write_bytes(content.encode("latin-1"))
    summary, problems = results.load_summary(path)
    assert summary is None and len(problems) == 1 and str(path) in problems[0]
    assert results.JobDir(tmp_path).summary_record() is None


# --------------------------------------------------------------------------- the one reader


COMPONENTS = {
    "config": {"optim.lr": 0.0006, "seed": 1, "step.name": "V16"},
    "model_code": {"models": "a" * 64, "models.reciprocal_attention": "b" * 64},
    "code": {"git_sha": "c" * 40, "src_changes": None},
    "data": {"shards": {"val.bin": "d" * 64}, "val_shard": "val.bin", "val_fingerprint": "f" * 16},
    "hardware": {"device": "cpu", "world_size": 1},
}


def _identity_record(components: dict) -> dict:
    """identity.json's content (as ablate.identity.make_record writes it)."""
    return {
        "format_version": 1,
        "identity": results.identity.digest(components),
        "components": components,
        "computed": "2026-01-31T12:00:00+00:00",
        "mixed": False,
        "previous": [],
    }


def _job(tmp_path: Path, name: str = "V16", components: dict | None = None) -> results.JobDir:
    """A whole job directory of the documented shape (a smoke-sized completed run), filled from
    an earlier run (reused.json)."""
    import yaml

    jd = results.JobDir(tmp_path / name)
    jd.path.mkdir(parents=True)
    results.atomic_write_json(jd.identity, _identity_record(components or COMPONENTS))
    results.atomic_write_json(
        jd.reused,
        results.ReusedFrom(
            source="/old/m1/V16", original="/old/m0/V16", identity="x", reused_at="t"
        ).to_dict(),
    )
    config = {
        "step": {"name": "V16", "architecture": "RA", "description": "reciprocal attention"},
        "seed": 1,
        "experiment": "smoke",
        "model": {"mlp": "rmlp", "n_embd": 32, "vocab_size": 256, "block_size": 32},
        "optim": {"warmup_iters": 10},
        "budget": {"max_iters": None, "box_seconds": 45.0},
    }
    jd.config.write_text(yaml.safe_dump(config))
    results.atomic_write_json(
        jd.env,
        {
            "git": {"sha": "ab" * 20, "dirty": False},
            "device": "cpu",
            "world_size": 1,
            "device_count": 1,
            "flops_per_token": 1e6,
            "hostname": "box1",
            "num_params": 50_000,
        },
    )
    with results.MetricsWriter(jd.metrics) as w:
        w.write({"kind": "batch", "iter": 0, "batch_iter": 0, "batch_fingerprint": "00ff"})
        w.write(
            {
                "kind": "train",
                "iter": 2,
                "tokens_seen": 256,
                "train_seconds": 1.0,
                "loss/train": 4.0,
                "throughput/tokens_per_s": 256.0,
                "memory/peak_mb": None,
            }
        )
        w.write(
            {
                "kind": "eval",
                "iter": 2,
                "tokens_seen": 256,
                "train_seconds": 1.0,
                "loss/val": 4.1,
                "flops": 2.56e8,
                "loss/val_full": 4.05,
                "gates/0/rmlp_w_rec": 0.1,
                "gates/0/ra_w_rec": [0.1, 0.2],
            }
        )
    results.write_final_eval(
        jd.final_eval,
        loss=4.05,
        window_losses=[4.0, 4.1],
        block_size=32,
        fingerprint="ab",
        iteration=2,
        tokens_seen=256,
        train_seconds=1.0,
        periodic_windows=1,
    )
    jd.write_summary(
        results.JobSummary(
            step="V16",
            architecture="RA",
            seed=1,
            status=results.COMPLETED,
            best_val_loss=4.1,
            final_val_loss=4.05,
            iterations=2,
            gates={"rmlp_w_rec": [0.1], "ra_w_rec": [[0.1, 0.2]]},
            causality=results.causality_entry({"ok": True}, {"ok": True}),
        )
    )
    jd.mark_done()
    return jd


def _paths(node: object, prefix: tuple = ()) -> list[tuple]:
    """Every key path of a JSON-like tree (lists by index), the tree's own path first."""
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


def _set(tree: object, path: tuple, value: object) -> object:
    if not path:
        return value
    *parents, last = path
    node = tree
    for key in parents:
        node = node[key]  # type: ignore[index]
    node[last] = value  # type: ignore[index]
    return tree


def test_read_job_reads_a_whole_job_with_the_right_fallbacks(tmp_path):
    jd = _job(tmp_path)
    rec = results.read_job(jd)
    assert rec.problems == [] and rec.notes == [] and rec.done and rec.source == "summary.json"
    assert rec.step() == "V16" and rec.seed() == 1 and rec.architecture == "RA"
    assert rec.final_val_loss == 4.05 and rec.val_loss == 4.05 and rec.box_seconds == 45.0
    assert rec.number("iterations") == 2.0 and rec.number("tokens_seen") == 256.0  # from metrics
    assert rec.gates == {"rmlp_w_rec": [0.1], "ra_w_rec": [[0.1, 0.2]]}
    assert rec.env.git_sha == "ab" * 20 and rec.world_size == 1 and rec.config.mlp == "rmlp"
    assert rec.metrics is not None and rec.metrics.batch_fingerprints == {0: "00ff"}
    jd.summary.unlink()  # a lost summary: the values come from metrics.jsonl
    rec = results.read_job(jd)
    assert rec.summary is None and rec.source == "metrics.jsonl"
    assert rec.number("best_val_loss") == 4.1 and rec.gates == {
        "rmlp_w_rec": [0.1],
        "ra_w_rec": [[0.1, 0.2]],
    }
    with pytest.raises(KeyError):
        rec.number("best_val_los")


def _load_lines(text: str) -> list:
    return [json.loads(line) for line in text.splitlines()]


def _dump_lines(value: object) -> str:
    lines = value if isinstance(value, list) else [value]
    return "\n".join(json.dumps(x) for x in lines) + "\n"


def _yaml_load(text: str) -> object:
    import yaml

    return yaml.safe_load(text)


def _yaml_dump(value: object) -> str:
    import yaml

    return yaml.safe_dump(value)


_FORMATS = {
    "config": (_yaml_load, _yaml_dump),
    "env": (json.loads, json.dumps),
    "summary": (json.loads, json.dumps),
    "final_eval": (json.loads, json.dumps),
    "metrics": (_load_lines, _dump_lines),
    "identity": (json.loads, json.dumps),
    "reused": (json.loads, json.dumps),
}


@pytest.mark.parametrize("file", list(_FORMATS))
def test_read_job_never_raises_on_any_value_anywhere_in_any_file(tmp_path, file):
    """Every value at every key path of each file (the file's whole content included) replaced
    by every kind of JSON value: the reader returns, in every mode."""
    jd = _job(tmp_path)
    path = getattr(jd, file)
    original = path.read_text()
    load, dump = _FORMATS[file]
    tree = load(original)
    for key_path in _paths(tree):
        for junk in [*JUNK, None, "", [[[]]], -1]:
            path.write_text(dump(_set(load(original), key_path, junk)))
            for mode in ("report", "progress", "summary", "index"):
                rec = results.read_job(jd, mode)
                assert isinstance(rec, results.JobRecord)
                rec.identity_differences(rec), rec.trained_in  # noqa: B018
            rec.step(), rec.seed(), rec.architecture, rec.val_loss, rec.source  # noqa: B018
            for name in ("iterations", "train_seconds", "tokens_per_s", "best_val_loss"):
                assert rec.number(name) is None or isinstance(rec.number(name), float)
    path.write_text(original)
    rec = results.read_job(jd)
    assert rec.problems == [] and rec.notes == [], "the untouched job reads without a problem"


def test_read_job_gives_the_model_size_and_every_config_value_by_dotted_key(tmp_path):
    """What the report's axes and model sizes read (report/axes.py, report/sizes.py)."""
    rec = results.read_job(_job(tmp_path))
    assert rec.env.num_params == 50_000
    assert rec.non_embedding_params == 50_000 - (256 + 32) * 32  # less token + position embeddings
    values = rec.config.values
    assert values["optim.warmup_iters"] == 10 and values["model.n_embd"] == 32
    assert values["budget.max_iters"] is None and values["step.name"] == "V16"
    assert "model" not in values  # scalars only
    jd = results.JobDir(tmp_path / "V16")
    env = results.read_json(jd.env)
    del env["num_params"]
    results.atomic_write_json(jd.env, env)
    assert results.read_job(jd).non_embedding_params is None


@pytest.mark.parametrize(
    "file, path, fact",
    [
        ("config", ("step", "architecture"), lambda r: r.config.architecture),
        ("config", ("step", "description"), lambda r: r.config.description),
        ("config", ("seed",), lambda r: r.config.seed),
        ("config", ("experiment",), lambda r: r.config.experiment),
        ("config", ("model", "mlp"), lambda r: r.config.mlp),
        ("config", ("optim", "warmup_iters"), lambda r: r.config.warmup_iters),
        ("config", ("budget", "box_seconds"), lambda r: r.config.box_seconds),
        ("config", ("budget",), lambda r: r.config.box_seconds),  # a whole section
        ("env", ("world_size",), lambda r: r.env.world_size),
        ("env", ("device",), lambda r: r.env.device),
        ("env", ("flops_per_token",), lambda r: r.env.flops_per_token),
        ("config", ("model", "n_embd"), lambda r: r.config.n_embd),
        ("config", ("model", "vocab_size"), lambda r: r.config.vocab_size),
        ("config", ("model", "block_size"), lambda r: r.config.block_size),
        ("env", ("num_params",), lambda r: r.env.num_params),
        ("env", ("git", "sha"), lambda r: r.env.git_sha),
        ("env", ("hostname",), lambda r: r.env.hostname),
    ],
)
def test_a_config_or_env_fact_of_the_wrong_type_is_unknown_with_one_note(
    tmp_path, file, path, fact
):
    jd = _job(tmp_path)
    load, dump = _FORMATS[file]
    target = getattr(jd, file)
    junk = 5 if path == ("budget",) else {"not": "right"}
    target.write_text(dump(_set(load(target.read_text()), path, junk)))
    rec = results.read_job(jd)
    assert fact(rec) is None
    assert len(rec.problems) == 1 and str(target) in rec.problems[0]
    assert f"{'.'.join(path[-2:]) if path[0] == 'git' else path[-1]!r}" in rec.problems[0]
    assert repr(junk) in rec.problems[0]


# --------------------------------------------------------------------------- identity and reuse


def test_read_job_gives_the_run_identity_and_where_a_reused_job_came_from(tmp_path):
    jd = _job(tmp_path)
    for mode in ("report", "index"):
        rec = results.read_job(jd, mode)
        assert rec.problems == [] and rec.env.hostname == "box1"
        ident = rec.run_identity
        assert ident is not None and ident.digest == results.identity.digest(COMPONENTS)
        assert ident.components == COMPONENTS and not ident.mixed and ident.previous == ()
        assert rec.reused == results.ReusedFrom("/old/m1/V16", "/old/m0/V16", "x", "t")
        assert rec.trained_in == Path("/old/m0/V16")
    index = results.read_job(jd, "index")  # the runs index: no metrics.jsonl, no final eval
    assert index.metrics is None and index.final_eval is None and index.config is not None
    for mode in ("progress", "summary"):  # read every second: identity not needed there
        rec = results.read_job(jd, mode)
        assert rec.run_identity is None and rec.reused is None
    jd.identity.unlink()
    jd.reused.unlink()
    rec = results.read_job(jd)
    assert rec.problems == [] and rec.run_identity is None and rec.reused is None
    assert rec.trained_in == jd.path


def test_two_jobs_name_the_inputs_their_identities_do_not_share(tmp_path):
    other = json.loads(json.dumps(COMPONENTS))
    other["config"]["optim.lr"] = 0.001
    other["model_code"]["models.reciprocal_attention"] = "e" * 64
    other["hardware"] = {"device": "NVIDIA A10G", "world_size": 4}
    a = results.read_job(_job(tmp_path, "a"))
    b = results.read_job(_job(tmp_path, "b", other))
    same = results.read_job(_job(tmp_path, "same"))
    assert a.identity_differences(same) == [] and a.run_identity == same.run_identity
    diffs = a.identity_differences(b)
    assert diffs is not None
    assert [(d.component, d.key, d.a, d.b) for d in diffs] == [
        ("config", "optim.lr", 0.0006, 0.001),
        ("model_code", "models.reciprocal_attention", "b" * 64, "e" * 64),
        ("hardware", "class (device x world size)", COMPONENTS["hardware"], other["hardware"]),
    ]
    assert a.run_identity is not None and b.run_identity is not None
    assert a.run_identity.describe_differences(b.run_identity) == (
        "config keys: optim.lr (0.0006 vs 0.001); model files: models.reciprocal_attention; "
        'hardware: class (device x world size) ({"device":"cpu","world_size":1} vs '
        '{"device":"NVIDIA A10G","world_size":4})'
    )
    b.jd.identity.unlink()  # a run from before identities: nothing can be said
    assert a.identity_differences(results.read_job(b.jd)) is None


@pytest.mark.parametrize(
    "file, text",
    [
        ("identity", "{not json"),
        ("identity", "[]"),
        ("reused", '{"from": 3}'),
        ("reused", "\x00\xff"),
    ],
)
def test_a_damaged_identity_or_reused_file_is_one_problem_and_no_value(tmp_path, file, text):
    jd = _job(tmp_path)
    getattr(jd, file).write_text(text)
    rec = results.read_job(jd)
    assert getattr(rec, "run_identity" if file == "identity" else "reused") is None
    assert len(rec.problems) == 1 and str(getattr(jd, file)) in rec.problems[0]


def test_an_identity_edited_by_hand_is_not_trusted(tmp_path):
    jd = _job(tmp_path)
    record = json.loads(jd.identity.read_text())
    record["components"]["config"]["optim.lr"] = 0.001  # its digest left as it was
    jd.identity.write_text(json.dumps(record))
    rec = results.read_job(jd)
    assert rec.run_identity is None
    assert len(rec.problems) == 1 and "not the hash of its components" in rec.problems[0]
