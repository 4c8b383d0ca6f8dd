"""Reference designs rebuilt from the papers, registered in timm's model registry.

After ``import archsearch``, ``timm.create_model("lvt")`` (or any name below) builds them, and
``timm.create_model("archsearch_net", arch={...})`` builds any architecture config.

================  ==========================================================================
name              design
================  ==========================================================================
lvt               LVT backbone (CSA stage 1, RASA r=2 stages 2-4) with a pooled linear head
t2t_vit_7/10/12   T2T-ViT lite: Performer T2T, depth 7/10/12 x 256, 4 heads, MLP ratio 2
t2t_vit_14        T2T-ViT-14: Performer T2T, 14 x 384, 6 heads, MLP ratio 3
t2t_vit_t_14      T2T-ViT_t-14: transformer T2T layers, otherwise T2T-ViT-14
vit_tiny_cb       DeiT-Tiny (12 x 192, 3 heads) with Context Broadcasting after every MLP
lookupvit_tiny    LookupViT on a DeiT-Tiny-width column: 12 x 192, 3 heads, 14x14 lookup
                  tokens and a 5x5 compressed grid (compression ratio ~7.8)
pvt_tiny_acmix    PVT-Tiny layout (64/128/320/512, depths 2, heads 1/2/5/8, MLP 8/8/4/4,
                  spatial reduction 8/4/2/1) with ACmix as every stage's mixer
================  ==========================================================================

``PUBLISHED`` holds each paper's figures and whether they are whole-model or backbone-only
(LVT's 3.4M excludes the classifier; T2T-ViT's include it). ``lookupvit_tiny`` has no published
counterpart; ``pvt_tiny_acmix`` is compared with ACmix's PVT-T + ACmix (13M / 2.0G), whose PVT
v1 base uses non-overlapping patch embeddings and learned position embeddings, so a deviation of
a few percent is expected there.

Every registered model's pretrained config names its own ``first_conv``, ``classifier`` (two for
LookupViT) and ``pool_size`` (:mod:`archsearch.models._timm`), and weights load through a filter
that resamples a columnar position embedding to another ``img_size`` (see docs/timm.md for the
whole timm interface and what the conformance test checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from timm.models import (
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)
from torch import nn

from ..config import ArchConfig, CBConfig, StageConfig, TokenizerConfig
from ..errors import ConfigError
from ._timm import cfg_fields, checkpoint_filter_fn
from .builder import build_model, check_input_size
from .columnar import ColumnarNet
from .hierarchical import HierarchicalNet

__all__ = ["PUBLISHED", "Published", "reference_names", "reference_config", "create_reference"]


@dataclass(frozen=True)
class Published:
    params: float | None  # millions
    macs: float | None  # GMACs at 224x224
    scope: str  # "model" (with 1000-class head) or "backbone" (without classifier)
    source: str


def _lvt() -> ArchConfig:
    rasa = dict(mixer="rasa", mlp="conv_mlp", recursion=2)
    return ArchConfig(
        macro="hierarchical",
        tokenizer=TokenizerConfig(kind="overlap_patch", patch_size=4),
        stages=(
            StageConfig(depth=2, dim=64, heads=2, mixer="csa", mlp="mlp", mlp_ratio=4.0),
            StageConfig(depth=2, dim=64, heads=2, mlp_ratio=8.0, sr_ratio=4, **rasa),  # type: ignore[arg-type]
            StageConfig(depth=2, dim=160, heads=5, mlp_ratio=4.0, sr_ratio=2, **rasa),  # type: ignore[arg-type]
            StageConfig(depth=2, dim=256, heads=8, mlp_ratio=4.0, sr_ratio=1, **rasa),  # type: ignore[arg-type]
        ),
        drop_path_rate=0.1,
    )


def _t2t(depth: int, dim: int, heads: int, ratio: float, kind: str = "t2t_performer") -> ArchConfig:
    return ArchConfig(
        macro="columnar",
        tokenizer=TokenizerConfig(kind=kind, patch_size=16, t2t_dim=64),
        stages=(StageConfig(depth=depth, dim=dim, heads=heads, mlp_ratio=ratio),),
        pos_embed="sincos",
        class_token=True,
        drop_path_rate=0.1,
    )


def _vit_tiny_cb() -> ArchConfig:
    return ArchConfig(
        macro="columnar",
        tokenizer=TokenizerConfig(kind="patch", patch_size=16),
        stages=(StageConfig(depth=12, dim=192, heads=3, mlp_ratio=4.0, qkv_bias=True),),
        cb=CBConfig(kind="cb", position="mlp_end", layers="all"),
        pos_embed="learned",
        class_token=True,
        drop_path_rate=0.1,
    )


def _lookupvit_tiny() -> ArchConfig:
    return ArchConfig(
        macro="columnar",
        tokenizer=TokenizerConfig(kind="patch", patch_size=16),
        stages=(
            StageConfig(
                depth=12,
                dim=192,
                heads=3,
                mixer="lookup",
                mlp_ratio=4.0,
                qkv_bias=True,
                lookup_grid=5,
            ),
        ),
        pos_embed="learned",
        drop_path_rate=0.1,
    )


def _pvt_tiny_acmix() -> ArchConfig:
    dims, heads, ratios, srs = (64, 128, 320, 512), (1, 2, 5, 8), (8, 8, 4, 4), (8, 4, 2, 1)
    return ArchConfig(
        macro="hierarchical",
        tokenizer=TokenizerConfig(kind="overlap_patch", patch_size=4),
        stages=tuple(
            StageConfig(
                depth=2,
                dim=d,
                heads=h,
                mixer="acmix",
                mlp_ratio=float(r),
                sr_ratio=s,
                qkv_bias=True,
            )
            for d, h, r, s in zip(dims, heads, ratios, srs)
        ),
        drop_path_rate=0.1,
    )


_CONFIGS = {
    "lvt": _lvt,
    "t2t_vit_7": lambda: _t2t(7, 256, 4, 2.0),
    "t2t_vit_10": lambda: _t2t(10, 256, 4, 2.0),
    "t2t_vit_12": lambda: _t2t(12, 256, 4, 2.0),
    "t2t_vit_14": lambda: _t2t(14, 384, 6, 3.0),
    "t2t_vit_t_14": lambda: _t2t(14, 384, 6, 3.0, "t2t_transformer"),
    "vit_tiny_cb": _vit_tiny_cb,
    "lookupvit_tiny": _lookupvit_tiny,
    "pvt_tiny_acmix": _pvt_tiny_acmix,
}

PUBLISHED: dict[str, Published] = {
    "lvt": Published(3.4, 0.9, "backbone", "LVT, arXiv 2112.10809"),
    "t2t_vit_7": Published(4.3, 1.1, "model", "T2T-ViT, arXiv 2101.11986"),
    "t2t_vit_10": Published(5.9, 1.5, "model", "T2T-ViT, arXiv 2101.11986"),
    "t2t_vit_12": Published(6.9, 1.8, "model", "T2T-ViT, arXiv 2101.11986"),
    "t2t_vit_14": Published(21.5, 4.8, "model", "T2T-ViT, arXiv 2101.11986"),
    "t2t_vit_t_14": Published(21.5, 6.1, "model", "T2T-ViT, arXiv 2101.11986"),
    "vit_tiny_cb": Published(5.72, 1.26, "model", "DeiT-Tiny (timm); CB adds no parameters"),
    "lookupvit_tiny": Published(None, None, "model", "no published counterpart"),
    "pvt_tiny_acmix": Published(13.0, 2.0, "model", "ACmix, arXiv 2111.14556 (PVT-T + ACmix)"),
}


def reference_names() -> list[str]:
    """Names of the registered reference designs."""
    return list(_CONFIGS)


def reference_config(name: str) -> ArchConfig:
    """The :class:`ArchConfig` of a reference design."""
    try:
        return _CONFIGS[name]()
    except KeyError:
        raise ConfigError(
            f"reference design: expected one of {', '.join(_CONFIGS)}, got {name!r}"
        ) from None


def create_reference(name: str, **kwargs: Any) -> nn.Module:
    """Build a reference design without going through timm (same model as timm.create_model)."""
    return build_model(reference_config(name), **kwargs)


# ---------------------------------------------------------------------------- timm registry
def _cfg(config: ArchConfig | None = None, **kwargs: Any) -> dict[str, Any]:
    fields = (
        cfg_fields(config, 224)
        if config is not None
        else {"first_conv": "patch_embed.proj", "classifier": "head", "pool_size": None}
    )
    return {
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "license": "apache-2.0",
        **fields,
        **kwargs,
    }


# archsearch_net's entries depend on its ``arch``: set per model by ``_create``.
default_cfgs = generate_default_cfgs(
    {
        **{f"{n}.untrained": _cfg(reference_config(n)) for n in _CONFIGS},
        "archsearch_net.untrained": _cfg(),
    }
)


def _side(img_size: Any) -> Any:
    """timm passes sizes as ints or (H, W); archsearch models take square ints."""
    if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and img_size[0] == img_size[1]:
        return img_size[0]
    return img_size


def _create(variant: str, config: ArchConfig, pretrained: bool, **kwargs: Any) -> nn.Module:
    cls = HierarchicalNet if config.macro == "hierarchical" else ColumnarNet
    img_size = _side(kwargs.pop("img_size", 224))
    check_input_size(config, img_size)
    # the architecture's own first_conv / classifier / pool_size, over the registry's (or an
    # exported folder's) pretrained config, under any overlay the caller gives
    given = kwargs.pop("pretrained_cfg", None)
    overlay = kwargs.pop("pretrained_cfg_overlay", None) or {}
    base = resolve_pretrained_cfg(variant, pretrained_cfg=given, pretrained_cfg_overlay=overlay)
    side = _side(tuple((base.input_size or (3, img_size, img_size))[-2:]))
    fields = cfg_fields(config, side if isinstance(side, int) else img_size)
    if config.macro == "hierarchical":
        out: Any = tuple(range(len(config.stages)))
        feature_cfg = {"out_indices": out, "flatten_sequential": True}
    else:
        kwargs["img_size"] = img_size
        feature_cfg = {"out_indices": min(3, config.depth), "feature_cls": "getter"}
    return build_model_with_cfg(
        cls,
        variant,
        pretrained,
        pretrained_cfg=given,
        pretrained_cfg_overlay={**fields, **overlay},
        config=config,
        feature_cfg=feature_cfg,
        pretrained_filter_fn=checkpoint_filter_fn,
        **kwargs,
    )


def _entry(name: str):
    def fn(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        return _create(name, reference_config(name), pretrained, **kwargs)

    fn.__name__ = name
    fn.__qualname__ = name
    fn.__module__ = __name__
    fn.__doc__ = f"archsearch reference design {name!r} (see archsearch.models.reference)."
    return fn


for _name in _CONFIGS:
    globals()[_name] = register_model(_entry(_name))


@register_model
def archsearch_net(pretrained: bool = False, arch: Any = None, **kwargs: Any) -> nn.Module:
    """Any archsearch architecture: ``timm.create_model("archsearch_net", arch=config_dict)``."""
    if arch is None:
        raise ConfigError("archsearch_net: expected arch=<architecture config dict>, got none")
    config = arch if isinstance(arch, ArchConfig) else ArchConfig.from_dict(arch)
    return _create("archsearch_net", config, pretrained, **kwargs)
