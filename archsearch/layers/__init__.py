"""Reusable blocks, one concept per file."""

from .acmix import ACMix
from .attention import Attention
from .block import Block
from .cb import ContextBroadcast
from .conv_mixer import ConvMixer
from .csa import ConvSelfAttention
from .embed import ConvStem, OverlapPatchEmbed, PatchEmbed
from .lookup import LookupBlock
from .mlp import ConvMlp, Mlp
from .sra import SpatialReductionAttention
from .t2t import T2TTokenizer, TokenPerformer, TokenTransformer

__all__ = [
    "ACMix",
    "Attention",
    "Block",
    "ContextBroadcast",
    "ConvMixer",
    "ConvSelfAttention",
    "ConvStem",
    "OverlapPatchEmbed",
    "PatchEmbed",
    "LookupBlock",
    "ConvMlp",
    "Mlp",
    "SpatialReductionAttention",
    "T2TTokenizer",
    "TokenPerformer",
    "TokenTransformer",
]
