"""LookupViT block (Koner et al., ECCV 2024, arXiv 2407.12753).

Two token sets: ``N`` lookup tokens (the full patch grid) and ``M << N`` compressed tokens. Per
block:

1. compressed tokens cross-attend to the lookup tokens (queries from compressed, keys/values from
   lookup); the attention matrix ``A`` (``heads x M x N``) is kept;
2. a standard ViT block (self-attention + MLP, ratio 4) runs on the compressed tokens;
3. the lookup tokens are updated from the compressed tokens by reusing ``A`` transposed
   (``A^T @ V_c``, no new attention computation; ``A^T`` is used as is, without renormalising),
   then pass an MLP of hidden size ``D / 2``.

Lookup tokens never attend to each other, so the cost is linear in ``N``. With no official code,
projections follow the usual layout: ``q`` / ``kv`` / output projections for the cross-attention,
a value and output projection for the reverse update, pre-norm LayerNorms throughout. Context
Broadcasting (when enabled) applies inside the compressed ViT block and at the lookup MLP.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .attention import Attention, merge_heads, split_heads
from .block import Block, cb_points, make_mlp

__all__ = ["LookupBlock", "compress_tokens"]


def compress_tokens(
    tokens: torch.Tensor, hw: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Bilinear resize of the lookup grid ``(B, H*W, C)`` to ``(B, gh*gw, C)``."""
    b, n, c = tokens.shape
    m = tokens.transpose(1, 2).reshape(b, c, *hw)
    m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
    return m.flatten(2).transpose(1, 2)


class LookupBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        lookup_mlp_ratio: float = 0.5,
        qkv_bias: bool = False,
        cb_kind: str = "none",
        cb_position: str = "mlp_end",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        # (1) compressed <- lookup cross-attention
        self.norm_c = nn.LayerNorm(dim)
        self.norm_l = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj_c = nn.Linear(dim, dim)
        # (2) ViT block on compressed tokens
        self.vit = Block(
            dim,
            Attention(dim, heads, qkv_bias=qkv_bias),
            mlp_ratio=mlp_ratio,
            cb_kind=cb_kind,
            cb_position=cb_position,
            drop_path=drop_path,
        )
        # (3) lookup <- compressed, reusing the stored attention transposed
        self.norm_rev = nn.LayerNorm(dim)
        self.v_rev = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_l = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        _, inner = cb_points(cb_position) if cb_kind != "none" else (False, None)
        self.mlp_l = make_mlp("mlp", dim, lookup_mlp_ratio, cb_kind=cb_kind, cb_where=inner)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def cross_attention(
        self, lookup: torch.Tensor, compressed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (update for the compressed tokens, attention ``(B, heads, M, N)``)."""
        q = split_heads(self.q(self.norm_c(compressed)), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.kv(self.norm_l(lookup)).chunk(2, -1))
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj_c(merge_heads(torch.matmul(attn, v))), attn

    def reverse_update(self, compressed: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Update for the lookup tokens: ``A^T @ V(compressed)``, per head."""
        v = split_heads(self.v_rev(self.norm_rev(compressed)), self.heads)
        return self.proj_l(merge_heads(torch.matmul(attn.transpose(-2, -1), v)))

    def forward(
        self, lookup: torch.Tensor, compressed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        upd, attn = self.cross_attention(lookup, compressed)
        compressed = compressed + self.drop_path(upd)
        compressed = self.vit(compressed)
        lookup = lookup + self.drop_path(self.reverse_update(compressed, attn))
        lookup = lookup + self.drop_path(self.mlp_l(self.norm_mlp(lookup)))
        return lookup, compressed
