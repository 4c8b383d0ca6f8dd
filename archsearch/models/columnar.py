"""Columnar (ViT / T2T-ViT / LookupViT-style) networks: one resolution, ``depth`` blocks.

Tokenizer, optional class token, position embedding (fixed sinusoid, a persistent buffer;
learned, a parameter; or none; built for ``img_size`` and resized bicubically at other input
sizes), blocks, LayerNorm, head on the class token or on pooled tokens (``global_pool``: ``token``
with a class token, else ``avg``; ``max``, ``avgmax`` or ``""`` for none). With the ``lookup``
mixer the blocks are LookupViT blocks: the compressed tokens are a bilinear resize of the
(position-embedded) lookup grid, and the head is LookupViT's pair of classifiers averaged, reading
the lookup and the compressed tokens pooled apart (so ``head_hidden_size`` is twice
``num_features``).

timm interface as timm's ViT: one ``feature_info`` entry per block, ``forward_intermediates``
(block outputs; for LookupViT the lookup tokens) and ``prune_intermediate_layers`` with timm's
arguments, ``features_only=True`` through timm's ``FeatureGetterNet``, gradient checkpointing.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import register_notrace_function, register_notrace_module
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ArchConfig
from ..layers import Attention, Block, LookupBlock
from ..layers.attention import is_fx_tracing
from ..layers.embed import resize_pos_embed, sincos_1d
from ..layers.lookup import compress_tokens
from ._common import (
    DualHead,
    TimmHeadMixin,
    init_weights,
    listed_indices,
    make_tokenizer,
    pool_tokens,
    token_grid,
    token_stride,
)

__all__ = ["ColumnarNet", "POOLS", "clip_grid"]

#: ``global_pool`` values of columnar models (``token`` needs a class token).
POOLS = ("", "avg", "max", "avgmax", "token")

# A leaf of torch.fx graphs (whether to resize depends on the input size); fx.wrap patches the
# name in the module that calls it, so it is wrapped here as well as where it is defined.
torch.fx.wrap("resize_pos_embed")
# LookupViT's block iterates over a tensor's chunks (a generator over ``Tensor.chunk``), which
# symbolic tracing cannot follow: a leaf module of timm's FX tracer (timm's feature extraction).
register_notrace_module(LookupBlock)


@torch.fx.wrap
@register_notrace_function
def clip_grid(grid: int, hw: tuple[int, int]) -> tuple[int, int]:
    """LookupViT's compressed grid on an ``hw`` token grid: never more compressed tokens than
    lookup tokens (small proxy images). A leaf of ``torch.fx`` graphs."""
    return min(grid, hw[0]), min(grid, hw[1])


class ColumnarNet(TimmHeadMixin, nn.Module):
    """Single-resolution vision transformer; timm model interface."""

    def __init__(
        self,
        config: ArchConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        img_size: int = 224,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str | None = None,
        **_kwargs: Any,
    ) -> None:
        super().__init__()
        s = config.stages[0]
        self.config = config
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.lookup = s.mixer == "lookup"
        self.num_prefix_tokens = 1 if config.class_token else 0
        default_pool = "token" if config.class_token else "avg"
        self.global_pool = self._check_pool(
            default_pool if global_pool is None else global_pool, num_classes
        )
        dim = s.dim
        self.patch_embed = make_tokenizer(config.tokenizer, in_chans, dim)
        side = token_grid(config.tokenizer, img_size)
        self.grid = (side, side)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        n_pos = self.num_prefix_tokens + side * side
        self.pos_embed: torch.Tensor | None
        if config.pos_embed == "sincos":  # fixed: a buffer, saved so checkpoints keep loading
            self.register_buffer("pos_embed", sincos_1d(n_pos, dim), persistent=True)
        elif config.pos_embed == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, n_pos, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        dpr = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        blocks: list[nn.Module] = []
        for i in range(s.depth):
            cb = config.cb.kind if config.cb_enabled(i) else "none"
            dp = dpr * i / max(s.depth - 1, 1)
            if self.lookup:
                blk: nn.Module = LookupBlock(
                    dim,
                    s.heads,
                    mlp_ratio=s.mlp_ratio,
                    qkv_bias=s.qkv_bias,
                    cb_kind=cb,
                    cb_position=config.cb.position,
                    drop_path=dp,
                )
            else:
                blk = Block(
                    dim,
                    Attention(dim, s.heads, qkv_bias=s.qkv_bias),
                    mlp_ratio=s.mlp_ratio,
                    cb_kind=cb,
                    cb_position=config.cb.position,
                    drop_path=dp,
                )
            blocks.append(blk)
        self.blocks = nn.ModuleList(blocks)
        self.norm: nn.Module = nn.LayerNorm(dim)
        self.compressed_grid = s.lookup_grid
        self.norm_c: nn.Module | None = nn.LayerNorm(dim) if self.lookup else None
        self.embed_dim = self.num_features = dim
        self.head_hidden_size = 2 * dim if self.lookup else dim
        reduction = token_stride(config.tokenizer)
        self.feature_info = [
            dict(module=f"blocks.{i}", num_chs=dim, reduction=reduction) for i in range(s.depth)
        ]
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)
        self.grad_checkpointing = False
        self.apply(init_weights)

    def _make_head(self, num_classes: int) -> nn.Module:
        if self.lookup:
            return DualHead(self.embed_dim, num_classes)
        return nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()

    def _check_pool(self, pool: str, num_classes: int) -> str:
        allowed = POOLS if self.num_prefix_tokens else POOLS[:-1]
        if pool not in allowed:
            raise ValueError(f"global_pool: expected one of {list(allowed)}, got {pool!r}")
        if self.lookup and pool == "" and num_classes:
            raise ValueError(
                "global_pool: expected pooling for LookupViT's two classifiers (they read pooled "
                "lookup and compressed tokens), got '' with num_classes > 0"
            )
        return pool

    # ---------------------------------------------------------------- LookupViT controls
    def set_compressed_grid(self, grid: int) -> None:
        """Change LookupViT's compressed grid side (M = grid ** 2) at run time.

        On inputs whose token grid is smaller than ``grid`` the compressed grid is clipped to the
        token grid, so there are never more compressed tokens than lookup tokens.
        """
        if not self.lookup:
            raise ValueError("set_compressed_grid: this model has no LookupViT blocks")
        if grid < 1:
            raise ValueError(f"set_compressed_grid: expected a grid side >= 1, got {grid}")
        self.compressed_grid = grid

    def _compressed_count(self) -> int:
        """Compressed tokens at the end of the last ``forward_features`` output."""
        if hasattr(self, "_compressed_tokens"):
            return int(self._compressed_tokens)
        gh, gw = clip_grid(self.compressed_grid, self.grid)
        return gh * gw

    def _remember(self, m: Any) -> None:
        if self.lookup and not is_fx_tracing():  # no proxies left on the module after tracing
            self._compressed_tokens = m

    # ---------------------------------------------------------------- timm interface
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _run(self, blk: nn.Module, *args: torch.Tensor) -> Any:
        if self.grad_checkpointing and args[0].requires_grad:
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, hw = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.num_prefix_tokens, self.grid, hw)
        return x, hw

    def _final(self, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        if c is None:
            return self.norm(x)
        assert self.norm_c is not None
        return torch.cat([self.norm(x), self.norm_c(c)], dim=1)

    def _features(self, x: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """``forward_features`` and its number of trailing compressed tokens (0: no lookup)."""
        x, hw = self._embed(x)
        if not self.lookup:
            for blk in self.blocks:
                x = self._run(blk, x)
            return self._final(x, None), 0
        grid = clip_grid(self.compressed_grid, hw)
        c = compress_tokens(x, hw, grid)
        for blk in self.blocks:
            x, c = self._run(blk, x, c)
        return self._final(x, c), grid[0] * grid[1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, m = self._features(x)
        self._remember(m)
        return x

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        return_prefix_tokens: bool = False,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> Any:
        """Forward returning the outputs of the chosen blocks (timm's ViT contract).

        Args:
            x: input images ``(B, C, H, W)``.
            indices: the last ``n`` blocks if an int, all if None, else these block indices
                (negative counts from the end).
            return_prefix_tokens: pair each intermediate with its class token.
            norm: apply the final LayerNorm to the intermediates.
            stop_early: stop after the last requested block.
            output_fmt: ``NCHW`` (tokens as a map on the token grid) or ``NLC``.
            intermediates_only: return only the intermediates.

        Returns:
            ``(final features, intermediates)`` or the intermediates alone. LookupViT's
            intermediates are its lookup tokens; its final features are ``forward_features``'.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NLC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.blocks), listed_indices(indices))
        b = x.shape[0]
        x, hw = self._embed(x)
        blocks = self.blocks[: max_index + 1] if stop_early else self.blocks
        c: torch.Tensor | None = None
        m: Any = 0
        if self.lookup:
            grid = clip_grid(self.compressed_grid, hw)
            c, m = compress_tokens(x, hw, grid), grid[0] * grid[1]
        inter = []
        for i, blk in enumerate(blocks):
            if c is not None:
                x, c = self._run(blk, x, c)
            else:
                x = self._run(blk, x)
            if i in take:
                inter.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefix = [y[:, :p] for y in inter]
        inter = [y[:, p:] for y in inter] if p else inter
        if output_fmt == "NCHW":
            inter = [y.reshape(b, hw[0], hw[1], -1).permute(0, 3, 1, 2).contiguous() for y in inter]
        out: list[Any] = list(zip(inter, prefix)) if return_prefix_tokens and p else inter
        if intermediates_only:
            return out
        self._remember(m)
        return self._final(x, c), out

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the blocks after the last of ``indices`` (and the final norm and head on
        request); return the kept indices."""
        take, max_index = feature_take_indices(len(self.blocks), listed_indices(indices))
        self.blocks = self.blocks[: max_index + 1]
        if prune_norm:
            self.norm = nn.Identity()
            if self.norm_c is not None:
                self.norm_c = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def _head(self, x: torch.Tensor, m: Any, pre_logits: bool = False) -> torch.Tensor:
        pool = self.global_pool
        if self.lookup and pool:
            x = torch.cat([pool_tokens(x[:, :-m], pool), pool_tokens(x[:, -m:], pool)], dim=-1)
        else:
            x = pool_tokens(x, pool, self.num_prefix_tokens)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self._head(x, self._compressed_count() if self.lookup else 0, pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, m = self._features(x)
        return self._head(x, m)
