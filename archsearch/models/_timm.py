"""What timm needs to know about an archsearch model beyond its class: the pretrained-config
fields that depend on the architecture, and the checkpoint filter that adapts weights on load.

* :func:`cfg_fields`: ``first_conv`` (the layer reading the image, for timm's ``in_chans``
  adaptation), ``classifier`` (what timm drops when ``num_classes`` changes; LookupViT has two)
  and ``pool_size`` (the final feature grid at the config's input size).
* :func:`checkpoint_filter_fn` (timm's ``pretrained_filter_fn``): resamples a columnar model's
  position embedding to the grid of the ``img_size`` the model is built for, with timm's
  :func:`~timm.layers.resample_abs_pos_embed` (bicubic, no anti-aliasing: the loaded model then
  computes exactly what the saved one computes at that size), and adapts the first T2T layer
  (unfolded 7x7 patches, so a Linear and a LayerNorm over ``in_chans * 49`` features) to another
  ``in_chans`` the way timm adapts a first convolution.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models import adapt_input_conv
from torch import nn

from ..config import ArchConfig
from ..layers.t2t import T2T_SPLITS, T2TTokenizer
from ._common import token_grid
from .columnar import ColumnarNet

__all__ = ["cfg_fields", "checkpoint_filter_fn", "first_conv", "classifier_names", "pool_size"]


def first_conv(config: ArchConfig) -> str:
    """Name of the layer that reads the image (a Conv2d, or the first T2T layer's Linear)."""
    prefix = "stages.0.embed" if config.macro == "hierarchical" else "patch_embed"
    kind = config.tokenizer.kind
    if kind == "conv_stem":
        return f"{prefix}.convs.0"
    if kind == "t2t_performer":
        return f"{prefix}.t2t1.kqv"
    if kind == "t2t_transformer":
        return f"{prefix}.t2t1.qkv"
    return f"{prefix}.proj"


def classifier_names(config: ArchConfig) -> str | tuple[str, ...]:
    """The classifier Linear(s): LookupViT's two heads, else ``head``."""
    if config.macro == "columnar" and config.stages[0].mixer == "lookup":
        return ("head.lookup", "head.compressed")
    return "head"


def pool_size(config: ArchConfig, img_size: int) -> tuple[int, int]:
    """Side of the final feature grid (``forward_features``) for a square ``img_size`` input."""
    side = token_grid(config.tokenizer, img_size)
    if config.macro == "hierarchical":
        for _ in config.stages[1:]:
            side = (side - 1) // 2 + 1  # 3x3 stride-2 overlapping patch embedding
    return side, side


def cfg_fields(config: ArchConfig, img_size: int) -> dict[str, Any]:
    """The pretrained-config fields that depend on the architecture."""
    return {
        "first_conv": first_conv(config),
        "classifier": classifier_names(config),
        "pool_size": pool_size(config, img_size),
    }


def _adapt_t2t(state: dict[str, torch.Tensor], model: nn.Module) -> None:
    tok = getattr(model, "patch_embed", None)
    if not isinstance(tok, T2TTokenizer):
        return
    k = T2T_SPLITS[0][0]
    cin = int(getattr(model, "in_chans", 3))
    for name, module in tok.t2t1.named_children():
        if not isinstance(module, (nn.Linear, nn.LayerNorm)):
            continue
        for pname in ("weight", "bias"):
            key = f"patch_embed.t2t1.{name}.{pname}"
            w, own = state.get(key), getattr(module, pname, None)
            if w is None or own is None or w.shape == own.shape:
                continue
            src = w.shape[-1] // (k * k)  # unfold is channel-major: C x (k x k) features
            if isinstance(module, nn.Linear) and pname == "weight":
                conv = adapt_input_conv(cin, w.reshape(w.shape[0], src, k, k), base_chans=src)
                state[key] = conv.reshape(w.shape[0], cin * k * k)
            elif isinstance(module, nn.LayerNorm):  # per-feature affine: average or repeat
                grid = w.reshape(src, k * k)
                if cin == 1:
                    grid = grid.mean(0, keepdim=True)
                else:
                    grid = grid.repeat(-(-cin // src), 1)[:cin]
                state[key] = grid.reshape(cin * k * k)


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, Any]:
    """Adapt a saved state dict to ``model`` (timm's ``pretrained_filter_fn``)."""
    state = dict(state_dict)
    pos = state.get("pos_embed")
    own = model.pos_embed if isinstance(model, ColumnarNet) else None
    if (
        isinstance(model, ColumnarNet)
        and pos is not None
        and own is not None
        and pos.shape != own.shape
    ):
        state["pos_embed"] = resample_abs_pos_embed(
            pos,
            new_size=[model.grid[0], model.grid[1]],
            num_prefix_tokens=model.num_prefix_tokens,
            interpolation="bicubic",
            antialias=False,
        )
    _adapt_t2t(state, model)
    return state
