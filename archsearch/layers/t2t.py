"""Tokens-to-token tokenizer (T2T-ViT, Yuan et al., ICCV 2021, arXiv 2101.11986).

Three soft splits (unfold) with kernels 7, 3, 3, strides 4, 2, 2 and padding 2, 1, 1; between
them two re-structurization layers that process the tokens and reshape them back to an image.
At 224: 56x56 tokens of 147 dims -> T2T layer -> 28x28 of 576 -> T2T layer -> 14x14 of 576 ->
``Linear(576, D)``.

Two T2T layers:

* ``TokenPerformer`` (lite models): single head, LayerNorm, ``Linear(in, 3 * 64)`` for q, k, v,
  positive random features with ``m = 32`` fixed (non-trainable) gaussian projections, linear
  attention, residual through ``v`` (input and output widths differ), then an MLP 64-64-64.
* ``TokenTransformer`` (``_t`` variants): full single-head attention with scale
  ``in_dim ** -0.5``, residual through ``v``, then the same MLP.

The fixed random projections are a persistent buffer (``w``, saved with the weights: they are
random, so a checkpoint must carry them), not a parameter: they are never trained. The official
code kept them as a frozen ``Parameter``, so the published parameter counts include them
(2 x 32 x 64 = 4,096 values, 0.1% of T2T-ViT-7); archsearch's counts do not.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .mlp import Mlp

__all__ = ["TokenPerformer", "TokenTransformer", "T2TTokenizer", "T2T_SPLITS"]

#: (kernel, stride, padding) of the three soft splits.
T2T_SPLITS = ((7, 4, 2), (3, 2, 1), (3, 2, 1))


class TokenPerformer(nn.Module):
    """Single-head Performer layer with positive random features (FAVOR+)."""

    def __init__(self, in_dim: int, dim: int = 64, *, features: int | None = None) -> None:
        super().__init__()
        self.dim = dim
        self.features = features or dim // 2
        self.norm1 = nn.LayerNorm(in_dim)
        self.kqv = nn.Linear(in_dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim)
        self.w: torch.Tensor
        self.register_buffer("w", torch.randn(self.features, dim), persistent=True)

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        """Positive random features ``exp(w.x - |x|^2 / 2) / sqrt(m)``."""
        sq = 0.5 * (x * x).sum(dim=-1, keepdim=True)
        return torch.exp(torch.matmul(x, self.w.t()) - sq) / math.sqrt(self.features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, q, v = self.kqv(self.norm1(x)).chunk(3, dim=-1)
        kp, qp = self._phi(k), self._phi(q)  # B,T,m
        denom = torch.matmul(qp, kp.sum(dim=1).unsqueeze(-1))  # B,T,1
        kv = torch.matmul(kp.transpose(1, 2), v)  # B,m,dim
        y = torch.matmul(qp, kv) / (denom + 1e-8)
        x = v + self.proj(y)
        return x + self.mlp(self.norm2(x))


class TokenTransformer(nn.Module):
    """Single-head full attention T2T layer; scale ``in_dim ** -0.5`` as in the paper's code."""

    def __init__(self, in_dim: int, dim: int = 64) -> None:
        super().__init__()
        self.scale = in_dim**-0.5
        self.norm1 = nn.LayerNorm(in_dim)
        self.qkv = nn.Linear(in_dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(self.norm1(x)).unsqueeze(1).chunk(3, dim=-1)  # B,1,T,dim
        y = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        x = v.squeeze(1) + self.proj(y.squeeze(1))
        return x + self.mlp(self.norm2(x))


def _soft_split(x: torch.Tensor, split: tuple[int, int, int]) -> tuple[torch.Tensor, int, int]:
    k, s, p = split
    h = (x.shape[-2] + 2 * p - k) // s + 1
    w = (x.shape[-1] + 2 * p - k) // s + 1
    return F.unfold(x, k, padding=p, stride=s).transpose(1, 2), h, w


class T2TTokenizer(nn.Module):
    """Image ``(B, C, H, W)`` -> tokens ``(B, N, embed_dim)`` and grid ``(h, w)`` (stride 16)."""

    def __init__(
        self, in_chans: int, embed_dim: int, *, kind: str = "performer", t2t_dim: int = 64
    ) -> None:
        super().__init__()
        layer = TokenPerformer if kind == "performer" else TokenTransformer
        (k0, _, _), (k1, _, _), (k2, _, _) = T2T_SPLITS
        self.t2t1 = layer(in_chans * k0 * k0, t2t_dim)
        self.t2t2 = layer(t2t_dim * k1 * k1, t2t_dim)
        self.proj = nn.Linear(t2t_dim * k2 * k2, embed_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        b = x.shape[0]
        tokens, h, w = _soft_split(x, T2T_SPLITS[0])
        for layer, split in ((self.t2t1, T2T_SPLITS[1]), (self.t2t2, T2T_SPLITS[2])):
            tokens = layer(tokens)
            tokens, h, w = _soft_split(tokens.transpose(1, 2).reshape(b, -1, h, w), split)
        return self.proj(tokens), (h, w)
