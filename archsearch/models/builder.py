"""One builder: :func:`build_model` turns any valid :class:`ArchConfig` into a model."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from ..config import ArchConfig
from ..errors import ConfigError
from ._common import token_grid
from .columnar import ColumnarNet
from .hierarchical import HierarchicalNet

__all__ = ["build_model", "check_input_size"]


def check_input_size(config: ArchConfig, img_size: int) -> None:
    """Refuse input sizes the architecture cannot process, naming the stage that breaks."""
    if isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1:
        raise ConfigError(f"img_size: expected a positive integer, got {img_size!r}")
    side = token_grid(config.tokenizer, img_size)
    if side < 1:
        raise ConfigError(
            f"img_size: expected at least {config.tokenizer.patch_size} for tokenizer "
            f"{config.tokenizer.kind!r}, got {img_size}"
        )
    if config.macro != "hierarchical":
        return
    for i, s in enumerate(config.stages):
        if i > 0:
            side = (side - 1) // 2 + 1
        if s.mixer in ("sra", "rasa") and s.sr_ratio > side:
            raise ConfigError(
                f"img_size: {img_size} leaves a {side}x{side} map in stage {i + 1}, smaller than "
                f"its sr_ratio {s.sr_ratio}; expected a larger image or a smaller sr_ratio"
            )


def build_model(
    config: ArchConfig | dict[str, Any],
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    img_size: int = 224,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build the network described by ``config``.

    Args:
        config: an :class:`ArchConfig` or its dict form.
        num_classes: classifier outputs (0 for a feature extractor).
        in_chans: input channels.
        img_size: the input side the model is built for (columnar models size their position
            embedding for it and resize it for other inputs; hierarchical models need none).
        device: build directly on this device; ``"meta"`` allocates no weights (for counting).
        **kwargs: ``drop_rate``, ``drop_path_rate``, ``global_pool``.
    """
    if not isinstance(config, ArchConfig):
        config = ArchConfig.from_dict(config)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ConfigError(f"num_classes: expected an integer >= 0, got {num_classes!r}")
    if isinstance(in_chans, bool) or not isinstance(in_chans, int) or in_chans < 1:
        raise ConfigError(f"in_chans: expected an integer >= 1, got {in_chans!r}")
    check_input_size(config, img_size)
    ctx = torch.device(device) if device is not None else nullcontext()
    with ctx:
        if config.macro == "hierarchical":
            return HierarchicalNet(config, num_classes=num_classes, in_chans=in_chans, **kwargs)
        return ColumnarNet(
            config, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs
        )
