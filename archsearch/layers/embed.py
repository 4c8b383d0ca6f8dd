"""Tokenizers (patch embeddings and conv stems) and position embeddings.

Every tokenizer maps ``(B, C, H, W)`` to tokens ``(B, N, D)`` and returns the grid ``(h, w)``.
"""

from __future__ import annotations

import math

import torch
from timm.layers import register_notrace_function, resample_abs_pos_embed
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


@torch.fx.wrap
@register_notrace_function
def resize_pos_embed(
    pos: torch.Tensor, prefix: int, old_hw: tuple[int, int], new_hw: tuple[int, int]
) -> torch.Tensor:
    """Bicubic resize of the grid part of ``(1, prefix + h*w, D)``; prefix tokens kept.

    timm's :func:`~timm.layers.resample_abs_pos_embed` without anti-aliasing (so a model loaded
    at another size through timm's checkpoint filter computes exactly what the model built at the
    original size computes on those inputs). A leaf of ``torch.fx`` graphs: whether to resize
    depends on the input size.
    """
    return resample_abs_pos_embed(
        pos,
        new_size=[new_hw[0], new_hw[1]],
        old_size=[old_hw[0], old_hw[1]],
        num_prefix_tokens=prefix,
        interpolation="bicubic",
        antialias=False,
    )
