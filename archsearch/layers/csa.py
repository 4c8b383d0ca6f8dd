"""LVT's convolutional self-attention (CSA), the stage-1 mixer of LVT (arXiv 2112.10809).

A generalisation of VOLO's outlook attention:

* windows of ``k x k`` (k = 3) are taken with stride 2 and padding ``k // 2`` (a 56x56 map gives
  28x28 windows); overlapping outputs are summed back by ``fold`` (no normalisation by overlap);
* the attention is predicted, not computed from q.k: the input is average-pooled 2x2 (ceil mode)
  to one vector per window and ``Linear(C, heads * k^2 * k^2)`` (with bias) gives the logits,
  scaled by ``head_dim ** -0.5`` and softmaxed over the last axis;
* there is no value projection: each of the ``k^2`` window slots has its own ``C x C`` matrix
  (a grouped 1x1 conv over ``k^2 C`` channels, ``k^2`` groups, no bias);
* output: ``(k^2 x k^2 attention) @ (k^2 projected neighbours)`` per window and head, folded back,
  then ``Linear(C, C)``.

At C = 64, heads = 2, k = 3: 10,530 + 36,864 + 4,160 = 51,554 parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvSelfAttention"]


class ConvSelfAttention(nn.Module):
    """CSA on tokens ``(B, H*W, C)`` with spatial size ``hw``."""

    def __init__(self, dim: int, heads: int, *, kernel_size: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.kernel_size = kernel_size
        self.stride = stride
        self.slots = kernel_size * kernel_size
        self.scale = (dim // heads) ** -0.5
        self.attn = nn.Linear(dim, heads * self.slots * self.slots)
        self.slot_proj = nn.Conv1d(
            self.slots * dim, self.slots * dim, 1, groups=self.slots, bias=False
        )
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if hw is None:
            raise ValueError("ConvSelfAttention needs the spatial size hw=(H, W)")
        b, n, c = x.shape
        h, w = hw
        k, s, kk, heads = self.kernel_size, self.stride, self.slots, self.heads
        xm = x.transpose(1, 2).reshape(b, c, h, w)
        cols = F.unfold(xm, k, padding=k // 2, stride=s)  # (B, C*kk, L), channel-major
        windows = cols.shape[-1]
        cols = cols.reshape(b, c, kk, windows).transpose(1, 2).reshape(b, kk * c, windows)
        v = self.slot_proj(cols)  # per-slot C x C projections
        v = v.reshape(b, kk, heads, c // heads, windows).permute(0, 2, 4, 1, 3)  # B,h,L,kk,d
        pooled = F.avg_pool2d(xm, s, s, ceil_mode=True).flatten(2).transpose(1, 2)  # B,L,C
        a = self.attn(pooled).reshape(b, windows, heads, kk, kk).transpose(1, 2)
        a = (a * self.scale).softmax(dim=-1)  # B,h,L,kk,kk
        out = torch.matmul(a, v)  # B,h,L,kk,d
        out = out.permute(0, 1, 4, 3, 2).reshape(b, c * kk, windows)
        out = F.fold(out, (h, w), k, padding=k // 2, stride=s)
        return self.proj(out.flatten(2).transpose(1, 2))
