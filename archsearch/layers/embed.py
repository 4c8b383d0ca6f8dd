"""Tokenizers (patch embeddings and conv stems) and position embeddings.

Every tokenizer maps ``(B, C, H, W)`` to tokens ``(B, N, D)`` and returns the grid ``(h, w)``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbed", "OverlapPatchEmbed", "ConvStem", "sincos_1d", "resize_pos_embed"]


class PatchEmbed(nn.Module):
    """ViT patch embedding: non-overlapping ``p x p`` conv."""

    def __init__(self, in_chans: int, dim: int, *, patch_size: int = 16) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])


class OverlapPatchEmbed(nn.Module):
    """LVT / PVTv2 overlapping patch embedding: conv ``(2s-1) x (2s-1)`` stride ``s``, LayerNorm.

    Stride 4 gives LVT's stage-1 7x7 conv (padding 3); stride 2 the 3x3 conv of later stages.
    """

    def __init__(self, in_chans: int, dim: int, *, stride: int = 4) -> None:
        super().__init__()
        k = 2 * stride - 1
        self.proj = nn.Conv2d(in_chans, dim, k, stride=stride, padding=k // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)
        return self.norm(x.flatten(2).transpose(1, 2)), (x.shape[-2], x.shape[-1])


class ConvStem(nn.Module):
    """``log2(stride)`` 3x3 stride-2 convs, widths doubling up to ``dim``, BatchNorm + GELU."""

    def __init__(self, in_chans: int, dim: int, *, stride: int = 16) -> None:
        super().__init__()
        n = max(1, int(math.log2(stride)))
        widths = [max(dim // 2 ** (n - 1 - i), 8) for i in range(n)]
        widths[-1] = dim
        layers: list[nn.Module] = []
        cin = in_chans
        for i, cout in enumerate(widths):
            layers.append(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=i == n - 1))
            if i < n - 1:
                layers += [nn.BatchNorm2d(cout), nn.GELU()]
            cin = cout
        self.convs = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.convs(x)
        return x.flatten(2).transpose(1, 2), (x.shape[-2], x.shape[-1])


def sincos_1d(n_positions: int, dim: int) -> torch.Tensor:
    """T2T-ViT's fixed 1-D sinusoid table ``(1, n_positions, dim)``: sin on even, cos on odd."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    j = torch.arange(dim, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float().unsqueeze(0)


def resize_pos_embed(
    pos: torch.Tensor, prefix: int, old_hw: tuple[int, int], new_hw: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resize of the grid part of ``(1, prefix + h*w, D)``; prefix tokens kept."""
    if old_hw == new_hw:
        return pos
    head, grid = pos[:, :prefix], pos[:, prefix:]
    d = grid.shape[-1]
    grid = grid.reshape(1, *old_hw, d).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_hw, mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], d)
    return torch.cat([head, grid], dim=1)
