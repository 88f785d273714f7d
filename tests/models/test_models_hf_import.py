"""init_from: a local Hugging Face GPT-2 folder loads with identical logits (no hub access)."""

from __future__ import annotations

import pytest
import torch

from models import ModelConfigError, build_model

transformers = pytest.importorskip("transformers")

HF_VOCAB, N_POS = 100, 32
BASE = dict(n_layer=2, n_head=4, n_embd=32, block_size=32, vocab_size=128, dropout=0.0)


@pytest.fixture(scope="module")
def hf_model():
    cfg = transformers.GPT2Config(
        n_layer=2,
        n_head=4,
        n_embd=32,
        n_positions=N_POS,
        vocab_size=HF_VOCAB,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    # HF's init has zero biases and unit LayerNorms, which would hide a mis-mapped bias
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def hf_dirs(hf_model, tmp_path_factory):
    st = tmp_path_factory.mktemp("hf_safetensors")
    hf_model.save_pretrained(st)
    assert (st / "model.safetensors").is_file()
    binary = tmp_path_factory.mktemp("hf_bin")
    hf_model.config.save_pretrained(binary)
    torch.save(hf_model.state_dict(), binary / "pytorch_model.bin")
    return {"safetensors": st, "bin": binary}


def idx(T=N_POS):
    return torch.randint(0, HF_VOCAB, (2, T), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_v0_matches_hf_logits(fmt, hf_model, hf_dirs):
    torch.manual_seed(1)
    m = build_model({**BASE, "init_from": str(hf_dirs[fmt])}).eval()
    x = idx()
    with torch.no_grad():
        ref = hf_model(x).logits
        ours = m(x)[0]
    assert ours.shape == (2, N_POS, 128)
    assert (ours[..., :HF_VOCAB] - ref).abs().max().item() < 1e-5
    # padding rows are the mean real row, so padding logits sit at an average logit
    wte = m.transformer.wte.weight
    assert torch.allclose(wte[HF_VOCAB:], wte[:HF_VOCAB].mean(0).expand(28, -1))


def test_block_size_smaller_than_checkpoint_crops_positions(hf_model, hf_dirs):
    m = build_model({**BASE, "block_size": 16, "init_from": str(hf_dirs["safetensors"])}).eval()
    x = idx(16)
    with torch.no_grad():
        assert (m(x)[0][..., :HF_VOCAB] - hf_model(x).logits).abs().max().item() < 1e-5


def test_ra_with_unit_gates_matches_hf(hf_model, hf_dirs):
    # RA's fused projection is c_attn exactly: with w_std = w_rec = 1 it is GPT-2's attention
    cfg = {**BASE, "attention": "ra", "ra_w_std_init": 1.0, "ra_w_rec_init": 1.0}
    m = build_model({**cfg, "init_from": str(hf_dirs["safetensors"])}).eval()
    x = idx()
    with torch.no_grad():
        assert (m(x)[0][..., :HF_VOCAB] - hf_model(x).logits).abs().max().item() < 1e-5
    # default gates keep their init (not overwritten by the checkpoint)
    m = build_model({**BASE, "attention": "ra", "init_from": str(hf_dirs["safetensors"])})
    assert m.gate_stats()["ra_w_std"][0] == [0.5] * 4


def test_rmlp_takes_first_units_for_std_and_last_for_rec(hf_model, hf_dirs):
    cfg = {**BASE, "attention": "ra", "mlp": "rmlp", "rmlp_rank": 16, "rmlp_frozen": True}
    m = build_model({**cfg, "init_from": str(hf_dirs["safetensors"])})
    for i in range(2):
        hf = hf_model.transformer.h[i].mlp
        mlp = m.transformer.h[i].mlp
        fc_w, proj_w = hf.c_fc.weight.T, hf.c_proj.weight.T  # Conv1D (in, out) -> (out, in)
        assert torch.equal(mlp.c_fc.weight, fc_w[:112]) and torch.equal(
            mlp.up_rec.weight, fc_w[112:]
        )
        assert torch.equal(mlp.c_fc.bias, hf.c_fc.bias[:112])
        assert torch.equal(mlp.up_rec.bias, hf.c_fc.bias[112:])
        assert torch.equal(mlp.c_proj.weight, proj_w[:, :112])
        assert torch.equal(mlp.down_rec.weight, proj_w[:, 112:])
        assert torch.equal(mlp.c_proj.bias, hf.c_proj.bias)
        assert not mlp.up_rec.weight.requires_grad  # still frozen after loading
    # with unit gates and the attention output removed from the rec input, it is GPT-2's MLP
    mlp = m.transformer.h[0].mlp
    with torch.no_grad():
        mlp.w_std.fill_(1.0)
        mlp.w_rec.fill_(1.0)
        x = torch.randn(2, 5, 32)
        assert torch.allclose(
            mlp(x, torch.zeros_like(x)), hf_model.transformer.h[0].mlp(x), atol=1e-5
        )


@pytest.mark.parametrize(
    "overrides,pattern",
    [
        (dict(n_layer=3), r"model\.n_layer=3 does not match the checkpoint's n_layer=2"),
        (dict(n_head=2), r"model\.n_head=2 does not match the checkpoint's n_head=4"),
        (dict(n_embd=64, n_head=4), r"model\.n_embd=64 does not match the checkpoint's n_embd=32"),
        (dict(vocab_size=64), r"model\.vocab_size=64 must be >= the checkpoint's vocab_size=100"),
        (dict(block_size=64), r"model\.block_size=64 must be <= the checkpoint's n_positions=32"),
        (dict(bias=False), r"model\.bias=False cannot load GPT-2 weights"),
    ],
)
def test_mismatched_sizes_name_the_key(overrides, pattern, hf_dirs):
    with pytest.raises(ModelConfigError, match=pattern):
        build_model({**BASE, **overrides, "init_from": str(hf_dirs["safetensors"])})


def test_missing_folder_or_weights(tmp_path, hf_dirs):
    no_folder = r"model\.init_from='.*nope' is not a folder with a config\.json"
    with pytest.raises(ModelConfigError, match=no_folder):
        build_model({**BASE, "init_from": str(tmp_path / "nope")})
    (tmp_path / "config.json").write_text((hf_dirs["safetensors"] / "config.json").read_text())
    with pytest.raises(ModelConfigError, match=r"has no model\.safetensors or pytorch_model\.bin"):
        build_model({**BASE, "init_from": str(tmp_path)})
