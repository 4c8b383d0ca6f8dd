"""The pre-norm transformer block shared by every mixer: ``x + mixer(LN(x))``, ``x + mlp(LN(x))``.

Context Broadcasting can sit after the mixer (``attn``), inside the MLP (``mlp_front``,
``mlp_mid``, ``mlp_end``) or at both the mixer and the MLP end (``both``). Insertions are inside
the residual branch, before the residual add.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn

from .cb import make_cb
from .mlp import ConvMlp, Mlp

__all__ = ["Block", "make_mlp", "cb_points"]


def cb_points(position: str) -> tuple[bool, str | None]:
    """Map a CB position to (after the mixer?, where inside the MLP or None)."""
    after_mixer = position in ("attn", "both")
    inner = {"mlp_end": "end", "mlp_mid": "mid", "mlp_front": "front", "both": "end"}
    return after_mixer, inner.get(position)


def make_mlp(kind: str, dim: int, ratio: float, *, cb_kind: str, cb_where: str | None) -> nn.Module:
    hidden = max(1, round(dim * ratio))
    cls = ConvMlp if kind == "conv_mlp" else Mlp
    return cls(dim, hidden, cb_kind=cb_kind, cb_where=cb_where)


class Block(nn.Module):
    """Pre-norm block around any mixer taking ``(tokens, hw)``."""

    def __init__(
        self,
        dim: int,
        mixer: nn.Module,
        *,
        mlp: str = "mlp",
        mlp_ratio: float = 4.0,
        cb_kind: str = "none",
        cb_position: str = "mlp_end",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        after_mixer, inner = cb_points(cb_position) if cb_kind != "none" else (False, None)
        self.norm1 = nn.LayerNorm(dim)
        self.mixer = mixer
        self.cb_mixer = make_cb(cb_kind, dim) if after_mixer else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = make_mlp(mlp, dim, mlp_ratio, cb_kind=cb_kind, cb_where=inner)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        y = self.mixer(self.norm1(x), hw)
        if self.cb_mixer is not None:
            y = self.cb_mixer(y)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), hw))
