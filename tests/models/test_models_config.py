"""ModelConfig: defaults, conversion from dict / DictConfig, and one clear error per bad input."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

import models
from models import ModelConfig, ModelConfigError, build_model, check_config

CONF_MODEL = Path(__file__).resolve().parents[2] / "conf" / "model"


def test_defaults_are_gpt2_124m_baseline():
    c = ModelConfig()
    assert (c.arch, c.n_layer, c.n_head, c.n_embd, c.block_size) == ("gpt2", 12, 12, 768, 1024)
    assert (c.vocab_size, c.bias, c.dropout) == (50304, True, 0.0)
    assert (c.attention, c.ra_rank, c.ra_w_std_init, c.ra_w_rec_init) == ("causal", 4, None, None)
    assert (c.mlp, c.rmlp_rank, c.rmlp_frozen) == ("standard", 64, False)
    assert (c.rmlp_w_std_init, c.rmlp_w_rec_init, c.init_from) == (None, None, None)


def test_every_field_has_a_docstring():
    src = Path(models.config.__file__).read_text()
    for f in dataclasses.fields(ModelConfig):
        block = src.split(f"\n    {f.name}: ", 1)[1].split("\n", 2)
        assert block[1].strip().startswith('"""'), f"field {f.name} has no docstring line"


def test_structured_config_roundtrip():
    # ablate.config nests ModelConfig in a Hydra structured config: OmegaConf must accept it
    sc = OmegaConf.structured(ModelConfig)
    merged = OmegaConf.merge(sc, {"n_layer": 2, "n_head": 4, "n_embd": 32, "attention": "ra"})
    cfg = check_config(merged)
    assert isinstance(cfg, ModelConfig)
    assert (cfg.n_layer, cfg.attention, cfg.ra_w_rec_init) == (2, "ra", None)


def test_build_accepts_modelconfig_dict_and_dictconfig(tiny_cfg):
    d = tiny_cfg("V18")
    outs = []
    for cfg in (ModelConfig(**d), d, OmegaConf.create(d)):
        torch.manual_seed(0)
        m = build_model(cfg)
        assert isinstance(m.config, ModelConfig) and m.config == ModelConfig(**d)
        outs.append(m(torch.zeros(1, 4, dtype=torch.long))[0])
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


def test_int_is_accepted_for_float_fields():
    assert check_config({"dropout": 0, "ra_w_rec_init": 0}).ra_w_rec_init == 0.0


def test_unknown_key_is_named(tiny_cfg):
    with pytest.raises(ModelConfigError, match=r"model\.n_layers is not a model option"):
        build_model({**tiny_cfg(), "n_layers": 3})


BAD = [
    (dict(arch="llama"), r"model\.arch='llama' is unknown \(allowed: gpt2\)"),
    (dict(attention="flash"), r"model\.attention='flash' is unknown \(allowed: causal, ra\)"),
    (dict(mlp="moe"), r"model\.mlp='moe' is unknown \(allowed: rmlp, standard\)"),
    (
        dict(n_embd=128, attention="ra", ra_rank=32),
        r"^model\.ra_rank=32 must be in \[1, 31\] \(head dim is 32\)$",
    ),
    (dict(n_embd=128, attention="ra", ra_rank=64), r"model\.ra_rank=64 must be in \[1, 31\]"),
    (dict(attention="ra", ra_rank=0), r"model\.ra_rank=0 must be in \[1, 7\] \(head dim is 8\)"),
    (dict(mlp="rmlp", rmlp_rank=128), r"model\.rmlp_rank=128 must be in \[1, 127\]"),
    (dict(mlp="rmlp", rmlp_rank=0), r"model\.rmlp_rank=0 must be in \[1, 127\]"),
    (dict(n_embd=30), r"model\.n_embd=30 must be divisible by model\.n_head=4"),
    (dict(dropout=-0.1), r"model\.dropout=-0\.1 must be in \[0, 1\)"),
    (dict(dropout=1.0), r"model\.dropout=1\.0 must be in \[0, 1\)"),
    (dict(n_layer=0), r"model\.n_layer=0 must be >= 1"),
    (dict(n_head=-2), r"model\.n_head=-2 must be >= 1"),
    (dict(block_size=0), r"model\.block_size=0 must be >= 1"),
    (dict(vocab_size=0), r"model\.vocab_size=0 must be >= 1"),
    (dict(n_layer="4"), r"model\.n_layer='4' has type str, expected int"),
    (dict(n_layer=2.0), r"model\.n_layer=2\.0 has type float, expected int"),
    (dict(n_layer=True), r"model\.n_layer=True has type bool, expected int"),
    (dict(bias="yes"), r"model\.bias='yes' has type str, expected bool"),
    (dict(n_head=None), r"model\.n_head=None is not allowed"),
    (dict(ra_w_rec_init=float("nan")), r"model\.ra_w_rec_init=nan must be finite"),
    (dict(init_from=""), r"model\.init_from='' must be a folder path or null"),
]


@pytest.mark.parametrize("overrides,pattern", BAD, ids=[p[1][:40] for p in BAD])
def test_bad_input_raises_one_line_naming_the_key(overrides, pattern, tiny_cfg):
    with pytest.raises(ModelConfigError, match=pattern) as info:
        build_model(tiny_cfg(**overrides))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_component_options_are_checked_only_when_used(tiny_cfg):
    # ra_rank 64 is meaningless for causal attention; it must not block a V0 build
    check_config(tiny_cfg("V0", ra_rank=64, rmlp_rank=10_000))
    with pytest.raises(ModelConfigError, match="ra_rank"):
        check_config(tiny_cfg("V16", ra_rank=64))


@pytest.mark.parametrize("name", ["gpt2", "small", "tiny"])
def test_conf_model_yaml_has_only_model_config_keys(name, steps):
    text = (CONF_MODEL / f"{name}.yaml").read_text()
    assert "@package" not in text
    data = (
        yaml.safe_load(text) or {}
    )  # gpt2.yaml sets nothing: ModelConfig's defaults are GPT-2 124M
    assert set(data) <= {f.name for f in dataclasses.fields(ModelConfig)}
    for step in steps.values():  # every step's options are valid on every preset
        check_config({**data, **step})


def test_gpt2_preset_has_124m_parameters():
    data = yaml.safe_load((CONF_MODEL / "gpt2.yaml").read_text()) or {}
    with torch.device("meta"):  # no memory, no init cost
        m = build_model(data)
    V, T, C, L = 50304, 1024, 768, 12
    assert m.num_params() == V * C + T * C + L * (12 * C * C + 13 * C) + 2 * C == 124_475_904
    # 124,439,808 in Hugging Face's gpt2 (vocab 50257) + 47 padding rows * 768
    assert m.num_params() - 47 * 768 == 124_439_808


def test_tiny_preset_runs(steps):
    torch.manual_seed(0)
    m = build_model({**yaml.safe_load((CONF_MODEL / "tiny.yaml").read_text()), **steps["V18"]})
    logits, loss = m(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert logits.shape == (1, 8, 50304) and torch.isfinite(loss)
