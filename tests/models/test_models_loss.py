"""models.loss: the loss the trainer computes from ``model(x)``'s logits is, bit for bit, the loss
GPT.forward returned for ``model(x, y)``, so training is unchanged by keeping targets away."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F

from models.loss import forward_logits, lm_loss


def _autocast(precision: str):
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_trainers_loss_is_the_models_own_loss_bit_for_bit_through_training(
    make, tokens, precision
):
    """V0 with dropout, a few AdamW steps: the old step (the loss GPT.forward computed inside
    model(x, y), its line written out here) and the trainer's step (lm_loss of model(x)'s logits
    under the step's autocast) give the same losses and the same weights, to the bit."""
    old, new = make("V0", dropout=0.1), make("V0", dropout=0.1)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (old, new)]
    for step in range(4):
        x, y = tokens(old, batch=3, seed=10 + step), tokens(old, batch=3, seed=20 + step)
        y[0, :3] = -1  # ignored positions, as GPT.forward ignores them
        losses = []
        for m, opt, trainer_way in ((old, opts[0], False), (new, opts[1], True)):
            torch.manual_seed(step)  # the same dropout masks
            with _autocast(precision):
                if trainer_way:
                    loss = lm_loss(forward_logits(m, x), y)
                else:  # GPT.forward before models.loss, inside the forward's autocast
                    logits, _ = m(x)
                    loss = F.cross_entropy(
                        logits.view(-1, logits.size(-1)), y.reshape(-1), ignore_index=-1
                    )
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.detach())
        assert losses[0].dtype == losses[1].dtype == torch.float32
        assert torch.equal(losses[0], losses[1]), (step, losses)
    for p, q in zip(old.parameters(), new.parameters()):
        assert torch.equal(p, q)


def test_lm_loss_is_the_mean_cross_entropy_over_all_positions_ignoring_minus_one():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 7, generator=gen)
    y = torch.randint(0, 7, (2, 5), generator=gen)
    y[1, 4] = -1
    keep = y != -1
    want = F.cross_entropy(logits[keep], y[keep])
    assert torch.allclose(lm_loss(logits, y), want)
    assert not torch.allclose(lm_loss(logits, torch.where(keep, y, 0)), want)


def test_forward_logits_takes_the_logits_of_a_pair_or_a_lone_tensor():
    t = torch.zeros(1, 2, 3)
    assert forward_logits(lambda idx: (t, None), torch.zeros(1, 2)) is t
    assert forward_logits(lambda idx: t, torch.zeros(1, 2)) is t
