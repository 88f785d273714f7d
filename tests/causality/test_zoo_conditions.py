"""Issue 22: the probes run as the job runs (its micro-batch, gradients on, ``model(x)``,
every cut, per-logit thresholds, its compiled forward, its data), so the leaks that hid in
each difference are refused; each member is also shown to pass the probe it was built against.
The members that read their targets are harmless by construction: targets never reach a model."""

from __future__ import annotations

import pytest
import torch
from helpers import leak_zoo
from helpers.leak_zoo import TARGET_READERS, ZOO22

import models
from ablate.matrix.preflight import check_model
from models import check_causal
from models.causality_probes import perturbation_probe

# small enough for fast tests, the smoke block and vocabulary (EOT and newline ids exist)
TINY = dict(n_layer=4, n_head=2, n_embd=32, block_size=128, vocab_size=50304)
MICRO_BATCH = 4  # the smoke preset's hardware.micro_batch
TEXT = leak_zoo.text_like(16, 129)


@pytest.fixture(scope="module")
def zoo():
    with leak_zoo.registered() as members:
        yield {m.name: m for m in members}


def _build(zoo, name, **overrides):
    torch.manual_seed(0)
    return models.build_model({**TINY, **zoo[name].model, **overrides})


@pytest.mark.parametrize(
    "name", [m.name for m in ZOO22 if m.name not in ("zoo_compile_only", "zoo_chunk40")]
)
def test_each_new_leak_is_refused_by_the_preflight_at_the_jobs_conditions(name, zoo):
    problems, record = check_model(
        {**TINY, **zoo[name].model}, seed=1, micro_batch=MICRO_BATCH, data=TEXT
    )
    assert problems and "not causal" in problems[0], (name, record and record["message"])
    assert record["ok"] is False


@pytest.mark.slow
def test_a_leak_at_chunk_edges_is_refused_by_the_pass_that_covers_every_cut(zoo):
    """Refused only at the full block, by the covering gradient pass (about 30 s here)."""
    problems, record = check_model(
        {**TINY, **zoo["zoo_chunk40"].model}, seed=1, micro_batch=MICRO_BATCH, data=TEXT
    )
    assert problems and "not causal" in problems[0], record["message"]
    assert set(record["probes"][-1]["leaking_positions"]) <= {39, 79, 119}


def test_a_leak_at_chunk_edges_hides_from_the_priority_cuts(zoo):
    m = _build(zoo, "zoo_chunk40", n_layer=1)
    assert check_causal(m, batch=MICRO_BATCH, every_cut=False, seq_len=128, randomize=False).ok
    r = check_causal(m, positions=[39, 79], seq_len=128, randomize=False)
    assert not r.ok and r.leaking_positions == [39, 79]


@pytest.mark.parametrize("name", ["zoo_size384", "zoo_even_batch"])
def test_size_and_parity_leaks_hide_at_batch_3_not_at_the_jobs_micro_batch(name, zoo):
    m = _build(zoo, name, n_layer=1)
    assert check_causal(m, batch=3, every_cut=False, randomize=False).ok
    assert not check_causal(m, batch=MICRO_BATCH, every_cut=False, randomize=False).ok


def test_a_top_k_choice_under_autograd_needs_a_perturbation_with_gradients_on(zoo):
    m = _build(zoo, "zoo_grad_topk", n_layer=1)
    idx = TEXT[:4, :97]
    kinds = ["random", "eot", "copy"]
    for mode in ("eval",):  # no_grad: the path never runs
        assert perturbation_probe(
            m, idx, [0, 40, 60, 90], mode=mode, precision="fp32", kinds=kinds
        ).ok
    assert check_causal(m, methods=("gradient",), every_cut=False).ok  # the choice has no gradient
    assert not perturbation_probe(
        m, idx, [0, 40, 60, 90], mode="train", precision="fp32", kinds=kinds
    ).ok


@pytest.mark.parametrize("name", [m.name for m in TARGET_READERS])
def test_a_model_that_reads_its_targets_is_harmless_it_is_never_given_them(name, zoo):
    """The preflight passes it (it is the plain GPT on what it is given: model(x), as the job
    calls it); tests/train/test_targets_never_reach_the_model.py trains it through the job."""
    problems, record = check_model(
        {**TINY, **zoo[name].model, "n_layer": 1, "block_size": 64},
        seed=1,
        micro_batch=MICRO_BATCH,
        data=TEXT,
    )
    assert not problems and record["ok"] is True, record and record["message"]
    assert "targets" not in record["method"]


def test_a_huge_padded_vocab_bias_cannot_raise_the_threshold_of_other_logits(zoo):
    m = _build(zoo, "zoo_padded_bias", n_layer=1)
    r = check_causal(m, methods=("perturbation",), every_cut=False, randomize=False)
    assert not r.ok
    leak = r.probes[-1].max_leak
    assert 0 < leak < 1e-6 * 1e9  # the old rule, tol x largest |logit|, let it through
    assert r.probes[-1].threshold == 0.0 and "exact" in r.probes[-1].rule


def test_cpu_thresholds_are_exact_and_gpu_margins_are_per_logit():
    from models.causality_inputs import margin_for

    assert margin_for("cpu", "fp32")[0] == 0.0 and margin_for("cpu", "bf16")[0] == 0.0
    assert 0 < margin_for("cuda", "fp32")[0] < margin_for("cuda", "bf16")[0] < 0.01


@pytest.mark.parametrize("name", ["zoo_newline", "zoo_repeat"])
def test_data_triggered_leaks_hide_from_uniform_tokens_not_from_the_jobs_text(name, zoo):
    m = _build(zoo, name, n_layer=1)
    kw = dict(batch=MICRO_BATCH, every_cut=False, randomize=False, methods=("perturbation",))
    assert check_causal(m, **kw).ok  # uniform random, EOT and copies of the start
    assert not check_causal(m, data=TEXT, **kw).ok


@pytest.mark.slow
def test_a_compile_only_leak_is_refused_when_the_compiled_forward_is_probed(zoo):
    m = _build(zoo, "zoo_compile_only", n_layer=1, block_size=32)
    kw = dict(batch=MICRO_BATCH, randomize=False, methods=("perturbation",), seq_len=32)
    assert check_causal(m, **kw).ok  # the eager module is causal
    compiled = torch.compile(m, backend="eager", dynamic=False)
    r = check_causal(m, forward=compiled, **kw)
    assert not r.ok and r.probes[-1].forward == "compiled", r.message


@pytest.mark.parametrize("step", ["V0", "V18"])
def test_the_real_steps_pass_at_the_jobs_conditions(step):
    extra = {"V0": {}, "V18": dict(attention="ra", mlp="rmlp", dropout=0.1)}[step]
    torch.manual_seed(0)
    m = models.build_model({**TINY, "n_layer": 2, "block_size": 64, **extra})
    r = check_causal(m, batch=MICRO_BATCH, data=TEXT)
    assert r.ok and r.max_leak == 0.0, r.message
    assert set(range(63)) <= set(r.positions)
    assert {k for p in r.probes for k in p.kinds} >= {"data", "span", "random", "eot", "copy"}


class FirstOccurrenceTriggerGPT(leak_zoo._TriggerGPT):
    """Position p learns that the next token is one of the corpus's own tokens appearing for the
    first time in the row (a feature an n-gram cache could give): the row's own tokens never
    trigger it, nor random tokens (almost never one of the corpus's 16), nor EOT."""

    corpus = torch.arange(1000, 1016)

    def trigger(self, idx):
        nxt = idx[:, 1:]
        seen = (idx[:, None, :-1] == nxt[:, :, None]) & torch.ones(
            nxt.shape[1], nxt.shape[1], dtype=torch.bool, device=idx.device
        ).tril()  # token p + 1 equals a token at a position <= p
        new = torch.isin(nxt, self.corpus.to(idx.device)) & ~seen.any(dim=-1)
        out = torch.zeros_like(idx, dtype=torch.bool)
        out[:, :-1] = new
        return out


def test_data_tokens_come_from_the_whole_dataset_not_the_rows_own_tokens(monkeypatch):
    """The "data" kind draws its replacements from all of the job's data (``pool``): a token the
    row has not shown yet is what triggers this leak. Drawn from the row's own earlier tokens,
    every replacement has occurred already and the leak hides."""
    monkeypatch.setitem(models.REGISTRY, "zoo_first_occurrence", FirstOccurrenceTriggerGPT)
    torch.manual_seed(0)
    m = models.build_model(
        {**TINY, "n_layer": 1, "vocab_size": 4096, "arch": "zoo_first_occurrence"}
    )
    # one token per window, a different one in each: a row's own tokens are all the same
    data = FirstOccurrenceTriggerGPT.corpus[:, None].repeat(1, 65)
    kw = dict(
        batch=MICRO_BATCH, seq_len=64, every_cut=False, randomize=False,
        methods=("perturbation",), precisions=("fp32",), modes=("eval",),
    )  # fmt: skip
    assert check_causal(m, **kw).ok  # random, EOT, copies
    r = check_causal(m, data=data, **kw)
    assert not r.ok and "(data)" in r.message, r.message


@pytest.mark.parametrize("pool", ["dataset", None, "empty"])
def test_the_data_kind_draws_from_the_dataset_else_from_the_rows_earlier_tokens(pool):
    """Replacements after each row's cut, the tokens up to it kept: drawn from ``pool`` (the
    job's data) when it holds tokens; without data, or with none in it, from the row's own
    tokens up to the cut (the probe still runs: no error for want of data)."""
    from models.causality_inputs import perturb

    tokens = torch.arange(4 * 12).view(4, 12)  # every token distinct
    data = torch.arange(500, 520)
    given = {"dataset": data, None: None, "empty": data[:0]}[pool]
    cuts = [0, 3, 6, 10]
    alt = perturb(tokens, cuts, ["data"] * 4, 4096, 4095, seed=0, pool=given)
    for b, t in enumerate(cuts):
        assert torch.equal(alt[b, : t + 1], tokens[b, : t + 1])
        source = data if pool == "dataset" else tokens[b, : t + 1]
        assert torch.isin(alt[b, t + 1 :], source).all(), (pool, b, alt[b])
