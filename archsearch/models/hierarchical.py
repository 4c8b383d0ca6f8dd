"""Hierarchical (LVT / PVTv2-style) networks built from an :class:`~archsearch.config.ArchConfig`.

Stage 1 is opened by the tokenizer (LVT: conv 7x7 stride 4 + LayerNorm), later stages by a 3x3
stride-2 overlapping patch embedding. No position embedding. Each stage ends with a LayerNorm and
returns an NCHW map; the head average-pools the last map and applies a Linear classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ArchConfig
from ..layers import Block, OverlapPatchEmbed
from ._common import TimmHeadMixin, init_weights, make_mixer, make_tokenizer

__all__ = ["HierarchicalNet"]


class Stage(nn.Module):
    def __init__(self, embed: nn.Module, blocks: Sequence[nn.Module], dim: int) -> None:
        super().__init__()
        self.embed = embed
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(dim)
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, hw = self.embed(x)
        for blk in self.blocks:
            if self.grad_checkpointing and x.requires_grad:
                x = checkpoint(blk, x, hw, use_reentrant=False)
            else:
                x = blk(x, hw)
        x = self.norm(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1, *hw)


class HierarchicalNet(TimmHeadMixin, nn.Module):
    """Pyramid vision transformer with per-stage mixers; timm model interface."""

    def __init__(
        self,
        config: ArchConfig,
        *,
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_rate: float = 0.0,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
        **_kwargs: Any,
    ) -> None:
        super().__init__()
        self.config = config
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.global_pool = global_pool
        dpr_max = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        total = config.depth
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        prev, reduction, index = in_chans, config.tokenizer.patch_size, 0
        for i, s in enumerate(config.stages):
            if i == 0:
                embed = make_tokenizer(config.tokenizer, in_chans, s.dim)
            else:
                embed = OverlapPatchEmbed(prev, s.dim, stride=2)
                reduction *= 2
            blocks = []
            for _ in range(s.depth):
                cb = config.cb.kind if config.cb_enabled(index) else "none"
                blocks.append(
                    Block(
                        s.dim,
                        make_mixer(s),
                        mlp=s.mlp,
                        mlp_ratio=s.mlp_ratio,
                        cb_kind=cb,
                        cb_position=config.cb.position,
                        drop_path=dpr_max * index / max(total - 1, 1),
                    )
                )
                index += 1
            stages.append(Stage(embed, blocks, s.dim))
            self.feature_info.append(dict(num_chs=s.dim, reduction=reduction, module=f"stages.{i}"))
            prev = s.dim
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = prev
        self.head_drop = nn.Dropout(drop_rate)
        self.head = self._make_head(num_classes)
        self.apply(init_weights)

    # ---------------------------------------------------------------- timm interface
    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            assert isinstance(stage, Stage)
            stage.grad_checkpointing = enable

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_intermediates(self, x: torch.Tensor) -> list[torch.Tensor]:
        """NCHW feature map of every stage (for dense-prediction users)."""
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(2, 3))
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
