"""A plugin attention for the multi-node Slurm tests: GPT-2's causal attention that sleeps in every
forward pass that builds a graph (training; evals run without gradients and do not sleep).

Slurm's time-limit signal comes from slurmctld's check every 30 s, so a job that must still be
training when it arrives has to last about a minute. Sleeping keeps such a job long in wall time
but cheap on the test machine's shared cores; its losses are those of the causal attention,
exactly, so curves of different runs can still be compared number for number.
"""

from __future__ import annotations

import time

import torch

from models import register_attention
from models.gpt2 import CausalSelfAttention

SLEEP_S = 0.2


@register_attention("slow_causal")
class SlowCausalSelfAttention(CausalSelfAttention):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            time.sleep(SLEEP_S)
        return super().forward(x)
