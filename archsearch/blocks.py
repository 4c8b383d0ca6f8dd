"""The block registry: one entry per token-mixer family.

An entry says everything archsearch knows about a block: its name in configs and spaces, the
stage fields it reads (the others do not change the architecture, so they are left out of its
``archid``), how to build it, its closed-form params/MACs, its token in the compact design
notation, the macro types it fits, the feature outputs it supports, and its paper. Adding a block
is one layer module, its entry here and its tests.

Compact design notation (progress lines, tables, the report): one token per stage, separated by
spaces, ``MIXER x DEPTH @ DIM`` followed by the MLP, written without spaces::

    csax1@64m8 rasa2x2@128m8 rasa3x4@256m4 cb:mlp_end/deeper_half

- the mixer token: ``attn``, ``sra``, ``rasa`` + recursion depth (``rasa2``), ``csa``, ``conv``,
  ``acmix``, ``lookup`` + compressed grid side (``lookup5`` = 5x5 compressed tokens), and with
  multi-resolution training ``of`` + its grid sides (``lookup5of3-5-7``: trained on 3x3, 5x5 and
  7x7 grids drawn per batch, evaluated at 5x5);
- ``m`` + MLP ratio (``m4``: hidden = 4 x width); ``cm`` for LVT's convolutional MLP;
- columnar designs lead with the tokenizer and give the heads: ``t2t_performer+attnx7@256h4m2``;
- a final ``cb:POSITION/LAYERS`` or ``cbs:...`` names Context Broadcasting where it is on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .cost import mixer_costs as mc
from .cost.estimate import Estimate
from .layers import ACMix, Attention, ConvMixer, ConvSelfAttention, SpatialReductionAttention

__all__ = ["MixerBlock", "MIXERS", "notation", "canonical"]

#: Stage fields every block reads.
COMMON_FIELDS = ("depth", "dim", "mixer", "mlp", "mlp_ratio")


@dataclass(frozen=True)
class MixerBlock:
    """One token-mixer family.

    Attributes:
        name: the ``mixer`` value in configs and spaces.
        fields: stage fields it reads besides :data:`COMMON_FIELDS`.
        macros: macro types it is valid in.
        token: its notation token for a stage.
        build: the mixer module for a stage (None: the block is a whole block, built by the
            columnar model, as LookupViT's).
        cost: closed-form params/MACs of the mixer at an ``h x w`` grid (None: counted with its
            whole block).
        features: feature outputs of models using it (timm ``features_only`` formats).
        paper: where it comes from.
    """

    name: str
    fields: tuple[str, ...]
    macros: tuple[str, ...]
    token: Callable[[Any], str]
    build: Callable[[Any], nn.Module] | None
    cost: Callable[[int, int, Any, int], Estimate] | None
    features: tuple[str, ...]
    paper: str


def _sra(s: Any, atrous: bool) -> nn.Module:
    return SpatialReductionAttention(
        s.dim, s.heads, sr_ratio=s.sr_ratio, atrous=atrous, recursion=s.recursion,
        qkv_bias=s.qkv_bias,
    )  # fmt: skip


def _lookup_token(s: Any) -> str:
    multires = "of" + "-".join(map(str, s.lookup_multires)) if s.lookup_multires else ""
    return f"lookup{s.lookup_grid}{multires}"


_ATTN = ("heads", "qkv_bias")
MIXERS: dict[str, MixerBlock] = {
    b.name: b
    for b in (
        MixerBlock(
            "attn",
            _ATTN,
            ("hierarchical", "columnar"),
            lambda s: "attn",
            lambda s: Attention(s.dim, s.heads, qkv_bias=s.qkv_bias),
            mc.attention_cost,
            ("NCHW stages", "NLC blocks"),
            "ViT (multi-head self-attention)",
        ),
        MixerBlock(
            "sra",
            (*_ATTN, "sr_ratio"),
            ("hierarchical",),
            lambda s: "sra",
            lambda s: _sra(s, False),
            mc.sra_cost,
            ("NCHW stages",),
            "PVTv2 spatial-reduction attention",
        ),
        MixerBlock(
            "rasa",
            (*_ATTN, "sr_ratio", "recursion"),
            ("hierarchical",),
            lambda s: f"rasa{s.recursion}",
            lambda s: _sra(s, True),
            mc.rasa_cost,
            ("NCHW stages",),
            "LVT recursive atrous self-attention",
        ),
        MixerBlock(
            "csa",
            ("heads", "kernel_size"),
            ("hierarchical",),
            lambda s: "csa",
            lambda s: ConvSelfAttention(s.dim, s.heads, kernel_size=s.kernel_size),
            mc.csa_cost,
            ("NCHW stages",),
            "LVT convolutional self-attention",
        ),
        MixerBlock(
            "conv",
            ("kernel_size",),
            ("hierarchical",),
            lambda s: "conv",
            lambda s: ConvMixer(s.dim, kernel_size=s.kernel_size),
            mc.conv_cost,
            ("NCHW stages",),
            "depthwise-separable convolution (baseline mixer)",
        ),
        MixerBlock(
            "acmix",
            (*_ATTN, "sr_ratio"),
            ("hierarchical",),
            lambda s: "acmix",
            lambda s: ACMix(s.dim, s.heads, sr_ratio=s.sr_ratio, qkv_bias=s.qkv_bias),
            mc.acmix_cost,
            ("NCHW stages",),
            "ACmix (shared projections, conv + attention)",
        ),
        MixerBlock(
            "lookup",
            (*_ATTN, "lookup_grid", "lookup_multires"),
            ("columnar",),
            _lookup_token,
            None,
            None,
            ("NLC blocks",),
            "LookupViT (compressed tokens, cross-attention)",
        ),
    )  # fmt: skip
}


def _stage_token(s: Any, columnar: bool) -> str:
    mlp = ("cm" if s.mlp == "conv_mlp" else "m") + f"{s.mlp_ratio:g}"
    heads = f"h{s.heads}" if columnar else ""
    return f"{MIXERS[s.mixer].token(s)}x{s.depth}@{s.dim}{heads}{mlp}"


def notation(config: Any) -> str:
    """The compact design notation of an :class:`~archsearch.config.ArchConfig`."""
    if config.macro == "hierarchical":
        parts = [_stage_token(s, False) for s in config.stages]
    else:
        parts = [f"{config.tokenizer.kind}+{_stage_token(config.stages[0], True)}"]
    if config.cb.kind != "none":
        parts.append(f"{config.cb.kind}:{config.cb.position}/{config.cb.layers}")
    return " ".join(parts)


def _defaults(obj: Any) -> dict[str, Any]:
    return {
        f.name: f.default for f in dataclasses.fields(obj) if f.default is not dataclasses.MISSING
    }


def canonical(config: Any) -> dict[str, Any]:
    """The architecture alone, as a plain dict: training-only fields (``drop_path_rate``) left
    out and every field a block does not read set to its default, so two configs describing the
    same network have the same canonical form (and ``archid``)."""
    d = config.to_dict()
    d.pop("drop_path_rate", None)
    for i, s in enumerate(config.stages):
        used = set(COMMON_FIELDS) | set(MIXERS[s.mixer].fields)
        defaults = {**_defaults(s), "heads": 1}
        d["stages"][i] = {k: (v if k in used else defaults[k]) for k, v in d["stages"][i].items()}
    tok = config.tokenizer
    if not tok.kind.startswith("t2t"):
        d["tokenizer"]["t2t_dim"] = _defaults(tok)["t2t_dim"]
    if config.cb.kind == "none":
        d["cb"] = _defaults(config.cb)
    return d
