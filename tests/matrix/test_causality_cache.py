"""The preflight probes each distinct model once: ``--plan`` then the run, and a re-plan, read the
verdict from the causality cache; an edit to a plugin file or to any file of the models package
is another key and is probed again (ablate.causality_cache). Probe runs are counted here."""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from helpers.plugins import USER_ATTENTION
from torch import nn

import models
from ablate import causality_cache
from ablate.compose import build_jobs
from ablate.matrix.preflight import preflight

# one layer of width 32 at context 16, batch 2: the probes take about a second
TINY = [
    "experiment=smoke",
    "model.n_layer=1",
    "model.n_head=2",
    "model.n_embd=32",
    "model.block_size=16",
    "hardware.micro_batch=2",
    "optim.tokens_per_iter=512",
]

ATTENTION = USER_ATTENTION


@pytest.fixture(autouse=True)
def _one_thread():
    """A model this small gains nothing from a second thread, and on a box loaded beyond its
    cores two torch threads wait on each other (several times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def probed(monkeypatch, tmp_path):
    """The model configs check_causal ran on, in order; this test's own cache folder."""
    monkeypatch.setenv("ABLATE_CAUSALITY_CACHE", str(tmp_path / "cache"))
    calls: list[str] = []
    real = models.check_causal

    def counting(model, *args, **kwargs):
        calls.append(str(model.config.attention))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(models, "check_causal", counting)
    return calls


@pytest.fixture
def user_plugin(tmp_path, monkeypatch):
    """Write a plugin module (causal or not) in a folder outside the repository; the module and
    sys.path are removed again afterwards (the registry is restored by tests/conftest.py)."""
    monkeypatch.setattr(sys, "path", list(sys.path))  # the plugin's folder goes in the copy
    mods = set(sys.modules)
    folder = tmp_path / "mine"
    folder.mkdir()

    def write(causal: bool = True) -> tuple[Path, list[str]]:
        tag = uuid.uuid4().hex[:8]
        module, name = f"cache_attention_{tag}", f"cache_attn_{tag}"
        (folder / f"{module}.py").write_text(ATTENTION.format(name=name, causal=causal))
        args = [f"plugins=[{module}]", f"plugin_path=[{folder}]", f"model.attention=causal,{name}"]
        return folder / f"{module}.py", args

    yield write
    for name in set(sys.modules) - mods:
        if name.startswith("cache_attention_"):
            del sys.modules[name]


def _matrix(tmp_path, extra: list[str]):
    return build_jobs([*TINY, f"results_root={tmp_path / 'results'}", *extra], multirun=True)


def _preflight(jobs, plan: bool, lines: list[str] | None = None):
    said = lines if lines is not None else []
    checks = preflight(jobs, jobs.settings, progress=said.append, create_output_dir=not plan)
    return checks


def test_plan_then_run_probes_each_model_once_and_a_replan_probes_none(
    tmp_path, probed, user_plugin
):
    plugin, args = user_plugin()
    jobs = _matrix(tmp_path, args)
    assert len(jobs) == 2
    plan = _preflight(jobs, plan=True)
    assert all(c.ok for c in plan) and len(probed) == 2
    assert all("cache" not in c.causality for c in plan)  # measured now
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2

    lines: list[str] = []
    run = _preflight(jobs, plan=False, lines=lines)  # the real run's preflight
    assert all(c.ok for c in run) and len(probed) == 2, "the run probed again"
    for c in run:  # the job's record says where its verdict came from, and when
        assert c.causality["cache"]["stored"].startswith("20")
        assert (
            c.causality["message"] == next(p for p in plan if p.job == c.job).causality["message"]
        )
    said = [ln for ln in lines if ln.startswith("causality ")]
    assert len(said) == 2 and all(", from the cache (probed 20" in ln for ln in said), said
    assert not any("causality check of" in ln for ln in lines)

    _preflight(_matrix(tmp_path, args), plan=True)  # a re-plan, freshly composed
    assert len(probed) == 2

    # an edit to the plugin file (a comment) is another key; every job imports the plugin (it
    # could change any module), so both models are probed again
    plugin.write_text(plugin.read_text() + "\n# tuned\n")
    _preflight(_matrix(tmp_path, args), plan=True)
    assert len(probed) == 4
    _preflight(_matrix(tmp_path, args), plan=True)
    assert len(probed) == 4


def test_two_preflights_of_one_model_at_once_probe_it_once(tmp_path, probed, monkeypatch):
    """Two matrices started together with one cache (or two test workers): the second waits for
    the first one's verdict of the model instead of probing it at the same time. The second
    starts while the first is inside its probe, which lasts until the second one waits."""
    probing = threading.Event()
    counting = models.check_causal
    said: list[list[str]] = [[], []]

    def slow(*args, **kwargs):
        probing.set()
        deadline = time.monotonic() + 60  # until the second one waits (or never does: a bug)
        while time.monotonic() < deadline and not any("waiting" in ln for ln in said[1]):
            time.sleep(0.05)
        return counting(*args, **kwargs)

    monkeypatch.setattr(models, "check_causal", slow)
    jobs = [_matrix(tmp_path, []), _matrix(tmp_path, [])]
    out: list = [None, None]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out[i] = _preflight(jobs[i], plan=True, lines=said[i])
        except BaseException as e:  # noqa: BLE001  (reported by the test below)
            errors.append(e)

    first = threading.Thread(target=run, args=(0,))
    first.start()
    assert probing.wait(timeout=120)
    second = threading.Thread(target=run, args=(1,))
    second.start()
    first.join(timeout=300)
    second.join(timeout=300)
    assert not errors, errors
    assert len(probed) == 1, "both preflights probed the model"
    assert all(c.ok for c in out[0] + out[1])
    assert "cache" not in out[0][0].causality and out[1][0].causality["cache"]["stored"]
    assert any("another process is probing the same model" in ln for ln in said[1]), said[1]


@contextlib.contextmanager
def _held_elsewhere(folder: Path, key: str):
    """Another process that holds the claim of ``key`` (and sleeps) until killed."""
    code = (
        "import time\n"
        "from ablate.causality_cache import CausalityCache\n"
        f"with CausalityCache({str(folder)!r}).claim({key!r}):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_a_claim_whose_holder_is_killed_is_free_at_once(tmp_path):
    """The holder of a model's lock dies by SIGKILL in the middle of its probe: the next
    preflight neither waits for it nor finds a stale lock."""
    folder, key = tmp_path / "cache", "a" * 64
    with _held_elsewhere(folder, key) as holder:
        said: list[str] = []
        waited = threading.Event()

        def claim_in_thread() -> None:
            with causality_cache.CausalityCache(folder, say=said.append).claim(key):
                waited.set()

        t = threading.Thread(target=claim_in_thread, daemon=True)
        t.start()
        assert not waited.wait(timeout=1.0), "a held claim was taken twice"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert waited.wait(timeout=10), "the claim of a killed holder was not freed"
        assert said == [
            "causality cache: another process is probing the same model; waiting for its verdict"
        ]


def test_a_holder_that_never_ends_is_waited_for_only_so_long(tmp_path, monkeypatch):
    """A holder stopped (Ctrl-Z) or stuck keeps its lock without dying: after CLAIM_WAIT_S the
    next preflight probes the model itself, and says so."""
    folder, key = tmp_path / "cache", "b" * 64
    with _held_elsewhere(folder, key) as holder:
        monkeypatch.setattr(causality_cache, "CLAIM_WAIT_S", 0.5)
        said: list[str] = []
        t0 = time.monotonic()
        with causality_cache.CausalityCache(folder, say=said.append).claim(key):
            waited = time.monotonic() - t0
        assert 0.5 <= waited < 10 and holder.poll() is None
        assert len(said) == 2 and "probing the model here too" in said[1], said


def test_a_cache_folder_without_locks_or_writes_probes_without_waiting(tmp_path, probed):
    """No lock can be taken in a folder that cannot be written: nothing waits, and the model is
    probed as without a cache."""
    cache = causality_cache.CausalityCache(tmp_path / "absent" / "cache")
    (tmp_path / "absent").write_text("a file where the folder should be")
    with cache.claim("0" * 64):
        assert cache.put("0" * 64, {}, {"ok": True}) is False  # and nothing is stored


def test_an_edit_to_any_file_of_the_models_package_probes_every_model_again(
    tmp_path, probed, monkeypatch, repo
):
    jobs = _matrix(tmp_path, [])
    _preflight(jobs, plan=True)
    _preflight(jobs, plan=True)
    assert len(probed) == 1
    copy = tmp_path / "models-copy"
    shutil.copytree(repo / "src" / "models", copy, ignore=shutil.ignore_patterns("__pycache__"))
    real = causality_cache.models_source
    monkeypatch.setattr(causality_cache, "models_source", lambda: real(copy))
    _preflight(_matrix(tmp_path, []), plan=True)
    assert len(probed) == 1  # the same content: the same key
    probes = copy / "causality_probes.py"
    probes.write_text(probes.read_text().replace("LOSS_RTOL = 1e-5", "LOSS_RTOL = 1e-4"))
    _preflight(_matrix(tmp_path, []), plan=True)
    assert len(probed) == 2


def test_a_leak_is_cached_and_refused_again_with_the_date_of_its_verdict(
    tmp_path, probed, user_plugin
):
    _, args = user_plugin(causal=False)
    jobs = _matrix(tmp_path, args)
    first = _preflight(jobs, plan=True)
    again = _preflight(jobs, plan=True)
    assert len(probed) == 2  # the causal baseline and the leak, once each
    leak = [c for c in again if not c.ok]
    assert len(leak) == 1 and "not causal" in leak[0].problems[0]
    assert "(cached verdict of 20" in leak[0].problems[0]
    assert first[1].problems[0].split("; refusing")[0] in leak[0].problems[0]


def test_the_probes_settings_and_the_data_are_in_the_key(tmp_path, probed):
    _preflight(_matrix(tmp_path, []), plan=True)
    _preflight(_matrix(tmp_path, ["hardware.micro_batch=4"]), plan=True)  # another batch
    _preflight(_matrix(tmp_path, ["hardware.precision=bf16"]), plan=True)  # bf16 probed too
    _preflight(_matrix(tmp_path, ["seed=7"]), plan=True)  # other initial weights
    assert len(probed) == 4
    for extra in ([], ["hardware.micro_batch=4"], ["hardware.precision=bf16"], ["seed=7"]):
        _preflight(_matrix(tmp_path, extra), plan=True)
    assert len(probed) == 4


def test_disabled_or_unbuildable_from_files_the_model_is_probed_every_time(
    tmp_path, probed, monkeypatch
):
    jobs = _matrix(tmp_path, ["causality_cache.enabled=false"])
    _preflight(jobs, plan=True)
    _preflight(jobs, plan=True)
    assert len(probed) == 2 and not (tmp_path / "cache").exists()

    # a component registered from code outside the models package and the plugins (a notebook,
    # a test): its source is not in the key, so its verdict is never stored
    @models.register_attention("cache_test_inline")
    class Inline(nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()
            self.proj = nn.Linear(config.n_embd, config.n_embd)

        def forward(self, x):
            return self.proj(torch.cumsum(x, dim=1))  # causal: a running sum

    lines: list[str] = []
    jobs = _matrix(tmp_path, ["model.attention=cache_test_inline"])
    assert all(c.ok for c in _preflight(jobs, plan=True, lines=lines))
    _preflight(jobs, plan=True)
    assert len(probed) == 4
    assert any(ln.startswith("causality cache: not used for") and "Inline" in ln for ln in lines)


def test_a_junk_cache_file_is_one_line_then_probed_and_overwritten(tmp_path, probed):
    jobs = _matrix(tmp_path, [])
    _preflight(jobs, plan=True)
    (path,) = (tmp_path / "cache").glob("*.json")
    path.write_text('{"format": 1, "key": ')  # truncated
    lines: list[str] = []
    assert all(c.ok for c in _preflight(jobs, plan=True, lines=lines))
    assert len(probed) == 2
    junk = [ln for ln in lines if ln.startswith("causality cache:")]
    assert len(junk) == 1 and str(path) in junk[0] and "not JSON" in junk[0]
    _preflight(jobs, plan=True)
    assert len(probed) == 2  # overwritten with the new verdict


def test_each_causality_check_says_which_of_how_many_distinct_models_it_is(tmp_path, probed):
    """Seeds share a model's check; two model sizes are two checks, announced as 1 of 2, 2 of 2."""
    lines: list[str] = []
    _preflight(_matrix(tmp_path, ["seed=1,2", "model.n_layer=1,2"]), plan=True, lines=lines)
    checks = [ln for ln in lines if ln.startswith("causality check of ")]
    assert len(probed) == 2 and len(checks) == 2, lines
    assert "(distinct model 1 of 2;" in checks[0] and "(distinct model 2 of 2;" in checks[1]


def test_a_long_causality_check_says_how_far_it_is(tmp_path, probed, monkeypatch):
    """A model's probes can take minutes on a CPU: the preflight passes on their progress, at
    most one line per PROGRESS_EVERY_S (0 here: one per pass), never one after the last pass."""
    from models import causality

    monkeypatch.setattr(causality, "PROGRESS_EVERY_S", 0.0)
    lines: list[str] = []
    _preflight(_matrix(tmp_path, []), plan=True, lines=lines)
    steps = [ln for ln in lines if ln.startswith("causality V0: ") and "probe passes done" in ln]
    counts = [tuple(map(int, ln.split(": ")[1].split(" probe")[0].split(" of "))) for ln in steps]
    assert len(counts) >= 3, lines
    n = counts[0][1]
    assert [k for k, _ in counts] == list(range(1, n)) and all(m == n for _, m in counts)
    done = next(ln for ln in lines if ln.startswith("causality V0: causal,"))
    assert lines.index(steps[-1]) < lines.index(done)
    assert f"{n} probe(s)" in done  # the passes counted are the passes run
