"""Spatial-reduction attention (PVTv2) and LVT's atrous / recursive atrous self-attention.

* ``SpatialReductionAttention`` (PVTv2): ``q = Linear(C, C)``; keys and values come from the map
  reduced by a conv with kernel = stride = ``sr_ratio`` followed by LayerNorm (no reduction at
  ratio 1), then ``Linear(C, 2C)``; output projection ``Linear(C, C)``.
* ASA (LVT, ``atrous=True``): the query is made multi-scale by ONE depthwise 3x3 kernel (no
  bias, 9C parameters) applied with dilation and padding 1, 3 and 5; SiLU is applied to each
  branch and the three are summed: ``q' = sum_d SiLU(DWConv_d(q))``.
* RASA (``recursion=r``): weight-shared recursion. ``r = 1`` is plain ASA. For ``r >= 2``:
  ``y_1 = SiLU(A(x_1))``, ``x_{t+1} = y_t + x_t``, ``y_{t+1} = SiLU(A(x_{t+1}))``, output ``y_r``;
  e.g. ``r = 2`` gives ``SiLU(A(SiLU(A(x)) + x))``. Parameters do not depend on ``r``; MACs grow
  linearly with it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import merge_heads, split_heads

__all__ = ["SpatialReductionAttention", "ATROUS_DILATIONS", "dilated_depthwise_taps"]

ATROUS_DILATIONS = (1, 3, 5)


def dilated_depthwise_taps(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise 3x3 convolution with ``padding = dilation``, computed as a sum of 9 shifted,
    per-channel-scaled copies of ``x``; taps that fall entirely into the zero padding are skipped.

    Identical to ``F.conv2d(x, weight, padding=d, dilation=d, groups=C)``, but much faster in
    training on small maps, where PyTorch's CPU dilated depthwise kernels (and their backward)
    cost milliseconds per call. Used in training mode only, so that counting (eval mode) still
    sees the convolution and counts its MACs.
    """
    h, w = x.shape[-2:]
    d = dilation
    padded = F.pad(x, (d, d, d, d))
    out = torch.zeros_like(x)
    for i in range(3):
        for j in range(3):
            dy, dx = (i - 1) * d, (j - 1) * d
            if abs(dy) >= h or abs(dx) >= w:
                continue  # this tap only ever reads zero padding
            tap = padded[:, :, d + dy : d + dy + h, d + dx : d + dx + w]
            out = out + tap * weight[:, 0, i, j].view(1, -1, 1, 1)
    return out


class SpatialReductionAttention(nn.Module):
    """PVTv2 SRA; with ``atrous=True`` LVT's ASA, and with ``recursion > 1`` LVT's RASA."""

    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        sr_ratio: int = 1,
        atrous: bool = False,
        recursion: int = 1,
        qkv_bias: bool = False,
    ) -> None:
        super().__init__()
        if recursion > 1 and not atrous:
            raise ValueError(f"recursion: expected 1 without atrous query, got {recursion}")
        self.heads = heads
        self.sr_ratio = sr_ratio
        self.recursion = recursion
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.sr: nn.Conv2d | None = None
        self.sr_norm: nn.LayerNorm | None = None
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, sr_ratio, stride=sr_ratio)
            self.sr_norm = nn.LayerNorm(dim)
        # One shared depthwise kernel for all dilations (ASA); None for plain SRA.
        self.atrous = nn.Parameter(torch.empty(dim, 1, 3, 3)) if atrous else None
        if self.atrous is not None:
            nn.init.kaiming_uniform_(self.atrous, a=5**0.5)

    def _attend(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        q = self.q(x)
        if self.atrous is not None:
            qm = q.transpose(1, 2).reshape(b, c, h, w)
            if self.training:
                branches = [
                    F.silu(dilated_depthwise_taps(qm, self.atrous, d)) for d in ATROUS_DILATIONS
                ]
            else:
                branches = [
                    F.silu(F.conv2d(qm, self.atrous, padding=d, dilation=d, groups=c))
                    for d in ATROUS_DILATIONS
                ]
            q = torch.stack(branches).sum(0).flatten(2).transpose(1, 2)
        if self.sr is not None and self.sr_norm is not None:
            xm = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.sr_norm(self.sr(xm).flatten(2).transpose(1, 2))
        k, v = self.kv(x).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if hw is None:
            raise ValueError("SpatialReductionAttention needs the spatial size hw=(H, W)")
        if self.recursion == 1:
            return self._attend(x, hw)
        y = F.silu(self._attend(x, hw))
        for _ in range(self.recursion - 1):
            x = y + x
            y = F.silu(self._attend(x, hw))
        return y
