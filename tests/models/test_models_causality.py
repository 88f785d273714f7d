"""check_causal: every step passes; deliberately leaking models are caught. The zoo of leaks that
hide (tests/causality) checks the probes one by one."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from helpers.leak_zoo import gpt_tail

import models
from models import check_causal
from models.gpt2 import GPT, MLP, CausalSelfAttention


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


class RowLeakAttention(CausalSelfAttention):
    """Row b adds row b + shift of the batch (no wrap-around: rows past the edge add nothing).
    shift 1 reads the next row, -1 the previous one."""

    shift = 1

    def forward(self, x):
        y = super().forward(x)
        s, other = self.shift, torch.zeros_like(x)
        if s > 0:
            other[:-s] = x[s:]
        else:
            other[-s:] = x[:s]
        return y + 0.1 * other


def row_leak(shift: int) -> type:
    return type(f"RowLeak{shift:+d}", (RowLeakAttention,), {"shift": shift})


class DetachedRowLeakAttention(RowLeakAttention):
    """The same row leak without a gradient path (the other row's input detached)."""

    def forward(self, x):
        y = CausalSelfAttention.forward(self, x)
        s, other = self.shift, torch.zeros_like(x)
        if s > 0:
            other[:-s] = x[s:].detach()
        else:
            other[-s:] = x[:s].detach()
        return y + 0.1 * other


def row_leak_nograd(shift: int) -> type:
    return type(f"DetachedRowLeak{shift:+d}", (DetachedRowLeakAttention,), {"shift": shift})


class GatedNoGradLeakAttention(CausalSelfAttention):
    """An unmasked path without gradient behind a learnable gate that starts at 0."""

    def __init__(self, config, layer_idx: int = 0):
        super().__init__(config, layer_idx)
        self.leak_gate = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        q, k, v = self.qkv(x)
        B, _, T, _ = q.shape
        full = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        full = self.c_proj(full.transpose(1, 2).reshape(B, T, self.n_embd))
        return super().forward(x) + self.leak_gate * full.detach()


@pytest.mark.parametrize("step", ["V0", "V16", "V17", "V18"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_all_steps_are_causal(step, dropout, make):
    m = make(step, dropout=dropout)
    report = check_causal(m)
    assert report.ok, report.message
    assert (
        report.max_leak == 0.0 and report.leaking_positions == []
    )  # exact: bit-identical logits, zero gradients
    assert report.sensitive and report.planned == len(report.probes) == 10
    # block 16: a short odd length (15) and the block; cuts from the start to the last pair
    assert report.shapes == [[3, 15], [3, 16]]
    assert report.positions[0] == 0 and report.positions[-1] == 14 and len(report.positions) >= 8
    assert {(p.method, p.mode) for p in report.probes} == {
        (m, mode) for m in ("gradient", "perturbation") for mode in ("train", "eval")
    }
    # every cut of the block is probed by each method (several cut sets in one pass)
    for method in ("gradient", "perturbation"):
        full = [p for p in report.probes if p.method == method and p.shape[1] == 16]
        assert set(range(15)) <= {t for p in full for s in p.cut_sets for t in s}, method
    assert {p.precision for p in report.probes if p.method == "perturbation"} == {"fp32", "bf16"}
    assert {p.weights for p in report.probes} == {"given", "random"}
    assert report.message.startswith("causal")


@pytest.mark.parametrize(
    "component,name,cls,expected",
    [
        ("attention", "bidirectional", BidirectionalAttention, [0, 7, 8]),
        ("attention", "off_by_one", OffByOneAttention, [0, 7, 8]),
        ("attention", "train_only_leak", TrainOnlyLeakAttention, [0, 7, 8]),
        ("mlp", "future_mixing", FutureMixingMLP, [0, 7, 8]),
    ],
)
def test_leaks_are_caught(component, name, cls, expected, make, monkeypatch):
    table = models.ATTENTION if component == "attention" else models.MLPS
    monkeypatch.setitem(table, name, cls)  # a test-only registry entry
    m = make("V0", **{component: name})
    report = check_causal(m)
    assert not report.ok and not bool(report)
    assert (
        report.leaking_positions == expected
    )  # the first pass's cuts: it stops at the first failure
    # the first pass, a gradient pass, refuses it
    assert len(report.probes) == 1 and report.probes[-1].method == "gradient"
    assert report.max_leak > report.threshold
    assert report.message.startswith("model is not causal")


def test_off_by_one_leak_is_only_at_the_previous_position(make, monkeypatch):
    monkeypatch.setitem(models.ATTENTION, "off_by_one", OffByOneAttention)
    m = make("V0", attention="off_by_one", n_layer=1)
    # with one layer, position i sees i + 1 only: every cut leaks (its last position sees the next)
    assert check_causal(m, positions=[5, 9, 12]).leaking_positions == [5, 9, 12]
    r = check_causal(m, positions=[5, 9, 12], methods=("perturbation",), stop_early=False)
    assert r.leaking_positions == [5, 9, 12]
    assert all(not p.ok for p in r.probes if p.method == "perturbation")


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
        logits = self.w.expand(*idx.shape, 10)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, 10), targets.reshape(-1))


def test_a_model_that_ignores_its_input_does_not_pass():
    m = IgnoresInput()
    m.transformer = torch.nn.Module()
    m.transformer.wte = torch.nn.Embedding(
        10, 4
    )  # present but unused: the gradient probe sees no path
    report = check_causal(m)
    assert not report.ok and not report.sensitive and report.leaking_positions == []
    assert "vacuous" in report.message
    report = check_causal(m, methods=("perturbation",))
    assert not report.ok and not report.sensitive and "vacuous" in report.message


class TargetsRecorder(models.GPT):
    """The plain GPT that records the targets of every call (and adds the target's embedding
    when given some, as a multi-token-prediction bug would)."""

    calls: list = []

    def forward(self, idx, targets=None):
        type(self).calls.append(targets)
        logits, loss = super().forward(idx, targets)
        if targets is not None:
            logits = logits + self.transformer.wte.weight[targets].sum(-1, keepdim=True)
        return logits, loss


def test_the_probes_call_the_model_as_the_trainer_does_never_with_targets(make, monkeypatch):
    """The job calls model(x) only and computes the loss itself (models.loss): the probes call it
    the same way, so a model that reads its targets is checked on what it is given in training."""
    monkeypatch.setitem(models.REGISTRY, "targets_recorder", TargetsRecorder)
    monkeypatch.setattr(TargetsRecorder, "calls", [])
    m = make("V0", arch="targets_recorder")
    fwd_calls = []

    def fwd(idx, *rest):
        fwd_calls.append(rest)
        return m(idx, *rest)

    report = check_causal(m, forward=fwd)
    assert report.ok, report.message
    assert len(TargetsRecorder.calls) >= len(report.probes) and fwd_calls
    assert all(t is None for t in TargetsRecorder.calls) and all(r == () for r in fwd_calls)


class ZeroTemperatureGPT(models.GPT):
    """A softmax temperature of 0 (logits / 0): every logit is +-inf or NaN, in training too."""

    def forward(self, idx, targets=None):
        logits, _ = super().forward(idx, targets)
        logits = logits / 0.0
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


class ExpOverflowGPT(ZeroTemperatureGPT):
    """exp(1e4 x logits) without the max subtracted: +inf where a logit is above ~0.009, finite
    (>= 0) elsewhere, so the smallest logit is finite and only the largest is not."""

    def forward(self, idx, targets=None):
        logits, _ = models.GPT.forward(self, idx, targets)
        logits = torch.exp(1e4 * logits)
        if targets is None:
            return logits, None
        return logits, F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))


@pytest.mark.parametrize("cls", [ZeroTemperatureGPT, ExpOverflowGPT])
@pytest.mark.parametrize(
    "methods,refused_by",
    [(("gradient",), "gradient"), (("perturbation",), "perturbation")],
)
def test_logits_that_are_not_finite_are_refused_saying_so(
    methods, refused_by, cls, make, monkeypatch
):
    """Each probe counts a NaN or an inf as a change (a dependence it cannot rule out); the
    message says the logits are not finite, so the user looks at the arithmetic, not a mask."""
    monkeypatch.setitem(models.REGISTRY, "not_finite", cls)
    m = make("V0", arch="not_finite")
    r = check_causal(m, methods=methods, every_cut=False, randomize=False)
    assert not r.ok and r.probes[-1].method == refused_by
    assert r.message.startswith(
        f"model is not causal: {r.probes[-1].describe()}: the logits are not finite (a NaN or "
        "an inf counts as a leak): "
    ), r.message
    assert "\n" not in r.message


def test_positions_and_arguments_are_validated(make):
    m = make()
    with pytest.raises(ValueError, match=r"position -1 must be in \[0, 14\]"):
        check_causal(m, positions=[-1])
    with pytest.raises(ValueError, match=r"position 15 must be in \[0, 14\]"):
        check_causal(m, positions=[15])
    with pytest.raises(ValueError, match=r"batch=0 must be >= 1"):
        check_causal(m, batch=0)
    with pytest.raises(ValueError, match=r"precision 'fp16'"):
        check_causal(m, precisions=("fp16",))
    r = check_causal(m, positions=[3, 4], seq_len=8)
    assert r.ok and r.positions == [3, 4] and r.shapes == [[3, 8]]
    r = check_causal(m, seq_len=2)  # the shortest length: one cut, 0
    assert r.ok and r.positions == [0] and r.shapes == [[3, 2]]
    with pytest.raises(ValueError, match=r"seq_len=1 must be in \[2, 16\]"):
        check_causal(m, seq_len=1)


def test_priority_cuts_are_distinct_cuts_of_the_length_most_telling_first():
    from models.causality_probes import cut_positions

    for length in range(2, 300):
        cuts = cut_positions(length)
        last = length - 2
        assert len(set(cuts)) == len(cuts) and all(0 <= c <= last for c in cuts), length
        head = list(dict.fromkeys([0, last, (length - 1) // 2]))  # start, end, middle
        assert cuts[: len(head)] == head, (length, cuts)
        assert {1, last - 1, 2, last - 2} & set(range(last + 1)) <= set(cuts), length
    assert cut_positions(1) == [] and cut_positions(2) == [0]


@pytest.mark.parametrize("probe", ["gradient", "perturbation"])
def test_a_probe_called_alone_records_the_given_weights(probe, make, tokens):
    """A notebook calls a probe without ``weights``: the record says the model's own weights."""
    from models import causality_probes as cp

    m = make("V0")
    x = tokens(m, batch=2, seq=8)
    if probe == "gradient":
        r = cp.gradient_probe(m, x, [2, 5], mode="eval")
    else:
        r = cp.perturbation_probe(m, x, [2, 5], mode="eval", precision="fp32", kinds=["random"])
    assert r.ok and r.weights == "given" and r.as_dict()["weights"] == "given"
    assert "(given weights," in r.describe()


def test_the_check_leaves_weights_flags_and_the_rng_as_they_were(make):
    m = make("V17", dropout=0.1)  # V17 has frozen parameters (requires_grad False)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    flags = [p.requires_grad for p in m.parameters()]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    report = check_causal(m)
    assert report.ok and torch.equal(torch.rand(3), expected)  # a resumed job trains on identically
    assert all(
        torch.equal(state[k], v) for k, v in m.state_dict().items()
    )  # random weights live in a copy
    assert flags == [p.requires_grad for p in m.parameters()]


def test_the_record_has_the_documented_keys(make):
    rec = check_causal(make("V16")).to_record()
    assert {
        "ok",
        "method",
        "shapes",
        "positions",
        "max_leak",
        "seconds",
        "message",
        "probes",
    } <= set(rec)
    assert rec["ok"] is True and rec["method"] == "gradient+perturbation" and rec["max_leak"] == 0.0
    documented = {  # docs/results-format.md, "probes"
        "method",
        "weights",
        "mode",
        "precision",
        "shape",
        "positions",
        "kinds",
        "max_leak",
        "threshold",
        "threshold_rule",
        "cut_sets",
        "forward",
        "ok",
        "seconds",
    }
    for probe in rec["probes"]:
        assert documented <= set(probe), documented - set(probe)
        assert "targets" not in probe  # the probes never pass targets: nothing to record
        assert isinstance(probe["seconds"], float) and probe["seconds"] >= 0
    # the gradient probe is exact: the record says so, and a report's threshold is not raised by it
    grads = [p for p in rec["probes"] if p["method"] == "gradient"]
    assert grads and all(p["threshold"] == 0.0 for p in grads), grads
    assert all(p["max_leak"] == 0.0 for p in rec["probes"])  # each probe's own, exact
    assert all(p["threshold_rule"] == "exact (0)" for p in grads)
    import json

    json.dumps(rec)  # plain JSON for summary.json


# --------------------------------------------------------------------------- rows and orders


@pytest.mark.parametrize("shift", [1, -1, 2, -2])
@pytest.mark.parametrize(
    "randomize", [True, False]
)  # the preflight, and the trained-weights recheck
def test_a_row_reading_another_row_in_either_direction_is_refused(
    make, monkeypatch, shift, randomize
):
    monkeypatch.setitem(models.ATTENTION, "row_leak", row_leak(shift))
    m = make("V0", attention="row_leak")
    for methods in (("gradient", "perturbation"), ("gradient",), ("perturbation",)):
        report = check_causal(m, randomize=randomize, methods=methods)
        assert not report.ok and report.leaking_positions, (shift, methods, report.message)
        assert report.message.startswith("model is not causal")


@pytest.mark.parametrize("shift", [1, -1])
def test_a_row_leak_without_gradient_is_refused_by_the_priority_cuts_alone(
    make, monkeypatch, shift
):
    """A model too big to cover every cut gets the priority cuts only: their passes still give
    each row both the larger and the smaller cut, so a row reading the next or the previous row
    (detached: only the perturbation probe can see it) is refused."""
    monkeypatch.setitem(models.ATTENTION, "row_leak_nograd", row_leak_nograd(shift))
    m = make("V0", attention="row_leak_nograd")
    assert check_causal(m, methods=("gradient",), every_cut=False).ok  # no gradient to see
    report = check_causal(m, methods=("perturbation",), every_cut=False, randomize=False)
    assert not report.ok and report.leaking_positions, (shift, report.message)


@pytest.mark.parametrize("batch", [3, 4, 5])
def test_every_row_has_a_larger_cut_than_every_other_row_in_some_pass(make, batch):
    """What makes a row leak visible in either direction: for rows i != j, some pass of each
    method gives row i the larger cut (a leak from j into i shows there)."""
    report = check_causal(make("V0"), batch=batch)
    assert report.ok
    for method in ("gradient", "perturbation"):
        passes = [s for p in report.probes if p.method == method for s in p.cut_sets]
        for i, j in itertools.permutations(range(batch), 2):
            assert any(cuts[i] > cuts[j] for cuts in passes), (method, i, j, passes)


def test_a_no_gradient_leak_behind_a_gate_at_zero_is_refused_by_the_randomised_copy(
    make, monkeypatch
):
    monkeypatch.setitem(models.ATTENTION, "gated_nograd", GatedNoGradLeakAttention)
    m = make("V0", attention="gated_nograd")
    report = check_causal(m)
    assert not report.ok and report.message.startswith("model is not causal")
    failed = report.probes[-1]
    assert (failed.method, failed.weights) == ("perturbation", "random")
    assert all(p.ok for p in report.probes[:-1])  # every probe before it was blind
    assert check_causal(m, randomize=False).ok  # the given weights alone cannot show it


@pytest.mark.parametrize(
    ("weights", "said"), [("random", "random weights"), ("given", "given weights")]
)
def test_a_probe_names_the_weights_it_ran_at(weights, said):
    # a refusal must say whether the leak was seen at the model's own weights or re-drawn ones
    from models.causality_probes import ProbeResult

    r = ProbeResult("perturbation", weights, "eval", "bf16", [2, 64], [10, 20], 0.5, 1e-3)
    assert r.describe() == f"perturbation probe ({said}, eval mode, bf16, batch 2 x 64 tokens)"


def test_every_cut_where_affordable_else_priority_cuts_said_in_the_message(make, monkeypatch):
    """A preflight on a CPU must not spend hours covering every cut of a GPU-sized model: above
    EVERY_CUT_FLOPS the probes fall back to the priority cuts and say so; below, every cut of the
    full length is probed."""
    from models import causality

    m = make("V0")
    block = m.config.block_size
    full = check_causal(m, seed=0, batch=4, randomize=False, precisions=["fp32"])
    assert full.ok and set(range(block - 1)) <= set(full.positions)
    assert "priority cuts only" not in full.message
    cost = causality.every_cut_cost(m)
    assert cost is not None and cost > 0
    monkeypatch.setitem(causality.EVERY_CUT_FLOPS, "cpu", cost / 2)
    some = check_causal(m, seed=0, batch=4, randomize=False, precisions=["fp32"])
    assert some.ok and len(some.positions) < block - 1
    assert "priority cuts only" in some.message and "cpu" in some.message
    assert some.message.startswith("causal")  # the note is added to the verdict, not put for it
    forced = check_causal(m, seed=0, batch=4, randomize=False, precisions=["fp32"], every_cut=True)
    assert set(range(block - 1)) <= set(forced.positions)  # an explicit True is obeyed


def test_a_check_that_probed_nothing_is_not_ok_and_still_writes_its_record():
    import json

    from models.causality import _summarize

    r = _summarize([], 0, 0.0)
    assert not r.ok and r.message == "nothing was probed"
    rec = r.to_record()
    assert rec["max_leak"] == 0.0 and rec["probes"] == [] and rec["ok"] is False
    json.dumps(rec)


def test_the_job_s_forward_is_what_is_probed_at_its_own_shape_on_the_given_weights(make):
    """``forward`` (the job's compiled model) is called by every pass on the given weights at
    the job's length, and only there (another shape would recompile); what it returns is what
    is judged."""
    m = make("V0", n_layer=1)
    T = m.config.block_size
    shapes = []

    def fwd(idx, targets=None):
        shapes.append((tuple(idx.shape), targets))
        return m(idx, targets)

    r = check_causal(m, forward=fwd)
    assert r.ok, r.message
    assert shapes and set(shapes) == {((3, T), None)}  # fwd(x), as the trainer calls it
    for p in r.probes:
        job = p.weights == "given" and p.method != "gradient" and p.shape[1] == T
        assert (p.forward == "compiled") == job, p
        said = f"x {p.shape[1]} tokens" + (", compiled" if job else "") + ")"
        assert p.describe().endswith(said), p.describe()
    assert any(p.forward == "compiled" for p in r.probes if p.method == "perturbation")

    def leaky(idx, targets=None):  # each position reads the next token: the module itself is causal
        return m(torch.roll(idx, -1, dims=1), targets)

    r = check_causal(m, forward=leaky, methods=("perturbation",))
    assert not r.ok and r.probes[-1].forward == "compiled", r.message


class TwoTables(torch.nn.Module):
    """A causal model with two vocab-sized tables (token embedding, per-token logit bias): which
    one is the token embedding cannot be guessed, so the user names it."""

    def __init__(self, vocab=32, dim=8, block=8):
        super().__init__()
        self.config = models.ModelConfig(block_size=block, vocab_size=vocab)
        self.tok = torch.nn.Embedding(vocab, dim)
        self.bias = torch.nn.Embedding(vocab, vocab)
        self.head = torch.nn.Linear(dim, vocab)

    def forward(self, idx, targets=None):
        x = self.tok(idx).cumsum(dim=1)  # each position sums the ones up to it
        logits = self.head(x) + self.bias(idx)
        if targets is None:
            return logits, None
        V = self.config.vocab_size
        return logits, F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1))


def test_the_embedding_the_user_names_is_the_one_every_gradient_pass_hooks():
    torch.manual_seed(0)
    m = TwoTables()
    with pytest.raises(ValueError, match="pass embedding=<module>"):
        check_causal(m)
    # found again by name in the randomised copy (the gradient passes then use only that), and
    # the given module itself when the weights are not re-drawn
    for randomize, weights in ((True, "random"), (False, "given")):
        r = check_causal(m, embedding=m.tok, randomize=randomize)
        assert r.ok and r.max_leak == 0.0, r.message
        grads = [p for p in r.probes if p.method == "gradient"]
        assert grads and all(p.weights == weights and p.sensitive for p in grads)


def test_after_start_end_and_middle_come_the_cuts_around_every_power_of_two_largest_first():
    """Block-wise kernels go wrong at block boundaries: the cuts p - 2, p - 1 and p around every
    power of two p up to the last position (p = length - 1 too: the last pair straddles it) come
    right after the start, end and middle, largest first."""
    from models.causality_probes import cut_positions

    for length in range(2, 300):
        cuts, last = cut_positions(length), length - 2
        head = list(dict.fromkeys([0, last, (length - 1) // 2]))
        powers = [2**k for k in range(1, 10) if 2**k <= length - 1]
        around = {q for p in powers for q in (p - 2, p - 1, p) if 0 <= q <= last} - set(head)
        want = sorted(around, reverse=True)
        assert cuts[len(head) : len(head) + len(want)] == want, (length, cuts)
    assert cut_positions(17)[:4] == [0, 15, 8, 14]  # 14 and 15 are around 16 = length - 1


class NextRowFirstTokenGPT(GPT):
    """Row b adds a bonus from row b + 1's first token (through the token ids: no gradient path):
    in the job's contiguous eval windows, the next token of row b's last position."""

    def forward(self, idx, targets=None):
        nxt = torch.zeros(idx.shape[0], device=idx.device)
        nxt[:-1] = (idx[1:, 0] % 7 + 1).float()
        x = self.transformer.wte(idx) + self.transformer.wpe(
            torch.arange(idx.shape[1], device=idx.device)
        )
        return gpt_tail(self, x + nxt[:, None, None], targets)


def test_a_row_reading_another_rows_first_token_is_refused_at_preflight(tiny_cfg, monkeypatch):
    from ablate.matrix.model_check import check_model, probe_arguments

    monkeypatch.setitem(models.REGISTRY, "next_row_token", NextRowFirstTokenGPT)
    problems, record = check_model(
        tiny_cfg("V0", arch="next_row_token"), probe=probe_arguments(0, 2, ["fp32"])
    )
    assert record is not None and record["ok"] is False and problems
    failed = record["probes"][-1]
    assert failed["method"] == "perturbation" and not failed["ok"]
    assert "replacing every token of row 1 changed the logits of row 0" in record["message"]
    assert "a row may not read another row" in record["message"]
    # the bonus is the next row's first token only: the cut perturbations never touch it
    m = models.build_model(tiny_cfg("V0", arch="next_row_token"))
    x = torch.randint(0, 64, (2, 16))
    from models import causality_probes as cp

    monkeypatch.setattr(cp, "whole_rows", lambda batch: [])
    r = cp.perturbation_probe(m, x, [3, 9], mode="eval", precision="fp32", kinds=["random"])
    assert r.ok


def test_the_gradient_probe_leaves_requires_grad_as_the_training_step_has_it(make, tokens):
    # A module must not be able to tell the gradient probe from a training step by its
    # parameters' flags (the probe used to set requires_grad False on every parameter).
    from models import causality_probes as cp

    m = make("V0")
    seen: list[bool] = []
    hook = m.transformer.h[0].register_forward_hook(
        lambda mod, inp, out: seen.extend(p.requires_grad for p in mod.parameters())
    )
    r = cp.gradient_probe(m, tokens(m, batch=2), [3, 9], mode="train")
    hook.remove()
    assert r.ok and seen and all(seen)
    assert all(p.grad is None for p in m.parameters())  # no weight gradient accumulated


def test_the_gradient_and_perturbation_probes_do_not_reseed_torch(make, tokens):
    # A module reading torch.initial_seed() sees the caller's seed inside the probes, as in
    # training (they used to call torch.manual_seed(seed) before each forward); dropout masks
    # are still the same in base and perturbed forwards (a causal model with dropout passes).
    from models import causality_probes as cp

    m = make("V0", dropout=0.2)
    seeds: list[int] = []
    hook = m.transformer.h[0].register_forward_hook(
        lambda mod, inp, out: seeds.append(torch.initial_seed())
    )
    torch.manual_seed(4242)
    x = tokens(m, batch=2)
    g = cp.gradient_probe(m, x, [3, 9], mode="train")
    p = cp.perturbation_probe(m, x, [3, 9], mode="train", precision="fp32", kinds=["random"])
    hook.remove()
    assert g.ok and p.ok and seeds and set(seeds) == {4242}
