"""identity.json as a file a user can touch: every kind of junk is a named problem, never an
exception and never a trusted identity; and the comparison names what differs."""

from __future__ import annotations

import json

import pytest

from ablate import identity, results

COMPS = {
    "config": {"optim.lr": 0.0006, "seed": 1, "step.name": "V0"},
    "model_code": {"models": "a" * 64, "models.gpt2": "b" * 64},
    "code": {"git_sha": "c" * 40, "src_changes": None},
    "data": {
        "shards": {"val.bin": "d" * 64, "train1.bin": "e" * 64},
        "val_shard": "val.bin",
        "val_fingerprint": "f" * 16,
    },
    "hardware": {"device": "NVIDIA A10G", "world_size": 4},
}


def _write(tmp_path, text: str | bytes) -> results.JobDir:
    jd = results.JobDir(tmp_path / "job")
    jd.path.mkdir(exist_ok=True)
    (jd.identity.write_bytes if isinstance(text, bytes) else jd.identity.write_text)(text)
    return jd


def test_a_whole_record_reads_back():
    rec = identity.make_record(COMPS)
    assert identity.check_record(json.loads(json.dumps(rec))) is None
    assert rec["identity"] == identity.digest(COMPS)


def _edited(**change):
    rec = identity.make_record(COMPS)
    rec.update(change)
    return json.dumps(rec)


def _component_edited():
    rec = identity.make_record(COMPS)
    rec["components"]["config"]["optim.lr"] = 0.001  # edited by hand, digest left as it was
    return json.dumps(rec)


def _component_dropped():
    rec = identity.make_record(COMPS)
    del rec["components"]["data"]
    return json.dumps(rec)


JUNK = {
    "empty": "",
    "not json": "{identity: nope",
    "torn": json.dumps(identity.make_record(COMPS))[:-40],
    "a list": "[1, 2]",
    "a string": '"x"',
    "binary": b"\x00\xff\xfe\x89PNG",
    "no identity": _edited(identity=None),
    "short identity": _edited(identity="abc"),
    "components not an object": _edited(components=[1]),
    "a component missing": _component_dropped(),
    "a component edited": _component_edited(),
    "digest of other components": _edited(identity=identity.digest({**COMPS, "hardware": None})),
}


@pytest.mark.parametrize("kind", sorted(JUNK))
def test_junk_identity_json_is_a_problem_never_an_identity(tmp_path, kind):
    jd = _write(tmp_path, JUNK[kind])
    record, problem = identity.read_identity(jd)
    assert record is None
    assert problem and str(jd.identity) in problem


def test_a_run_without_identity_json_has_none_and_no_problem(tmp_path):
    (tmp_path / "job").mkdir()
    assert identity.read_identity(results.JobDir(tmp_path / "job")) == (None, None)


def test_differences_name_each_component():
    a = identity.make_record(COMPS)
    cases = {
        "config": ({**COMPS, "config": {**COMPS["config"], "optim.lr": 0.001}}, "optim.lr"),
        "model_code": (
            {**COMPS, "model_code": {**COMPS["model_code"], "models.gpt2": "9" * 64}},
            "models.gpt2",
        ),
        "code": ({**COMPS, "code": {"git_sha": "1" * 40, "src_changes": None}}, "git_sha"),
        "data": (
            {
                **COMPS,
                "data": {
                    **COMPS["data"],
                    "shards": {**COMPS["data"]["shards"], "train1.bin": "0" * 64},
                },
            },
            "shard train1.bin",
        ),
        "hardware": (
            {**COMPS, "hardware": {"device": "NVIDIA H100", "world_size": 4}},
            "class (device x world size)",
        ),
    }
    for component, (comps, key) in cases.items():
        b = identity.make_record(comps)
        assert a["identity"] != b["identity"]
        diffs = identity.differences(a, b)
        assert [(d.component, d.key) for d in diffs] == [(component, key)]
        line = identity.describe_differences(diffs)
        assert line.startswith(identity.COMPONENT_NAMES[component])
    assert identity.differences(a, identity.make_record(dict(COMPS))) == []
    assert identity.describe_differences([]) == "same identity"
    both = identity.make_record(
        {**COMPS, "hardware": None, "config": {**COMPS["config"], "seed": 2}}
    )
    assert identity.describe_differences(identity.differences(a, both)) == (
        "config keys: seed (1 vs 2); hardware: class (device x world size) "
        '({"device":"NVIDIA A10G","world_size":4} vs absent)'
    )


def test_a_resume_under_another_identity_marks_the_run_mixed():
    a = identity.make_record(COMPS)
    assert identity.merge_start(None, a) == a
    same = identity.merge_start(a, identity.make_record(COMPS))
    assert not same["mixed"] and same["previous"] == []
    b = identity.make_record({**COMPS, "code": {"git_sha": "1" * 40, "src_changes": None}})
    mixed = identity.merge_start(a, b)
    assert mixed["mixed"] and mixed["previous"][0]["identity"] == a["identity"]
    # Back to the first identity later: still mixed (it trained under two).
    assert identity.merge_start(mixed, identity.make_record(COMPS))["mixed"]


def test_two_job_directories_are_compared_by_their_stored_identities(tmp_path):
    dirs = []
    for name, comps in (
        ("a", COMPS),
        ("b", {**COMPS, "code": {"git_sha": "1" * 40, "src_changes": None}}),
    ):
        jd = results.JobDir(tmp_path / name)
        jd.path.mkdir()
        results.atomic_write_json(jd.identity, identity.make_record(comps))
        dirs.append(jd)
    diffs, why = identity.job_differences(*dirs)
    assert why is None and [(d.component, d.key) for d in diffs] == [("code", "git_sha")]
    assert identity.job_differences(dirs[0], dirs[0]) == ([], None)
    (tmp_path / "old").mkdir()
    diffs, why = identity.job_differences(dirs[0], results.JobDir(tmp_path / "old"))
    assert diffs is None and "no identity.json" in why
    dirs[1].identity.write_text("{")
    diffs, why = identity.job_differences(dirs[0], dirs[1])
    assert diffs is None and "not valid JSON" in why
