"""Gate shares: what the reciprocal paths contribute, invariant where raw gates are not."""

from __future__ import annotations

import pytest
import torch

import models


@torch.no_grad()
def test_shares_are_invariant_to_rescaling_a_gate_against_its_path(tiny_cfg):
    torch.manual_seed(0)
    m = models.build_model(tiny_cfg("V18", bias=True))
    idx = torch.randint(0, 64, (2, 16))
    before = models.gate_shares(m, idx)
    assert set(before) == {"ra_share", "rmlp_share"} and len(before["rmlp_share"]) == 2
    assert all(0 < s < 10 for v in before.values() for s in v)
    logits0, _ = m(idx)
    blk = m.transformer.h[0]
    # R-MLP: w_rec x 10 with W_down_rec / 10 is the same function, ten times the raw gate.
    blk.mlp.w_rec.mul_(10)
    blk.mlp.down_rec.weight.div_(10)
    # RA: w_rec x 10 (it scales K_low in the query slot) with Q_low (the key slot's last R dims of
    # each head) / 10.
    attn = blk.attn
    C, D, s = attn.n_embd, attn.head_dim, attn.std_dim
    rows = torch.cat([torch.arange(C + h * D + s, C + (h + 1) * D) for h in range(attn.n_head)])
    attn.w_rec.mul_(10)
    attn.c_attn.weight[rows] /= 10
    attn.c_attn.bias[rows] /= 10
    logits1, _ = m(idx)
    assert (logits1 - logits0).abs().max() < 1e-5  # the same function
    after = models.gate_shares(m, idx)
    for key in before:
        assert after[key] == pytest.approx(before[key], rel=1e-5), key


@torch.no_grad()
def test_shares_measure_the_path(tiny_cfg):
    torch.manual_seed(0)
    m = models.build_model(tiny_cfg("V18"))
    idx = torch.randint(0, 64, (1, 16))
    for blk in m.transformer.h:
        blk.mlp.w_rec.zero_()
        blk.attn.w_rec.zero_()
    zero = models.gate_shares(m, idx)
    assert zero == {"ra_share": [0.0, 0.0], "rmlp_share": [0.0, 0.0]}
    for blk in m.transformer.h:
        blk.mlp.w_std.zero_()
        blk.mlp.w_rec.fill_(0.5)
    assert models.gate_shares(m, idx)["rmlp_share"] == pytest.approx([1.0, 1.0])  # the whole output
    assert models.gate_shares(models.build_model(tiny_cfg("V0")), idx) == {}
    assert set(models.gate_shares(models.build_model(tiny_cfg("V16")), idx)) == {"ra_share"}
