"""Columnar (ViT / T2T-ViT / LookupViT-style) networks: one resolution, ``depth`` blocks.

Tokenizer, optional class token, position embedding (fixed sinusoid, learned or none; built for
``img_size`` and resized bicubically at other input sizes), blocks, LayerNorm, head on the class
token or on average-pooled tokens. With the ``lookup`` mixer the blocks are LookupViT blocks: the
compressed tokens are a bilinear resize of the (position-embedded) lookup grid, and the head is
LookupViT's pair of classifiers averaged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ArchConfig
from ..layers import Attention, Block, LookupBlock
from ..layers.embed import resize_pos_embed, sincos_1d
from ..layers.lookup import compress_tokens
from ._common import DualHead, TimmHeadMixin, init_weights, make_tokenizer, token_grid

__all__ = ["ColumnarNet"]


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
        self.global_pool = global_pool or ("token" if config.class_token else "avg")
        dim = s.dim
        self.patch_embed = make_tokenizer(config.tokenizer, in_chans, dim)
        side = token_grid(config.tokenizer, img_size)
        self.grid = (side, side)
        self.num_prefix_tokens = 1 if config.class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if config.class_token else None
        n_pos = self.num_prefix_tokens + side * side
        self.pos_embed: nn.Parameter | None
        if config.pos_embed == "sincos":
            self.pos_embed = nn.Parameter(sincos_1d(n_pos, dim), requires_grad=False)
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
        self.norm = nn.LayerNorm(dim)
        self.compressed_grid = s.lookup_grid
        self.norm_c = nn.LayerNorm(dim) if self.lookup else None
        self.embed_dim = dim
        self.num_features = self.head_hidden_size = 2 * dim if self.lookup else dim
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)
        self.grad_checkpointing = False
        self.apply(init_weights)

    def _make_head(self, num_classes: int) -> nn.Module:
        if self.lookup:
            return DualHead(self.embed_dim, num_classes)
        return nn.Linear(self.embed_dim, num_classes) if num_classes else nn.Identity()

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

    # ---------------------------------------------------------------- timm interface
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def _run(self, blk: nn.Module, *args: torch.Tensor) -> Any:
        if self.grad_checkpointing and args[0].requires_grad:
            return checkpoint(blk, *args, use_reentrant=False)
        return blk(*args)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + resize_pos_embed(self.pos_embed, self.num_prefix_tokens, self.grid, hw)
        if not self.lookup:
            for blk in self.blocks:
                x = self._run(blk, x)
            return self.norm(x)
        # never more compressed tokens than lookup tokens (small proxy images): M <= N
        grid = (min(self.compressed_grid, hw[0]), min(self.compressed_grid, hw[1]))
        self._compressed_tokens = grid[0] * grid[1]
        c = compress_tokens(x, hw, grid)
        for blk in self.blocks:
            x, c = self._run(blk, x, c)
        assert self.norm_c is not None
        return torch.cat([self.norm(x), self.norm_c(c)], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.lookup:
            m = getattr(self, "_compressed_tokens", self.compressed_grid**2)
            x = torch.cat([x[:, :-m].mean(dim=1), x[:, -m:].mean(dim=1)], dim=-1)
        elif self.global_pool == "token":
            x = x[:, 0]
        else:
            x = x[:, self.num_prefix_tokens :].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
