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

Fast path (training and the proxy's validation, see
:func:`~archsearch.layers.attention.use_fast_path`): on maps of at most ``DENSE_MAX_TOKENS``
tokens the three dilated depthwise convolutions are one batched matmul of the channel-major
query with per-channel ``N x 3N`` matrices built from the shared kernel (the taps that fall into
the zero padding are simply absent), and the reduction conv, whose kernel equals its stride, is
a Linear on the flattened patches. Same function, a handful of kernels.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from timm.layers import register_notrace_function
from torch import nn

from .attention import merge_heads, split_heads, use_fast_path

__all__ = [
    "SpatialReductionAttention",
    "ATROUS_DILATIONS",
    "DENSE_MAX_TOKENS",
    "dilated_depthwise_taps",
    "depthwise_tap_matrices",
    "patch_linear",
]

ATROUS_DILATIONS = (1, 3, 5)
#: Largest map (H * W tokens) on which depthwise 3x3 convolutions run as dense per-channel
#: matrices on the fast path (12x12: 1.3x faster than the taps; 8x8: 3.5x; 16x16: 0.6x).
DENSE_MAX_TOKENS = 144


@functools.lru_cache(maxsize=64)
def _tap_matrices(h: int, w: int, dilations: tuple[int, ...], device: torch.device) -> torch.Tensor:
    taps = torch.zeros(9, h * w, len(dilations) * h * w)
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    out = (ys * w + xs).flatten()
    for k, d in enumerate(dilations):
        for t in range(9):
            sy, sx = ys + (t // 3 - 1) * d, xs + (t % 3 - 1) * d
            ok = ((sy >= 0) & (sy < h) & (sx >= 0) & (sx < w)).flatten()
            src = (sy * w + sx).flatten()
            taps[t, src[ok], k * h * w + out[ok]] = 1.0
    return taps.to(device)


def depthwise_tap_matrices(
    weight: torch.Tensor, hw: tuple[int, int], dilations: tuple[int, ...] = (1,)
) -> torch.Tensor:
    """Depthwise 3x3 convolutions (``padding = dilation``, no bias) as per-channel matrices.

    Returns ``(C, N, len(dilations) * N)`` with ``N = H * W``: for channel-major input
    ``x (C, B, N)``, ``torch.bmm(x, result)`` holds, in its ``k``-th block of ``N`` columns,
    ``F.conv2d(x, weight, padding=d, dilation=d, groups=C)`` for ``d = dilations[k]``.
    """
    c = weight.shape[0]
    taps = _tap_matrices(hw[0], hw[1], tuple(dilations), weight.device)
    return (weight.reshape(c, 9) @ taps.to(weight.dtype).reshape(9, -1)).reshape(
        c, hw[0] * hw[1], -1
    )


def patch_linear(x: torch.Tensor, hw: tuple[int, int], conv: nn.Conv2d) -> torch.Tensor | None:
    """``conv`` (kernel = stride, no padding) on tokens ``(B, H*W, C)`` as a Linear on patches.

    Returns tokens ``(B, H/s * W/s, C_out)``, or ``None`` when the map is not a whole number of
    patches (the caller then runs the convolution).
    """
    s = conv.stride[0]
    h, w = hw
    if conv.kernel_size != (s, s) or conv.stride != (s, s) or conv.padding != (0, 0):
        return None
    if h % s or w % s or conv.dilation != (1, 1) or conv.groups != 1:
        return None
    b, _, c = x.shape
    patches = x.reshape(b, h // s, s, w // s, s, c).transpose(2, 3)
    patches = patches.reshape(b, (h // s) * (w // s), s * s * c)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, s * s * c)
    return F.linear(patches, weight, conv.bias)


@torch.fx.wrap
@register_notrace_function
def dilated_depthwise_taps(x: torch.Tensor, weight: torch.Tensor, dilation: int) -> torch.Tensor:
    """Depthwise 3x3 convolution with ``padding = dilation``, computed as a sum of 9 shifted,
    per-channel-scaled copies of ``x``; taps that fall entirely into the zero padding are skipped.

    Identical to ``F.conv2d(x, weight, padding=d, dilation=d, groups=C)``, but much faster in
    training on small maps, where PyTorch's CPU dilated depthwise kernels (and their backward)
    cost milliseconds per call. Used in training mode only, so that counting (eval mode) still
    sees the convolution and counts its MACs. A leaf of ``torch.fx`` graphs (its taps depend on
    the map size), as timm marks its own shape-dependent helpers.
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

    def _query(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
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
        return q

    def _attend(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if use_fast_path(self):
            return self._attend_fast(x, hw)
        b, n, c = x.shape
        h, w = hw
        q = self._query(x, hw)
        if self.sr is not None and self.sr_norm is not None:
            xm = x.transpose(1, 2).reshape(b, c, h, w)
            x = self.sr_norm(self.sr(xm).flatten(2).transpose(1, 2))
        k, v = self.kv(x).chunk(2, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

    def _attend_fast(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        if self.atrous is not None and n <= DENSE_MAX_TOKENS:
            # Channel-major query (C, B*N) straight from the GEMM, all dilations in one bmm.
            x2 = x.reshape(b * n, c).t()
            if self.q.bias is None:
                qt = torch.mm(self.q.weight, x2)
            else:
                qt = torch.addmm(self.q.bias[:, None], self.q.weight, x2)
            kernel = depthwise_tap_matrices(self.atrous, hw, ATROUS_DILATIONS)
            qt = F.silu(torch.bmm(qt.view(c, b, n), kernel))
            qt = qt.view(c, b, len(ATROUS_DILATIONS), n).sum(2)
            q = qt.view(self.heads, c // self.heads, b, n).permute(2, 0, 3, 1)
        else:
            q = split_heads(self._query(x, hw), self.heads)
        if self.sr is not None and self.sr_norm is not None:
            red = patch_linear(x, hw, self.sr)
            if red is None:
                red = self.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            x = self.sr_norm(red)
        k, v = (split_heads(t, self.heads) for t in self.kv(x).chunk(2, dim=-1))
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
