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

Fast path (training and the proxy's validation, see
:func:`~archsearch.layers.attention.use_fast_path`), for maps whose sides are multiples of the
stride: the same function in a position-major layout ``(N, B, C)``.
Windows are gathered with one ``index_select`` (a zero row stands for the padding), the slot
projections are one ``bmm`` over the ``k^2`` slots, the attention logits come out with the
softmax axis second-to-last (PyTorch's CPU softmax is slow over a last axis of 9), and the
overlapping outputs are summed back with one ``index_add``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .attention import use_fast_path

__all__ = ["ConvSelfAttention"]


@functools.lru_cache(maxsize=64)
def _window_index(
    h: int, w: int, k: int, s: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token index of slot ``t`` of window ``l`` (``h * w`` where it is zero padding), ordered
    slot-major ``(t, l)`` for the gather and window-major ``(l, t)`` for the scatter."""
    p = k // 2
    wy, wx = torch.meshgrid(torch.arange(h // s), torch.arange(w // s), indexing="ij")
    ty, tx = torch.meshgrid(torch.arange(k), torch.arange(k), indexing="ij")
    ys = wy.reshape(1, -1) * s - p + ty.reshape(-1, 1)  # (k*k, L)
    xs = wx.reshape(1, -1) * s - p + tx.reshape(-1, 1)
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    pos = torch.where(inside, ys * w + xs, torch.full_like(ys, h * w))
    return pos.flatten().to(device), pos.t().flatten().to(device)


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
        h, w = hw
        if use_fast_path(self) and h % self.stride == 0 and w % self.stride == 0:
            return self._forward_fast(x, hw)
        b, n, c = x.shape
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

    def _forward_fast(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, w = hw
        k, s, kk, heads = self.kernel_size, self.stride, self.slots, self.heads
        windows = (h // s) * (w // s)
        gather, scatter = _window_index(h, w, k, s, x.device)
        xt = torch.cat([x.transpose(0, 1), x.new_zeros(1, b, c)])  # (N + 1, B, C), row N = 0
        cols = xt.index_select(0, gather).view(kk, windows * b, c)  # slot-major windows
        slot_w = self.slot_proj.weight.view(kk, c, c).transpose(1, 2)
        v = torch.bmm(cols, slot_w).view(kk, windows, b, heads, c // heads)
        v = v.permute(1, 2, 3, 0, 4).reshape(windows * b * heads, kk, c // heads)  # a view
        # 2x2 average pool; two single-axis means (a two-axis reduction is ~20x slower here).
        pooled = xt[:n].view(h // s, s, w // s, s, b, c).mean(3).mean(1)  # (h/s, w/s, B, C)
        # Logits with the softmax axis (key slot j) before the query slot i, scale folded in.
        weight = self.attn.weight.view(heads, kk, kk, c).transpose(1, 2).reshape(-1, c)
        bias = self.attn.bias.view(heads, kk, kk).transpose(1, 2).reshape(-1)
        logits = F.linear(pooled, weight * self.scale, bias * self.scale)
        a_t = logits.view(windows * b * heads, kk, kk).softmax(dim=1)  # (., j, i)
        out = torch.bmm(a_t.transpose(1, 2), v)  # (L*B*heads, i, d)
        out = out.view(windows, b, heads, kk, c // heads).permute(0, 3, 1, 2, 4)
        out = out.reshape(windows * kk, b, c)  # window-major, like ``scatter``
        folded = x.new_zeros(n + 1, b, c).index_add_(0, scatter, out)
        return self.proj(folded[:n]).transpose(0, 1)
