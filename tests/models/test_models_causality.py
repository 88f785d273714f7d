"""check_causal: every step passes; deliberately leaking models are caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import models
from models import check_causal
from models.gpt2 import CausalSelfAttention, MLP


class BidirectionalAttention(CausalSelfAttention):
    """The V17/V18 bug of the replaced system in its plainest form: no causal mask at all."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        B, _, T, _ = q.shape
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, self.n_embd))


class OffByOneAttention(CausalSelfAttention):
    """A subtle leak: the mask lets position i see i + 1 (diagonal=2 instead of 1)."""

    def forward(self, x):
        q, k, v = self.qkv(x)
        B, _, T, _ = q.shape
        allowed = ~torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, self.n_embd))


class TrainOnlyLeakAttention(CausalSelfAttention):
    """Leaks only in train mode, e.g. a training-time code path that forgot the mask."""

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        q, k, v = self.qkv(x)
        B, _, T, _ = q.shape
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, self.n_embd))


class FutureMixingMLP(MLP):
    """A leak outside attention: the MLP adds the next position's attention output."""

    def forward(self, x, attn_out=None):
        return super().forward(x) + torch.roll(attn_out, shifts=-1, dims=1)


@pytest.mark.parametrize("step", ["V0", "V16", "V17", "V18"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_all_steps_are_causal(step, dropout, make):
    m = make(step, dropout=dropout)
    report = check_causal(m)
    assert report.ok, report.message
    assert report.max_leak <= report.threshold and report.leaking_positions == []
    assert report.positions == [1, 8, 15] and report.sensitive
    assert report.message.startswith("causal")


@pytest.mark.parametrize(
    "component,name,cls,expected",
    [
        ("attention", "bidirectional", BidirectionalAttention, [1, 8, 15]),
        ("attention", "off_by_one", OffByOneAttention, [1, 8, 15]),
        ("attention", "train_only_leak", TrainOnlyLeakAttention, [1, 8, 15]),
        ("mlp", "future_mixing", FutureMixingMLP, [1, 8, 15]),
    ],
)
def test_leaks_are_caught(component, name, cls, expected, make, monkeypatch):
    table = models.ATTENTION if component == "attention" else models.MLPS
    monkeypatch.setitem(table, name, cls)  # a test-only registry entry
    m = make("V0", **{component: name})
    report = check_causal(m)
    assert not report.ok and not bool(report)
    assert report.leaking_positions == expected
    assert report.max_leak > report.threshold
    assert report.message.startswith("model is not causal")


def test_off_by_one_leak_is_only_at_the_previous_position(make, monkeypatch):
    monkeypatch.setitem(models.ATTENTION, "off_by_one", OffByOneAttention)
    m = make("V0", attention="off_by_one", n_layer=1)
    # with one layer, perturbing t moves position t - 1 only: t = 5 leaks, positions < 4 do not
    assert check_causal(m, positions=[5]).leaking_positions == [5]


def test_leak_in_train_mode_only_is_caught_and_mode_restored(make, monkeypatch):
    monkeypatch.setitem(models.ATTENTION, "train_only_leak", TrainOnlyLeakAttention)
    m = make("V0", attention="train_only_leak")
    m.eval()
    assert not check_causal(m).ok
    assert not m.training
    m.train()
    assert not check_causal(m).ok
    assert m.training and all(mod.training for mod in m.modules())


def test_mode_is_restored_after_a_passing_check(make):
    m = make("V18", dropout=0.1)
    m.train()
    check_causal(m)
    assert m.training
    m.eval()
    check_causal(m)
    assert not m.training and not any(mod.training for mod in m.modules())


class IgnoresInput(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = models.ModelConfig(block_size=8, vocab_size=10)
        self.w = torch.nn.Parameter(torch.zeros(10))

    def forward(self, idx, targets=None):
        return self.w.expand(*idx.shape, 10), None


def test_a_model_that_ignores_its_input_does_not_pass():
    report = check_causal(IgnoresInput())
    assert not report.ok and not report.sensitive and report.leaking_positions == []
    assert "vacuous" in report.message


def test_positions_are_validated(make):
    m = make()
    with pytest.raises(ValueError, match=r"position 0 must be in \[1, 15\]"):
        check_causal(m, positions=[0])
    with pytest.raises(ValueError, match=r"position 16 must be in \[1, 15\]"):
        check_causal(m, positions=[16])
    r = check_causal(m, positions=[3, 4], seq_len=8)
    assert r.ok and r.positions == [3, 4]
