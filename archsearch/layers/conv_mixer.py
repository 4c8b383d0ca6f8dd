"""Depthwise-separable convolutional token mixer: the "conv stage 1" alternative to CSA.

ConvNeXt-style: a depthwise ``k x k`` conv (with bias) followed by a pointwise ``Linear(C, C)``.
Used as the mixer of a pre-norm block, so the block's MLP supplies the channel expansion.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConvMixer"]


class ConvMixer(nn.Module):
    def __init__(self, dim: int, *, kernel_size: int = 7) -> None:
        super().__init__()
        self.dw = nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.pw = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        if hw is None:
            raise ValueError("ConvMixer needs the spatial size hw=(H, W)")
        b, n, c = x.shape
        x = self.dw(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        return self.pw(x)
