"""GPT-2 baseline (V0) and the model API shared by every step."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import models

ALL_STEPS = ["V0", "V16", "V17", "V18"]


@pytest.mark.parametrize("step", ALL_STEPS)
def test_shapes_and_loss(step, make, tokens):
    m = make(step)
    idx = tokens(m, batch=3)
    logits, loss = m(idx)
    assert logits.shape == (3, 16, 64) and loss is None
    targets = tokens(m, batch=3, seed=2)
    logits, loss = m(idx, targets)
    assert loss.shape == ()
    ref = F.cross_entropy(logits.reshape(-1, 64), targets.reshape(-1))
    assert torch.allclose(loss, ref)
    # shorter sequences work; logits for every position, always
    assert m(idx[:, :5])[0].shape == (3, 5, 64)


def test_loss_ignores_minus_one(make, tokens):
    m = make()
    idx, targets = tokens(m), tokens(m, seed=2)
    masked = targets.clone()
    masked[:, ::2] = -1
    logits, loss = m(idx, masked)
    keep = masked != -1
    ref = F.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, ref)
    assert not torch.allclose(loss, m(idx, targets)[1])


def test_sequence_longer_than_block_size_is_refused(make):
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        make()(torch.zeros(1, 17, dtype=torch.long))


def test_lm_head_is_tied_to_token_embedding(make):
    m = make()
    assert m.lm_head.weight is m.transformer.wte.weight
    names = [n for n, _ in m.named_parameters()]
    assert "transformer.wte.weight" in names and "lm_head.weight" not in names


def v0_params(V, T, C, L, bias=True):
    """GPT-2 parameter count by hand: embeddings, per block (LN, c_attn, c_proj, LN, c_fc,
    c_proj), final LN; the LM head is tied."""
    if bias:
        block = (
            2 * C
            + (3 * C * C + 3 * C)
            + (C * C + C)
            + 2 * C
            + (4 * C * C + 4 * C)
            + (4 * C * C + C)
        )
        return V * C + T * C + L * block + 2 * C
    block = C + 3 * C * C + C * C + C + 4 * C * C + 4 * C * C
    return V * C + T * C + L * block + C


@pytest.mark.parametrize("bias", [True, False])
def test_v0_parameter_count(bias, make):
    m = make(bias=bias)
    assert m.num_params() == v0_params(64, 16, 32, 2, bias)
    assert m.num_params(non_embedding=True) == v0_params(64, 16, 32, 2, bias) - 16 * 32


def test_flops_per_token_follows_nanogpt(make):
    m = make()
    N = v0_params(64, 16, 32, 2) - 16 * 32
    assert m.flops_per_token() == 6 * N + 12 * 2 * 4 * 8 * 16


def test_flops_per_token_counts_no_weight_gradients_for_frozen_weights(make):
    v17, v18 = make("V17"), make("V18")
    frozen = sum(p.numel() for p in v17.parameters() if not p.requires_grad)
    assert frozen > 0 and v17.num_params() == v18.num_params()
    assert (
        v18.flops_per_token() - v17.flops_per_token() == 2 * frozen
    )  # 6 -> 4 FLOPs per frozen weight


@pytest.mark.parametrize("step", ALL_STEPS)
def test_param_kind_covers_every_parameter(step, make):
    m = make(step)
    kinds = {n: m.param_kind(n) for n, _ in m.named_parameters()}
    assert set(kinds.values()) <= {"matrix", "embedding", "gate", "other"}
    for name, p in m.named_parameters():
        k = kinds[name]
        if name in ("transformer.wte.weight", "transformer.wpe.weight"):
            assert k == "embedding"
        elif name.endswith(("w_std", "w_rec")):
            assert k == "gate"
        elif p.dim() == 2:
            assert k == "matrix", name
        else:
            assert k == "other", name  # biases and LayerNorm weights are never decayed
    n_matrix = sum(k == "matrix" for k in kinds.values())
    assert n_matrix == 2 * (4 if step in ("V0", "V16") else 6)
    n_gates = sum(k == "gate" for k in kinds.values())
    assert n_gates == {"V0": 0, "V16": 4, "V17": 8, "V18": 8}[step]
    # prefixes added by DDP / torch.compile resolve to the same kind
    assert m.param_kind("module._orig_mod.transformer.wte.weight") == "embedding"
    with pytest.raises(KeyError):
        m.param_kind("transformer.nope")


def test_init_follows_nanogpt():
    torch.manual_seed(0)
    m = models.build_model(dict(n_layer=8, n_head=4, n_embd=128, block_size=64, vocab_size=512))
    blk = m.transformer.h[3]
    assert abs(blk.attn.c_attn.weight.std().item() - 0.02) < 0.002
    # projections into the residual stream: 0.02 / sqrt(2 * n_layer) = 0.005
    assert abs(blk.attn.c_proj.weight.std().item() - 0.005) < 0.0007
    assert abs(blk.mlp.c_proj.weight.std().item() - 0.005) < 0.0007
    assert abs(m.transformer.wte.weight.std().item() - 0.02) < 0.002
    assert torch.all(blk.attn.c_attn.bias == 0) and torch.all(blk.ln_1.weight == 1)


@pytest.mark.parametrize("step", ALL_STEPS)
def test_same_seed_same_output(step, make, tokens):
    idx = tokens(make(step))
    a = make(step, seed=3, dropout=0.1)
    b = make(step, seed=3, dropout=0.1)
    c = make(step, seed=4, dropout=0.1)
    a.eval(), b.eval(), c.eval()
    assert torch.equal(a(idx)[0], b(idx)[0])
    assert not torch.allclose(a(idx)[0], c(idx)[0])
    a.train(), b.train()
    torch.manual_seed(7)
    ya = a(idx)[0]
    torch.manual_seed(7)
    yb = b(idx)[0]
    assert torch.equal(ya, yb)
    assert not torch.allclose(ya, a.eval()(idx)[0])  # dropout is active in train mode


def test_gate_stats_layout(make):
    assert make("V0").gate_stats() == {}
    s16 = make("V16", n_layer=3, ra_w_std_init=0.9, ra_w_rec_init=-0.2).gate_stats()
    assert set(s16) == {"ra_w_std", "ra_w_rec"}
    assert len(s16["ra_w_std"]) == 3 and all(len(row) == 4 for row in s16["ra_w_rec"])
    assert s16["ra_w_std"][2][3] == pytest.approx(0.9) and s16["ra_w_rec"][0][0] == pytest.approx(
        -0.2
    )
    assert all(type(v) is float for row in s16["ra_w_std"] for v in row)
    s18 = make("V18", n_layer=3).gate_stats()
    assert set(s18) == {"ra_w_std", "ra_w_rec", "rmlp_w_std", "rmlp_w_rec"}
    assert len(s18["rmlp_w_rec"]) == 3 and all(type(v) is float for v in s18["rmlp_w_rec"])
    # defaults: RA (D - R) / D and R / D with D = 8, R = 4; R-MLP (D_ff - R_ff) / D_ff, R_ff / D_ff
    assert s18["ra_w_std"][0] == [0.5] * 4 and s18["ra_w_rec"][1] == [0.5] * 4
    assert s18["rmlp_w_std"] == [pytest.approx(112 / 128)] * 3
    assert s18["rmlp_w_rec"] == [pytest.approx(16 / 128)] * 3
    json.dumps(s18)  # plain Python values, storable as-is


def test_gate_stats_reports_per_layer_values(make):
    m = make("V18")
    with torch.no_grad():
        m.transformer.h[1].attn.w_rec[2] = 0.75
        m.transformer.h[0].mlp.w_rec.fill_(-0.3)
    s = m.gate_stats()
    assert s["ra_w_rec"][1][2] == pytest.approx(0.75) and s["ra_w_rec"][0][2] == pytest.approx(0.5)
    assert s["rmlp_w_rec"][0] == pytest.approx(-0.3) and s["rmlp_w_rec"][1] != pytest.approx(-0.3)


def test_registry_entries():
    assert set(models.REGISTRY) >= {"gpt2"}
    assert set(models.ATTENTION) >= {"causal", "ra"}
    assert set(models.MLPS) >= {"standard", "rmlp"}


def test_mlp_is_tanh_gelu(make):
    m = make()
    mlp = m.transformer.h[0].mlp
    x = torch.randn(2, 5, 32)
    h = x @ mlp.c_fc.weight.T + mlp.c_fc.bias
    h = 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))
    ref = h @ mlp.c_proj.weight.T + mlp.c_proj.bias
    assert torch.allclose(mlp(x, None), ref, atol=1e-6)


@pytest.mark.parametrize("step", ALL_STEPS)
def test_bf16_autocast_and_bf16_weights(step, make, tokens):
    m = make(step)
    idx = tokens(m)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, loss = m(idx, idx)
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)
    assert models.check_causal(m.to(torch.bfloat16)).ok
