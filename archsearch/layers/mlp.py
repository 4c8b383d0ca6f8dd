"""Feed-forward layers: plain MLP and LVT's conv-MLP, each with optional CB insertion points.

All take tokens ``(B, N, C)`` and the spatial size ``hw`` (ignored by the plain MLP).
CB positions inside the MLP (Context Broadcasting paper): ``front`` (before fc1), ``mid``
(between the two FC layers, on the hidden width: 4x the cost of ``end``) and ``end`` (after fc2).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import use_fast_path
from .cb import make_cb

__all__ = ["Mlp", "ConvMlp"]

#: Largest map (H * W tokens) on which the fast path runs the depthwise 3x3 conv as shifted
#: multiply-adds (:class:`_SmallDepthwise`); oneDNN's weight gradient is slow on such maps.
SMALL_MAP_TOKENS = 4


def _taps(h: int, w: int) -> list[tuple[int, slice, slice, slice, slice]]:
    """Valid taps of a 3x3 kernel with padding 1 on an ``h x w`` map:
    ``(tap index, output rows, output cols, input rows, input cols)``."""
    out = []
    for t in range(9):
        dy, dx = t // 3 - 1, t % 3 - 1
        if abs(dy) >= h or abs(dx) >= w:
            continue
        oy, ox = slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx))
        iy, ix = slice(oy.start + dy, oy.stop + dy), slice(ox.start + dx, ox.stop + dx)
        out.append((t, oy, ox, iy, ix))
    return out


class _SmallDepthwise(torch.autograd.Function):
    """Depthwise 3x3 conv, padding 1, on a channels-last map ``(B, H, W, C)`` with weight
    ``(C, 9)`` and bias ``(C,)``, as one multiply-add per tap (and per tap in backward)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        out = bias.expand_as(x).clone()
        for t, oy, ox, iy, ix in _taps(x.shape[1], x.shape[2]):
            out[:, oy, ox].addcmul_(x[:, iy, ix], weight[:, t])
        return out

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: Any, grad: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        c = x.shape[-1]
        grad_x = torch.zeros_like(x)
        grad_w = torch.zeros_like(weight)
        for t, oy, ox, iy, ix in _taps(x.shape[1], x.shape[2]):
            g = grad[:, oy, ox]
            grad_x[:, iy, ix].addcmul_(g, weight[:, t])
            grad_w[:, t] = (g * x[:, iy, ix]).reshape(-1, c).sum(0)
        return grad_x, grad_w, grad.reshape(-1, c).sum(0)


class Mlp(nn.Module):
    """Linear - GELU - Linear."""

    def __init__(
        self, dim: int, hidden: int, *, cb_kind: str = "none", cb_where: str | None = None
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.cb_front = make_cb(cb_kind, dim) if cb_where == "front" else None
        self.cb_mid = make_cb(cb_kind, hidden) if cb_where == "mid" else None
        self.cb_end = make_cb(cb_kind, dim) if cb_where == "end" else None

    def _hidden(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        return self.act(self.fc1(x))

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if self.cb_front is not None:
            x = self.cb_front(x)
        x = self._hidden(x, hw)
        if self.cb_mid is not None:
            x = self.cb_mid(x)
        x = self.fc2(x)
        if self.cb_end is not None:
            x = self.cb_end(x)
        return x


class ConvMlp(Mlp):
    """LVT's conv-MLP: 1x1 conv C->rC, depthwise 3x3, GELU, 1x1 conv rC->C.

    There is no activation between the first two convolutions. The 1x1 convolutions are written
    as Linear layers on tokens (identical maths and MACs).

    Fast path (see :func:`~archsearch.layers.attention.use_fast_path`): the depthwise
    conv reads the tokens as a channels-last map (no transposes); on a 1x1 map, where only the
    centre tap sees the input, it is one ``addcmul``.
    """

    def __init__(
        self, dim: int, hidden: int, *, cb_kind: str = "none", cb_where: str | None = None
    ) -> None:
        super().__init__(dim, hidden, cb_kind=cb_kind, cb_where=cb_where)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)

    def _hidden(self, x: torch.Tensor, hw: tuple[int, int] | None) -> torch.Tensor:
        if hw is None:
            raise ValueError("ConvMlp needs the spatial size hw=(H, W) of its tokens")
        x = self.fc1(x)
        b, n, c = x.shape
        if use_fast_path(self):
            return self.act(self._depthwise_fast(x, hw))
        x = self.dw(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        return self.act(x)

    def _depthwise_fast(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        dw = self.dw
        if dw.bias is not None and n <= SMALL_MAP_TOKENS:
            weight, bias = dw.weight.reshape(c, 9).to(x.dtype), dw.bias.to(x.dtype)  # autocast
            if hw == (1, 1):  # only the centre tap sees the input
                return torch.addcmul(bias, x, weight[:, 4])
            y = _SmallDepthwise.apply(x.reshape(b, *hw, c), weight, bias)
            return y.reshape(b, n, c)
        xm = x.view(b, *hw, c).permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        y = F.conv2d(xm, dw.weight, dw.bias, dw.stride, dw.padding, dw.dilation, dw.groups)
        return y.permute(0, 2, 3, 1).reshape(b, n, c)
