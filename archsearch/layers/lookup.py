"""LookupViT block (Koner et al., ECCV 2024, arXiv 2407.12753).

Two token sets: ``N`` lookup tokens (the full patch grid) and ``M << N`` compressed tokens. Per
block:

1. compressed tokens cross-attend to the lookup tokens (queries from compressed, keys/values from
   lookup); the attention matrix ``A`` (``heads x M x N``) is kept;
2. a standard ViT block (self-attention + MLP, ratio 4) runs on the compressed tokens;
3. the lookup tokens are updated from the compressed tokens by reusing ``A`` transposed
   (``A^T @ V_c``, no new attention computation; ``A^T`` is used as is, without renormalising),
   then pass an MLP of hidden size ``D / 2``.

Lookup tokens never attend to each other, so the cost is linear in ``N``. With no official code,
projections follow the usual layout: ``q`` / ``kv`` / output projections for the cross-attention,
a value and output projection for the reverse update, pre-norm LayerNorms throughout. Context
Broadcasting (when enabled) applies inside the compressed ViT block and at the lookup MLP.

Multi-resolution training (the paper's answer to choosing ``M``): :func:`attach_multires` gives a
LookupViT model (anything with ``compressed_grid`` and ``set_compressed_grid``, i.e. a columnar
``lookup`` network) a :class:`MultiResolution` controller. Every forward call in training mode runs
at a compressed grid drawn uniformly from the allowed set (one draw per batch, from the
controller's own seeded generator: the global RNG is untouched); the compressed tokens are then
the bilinear resize of the lookup grid to the drawn grid (:func:`compress_tokens`), and the
model's grid is restored after the call. Outside training forwards the model runs at its own
grid, as without the controller: ``set_compressed_grid(g)`` chooses the evaluation grid, and
``evaluating_at(model, g)`` does so for a block.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from .attention import Attention, merge_heads, split_heads
from .block import Block, cb_points, make_mlp

__all__ = ["LookupBlock", "MultiResolution", "attach_multires", "compress_tokens"]


def compress_tokens(
    tokens: torch.Tensor, hw: tuple[int, int], grid: tuple[int, int]
) -> torch.Tensor:
    """Bilinear resize of the lookup grid ``(B, H*W, C)`` to ``(B, gh*gw, C)``."""
    b, n, c = tokens.shape
    m = tokens.transpose(1, 2).reshape(b, c, *hw)
    m = F.interpolate(m, size=grid, mode="bilinear", align_corners=False)
    return m.flatten(2).transpose(1, 2)


class LookupBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        heads: int,
        *,
        mlp_ratio: float = 4.0,
        lookup_mlp_ratio: float = 0.5,
        qkv_bias: bool = False,
        cb_kind: str = "none",
        cb_position: str = "mlp_end",
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        # (1) compressed <- lookup cross-attention
        self.norm_c = nn.LayerNorm(dim)
        self.norm_l = nn.LayerNorm(dim)
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj_c = nn.Linear(dim, dim)
        # (2) ViT block on compressed tokens
        self.vit = Block(
            dim,
            Attention(dim, heads, qkv_bias=qkv_bias),
            mlp_ratio=mlp_ratio,
            cb_kind=cb_kind,
            cb_position=cb_position,
            drop_path=drop_path,
        )
        # (3) lookup <- compressed, reusing the stored attention transposed
        self.norm_rev = nn.LayerNorm(dim)
        self.v_rev = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_l = nn.Linear(dim, dim)
        self.norm_mlp = nn.LayerNorm(dim)
        _, inner = cb_points(cb_position) if cb_kind != "none" else (False, None)
        self.mlp_l = make_mlp("mlp", dim, lookup_mlp_ratio, cb_kind=cb_kind, cb_where=inner)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def cross_attention(
        self, lookup: torch.Tensor, compressed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (update for the compressed tokens, attention ``(B, heads, M, N)``)."""
        q = split_heads(self.q(self.norm_c(compressed)), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.kv(self.norm_l(lookup)).chunk(2, -1))
        attn = (torch.matmul(q, k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj_c(merge_heads(torch.matmul(attn, v))), attn

    def reverse_update(self, compressed: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Update for the lookup tokens: ``A^T @ V(compressed)``, per head."""
        v = split_heads(self.v_rev(self.norm_rev(compressed)), self.heads)
        return self.proj_l(merge_heads(torch.matmul(attn.transpose(-2, -1), v)))

    def forward(
        self, lookup: torch.Tensor, compressed: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        upd, attn = self.cross_attention(lookup, compressed)
        compressed = compressed + self.drop_path(upd)
        compressed = self.vit(compressed)
        lookup = lookup + self.drop_path(self.reverse_update(compressed, attn))
        lookup = lookup + self.drop_path(self.mlp_l(self.norm_mlp(lookup)))
        return lookup, compressed


class MultiResolution:
    """Multi-resolution training of a LookupViT model: a compressed grid drawn per training batch.
    Attach with :func:`attach_multires`.

    Attributes:
        grids: the allowed compressed grid sides (sorted).
        draws: how many training batches ran at each grid of ``grids``.
    """

    def __init__(self, grids: Iterable[int], *, seed: int = 0) -> None:
        self.grids = tuple(sorted(set(grids)))
        if len(self.grids) < 2 or any(g < 1 for g in self.grids):
            raise ValueError(f"grids: expected at least two grid sides >= 1, got {self.grids}")
        self.draws = dict.fromkeys(self.grids, 0)
        self._rng = random.Random(seed)
        self._restore: int | None = None

    def checked(self, grid: int) -> int:
        """``grid`` if it is one of :attr:`grids`; ValueError otherwise."""
        if grid not in self.grids:
            raise ValueError(f"grid: expected one of {list(self.grids)}, got {grid!r}")
        return grid

    def draw(self) -> int:
        """One training batch's grid, uniformly from :attr:`grids` (counted in :attr:`draws`)."""
        g = self.grids[self._rng.randrange(len(self.grids))]
        self.draws[g] += 1
        return g

    def before_forward(self, model: nn.Module, args: Any) -> None:
        """Forward pre-hook: in training mode, run this call at a drawn grid."""
        if model.training:
            self._restore = int(model.compressed_grid)  # type: ignore[arg-type]
            model.set_compressed_grid(self.draw())  # type: ignore[operator]

    def after_forward(self, model: nn.Module, args: Any, output: Any) -> None:
        """Forward hook (also on errors): back to the model's own grid."""
        if self._restore is not None:
            model.set_compressed_grid(self._restore)  # type: ignore[operator]
            self._restore = None

    @contextmanager
    def evaluating_at(self, model: nn.Module, grid: int) -> Iterator[None]:
        """Run ``model`` at ``grid``, one of :attr:`grids`, inside the block."""
        before = int(model.compressed_grid)  # type: ignore[arg-type]
        model.set_compressed_grid(self.checked(grid))  # type: ignore[operator]
        try:
            yield
        finally:
            model.set_compressed_grid(before)  # type: ignore[operator]


def attach_multires(
    model: nn.Module, grids: Iterable[int], *, eval_grid: int | None = None, seed: int = 0
) -> MultiResolution:
    """Give a LookupViT ``model`` multi-resolution training over ``grids``; return the controller,
    also kept as ``model.multires``. ``eval_grid`` (one of ``grids``): the grid the model runs at
    outside training, set now (default: the model's current grid). A model that already has a
    controller keeps it (it must have the same grids), so a builder may attach one before the
    trainer does."""
    if not callable(getattr(model, "set_compressed_grid", None)):
        raise ValueError(f"model: expected a LookupViT model, got {type(model).__name__}")
    mr = MultiResolution(grids, seed=seed)
    old = getattr(model, "multires", None)
    if isinstance(old, MultiResolution):
        if old.grids != mr.grids:
            raise ValueError(f"grids: model already trains on {list(old.grids)}, got {mr.grids}")
        mr = old
    else:
        model.register_forward_pre_hook(mr.before_forward)
        model.register_forward_hook(mr.after_forward, always_call=True)
        model.multires = mr  # type: ignore[assignment]  # a plain attribute, not a submodule
    if eval_grid is not None:
        model.set_compressed_grid(mr.checked(eval_grid))  # type: ignore[operator]
    return mr
