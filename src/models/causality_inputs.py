"""What the causality probes feed the model: token rows, cuts, perturbations, margins.

- Rows are the job's own data windows when given (real text: newlines, repeated tokens and spans
  occur), else uniform random tokens; the model is called ``model(x)``, as the trainer calls it
  (targets never reach a model: models.loss).
- Cuts: ``cover_sets`` spreads every cut 0..T-2 over the rows of several batches, so that one
  probe pass at the full block size sees every position boundary (a leak at the edges of 40-token
  chunks needs cut 39, 79 or 119).
- Perturbations replace every token after a row's cut: uniform random, the EOT token, a copy of an
  earlier span of the row (the span that followed the last earlier occurrence of the token at the
  cut, as an induction head would predict it), or tokens drawn from the data's own distribution.
- Margins: the perturbation probe compares each logit with a threshold of its own,
  never one scaled by the largest logit of the batch (see ``margin_for``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

EOT_TOKEN = 50256  # GPT-2's <|endoftext|>
KINDS = ("random", "eot", "copy")
DATA_KINDS = ("data", "span")
"""Kinds that need the job's data windows: tokens drawn from the data, copies of earlier spans."""
ALL_KINDS = KINDS + DATA_KINDS

# Per-element relative margins where the arithmetic is not bit-reproducible (see margin_for).
GPU_FP32_MARGIN = 2.0**-20
GPU_BF16_MARGIN = 2.0**-7


def margin_for(device_type: str, precision: str) -> tuple[float, str]:
    """(relative margin per logit, the rule in words) for base-vs-perturbed comparisons.

    Base and perturbed batches have the same shape, run the same kernels and, row by row, the
    same inputs up to the cut; on CPU every kernel is deterministic, so a causal model gives
    bit-identical logits there in fp32 and under bf16 autocast alike: margin 0, a leak of 1e-9
    is refused. On a GPU a kernel may reduce in another order from one call to the next (split-K,
    atomics): a causal logit then moves by a few fp32 rounding steps of its own size, so fp32 gets
    2^-20 (8 ulps) of max(|logit|, 1); under bf16 autocast the logit is rounded to bf16 after
    such a reduction, which moves it by at most one bf16 step, so 2^-7 (two bf16 ulps) of
    max(|logit|, 1). Each element has its own threshold: a huge logit elsewhere (a -1e9 bias on
    padded vocabulary entries) cannot raise the threshold of another."""
    if device_type == "cpu":
        return 0.0, f"exact (CPU {precision}: deterministic kernels give bit-identical logits)"
    if precision == "bf16":
        return GPU_BF16_MARGIN, (
            f"2^-7 x max(|logit|, 1) per logit ({device_type} bf16: one bf16 rounding step "
            "after a reduction in another order)"
        )
    return GPU_FP32_MARGIN, (
        f"2^-20 x max(|logit|, 1) per logit ({device_type} fp32: a few fp32 rounding steps "
        "of a reduction in another order)"
    )


def random_tokens(batch: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, length), generator=gen)


def data_rows(data: torch.Tensor, batch: int, length: int, seed: int) -> torch.Tensor:
    """``batch`` rows of ``length`` tokens cut from the job's data windows (rows of a 2-D tensor)
    at random offsets; windows are reused when there are fewer than ``batch``."""
    gen = torch.Generator().manual_seed(seed)
    n, width = data.shape
    if width < length:
        raise ValueError(f"data windows of {width} tokens cannot give rows of {length}")
    order = torch.randperm(n, generator=gen)
    rows = []
    for b in range(batch):
        w = data[int(order[b % n])]
        start = int(torch.randint(0, width - length + 1, (1,), generator=gen))
        rows.append(w[start : start + length])
    return torch.stack(rows).long()


def stream_of(
    batch: int, length: int, vocab: int, seed: int, data: torch.Tensor | None
) -> torch.Tensor:
    """``length + 1`` tokens per row (a window and its next token, as the job's windows): the
    probes feed the model the first ``length``."""
    if data is not None and data.shape[1] >= length + 1:
        return data_rows(data, batch, length + 1, seed)
    return random_tokens(batch, length + 1, vocab, seed)


def cover_sets(length: int, batch: int, lead: Sequence[int] = ()) -> list[list[int]]:
    """Cut sets (one cut per row) that together hold every cut 0..length-2 at least once.

    Each set spreads its cuts over the sequence (row b takes the b-th stride), so every set mixes
    early and late cuts; sets alternate between increasing and decreasing order over the rows, so
    that for rows i != j some set gives i the larger cut (a row reading another row shows only
    there). ``lead``: cuts to put in the first set (the most telling ones)."""
    cuts = list(range(max(length - 1, 0)))
    if not cuts:
        return []
    first = [c for c in dict.fromkeys(int(c) for c in lead) if 0 <= c < len(cuts)][:batch]
    rest = [c for c in cuts if c not in first]
    n_sets = max(1, -(-len(cuts) // batch))
    sets: list[list[int]] = [list(first)] + [[] for _ in range(n_sets - 1)]
    for i, c in enumerate(rest):  # rest[i] to set i % n_sets: each set strides the sequence
        s = i % n_sets
        while s < len(sets) and len(sets[s]) >= batch:
            s += 1
        if s == len(sets):
            s = next((j for j in range(len(sets)) if len(sets[j]) < batch), len(sets))
            if s == len(sets):
                sets.append([])
        sets[s].append(c)
    out = []
    for i, row in enumerate(sets):
        spare = [c for c in cuts[:: max(1, len(cuts) // batch)] + cuts if c not in row]
        row = row + spare[: batch - len(row)]  # a short last set: more cuts, distinct in the set
        while len(row) < batch:  # fewer cuts than rows: repeat (short sequences only)
            row.append(cuts[len(row) % len(cuts)])
        out.append(sorted(row, reverse=i % 2 == 1))
    return out


def perturb(
    tokens: torch.Tensor,
    cuts: Sequence[int],
    kinds: Sequence[str],
    vocab: int,
    eot: int,
    seed: int,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Row b with every token after cuts[b] replaced, by kinds[b]: random different tokens, the
    EOT token, a copy of an earlier span of the row, or (``data``) tokens drawn from ``pool``
    (the data's own tokens, so drawn with the data's frequencies)."""
    gen = torch.Generator().manual_seed(seed + 2)
    alt = tokens.clone().cpu()
    src = tokens.cpu()
    T = tokens.shape[1]
    for b, (t, kind) in enumerate(zip(cuts, kinds)):
        n = T - t - 1
        if n <= 0:
            continue
        if kind == "random":
            alt[b, t + 1 :] = (
                src[b, t + 1 :] + torch.randint(1, vocab, (n,), generator=gen)
            ) % vocab
        elif kind == "eot":
            alt[b, t + 1 :] = eot
        elif kind == "copy":
            alt[b, t + 1 :] = src[b, torch.arange(n) % (t + 1)]
        elif kind == "span":
            alt[b, t + 1 :] = src[b, _span_source(src[b], t, n, gen)]
        elif kind == "data":
            source = pool if pool is not None and pool.numel() else src[b, : t + 1]
            pick = torch.randint(0, source.numel(), (n,), generator=gen)
            alt[b, t + 1 :] = source.reshape(-1)[pick]
        else:
            raise ValueError(f"perturbation kind {kind!r} must be one of {', '.join(ALL_KINDS)}")
    return alt.to(tokens.device)


def _span_source(row: torch.Tensor, t: int, n: int, gen: torch.Generator) -> torch.Tensor:
    """Indices <= t to copy after t: the span that followed the last earlier occurrence of the
    token at t (what an induction head predicts, and what real text repeats), else a random
    earlier start; cyclic over [start, t]."""
    earlier = (row[:t] == row[t]).nonzero().flatten()
    start = (
        int(earlier[-1]) + 1
        if earlier.numel()
        else int(torch.randint(0, t + 1, (1,), generator=gen))
    )
    span = t + 1 - start
    return start + torch.arange(n) % span
