"""Hierarchical (LVT / PVTv2-style) networks built from an :class:`~archsearch.config.ArchConfig`.

Stage 1 is opened by the tokenizer (LVT: conv 7x7 stride 4 + LayerNorm), later stages by a 3x3
stride-2 overlapping patch embedding. No position embedding. Each stage ends with a LayerNorm and
returns an NCHW map; the head pools the last map (``global_pool``: ``avg`` by default, ``max``,
``avgmax`` or ``""`` for none) and applies a Linear classifier.

timm interface: ``feature_info`` (one entry per stage), ``forward_intermediates`` and
``prune_intermediate_layers`` with timm's arguments, ``features_only=True`` (timm's hook-based
``FeatureListNet`` by default; ``feature_cls="getter"`` and ``"fx"`` work too), gradient
checkpointing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from timm.models._features import feature_take_indices
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..config import ArchConfig
from ..layers import Block, OverlapPatchEmbed
from ._common import (
    TimmHeadMixin,
    init_weights,
    listed_indices,
    make_mixer,
    make_tokenizer,
    pool_map,
    token_stride,
)

__all__ = ["HierarchicalNet", "POOLS"]

#: ``global_pool`` values of hierarchical models.
POOLS = ("", "avg", "max", "avgmax")


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
        return x.transpose(1, 2).reshape(x.shape[0], -1, hw[0], hw[1])


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
        self.global_pool = self._check_pool(global_pool, num_classes)
        dpr_max = config.drop_path_rate if drop_path_rate is None else drop_path_rate
        total = config.depth
        stages: list[nn.Module] = []
        self.feature_info: list[dict[str, Any]] = []
        prev, reduction, index = in_chans, token_stride(config.tokenizer), 0
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
    @staticmethod
    def _check_pool(pool: str, num_classes: int) -> str:
        if pool not in POOLS:
            raise ValueError(f"global_pool: expected one of {list(POOLS)}, got {pool!r}")
        return pool

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            assert isinstance(stage, Stage)
            stage.grad_checkpointing = enable

    def _make_head(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward returning the feature maps of the chosen stages (timm's contract).

        Args:
            x: input images ``(B, C, H, W)``.
            indices: the last ``n`` stages if an int, all if None, else these stage indices
                (negative counts from the end).
            norm: accepted for timm compatibility; every stage output is already normalised by
                its stage's LayerNorm.
            stop_early: stop after the last requested stage (the final features are then that
                stage's output).
            output_fmt: ``NCHW`` or ``NHWC``.
            intermediates_only: return only the intermediates.

        Returns:
            ``(final features, intermediates)``, or the intermediates alone.
        """
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt: expected 'NCHW' or 'NHWC', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), listed_indices(indices))
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        intermediates = []
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x if output_fmt == "NCHW" else x.permute(0, 2, 3, 1))
        if intermediates_only:
            return intermediates
        return x, intermediates

    def prune_intermediate_layers(
        self,
        indices: int | list[int] | tuple[int, ...] = 1,
        prune_norm: bool = False,
        prune_head: bool = True,
    ) -> list[int]:
        """Drop the stages after the last of ``indices`` (and the head); return the indices."""
        take, max_index = feature_take_indices(len(self.stages), listed_indices(indices))
        prune_end = max_index < len(self.stages) - 1
        self.stages = self.stages[: max_index + 1]
        if prune_end:  # the head was sized for the last stage
            self.num_features = self.head_hidden_size = self.feature_info[max_index]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(pool_map(x, self.global_pool))
        if pre_logits:
            return x
        if not self.global_pool:  # no pooling: per-position logits, NCHW
            return self.head(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
