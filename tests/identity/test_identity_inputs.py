"""A run's identity changes when any input that determines its result changes, and only then.

One test per input (config, model code, code version, data, hardware), each built the way a user
would change it (an override, a one-character edit of a plugin module, an uncommitted edit under
src/, one token of a shard, another device), and the converse: paths and matrix settings leave it
unchanged. ``ablate.identity.differences`` must name the input that changed.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers.tiny import TINY_MODEL

from ablate import identity, provenance
from ablate.compose import build_jobs
from ablate.config import RunConfig, to_container
from ablate.data import resolve_dataset
from ablate.data.identity import data_component
from ablate.data.shards import read_shard, write_shard
from ablate.errors import DataError

TINY = [
    "experiment=smoke",
    *TINY_MODEL,
    "data.val_windows=4",
    "data.val_tokens=1024",
]
CODE = {"git_sha": "0" * 40, "src_changes": None}  # the code version is its own test below


def job(*overrides: str):
    return build_jobs([*TINY, *overrides], False)[0]


def record(j, device: str = "cpu (test)", ws: int = 1, code: dict | None = None) -> dict:
    cfg = j.cfg
    ds = resolve_dataset(cfg.data, cfg.model.vocab_size)
    data = data_component(
        ds, cfg.model.block_size, cfg.data.val_tokens, cfg.data.val_windows, cfg.data.cache_dir
    )
    comps = provenance.components(cfg, data, device, ws, code=code or CODE)
    return identity.make_record(comps)


def named(a: dict, b: dict) -> list[tuple[str, str]]:
    return [(d.component, d.key) for d in identity.differences(a, b)]


# --------------------------------------------------------------------------- config


def _leaves(tree: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out |= _leaves(v, f"{prefix}{k}.")
        else:
            out.add(f"{prefix}{k}")
    return out


def test_every_config_key_is_in_the_identity_except_the_ones_that_say_where():
    # The general mechanism: a key added to the schema tomorrow is part of the identity unless it
    # is listed (with why) in NOT_IN_IDENTITY.
    cfg = RunConfig()
    every = _leaves(to_container(cfg))
    kept = set(provenance.config_component(cfg))
    dropped = every - kept
    assert all(
        any(k == x or k.startswith(x + ".") for x in provenance.NOT_IN_IDENTITY) for k in dropped
    ), dropped
    assert kept == every - dropped and "optim.lr" in kept and "seed" in kept
    assert {"plugin_path", "data.path", "tracker.name"} <= dropped


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.lr=0.0011", "optim.lr"),
        ("seed=2", "seed"),
        ("model.dropout=0.1", "model.dropout"),
        ("budget.box_seconds=46", "budget.box_seconds"),
        ("step=V16", "model.attention"),
    ],
)
def test_a_config_change_changes_the_identity_and_is_named(override, key):
    a, b = record(job()), record(job(override))
    assert a["identity"] != b["identity"]
    assert ("config", key) in named(a, b)
    assert all(
        c == "config" or (c, k) == ("model_code", "models.reciprocal_attention")
        for c, k in named(a, b)
    )


def test_paths_and_matrix_settings_leave_the_identity_unchanged(tmp_path):
    base = record(job())
    moved = record(
        job(
            f"results_root={tmp_path / 'elsewhere'}",
            "preflight=false",
            "report=false",
            "progress=false",
            "reuse=false",
            "launcher=slurm",
            "tracker=tensorboard",
            f"tracker.dir={tmp_path / 'tb'}",
            "hardware.gpus=3",
            "data.verify=full",
            f"data.cache_dir={tmp_path / 'ignored-cache'}",
        )
    )
    assert moved["identity"] == base["identity"], named(base, moved)


# --------------------------------------------------------------------------- model code


PLUGIN = '''
"""A plugin attention for the identity tests (copy of GPT-2's causal attention)."""
from models import register_attention
from models.gpt2 import CausalSelfAttention

from {helper} import SCALE  # a module of the user's folder that the plugin imports


@register_attention("{name}")
class PluginAttention(CausalSelfAttention):
    scale = SCALE  # version a
'''


def make_plugin(folder: Path) -> tuple[str, str, str]:
    tag = uuid.uuid4().hex[:8]
    module, helper, attn = f"plug_{tag}", f"plug_helper_{tag}", f"plug_attn_{tag}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(PLUGIN.format(helper=helper, name=attn))
    (folder / f"{helper}.py").write_text("SCALE = 1.0\n")
    (folder / f"unrelated_{tag}.py").write_text("X = 1\n")  # in the folder, imported by nothing
    return module, helper, attn


def plugin_job(folder: Path, module: str, attn: str):
    return job(f"plugins=[{module}]", f"plugin_path=[{folder}]", f"model.attention={attn}")


def test_a_one_character_change_to_a_plugin_module_changes_the_identity(tmp_path):
    folder = tmp_path / "mine"
    module, helper, attn = make_plugin(folder)
    j = plugin_job(folder, module, attn)
    before = record(j)
    assert {module, helper, "models.gpt2"} <= set(before["components"]["model_code"])
    src = folder / f"{module}.py"
    text = src.read_text()
    src.write_text(text.replace("# version a", "# version b"))  # one character
    after = record(j)
    assert after["identity"] != before["identity"]
    assert named(before, after) == [("model_code", module)]
    # A module the plugin imports is model code too; one nobody imports is not.
    (folder / f"{helper}.py").write_text("SCALE = 2.0\n")
    assert named(after, record(j)) == [("model_code", helper)]
    again = record(j)
    next(folder.glob("unrelated_*.py")).write_text("X = 2\n")
    assert record(j)["identity"] == again["identity"]


def test_model_code_is_the_modules_the_model_was_built_from_not_the_whole_package():
    v0 = set(record(job())["components"]["model_code"])
    v16 = set(record(job("step=V16"))["components"]["model_code"])
    v18 = set(record(job("step=V18"))["components"]["model_code"])
    assert "models.gpt2" in v0 and "models.reciprocal_attention" not in v0
    assert not any("causality" in m or "gate_shares" in m for m in v0 | v18)
    assert v16 == v0 | {"models.reciprocal_attention"}
    assert v18 == v16 | {"models.reciprocal_mlp"}


def test_the_same_plugin_in_another_folder_is_the_same_identity(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # the plugin folders leave it afterwards
    a = tmp_path / "a"
    module, helper, attn = make_plugin(a)
    first = record(plugin_job(a, module, attn))
    # The same files, elsewhere (another checkout of the user's folder): plugin_path is a path.
    b = tmp_path / "b"
    shutil.copytree(a, b)
    sys.modules.pop(module, None)
    sys.modules.pop(helper, None)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(a)])
    second = record(plugin_job(b, module, attn))
    assert second["components"]["config"] == first["components"]["config"]
    assert second["identity"] == first["identity"]


# --------------------------------------------------------------------------- code version


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=t@example.org", "-c", "user.name=t", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def _source_tree(root: Path) -> Path:
    (root / "src" / "ablate").mkdir(parents=True)
    (root / "src" / "models").mkdir(parents=True)
    (root / "src" / "ablate" / "__init__.py").write_text('"""ablate"""\n')
    (root / "src" / "ablate" / "trainer.py").write_text("LR_SCALE = 1\n")
    (root / "src" / "models" / "gpt2.py").write_text("WIDTH = 4\n")
    (root / "README.md").write_text("readme\n")
    return root / "src"


def test_the_code_version_follows_commits_and_uncommitted_changes_under_src(tmp_path):
    src = _source_tree(tmp_path / "repo")
    _git(src.parent, "init", "-q")
    _git(src.parent, "add", ".")
    _git(src.parent, "commit", "-qm", "one")
    clean = provenance.code_version(src)
    assert set(clean) == {"git_sha", "src_changes"} and clean["src_changes"] is None
    trainer = src / "ablate" / "trainer.py"
    trainer.write_text("LR_SCALE = 2\n")  # one character, uncommitted
    edited = provenance.code_version(src)
    assert edited["git_sha"] == clean["git_sha"] and edited["src_changes"] is not None
    trainer.write_text("LR_SCALE = 3\n")
    assert provenance.code_version(src)["src_changes"] not in (None, edited["src_changes"])
    trainer.write_text("LR_SCALE = 1\n")  # reverted: clean again
    assert provenance.code_version(src) == clean
    (src / "models" / "new_idea.py").write_text("X = 1\n")  # untracked, never added
    untracked = provenance.code_version(src)["src_changes"]
    assert untracked is not None
    (src / "models" / "new_idea.py").unlink()
    (src.parent / "README.md").write_text("other readme\n")  # outside src/: not training code
    assert provenance.code_version(src) == clean
    _git(src.parent, "commit", "-qam", "two")
    assert provenance.code_version(src)["git_sha"] != clean["git_sha"]
    # identity-wise: a different code version is a different identity, and it is named.
    comps = {c: None for c in identity.COMPONENTS}
    a = identity.make_record({**comps, "code": clean})
    b = identity.make_record({**comps, "code": edited})
    assert a["identity"] != b["identity"] and named(a, b) == [("code", "src_changes")]


def test_without_git_the_installed_source_is_hashed(tmp_path):
    src = _source_tree(tmp_path / "installed")  # a wheel or a copied tree: no .git
    first = provenance.code_version(src)
    assert set(first) == {"source_sha256"}
    (src / "models" / "gpt2.py").write_text("WIDTH = 5\n")
    assert provenance.code_version(src) != first
    # A checkout that does not track the running sources (an install inside someone's repo)
    # is not trusted for its SHA either.
    repo = tmp_path / "repo"
    inner = _source_tree(repo / "venv" / "site")
    (repo / "other.txt").write_text("x\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "other.txt")
    _git(repo, "commit", "-qm", "one")
    assert set(provenance.code_version(inner)) == {"source_sha256"}


def test_the_running_checkout_has_a_code_version():
    version = provenance.code_version()
    assert set(version) in ({"git_sha", "src_changes"}, {"source_sha256"})


# --------------------------------------------------------------------------- data


def _shards(folder: Path, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    write_shard(folder / "d_val_000000.bin", rng.integers(0, 50000, 4000).astype(np.uint16))
    for i in (1, 2):
        write_shard(folder / f"d_train_{i:06d}.bin", rng.integers(0, 50000, 6000).astype(np.uint16))


def _poke(path: Path, position: int) -> None:
    tokens = np.array(read_shard(path))
    tokens[position] = (int(tokens[position]) + 1) % 50000
    write_shard(path, tokens)


def test_data_changes_the_identity_by_content_not_by_path(tmp_path):
    a = tmp_path / "a"
    _shards(a)
    first = record(job("data=shards", f"data.path={a}/*.bin"))
    b = tmp_path / "b"
    shutil.copytree(a, b)  # the same shards elsewhere: the same data
    assert record(job("data=shards", f"data.path={b}/*.bin"))["identity"] == first["identity"]
    _poke(b / "d_train_000002.bin", 10)  # one token of a training shard
    train = record(job("data=shards", f"data.path={b}/*.bin"))
    assert named(first, train) == [("data", "shard d_train_000002.bin")]
    _poke(b / "d_val_000000.bin", 5)  # one token the final eval scores
    val = record(job("data=shards", f"data.path={b}/*.bin"))
    assert ("data", "shard d_val_000000.bin") in named(train, val)
    assert ("data", "val_fingerprint") in named(train, val)


def test_a_prepared_shard_edited_after_meta_json_is_refused_not_trusted(tmp_path):
    j = job(f"data.cache_dir={tmp_path / 'cache'}")
    ds = resolve_dataset(j.cfg.data, j.cfg.model.vocab_size)
    args = (ds, 64, 1024, 4, str(tmp_path / "cache"))
    assert data_component(*args, verify=True) == data_component(*args)
    _poke(Path(ds.train_paths[0]), 3)  # meta.json still records the old hash
    with pytest.raises(DataError, match="meta.json"):
        data_component(*args, verify=True)


# --------------------------------------------------------------------------- hardware


def test_hardware_is_part_of_a_time_box_identity_only():
    boxed = job()
    assert boxed.cfg.budget.box_seconds is not None
    a = record(boxed, device="NVIDIA A10G", ws=4)
    assert record(boxed, device="NVIDIA A10G", ws=4)["identity"] == a["identity"]
    other_device = record(boxed, device="NVIDIA H100 80GB HBM3", ws=4)
    assert named(a, other_device) == [("hardware", "class (device x world size)")]
    assert record(boxed, device="NVIDIA A10G", ws=1)["identity"] != a["identity"]
    iters = job("budget.box_seconds=null", "budget.max_iters=20")
    b = record(iters, device="NVIDIA A10G", ws=4)
    assert b["components"]["hardware"] is None
    assert record(iters, device="NVIDIA H100 80GB HBM3", ws=1)["identity"] == b["identity"]


# --------------------------------------------------------------------------- the trainer's record


@pytest.mark.slow
def test_the_trainer_records_what_the_matrix_predicts(tmp_path):
    # A real job (time box and a 2-iteration budget: the hardware is part of it): the identity its
    # trainer records from the model it built on its device equals the matrix's prediction (a
    # model built on the meta device, the launcher's placement rule), so a finished run can match.
    from ablate import results
    from ablate.compose import config_yaml
    from ablate.matrix import reuse
    from ablate.train import run_job

    matrix = build_jobs([*TINY, "budget.max_iters=2", "budget.eval_interval=1"], False)
    j = matrix[0]
    predicted = reuse.expected_identities([j], matrix.settings)[j.name]
    assert isinstance(predicted, dict), predicted
    jd = results.JobDir(tmp_path / "V0")
    jd.path.mkdir()
    results.atomic_write_text(jd.config, config_yaml(j.cfg))
    assert run_job(jd.path)["exit_code"] == 0
    recorded, problem = identity.read_identity(jd)
    assert problem is None and recorded is not None
    assert recorded["components"]["hardware"] is not None
    assert recorded["identity"] == predicted["identity"], named(predicted, recorded)
