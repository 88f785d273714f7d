"""What an eval may not do: change the model's state (train/evalstate.py), run at a batch size the
probes did not run (ValWindows.filled_batches), or let a row read another row unseen by the audit
(train/audit.py's whole-row replacement, on the final eval's batches that its budget pays for)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.leak_zoo import _LeakGPT
from helpers.train_helpers import make_job

import models
from ablate import results as R
from ablate.data import ValWindows
from ablate.train import audit as audit_mod
from ablate.train import evalstate, run_job
from ablate.train.audit import FinalPlan
from ablate.train.checkpoint import load_final_weights

# --------------------------------------------------------------------------- adversaries


class MemoryGPT(_LeakGPT):
    """Eval-set memory across calls: in eval mode it stores (previous token, token) -> next token
    in a non-persistent buffer and, in later calls, adds the embedding of the remembered next
    token: the final eval recalls what the periodic evals showed it."""

    SLOTS = 4099

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("memory", torch.full((self.SLOTS,), -1), persistent=False)

    def extra(self, idx, targets):
        if self.training:
            return 0.0
        key = (idx[:, :-1] * 50_257 + idx[:, 1:]) % self.SLOTS  # the bigram ending at p + 1
        recalled = self.memory[(idx * 50_257 + torch.roll(idx, -1, 1)) % self.SLOTS]
        bonus = torch.where(
            recalled[..., None] >= 0, self.transformer.wte(recalled.clamp(min=0)).detach(), 0.0
        )
        self.memory[key[:, :-1]] = idx[:, 2:]  # remember: after this bigram came that token
        return 0.5 * bonus


class ReplacingGPT(_LeakGPT):
    """Replaces its (non-persistent) buffer object in every eval call instead of writing it."""

    def __init__(self, config):
        super().__init__(config)
        self.register_buffer("seen", torch.zeros(()), persistent=False)

    def extra(self, idx, targets):
        if not self.training:
            self.seen = self.seen + 1
        return 0.0


BATCH_SIZES: list[int] = []
"""The batch size of every forward of SizeRecordingGPT (this process's jobs)."""


class SizeRecordingGPT(_LeakGPT):
    """Causal; records the batch size of every call."""

    def extra(self, idx, targets):
        BATCH_SIZES.append(int(idx.shape[0]))
        return 0.0


def _bonus(model: _LeakGPT, idx: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(B, 1, C): row b gets a fixed vector scaled by row b + 1's first token where ``rows``
    says (no gradient path: token ids only); the last row reads nothing."""
    gen = torch.Generator().manual_seed(5)
    vec = torch.randn(model.config.n_embd, generator=gen).to(idx.device)
    nxt = torch.zeros(idx.shape[0], device=idx.device)
    nxt[:-1] = (idx[1:, 0] % 97 + 1).float() / 97
    return (nxt * rows.float())[:, None, None] * vec


IN_FINAL_EVAL = {"on": False, "calls": 0}
"""Set by the test around Evaluator.final: stands for a trigger that only the final eval's later
batches hold (a data pattern the probes never write). Targets never reach a model, so the
reviewer's own trigger (consecutive windows read from the targets) has no input any more."""


class LaterBatchRowReaderGPT(_LeakGPT):
    """Cross-row reads in the final eval's batches after its first: row b adds a bonus from row
    b + 1's first token, its last position's next token when eval windows are consecutive. Its
    memory is outside the model's registered state (no state check sees it)."""

    def extra(self, idx, targets):
        if not IN_FINAL_EVAL["on"] or self.training or idx.shape[0] < 2:
            return 0.0
        IN_FINAL_EVAL["calls"] += 1
        if IN_FINAL_EVAL["calls"] < 3:  # the first batch, and its audit's copy, read nothing
            return 0.0
        return _bonus(self, idx, torch.ones(idx.shape[0], dtype=torch.bool))


@pytest.fixture
def final_eval_trigger(monkeypatch):
    from ablate.train import evals

    final = evals.Evaluator.final

    def flagged(self, audit=None):
        IN_FINAL_EVAL.update(on=True, calls=0)
        try:
            return final(self, audit)
        finally:
            IN_FINAL_EVAL["on"] = False

    monkeypatch.setattr(evals.Evaluator, "final", flagged)


class TrainRowReaderGPT(_LeakGPT):
    """Cross-row reads in training steps only (train mode, gradients recorded): row b adds a
    bonus from row b + 1's first token, which no earlier audit or probe ever replaced."""

    def extra(self, idx, targets):
        if not (self.training and torch.is_grad_enabled()) or idx.shape[0] < 2:
            return 0.0
        return _bonus(self, idx, torch.ones(idx.shape[0], dtype=torch.bool))


ARCHS = {
    "evalstate_memory": MemoryGPT,
    "evalstate_replacing": ReplacingGPT,
    "evalstate_sizes": SizeRecordingGPT,
    "evalstate_later_rows": LaterBatchRowReaderGPT,
    "evalstate_train_rows": TrainRowReaderGPT,
}


@contextlib.contextmanager
def registered() -> Iterator[None]:
    for name, cls in ARCHS.items():
        models.register_arch(name)(cls)
    try:
        yield
    finally:
        for name in ARCHS:
            models.REGISTRY.pop(name, None)


def _job(tmp_path: Path, name: str, arch: str, **overrides) -> Path:
    base = {"budget__checkpoint_interval_iters": None, "model__arch": arch}
    return make_job(tmp_path, name, **{**base, **overrides})


# --------------------------------------------------------------------------- 1. the state check


def test_a_model_that_remembers_eval_windows_in_a_buffer_is_ended_leaked(tmp_path):
    with registered():
        job = _job(tmp_path, "MEM", "evalstate_memory", budget__max_iters=8)
        s = run_job(job)
    assert s["status"] == R.LEAKED and s["exit_code"] == 1 and R.JobDir(job).is_done()
    assert s["iterations"] == 6  # the first periodic eval, at iteration 6, ended it
    assert s["final_val_loss"] is None
    record = s["causality"]["audits"][-1]
    assert record["ok"] is False and record["check"] == "eval state"
    assert record["when"] == "periodic eval" and record["iteration"] == 6
    assert record["message"] in s["error"] and "buffer 'memory' was written in place" in s["error"]
    assert R.causality_state(s) == R.LEAKED
    log = R.JobDir(job).log.read_text()
    assert "LEAKED: eval state check (periodic eval, iteration 6)" in log
    assert len([ln for ln in log.splitlines() if "buffer 'memory'" in ln]) >= 1


def test_a_model_that_replaces_a_buffer_object_in_an_eval_is_ended_leaked(tmp_path):
    with registered():
        job = _job(tmp_path, "REPL", "evalstate_replacing", budget__max_iters=6)
        s = run_job(job)  # no periodic eval before the end: the final eval's check ends it
    assert s["status"] == R.LEAKED
    record = s["causality"]["audits"][-1]
    assert record["check"] == "eval state" and record["when"] == "final eval"
    assert "buffer 'seen' was replaced by another tensor object" in s["error"]
    assert not R.JobDir(job).final_eval.exists()  # nothing of the leaking eval is recorded


def test_the_fingerprint_names_what_changed_and_nothing_else():
    m = torch.nn.Linear(2, 2)
    m.register_buffer("b", torch.zeros(2), persistent=False)
    fp = evalstate.fingerprint(m)
    assert set(fp) == {"weight", "bias", "b"}
    assert evalstate.change(fp, evalstate.fingerprint(m), "final eval") is None
    with torch.no_grad():
        m(torch.ones(1, 2))  # a forward writes nothing
        assert evalstate.change(fp, evalstate.fingerprint(m), "final eval") is None
        m.weight.add_(0.0)  # an in-place write, even of the same values
    line = evalstate.change(fp, evalstate.fingerprint(m), "final eval")
    assert line is not None and "parameter 'weight' was written in place" in line
    fp = evalstate.fingerprint(m)
    m.register_buffer("extra", torch.zeros(1))
    assert "buffer 'extra' was registered" in evalstate.change(fp, evalstate.fingerprint(m), "x")
    fp = evalstate.fingerprint(m)
    m.b = torch.zeros(3)
    assert "buffer 'b' was replaced" in evalstate.change(fp, evalstate.fingerprint(m), "x")


# --------------------------------------------------------------------------- 2. batch shapes


def test_every_forward_of_a_job_has_its_micro_batch_and_the_final_loss_is_each_window_once(
    tmp_path,
):
    BATCH_SIZES.clear()
    with registered():
        job = _job(
            tmp_path,
            "SIZES",
            "evalstate_sizes",
            budget__max_iters=6,
            hardware__micro_batch=4,
            optim__tokens_per_iter=128,
            data__val_tokens=113 * 32,  # 113 windows: 28 batches of 4 and 1 left
            data__val_windows=5,  # the periodic windows: 4 and 1 left
        )
        s = run_job(job)
        model = load_final_weights(R.JobDir(job).weights).eval()
    assert s["status"] == R.COMPLETED, s["error"]
    assert BATCH_SIZES and set(BATCH_SIZES) == {4}  # training, evals, audits and the recheck
    fe = json.loads(R.JobDir(job).final_eval.read_text())
    losses = fe["window_losses"]
    assert fe["n_windows"] == 113 and len(losses) == 113
    assert s["final_val_loss"] == pytest.approx(sum(losses) / 113, rel=1e-12)
    # each window's loss is that window's, in order: recomputed one window at a time
    windows = ValWindows(fe["val_path"], 32, 113)
    xs = torch.cat([x for x, _ in windows.batches(1)])
    ys = torch.cat([y for _, y in windows.batches(1)])
    BATCH_SIZES.clear()
    with torch.no_grad():
        logits, _ = model(xs, ys)
    alone = F.cross_entropy(logits.transpose(1, 2), ys, reduction="none").double().mean(1)
    assert alone.tolist() == pytest.approx(losses, rel=1e-5)


def test_filled_batches_hold_every_window_first_and_fill_with_the_first_ones(tmp_path):
    from ablate.data.shards import write_shard

    val = str(tmp_path / "t_val_000000.bin")
    write_shard(val, torch.arange(5000).numpy())
    w = ValWindows(val, 32, 113)
    filled = w.filled_batches(4)
    assert len(filled) == 29 and all(x.shape == (4, 32) and y.shape == (4, 32) for x, y in filled)
    plain = torch.cat([x for x, _ in w.batches(4)])
    rows = torch.cat([x for x, _ in filled])
    assert torch.equal(rows[:113], plain) and torch.equal(rows[113:], plain[:3])
    few = ValWindows(val, 32, 3, 2, 1).filled_batches(4)  # 2 windows on this rank, batch 4
    assert len(few) == 1 and torch.equal(few[0][0][:, 0], torch.tensor([32, 64, 32, 64]))


# --------------------------------------------------------------------------- 3. cross-row audit


def test_a_row_reader_in_later_eval_batches_is_ended_by_the_final_eval_audit(
    tmp_path, final_eval_trigger, monkeypatch
):
    # Auditing only the first batch, where this model does not read, the job completed: nothing
    # else sees it (no registered state changes, and the probes never hold its trigger), as the
    # job without audits shows. With a budget for every batch, each later batch replaces one row
    # whole: a row before it reads it.
    monkeypatch.setattr(audit_mod, "FINAL_EVAL_SHARE", 1e9)
    with registered():
        job = _job(tmp_path, "ROWS", "evalstate_later_rows", budget__max_iters=3, seed=5)
        s = run_job(job)
        unaudited = _job(
            tmp_path,
            "ROWS0",
            "evalstate_later_rows",
            budget__max_iters=3,
            budget__causality_audits=0,
            seed=5,
        )
        s_unaudited = run_job(unaudited)
    assert s["status"] == R.LEAKED, s["error"]
    record = s["causality"]["audits"][-1]
    assert record["when"] == "final eval" and record["ok"] is False
    assert record["batches"] >= 2 and "whole row" in record["kinds"]
    assert record["batch"] >= 1 and f"in final-eval batch {record['batch']}: " in record["message"]
    assert all(a["ok"] for a in s["causality"]["audits"][:-1])  # training was causal
    assert s_unaudited["status"] == R.COMPLETED, s_unaudited["error"]
    assert s_unaudited["causality"]["trained"]["ok"] is True


def test_a_row_reading_the_next_rows_first_token_is_ended_by_the_first_audit(tmp_path):
    with registered():
        job = _job(tmp_path, "TROWS", "evalstate_train_rows", budget__max_iters=3)
        s = run_job(job)
    assert s["status"] == R.LEAKED, s["error"]
    record = s["causality"]["audits"][-1]
    assert record["when"] == "train" and record["iteration"] == 0 and s["iterations"] == 0
    whole = record["kinds"].index("whole row")
    assert record["cuts"][whole] == -1 and record["row"] == whole - 1
    assert f"and replacing every token of row {whole}" in record["message"]


def test_the_final_eval_audits_its_first_batch_and_as_many_more_as_the_budget_pays_for():
    def chosen(n: int, seed: int, budget: float, first: float) -> list[int]:
        plan = FinalPlan(n, seed, budget)
        plan.first_cost(first)
        plan.first_cost(99.0)  # sized once: a later call changes nothing
        return sorted(i for i in range(n) if plan.due(i))

    assert chosen(0, 1, 1.0, 0.1) == [] and chosen(1, 1, 0.0, 0.1) == [0]
    small = [chosen(40, seed, 0.0, 0.1) for seed in range(30)]  # no budget: the first and one
    assert all(len(c) == 2 and c[0] == 0 for c in small)
    assert len({c[1] for c in small}) > 10  # the other drawn by the seed, over the later batches
    assert chosen(40, 3, 0.0, 0.1) == chosen(40, 3, 0.0, 0.1)
    assert len(chosen(40, 3, 1.0, 0.1)) == 10  # 1 s pays for the first and 9 more of 0.1 s
    assert chosen(40, 3, 100.0, 0.1) == list(range(40))  # every batch
    assert chosen(40, 3, 1.0, 0.0) == list(range(40))  # a cost too small to time: every batch
