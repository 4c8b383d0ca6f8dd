"""Feed-forward layers: plain MLP and LVT's conv-MLP, each with optional CB insertion points.

All take tokens ``(B, N, C)`` and the spatial size ``hw`` (ignored by the plain MLP).
CB positions inside the MLP (Context Broadcasting paper): ``front`` (before fc1), ``mid``
(between the two FC layers, on the hidden width: 4x the cost of ``end``) and ``end`` (after fc2).
"""

from __future__ import annotations

import torch
from torch import nn

from .cb import make_cb

__all__ = ["Mlp", "ConvMlp"]


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
        x = self.dw(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        return self.act(x)
