"""Reciprocal MLP (V17 frozen, V18 learned): formula, inputs, widths, gates, freezing, counts."""

from __future__ import annotations

import math

import pytest
import torch

from models.reciprocal_mlp import ReciprocalMLP

C, D_FF, R_FF, L, NH = 32, 128, 16, 2, 4


def gelu_tanh(h):
    return 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h**3)))


def reference_rmlp(mlp, x, a, w_std, w_rec):
    std = gelu_tanh(x @ mlp.c_fc.weight.T + mlp.c_fc.bias) @ mlp.c_proj.weight.T + mlp.c_proj.bias
    rec = gelu_tanh((x + a) @ mlp.up_rec.weight.T + mlp.up_rec.bias) @ mlp.down_rec.weight.T
    return w_std * std + w_rec * rec


def sharpen(mlp):
    with torch.no_grad():
        for p in mlp.parameters():
            if p.dim() > 0:
                p.normal_(0.0, 0.3)
    return mlp


def test_widths_split_d_ff(make):
    mlp = make("V18").transformer.h[0].mlp
    assert isinstance(mlp, ReciprocalMLP)
    assert (mlp.c_fc.out_features, mlp.c_proj.in_features) == (D_FF - R_FF, D_FF - R_FF)
    assert (mlp.up_rec.out_features, mlp.down_rec.in_features) == (R_FF, R_FF)
    assert mlp.down_rec.bias is None  # MLP_std's c_proj bias is the single output bias


def test_w_rec_zero_is_w_std_times_mlp_std(make):
    mlp = sharpen(make("V18").eval().transformer.h[0].mlp)
    with torch.no_grad():
        mlp.w_std.fill_(0.7)
        mlp.w_rec.zero_()
    x, a = torch.randn(2, 5, C), torch.randn(2, 5, C)
    out = mlp(x, a)
    assert torch.allclose(out, reference_rmlp(mlp, x, a, 0.7, 0.0), atol=1e-5)
    assert torch.equal(out, mlp(x, torch.randn(2, 5, C)))  # a has no effect at w_rec = 0


def test_general_gates_match_reference_and_read_a(make):
    mlp = sharpen(make("V18").eval().transformer.h[1].mlp)
    with torch.no_grad():
        mlp.w_std.fill_(1.2)
        mlp.w_rec.fill_(-0.8)
    x, a = torch.randn(2, 5, C), torch.randn(2, 5, C)
    out = mlp(x, a)
    assert torch.allclose(out, reference_rmlp(mlp, x, a, 1.2, -0.8), atol=1e-5)
    assert (out - mlp(x, torch.zeros_like(a))).abs().max() > 1e-2  # a enters the rec path


def test_block_feeds_ln2_input_and_attention_output(make, tokens):
    m = make("V18").eval()
    block = m.transformer.h[1]
    seen = {}
    block.register_forward_pre_hook(lambda mod, args: seen.update(x_in=args[0]))
    block.attn.register_forward_hook(lambda mod, args, out: seen.update(a=out))
    block.mlp.register_forward_pre_hook(lambda mod, args: seen.update(mlp_args=args))
    m(tokens(m))
    x_mlp, a_mlp = seen["mlp_args"]
    assert a_mlp is seen["a"]  # the attention output before the residual add
    assert torch.allclose(x_mlp, block.ln_2(seen["x_in"] + seen["a"]))


@pytest.mark.parametrize("bias", [True, False])
def test_parameter_counts(bias, make):
    v0, v16 = make("V0", bias=bias), make("V16", bias=bias)
    v17, v18 = make("V17", bias=bias), make("V18", bias=bias)
    ra_gates, rmlp_gates = 2 * L * NH, 2 * L
    # hidden units split D_ff = (D_ff - R_ff) + R_ff: c_fc + up_rec = C * D_FF (+ D_FF biases),
    # c_proj + down_rec = D_FF * C (+ one output bias of C, in MLP_std's c_proj)
    assert v16.num_params() == v0.num_params() + ra_gates
    assert v18.num_params() == v0.num_params() + ra_gates + rmlp_gates
    assert v17.num_params() == v18.num_params()
    frozen = 2 * C * R_FF + (R_FF if bias else 0)  # up_rec (+ bias) and down_rec, per layer
    trainable17 = sum(p.numel() for p in v17.parameters() if p.requires_grad)
    assert trainable17 == v18.num_params() - L * frozen

    # matrix FLOPs match V0: the same number of matrix parameters
    def matrix(m):
        return sum(p.numel() for n, p in m.named_parameters() if m.param_kind(n) == "matrix")

    assert matrix(v18) == matrix(v0)


@pytest.mark.parametrize("step", ["V17", "V18"])
@pytest.mark.parametrize("value", [0.0, -1e-3])
def test_rmlp_w_rec_has_gradient_at_zero(step, value, make, tokens):
    m = make(step, rmlp_w_rec_init=value)
    _, loss = m(tokens(m), tokens(m, seed=2))
    loss.backward()
    for block in m.transformer.h:
        assert block.mlp.w_rec.grad is not None and block.mlp.w_rec.grad != 0
        assert block.mlp.w_std.grad is not None and block.mlp.w_std.grad != 0


def train_step(m, idx, targets, all_params=False):
    params = m.parameters() if all_params else [p for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)
    _, loss = m(idx, targets)
    loss.backward()
    opt.step()


REC = ("up_rec.weight", "up_rec.bias", "down_rec.weight")


@pytest.mark.parametrize("all_params", [False, True])
def test_v17_reciprocal_weights_stay_frozen_gates_learn(all_params, make, tokens):
    m = make("V17", rmlp_w_rec_init=0.0)
    for block in m.transformer.h:
        assert (
            not block.mlp.up_rec.weight.requires_grad
            and not block.mlp.down_rec.weight.requires_grad
        )
        assert block.mlp.w_rec.requires_grad and block.mlp.c_fc.weight.requires_grad
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    # even an optimizer handed every parameter (weight decay on) must not move them
    train_step(m, tokens(m), tokens(m, seed=2), all_params=all_params)
    after = dict(m.named_parameters())
    for n in before:
        if n.endswith(REC):
            assert torch.equal(before[n], after[n]), n
            assert after[n].grad is None
    for i in range(L):
        for g in ("w_std", "w_rec"):
            n = f"transformer.h.{i}.mlp.{g}"
            assert not torch.equal(before[n], after[n]), n
        n = f"transformer.h.{i}.mlp.c_fc.weight"
        assert not torch.equal(before[n], after[n]), n


def test_v18_reciprocal_weights_learn(make, tokens):
    m = make("V18")
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    train_step(m, tokens(m), tokens(m, seed=2))
    for n, p in m.named_parameters():
        if n.endswith(REC) or n.endswith(("mlp.w_std", "mlp.w_rec")):
            assert not torch.equal(before[n], p), n


def test_v17_and_v18_start_identical(make, tokens):
    # same seed -> same initial weights: the only difference between V17 and V18 is the freeze
    v17, v18 = make("V17"), make("V18")
    for (n, a), (_, b) in zip(v17.named_parameters(), v18.named_parameters()):
        assert torch.equal(a, b), n
    idx = tokens(v17)
    assert torch.equal(v17(idx)[0], v18(idx)[0])


def test_missing_attention_output_is_an_error(make):
    with pytest.raises(ValueError, match="attn_out"):
        make("V18").transformer.h[0].mlp(torch.randn(1, 3, C))
