"""A researcher's attention module as they would write it in their own folder (a plugin), for
tests of the plugin path: ``USER_ATTENTION.format(name=..., causal="True")``; ``causal="False"``
gives the same module with a leak (no causal mask)."""

USER_ATTENTION = '''
"""My attention, in my own repository."""
import torch
from torch import nn
from torch.nn import functional as F

from models import register_attention


@register_attention("{name}")
class MyAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal={causal})
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, C))
'''
