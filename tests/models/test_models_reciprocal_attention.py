"""Reciprocal Attention (V16): exact score formula, gates with a gradient at 0, parameter count."""

from __future__ import annotations

import math

import pytest
import torch

from models.reciprocal_attention import ReciprocalAttention

B, T, C, NH, D, R = 2, 16, 32, 4, 8, 4


def reference_ra(attn, x, w_std, w_rec):
    """RA by hand: explicit scores, causal mask and softmax. Per head the q slot of c_attn holds
    [Q_std | K_low] and the k slot [K_std | Q_low]; score_ij = (w_std <Q_std_i, K_std_j> +
    w_rec <K_low_i, Q_low_j>) / sqrt(D)."""
    qkv = x @ attn.c_attn.weight.T + attn.c_attn.bias
    q, k, v = (t.reshape(B, T, NH, D).transpose(1, 2) for t in qkv.split(C, dim=2))
    q_std, k_low_i = q[..., : D - R], q[..., D - R :]
    k_std, q_low_j = k[..., : D - R], k[..., D - R :]
    std = torch.einsum("bhid,bhjd->bhij", q_std, k_std)
    rec = torch.einsum("bhid,bhjd->bhij", k_low_i, q_low_j)
    scores = (w_std[None, :, None, None] * std + w_rec[None, :, None, None] * rec) / math.sqrt(D)
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    p = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
    y = (p @ v).transpose(1, 2).reshape(B, T, C)
    return y @ attn.c_proj.weight.T + attn.c_proj.bias


def sharpen(attn):
    """Larger weights than GPT-2's init, so attention is far from uniform and errors show."""
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_(0.0, 0.4)
    return attn


def test_w_rec_zero_is_std_dims_scaled_by_w_std(make):
    attn = sharpen(make("V16").eval().transformer.h[0].attn)
    w_std = torch.tensor([0.3, -0.7, 1.1, 0.5])
    with torch.no_grad():
        attn.w_std.copy_(w_std)
        attn.w_rec.zero_()
    x = torch.randn(B, T, C)
    ref = reference_ra(attn, x, w_std, torch.zeros(NH))
    assert torch.allclose(attn(x), ref, atol=1e-5)
    # and the reciprocal dims really are out: changing their weights changes nothing
    with torch.no_grad():
        for slot in range(2):  # q and k slots
            rows = torch.arange(NH)[:, None] * D + torch.arange(D - R, D) + slot * C
            attn.c_attn.weight[rows.flatten()] += 1.0
    assert torch.allclose(attn(x), ref, atol=1e-5)
    # while changing a std dim does change the output (the check above can fail)
    with torch.no_grad():
        attn.c_attn.weight[0] += 1.0
    assert (attn(x) - ref).abs().max() > 1e-2


def test_general_gates_match_reference(make):
    attn = sharpen(make("V16").eval().transformer.h[1].attn)
    w_std, w_rec = torch.tensor([0.9, 0.2, -0.4, 1.3]), torch.tensor([0.6, -1.5, 0.0, 2.0])
    with torch.no_grad():
        attn.w_std.copy_(w_std)
        attn.w_rec.copy_(w_rec)
    x = torch.randn(B, T, C)
    assert torch.allclose(attn(x), reference_ra(attn, x, w_std, w_rec), atol=1e-5)
    # the reciprocal term matters: the std-only reference differs
    assert (attn(x) - reference_ra(attn, x, w_std, torch.zeros(NH))).abs().max() > 0.1


def test_unit_gates_equal_gpt2_attention(make, tokens):
    # the fused projection is GPT-2's c_attn one to one: with both gates 1, V16 == V0
    v0, v16 = make("V0"), make("V16", ra_w_std_init=1.0, ra_w_rec_init=1.0)
    v16.load_state_dict(v0.state_dict(), strict=False)
    idx = tokens(v0)
    assert torch.allclose(v0(idx)[0], v16(idx)[0], atol=1e-5)
    with torch.no_grad():
        v16.transformer.h[0].attn.w_rec[1] = 0.5
    assert not torch.allclose(v0(idx)[0], v16(idx)[0], atol=1e-5)


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_count_is_v0_plus_gates(bias, make):
    v0, v16 = make("V0", bias=bias), make("V16", bias=bias)
    assert v16.num_params() == v0.num_params() + 2 * 2 * NH  # 2 gates * n_layer * n_head


@pytest.mark.parametrize("gate", ["w_rec", "w_std"])
@pytest.mark.parametrize("value", [0.0, 1e-9, -1e-3])
def test_gates_have_gradient_at_and_near_zero(gate, value, make, tokens):
    # the replaced system's sqrt(clamp(w, 1e-8)) has gradient exactly 0 here: w_rec never moved
    m = make("V16", **{f"ra_{gate}_init": value}).double()
    idx, targets = tokens(m), tokens(m, seed=2)
    _, loss = m(idx, targets)
    loss.backward()
    for block in m.transformer.h:
        g = getattr(block.attn, gate).grad
        assert g is not None and torch.all(g != 0), g
    # and it is the true derivative (central finite difference, float64)
    p = getattr(m.transformer.h[1].attn, gate)
    eps = 1e-6
    with torch.no_grad():
        p[2] += eps
        up = m(idx, targets)[1]
        p[2] -= 2 * eps
        down = m(idx, targets)[1]
    fd = (up - down) / (2 * eps)
    assert fd.item() == pytest.approx(p.grad[2].item(), rel=1e-4)


def test_gates_leave_zero_after_a_step(make, tokens):
    m = make("V16", ra_w_rec_init=0.0)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2, weight_decay=0.0)
    _, loss = m(tokens(m), tokens(m, seed=2))
    loss.backward()
    opt.step()
    rec = torch.tensor(m.gate_stats()["ra_w_rec"])
    assert torch.all(rec != 0.0), rec


def test_single_sdpa_call_with_explicit_scale(make, monkeypatch):
    import torch.nn.functional as F

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    m = make("V16")
    m(torch.zeros(1, 8, dtype=torch.long))
    assert len(calls) == 2  # one per layer, all heads at once
    assert all(c["is_causal"] and c["scale"] == pytest.approx(1 / math.sqrt(D)) for c in calls)


def test_class_is_registered_as_ra(make):
    assert isinstance(make("V16").transformer.h[0].attn, ReciprocalAttention)


@torch.no_grad()
def test_ra_is_v0_reparametrised_and_starts_from_v0s_weights(make, tokens):
    """What the step docs say about V16: with one seed it starts from V0's weight matrices, and
    folding its gates into c_attn's query rows gives V0 exactly (nothing V0 cannot express)."""
    v0, v16 = make("V0", seed=3), make("V16", seed=3)
    p0 = dict(v0.named_parameters())
    shared = {n: p for n, p in v16.named_parameters() if not n.endswith(("w_std", "w_rec"))}
    assert set(shared) == set(p0) and all(torch.equal(p, p0[n]) for n, p in shared.items())
    sd = {n: t.clone() for n, t in v16.state_dict().items() if not n.endswith(("w_std", "w_rec"))}
    for i, blk in enumerate(v16.transformer.h):
        a = blk.attn
        gate = torch.cat(
            (a.w_std[:, None].expand(-1, a.std_dim), a.w_rec[:, None].expand(-1, a.rank)), 1
        ).flatten()
        scale = torch.cat((gate, gate.new_ones(2 * a.n_embd)))
        sd[f"transformer.h.{i}.attn.c_attn.weight"] = a.c_attn.weight * scale[:, None]
        if a.c_attn.bias is not None:
            sd[f"transformer.h.{i}.attn.c_attn.bias"] = a.c_attn.bias * scale
    v0.load_state_dict(sd)
    idx = tokens(v0, batch=2)
    assert (v0(idx)[0] - v16(idx)[0]).abs().max() < 1e-5
