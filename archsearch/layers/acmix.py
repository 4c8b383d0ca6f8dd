"""ACmix mixer (Pan et al., CVPR 2022, arXiv 2111.14556), in its token-mixer form.

* Stage I, shared: one fused 1x1 projection gives q, k, v (C channels each, split in heads).
* Attention path: multi-head self-attention on q, k, v with SDPA. For the pyramid stages keys
  and values are average-pooled by ``sr_ratio`` (parameter-free; the PVT + ACmix setting), so the
  same shared projections feed both paths.
* Convolution path: a light fully connected layer (no bias) mixes the ``3 * heads`` feature
  groups (q, k, v of every head) into ``k^2 = 9`` maps per head channel, then a grouped 3x3 conv
  (``groups = head_dim``, ``9 * head_dim -> C``) whose kernels are initialised as shifts: input
  map ``i`` of a group gets a one-hot kernel at offset ``i``, so at initialisation the path
  computes the sum of the 9 shifted maps (a 3x3 conv decomposed into shift-and-sum). The kernels
  are learned afterwards.
* Output: ``alpha * attention + beta * conv`` with two learnable scalars initialised to 0.5,
  then an output projection ``Linear(C, C)`` (our addition for use as a transformer mixer; the
  ResNet version relies on the next 1x1 conv of the bottleneck instead).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import merge_heads, split_heads

__all__ = ["ACMix"]


class ACMix(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        sr_ratio: int = 1,
        kernel_size: int = 3,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.sr_ratio = sr_ratio
        self.kernel_size = kernel_size
        kk = kernel_size * kernel_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.fc = nn.Linear(3 * heads, kk, bias=False)
        self.dep_conv = nn.Conv2d(
            kk * self.head_dim, dim, kernel_size, padding=kernel_size // 2, groups=self.head_dim
        )
        self.alpha = nn.Parameter(torch.tensor(0.5))
        self.beta = nn.Parameter(torch.tensor(0.5))
        self.proj = nn.Linear(dim, dim)
        self.reset_shift()

    @torch.no_grad()
    def reset_shift(self) -> None:
        """Initialise the grouped conv as shift kernels (one-hot at each slot's offset)."""
        k = self.kernel_size
        kk = k * k
        weight = torch.zeros_like(self.dep_conv.weight)  # (C, kk, k, k)
        idx = torch.arange(kk)
        weight[:, idx, idx // k, idx % k] = 1.0
        self.dep_conv.weight.copy_(weight)
        if self.dep_conv.bias is not None:
            self.dep_conv.bias.zero_()

    def conv_path(self, qkv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        """Convolution path on the shared projections ``(B, N, 3C)``; returns ``(B, N, C)``."""
        b, n, _ = qkv.shape
        h, w = hw
        groups = qkv.reshape(b, n, 3 * self.heads, self.head_dim).transpose(2, 3)  # B,N,d,3h
        maps = self.fc(groups)  # B,N,d,kk  -> channel index d * kk + slot
        maps = maps.reshape(b, h, w, -1).permute(0, 3, 1, 2)
        return self.dep_conv(maps).flatten(2).transpose(1, 2)

    def attention_path(self, qkv: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        q, k, v = qkv.chunk(3, dim=-1)
        if self.sr_ratio > 1:
            b, n, c = k.shape
            kv = torch.cat([k, v], dim=-1).transpose(1, 2).reshape(b, 2 * c, *hw)
            kv = F.avg_pool2d(kv, self.sr_ratio, self.sr_ratio, ceil_mode=True)
            k, v = kv.flatten(2).transpose(1, 2).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return merge_heads(F.scaled_dot_product_attention(q, k, v))

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if hw is None:
            raise ValueError("ACMix needs the spatial size hw=(H, W)")
        qkv = self.qkv(x)
        out = self.alpha * self.attention_path(qkv, hw) + self.beta * self.conv_path(qkv, hw)
        return self.proj(out)
