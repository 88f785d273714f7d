"""The causality audit inside training (train/audit.py): the job's own step on its own batch and a
copy with the tokens after a random cut replaced. Leaks that behave differently in training end the
job ``leaked`` at the audit; causal steps never do; and a job trains bit-identically with audits."""

from __future__ import annotations

import contextlib
import inspect
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers.train_helpers import curve, make_job, summary, val_curve
from safetensors.torch import load_file

import models
from ablate import results as R
from ablate.outcome import job_outcome
from ablate.train import run_job
from ablate.train.audit import Audit, planned_fractions
from ablate.train.state import RunState
from models.gpt2 import CausalSelfAttention

# --------------------------------------------------------------------------- adversaries


class _Full(CausalSelfAttention):
    """Causal attention that can attend without the mask (the leak)."""

    def full(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x)
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))


class AfterStepsLeak(_Full):
    """Causal for the first 6 training forwards (3 iterations of 2 micro-steps), then unmasked:
    the count is a buffer, so it survives checkpoints like any module state."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.register_buffer("forwards", torch.zeros((), dtype=torch.long))

    def forward(self, x):
        if self.training and torch.is_grad_enabled():
            self.forwards += 1
        return self.full(x) if int(self.forwards) > 6 else super().forward(x)


class GradBatchLeak(_Full):
    """Leaks only with gradients on, in train mode, at batch 2 (the job's micro-batch)."""

    def forward(self, x):
        if self.training and torch.is_grad_enabled() and x.shape[0] == 2:
            return self.full(x)
        return super().forward(x)


def _probed() -> bool:
    """Whether a causality probe is on the call stack (the preflight's and the recheck's)."""
    return any("causality" in Path(f.filename).name for f in inspect.stack(0))


class StackAwareLeak(_Full):
    """Leaks unless a probe or the audit is on the call stack: the recheck never sees it, and
    the audit's own copy is causal; the trainer's real forward leaks."""

    def forward(self, x):
        hidden = _probed() or any(Path(f.filename).name == "audit.py" for f in inspect.stack(0))
        return super().forward(x) if hidden else self.full(x)


class EvalOnlyHiddenLeak(_Full):
    """Leaks only in eval mode (the reported number), never under a probe or the audit's copy:
    the evaluator's own forward is the final audit's base, and it leaks."""

    def forward(self, x):
        audit = any(Path(f.filename).name == "audit.py" for f in inspect.stack(0))
        return super().forward(x) if self.training or _probed() or audit else self.full(x)


class CountingCausal(CausalSelfAttention):
    """Causal, but its output depends on a buffer it changes in every training forward (and
    dropout draws): an audit that did not restore buffers and RNG would change training."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        if self.training:
            self.calls += 1
        return super().forward(x) * (1.0 + 0.01 * torch.sin(self.calls))


ADVERSARIES = {
    "audit_after_steps": AfterStepsLeak,
    "audit_grad_batch": GradBatchLeak,
    "audit_stack_aware": StackAwareLeak,
    "audit_eval_hidden": EvalOnlyHiddenLeak,
    "audit_counting": CountingCausal,
}


@contextlib.contextmanager
def registered() -> Iterator[None]:
    for name, cls in ADVERSARIES.items():
        models.register_attention(name)(cls)
    try:
        yield
    finally:
        for name in ADVERSARIES:
            models.ATTENTION.pop(name, None)


def _job(tmp_path: Path, name: str, **overrides) -> Path:
    base = {"budget__checkpoint_interval_iters": None, "step__name": name}
    return make_job(tmp_path, name, **{**base, **overrides})


def _leaked_by_audit(job: Path, when: str) -> dict:
    """The job ended leaked by an audit (not the recheck), DONE, and every reader says so."""
    jd = R.JobDir(job)
    s = summary(job)
    assert s["status"] == R.LEAKED and s["exit_code"] == 1 and jd.is_done()
    failed = [a for a in s["causality"]["audits"] if a["ok"] is False]
    assert len(failed) == 1 and failed[0] == s["causality"]["audits"][-1]
    record = failed[0]
    assert record["when"] == when and record["message"] in s["error"]
    assert s["causality"]["trained"] is None  # ended before the recheck
    assert job_outcome(jd, 1, None)[0] == R.LEAKED
    assert R.causality_state(s) == R.LEAKED
    assert "LEAKED: causality audit" in jd.log.read_text()
    return record


# --------------------------------------------------------------------------- causal steps


@pytest.mark.parametrize(
    "name,model",
    [("V0", {}), ("V18", {"model__attention": "ra", "model__mlp": "rmlp"})],
)
def test_causal_steps_pass_every_audit_with_dropout(tmp_path, name, model):
    job = _job(tmp_path, name, budget__max_iters=8, model__dropout=0.1, **model)
    s = run_job(job)
    assert s["status"] == R.COMPLETED, s["error"]
    audits = s["causality"]["audits"]
    assert [a["when"] for a in audits][0] == "train" and audits[0]["iteration"] == 0
    assert audits[-1]["when"] == "final eval" and audits[-1]["mode"] == "eval"
    assert len(audits) >= 3  # iteration 0, at least one random iteration, the final eval
    for a in audits:
        assert a["ok"] is True and a["max_change"] == 0.0 and a["threshold"] == 0.0  # exact on CPU
        assert a["shape"] == [2, 32] and len(a["cuts"]) == 2 and a["forward"] == "eager"
    assert all(a["grad"] for a in audits if a["when"] == "train")
    assert s["audit_seconds"] > 0
    assert s["audit_share"] == pytest.approx(s["audit_seconds"] / s["train_seconds"])
    assert R.causality_state(s) == R.UNCHECKED  # no preflight here; the audits do not fail it
    done = [ln for ln in R.JobDir(job).log.read_text().splitlines() if "] done: " in ln]
    assert f"causality audits {s['audit_seconds']:.1f}s = " in done[-1]


def test_a_job_trains_bit_identically_with_and_without_audits(tmp_path):
    # dropout draws from the RNG and the model changes a buffer in every training forward: an
    # audit that left either changed would change the loss curve and the weights. (The recheck
    # of the trained weights refuses such a stateful model after training; the audits, which
    # restore the buffer between the copy and the real forward, find no leak.)
    runs = {}
    with registered():
        for audits in (0, 6):
            job = _job(
                tmp_path,
                f"A{audits}",
                budget__max_iters=8,
                model__dropout=0.1,
                model__attention="audit_counting",
                budget__causality_audits=audits,
            )
            s = run_job(job)
            assert s["status"] == R.LEAKED and "causality recheck" in s["error"], s["error"]
            assert all(a["ok"] is True for a in s["causality"]["audits"])
            runs[audits] = (job, s)
    (off, s_off), (on, s_on) = runs[0], runs[6]
    assert s_off["causality"]["audits"] == [] and s_off["audit_seconds"] == 0.0
    assert any("causality audits in training disabled" in n for n in s_off["notes"])
    assert len([a for a in s_on["causality"]["audits"] if a["when"] == "train"]) >= 3
    assert curve(on) == curve(off) and val_curve(on) == val_curve(off)
    assert s_on["final_val_loss"] == s_off["final_val_loss"]
    w_on, w_off = load_file(R.JobDir(on).weights), load_file(R.JobDir(off).weights)
    assert w_on.keys() == w_off.keys()
    assert all(torch.equal(w_on[k], w_off[k]) for k in w_on)
    assert any(k.endswith("calls") for k in w_on)  # the buffer is in the weights, and equal


# --------------------------------------------------------------------------- leaks


def test_a_leak_switched_on_after_some_steps_ends_the_job_at_the_next_audit(tmp_path):
    with registered():
        job = _job(tmp_path, "VSTEPS", budget__max_iters=12, model__attention="audit_after_steps")
        run_job(job)
    record = _leaked_by_audit(job, "train")
    first = summary(job)["causality"]["audits"][0]
    assert first["iteration"] == 0 and first["ok"] is True  # causal at iteration 0
    assert record["iteration"] > 3 and record["mode"] == "train" and record["grad"] is True
    assert record["rank"] == 0 and 0 <= record["position"] <= record["cut"]
    assert record["compared"] == "logits" and record["max_change"] > 0
    # ended at once: the audited iteration took no optimizer step
    assert summary(job)["iterations"] == record["iteration"]


def test_a_leak_only_with_gradients_at_the_job_batch_ends_the_job_at_iteration_0(tmp_path):
    with registered():
        job = _job(tmp_path, "VGRAD", budget__max_iters=6, model__attention="audit_grad_batch")
        run_job(job)
    record = _leaked_by_audit(job, "train")
    assert record["iteration"] == 0 and summary(job)["iterations"] == 0
    assert f"row {record['row']}" in record["message"] and "threshold: exact" in record["message"]


def test_a_module_hiding_from_probes_and_audit_frames_is_still_caught(tmp_path):
    # Without audits it completes: the recheck's probes never see it leak (what no probe sees).
    with registered():
        hidden = _job(
            tmp_path,
            "VHIDE0",
            budget__max_iters=2,
            model__attention="audit_stack_aware",
            budget__causality_audits=0,
        )
        assert run_job(hidden)["status"] == R.COMPLETED
        assert summary(hidden)["causality"]["trained"]["ok"] is True
        # With audits: the trainer's own forward is the base, and it leaks.
        job = _job(tmp_path, "VHIDE", budget__max_iters=2, model__attention="audit_stack_aware")
        run_job(job)
    record = _leaked_by_audit(job, "train")
    assert record["iteration"] == 0


def test_an_eval_only_leak_hidden_from_the_probes_is_caught_by_the_final_eval_audit(tmp_path):
    with registered():
        job = _job(tmp_path, "VEVAL", budget__max_iters=3, model__attention="audit_eval_hidden")
        run_job(job)
    record = _leaked_by_audit(job, "final eval")
    assert record["mode"] == "eval" and record["grad"] is False
    assert all(a["ok"] for a in summary(job)["causality"]["audits"][:-1])  # training was causal


# --------------------------------------------------------------------------- plan and records


def test_the_audits_are_planned_by_the_seed_and_a_resume_does_not_redo_them():
    a, b = planned_fractions(3, seed=1), planned_fractions(3, seed=2)
    assert a == planned_fractions(3, seed=1) and a != b and len(a) == 3
    assert a == sorted(a) and all(0.0 < f <= 1.0 for f in a)
    assert planned_fractions(0, seed=1) == []

    class _Dev:
        device = torch.device("cpu")
        precision = "fp32"

    cfg = models.config.to_model_config(
        {"n_layer": 1, "n_head": 1, "n_embd": 8, "block_size": 8, "vocab_size": 16}
    )
    model = models.build_model(cfg)

    def audit(state: RunState, count: int = 3) -> Audit:
        return Audit(count, 1, model, _Dev(), None, state, print)  # type: ignore[arg-type]

    st = RunState()
    au = audit(st)
    hits = [it for it in range(100) if au.due(it, it / 100)]
    assert hits[0] == 0 and 2 <= len(hits) <= 4 and st.audit_next == 3
    # resumed at iteration 50 with the counter the checkpoint saved: only the later audits
    st2 = RunState(audit_next=sum(1 for f in a if f <= 0.5))
    resumed = [it for it in range(50, 100) if audit(st2).due(it, it / 100)]
    assert resumed == [h for h in hits if h >= 50]
    assert not any(audit(RunState(), 0).due(it, it / 100) for it in range(100))


def test_a_summary_without_audit_fields_still_reads():
    old = {"status": "completed", "causality": {"init": None, "trained": {"ok": True}}}
    s, problems = R.JobSummary.parse(old)
    assert problems == [] and s.audit_seconds is None and s.audit_share is None
    assert R.causality_state(old) == R.UNCHECKED
    for junk in ("junk", [1, "x", None], {"ok": False}):
        c = {"init": {"ok": True}, "trained": {"ok": True}, "checked": True, "audits": junk}
        assert R.causality_state({"status": "completed", "causality": c}) == R.CHECKED
    bad = {
        "init": {"ok": True},
        "trained": {"ok": True},
        "checked": True,
        "audits": [{"ok": False}],
    }
    assert R.causality_state({"status": "completed", "causality": bad}) == R.LEAKED
    s, problems = R.JobSummary.parse({"audit_seconds": "soon", "audit_share": [1]})
    assert s.audit_seconds is None and len(problems) == 2


def test_a_negative_audit_count_is_refused_in_one_line(tmp_path):
    from ablate.config import load_job_config
    from ablate.errors import ConfigError

    job = _job(tmp_path, "V0", budget__causality_audits=-1)
    with pytest.raises(ConfigError, match=r"budget.causality_audits=-1 must be at least 0"):
        load_job_config(job / "config.yaml")


class CompileOnlyLeak(_Full):
    """Unmasked only inside a torch.compile trace: the eager model is causal."""

    def forward(self, x):
        return self.full(x) if torch.compiler.is_compiling() else super().forward(x)


def test_a_leak_only_in_the_compiled_graph_is_caught_in_the_compiled_step(tmp_path, monkeypatch):
    # dynamo traces the model as for inductor; the eager backend keeps the test cheap on CPU
    monkeypatch.setenv("ABLATE_COMPILE_BACKEND", "eager")
    models.register_attention("audit_compile_only")(CompileOnlyLeak)
    try:
        job = _job(
            tmp_path,
            "VCOMP",
            budget__max_iters=2,
            model__attention="audit_compile_only",
            hardware__compile=True,
        )
        run_job(job)
    finally:
        models.ATTENTION.pop("audit_compile_only", None)
    assert summary(job)["compile"] is True
    record = _leaked_by_audit(job, "train")
    assert record["iteration"] == 0 and record["forward"] == "compiled"


RANK_PLUGIN = '''
import torch
import torch.distributed as dist

import models
from models.gpt2 import CausalSelfAttention


@models.register_attention("audit_rank1")
class RankOneLeak(CausalSelfAttention):
    """Unmasked on rank 1 only, while training: rank 0's micro-batch never shows it."""

    def forward(self, x):
        if self.training and dist.is_initialized() and dist.get_rank() == 1:
            B, T, C = x.shape
            q, k, v = self.qkv(x)
            y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=False)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))
        return super().forward(x)
'''


@pytest.mark.slow
def test_each_rank_audits_its_own_micro_batch_and_all_agree_on_the_verdict(tmp_path):
    from helpers.train_helpers import run_cli

    (tmp_path / "audit_rank_plugin.py").write_text(RANK_PLUGIN)
    job = _job(
        tmp_path,
        "VRANK",
        budget__max_iters=4,
        model__attention="audit_rank1",
        plugins=["audit_rank_plugin"],
        plugin_path=[str(tmp_path)],
    )
    proc = run_cli(job, nproc=2, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    record = _leaked_by_audit(job, "train")
    assert record["iteration"] == 0 and record["rank"] == 1 and record["ranks"] == 2
    assert record["forward"] == "eager in DDP" and "rank 1" in record["message"]


class SignalAtForward(CausalSelfAttention):
    """Causal; its 19th training forward (iteration 7 of a job audited at 0, 6 and 7: 2 forwards
    an iteration, 3 when audited) sends this process SIGUSR1: the job checkpoints and stops
    there, as a preempted job does."""

    forwards = 0

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.first = layer_idx == 0

    def forward(self, x):
        if self.training and self.first:
            type(self).forwards += 1
            if type(self).forwards == 19:
                os.kill(os.getpid(), signal.SIGUSR1)
        return super().forward(x)


def test_a_resumed_job_keeps_its_audits_and_does_not_redo_them(tmp_path):
    reference = run_job(_job(tmp_path, "V0", budget__max_iters=12))
    planned = [a["iteration"] for a in reference["causality"]["audits"] if a["when"] == "train"]
    assert len(planned) >= 2
    models.register_attention("audit_signal")(SignalAtForward)
    try:
        SignalAtForward.forwards = 0
        job = _job(tmp_path, "VSIG", budget__max_iters=12, model__attention="audit_signal")
        stopped = run_job(job)
        assert stopped["stopped_by"] == "SIGUSR1" and stopped["iterations"] < 12
        # a random audit ran before the stop: the resumed start must not redo it
        assert any(0 < p < stopped["iterations"] for p in planned)
        s = run_job(job)
    finally:
        models.ATTENTION.pop("audit_signal", None)
    assert s["status"] == R.COMPLETED and s["resumed"] == 1
    train = [a["iteration"] for a in s["causality"]["audits"] if a["when"] == "train"]
    assert train == planned  # the same iterations as the uninterrupted run, none twice
    assert s["audit_seconds"] > stopped["audit_seconds"] > 0  # the cost adds up over starts
