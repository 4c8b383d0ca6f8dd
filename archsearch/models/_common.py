"""Pieces shared by both macro types: the mixer factory, weight init, grid arithmetic, heads."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..blocks import MIXERS
from ..config import StageConfig, TokenizerConfig
from ..layers import ConvStem, OverlapPatchEmbed, PatchEmbed, T2TTokenizer
from ..layers.t2t import T2T_SPLITS

__all__ = [
    "make_mixer",
    "make_tokenizer",
    "token_grid",
    "token_stride",
    "listed_indices",
    "init_weights",
    "pool_map",
    "pool_tokens",
    "DualHead",
    "TimmHeadMixin",
]

#: Parameters never decayed: ACmix's mixing scalars, CBS scales, position and class tokens.
NO_DECAY_SUFFIXES = (".alpha", ".beta", ".lam")
NO_DECAY_NAMES = ("pos_embed", "cls_token")


def make_mixer(stage: StageConfig) -> nn.Module:
    """Token mixer for one block of ``stage`` (``lookup`` is a whole block, not a mixer)."""
    build = MIXERS[stage.mixer].build
    if build is None:
        raise ValueError(f"mixer: expected a token mixer, got the whole block {stage.mixer!r}")
    return build(stage)


def make_tokenizer(tok: TokenizerConfig, in_chans: int, dim: int) -> nn.Module:
    if tok.kind == "patch":
        return PatchEmbed(in_chans, dim, patch_size=tok.patch_size)
    if tok.kind == "overlap_patch":
        return OverlapPatchEmbed(in_chans, dim, stride=tok.patch_size)
    if tok.kind == "conv_stem":
        return ConvStem(in_chans, dim, stride=tok.patch_size)
    kind = "performer" if tok.kind == "t2t_performer" else "transformer"
    return T2TTokenizer(in_chans, dim, kind=kind, t2t_dim=tok.t2t_dim)


def _conv_out(n: int, k: int, s: int, p: int) -> int:
    return (n + 2 * p - k) // s + 1


def token_grid(tok: TokenizerConfig, img_size: int) -> int:
    """Side of the token grid a tokenizer produces from a square ``img_size`` image."""
    n = img_size
    if tok.kind == "patch":
        return n // tok.patch_size
    if tok.kind == "overlap_patch":
        k = 2 * tok.patch_size - 1
        return _conv_out(n, k, tok.patch_size, k // 2)
    if tok.kind == "conv_stem":
        for _ in range(max(1, tok.patch_size.bit_length() - 1)):
            n = _conv_out(n, 3, 2, 1)
        return n
    for k, s, p in T2T_SPLITS:
        n = _conv_out(n, k, s, p)
    return n


def token_stride(tok: TokenizerConfig) -> int:
    """Pixels per token side of a tokenizer (timm's feature ``reduction``)."""
    if tok.kind.startswith("t2t"):
        stride = 1
        for _, s, _ in T2T_SPLITS:
            stride *= s
        return stride
    if tok.kind == "conv_stem":
        return 2 ** max(1, tok.patch_size.bit_length() - 1)
    return tok.patch_size


def listed_indices(indices: int | list[int] | tuple[int, ...] | None) -> int | list[int] | None:
    """timm's feature indices as ``feature_take_indices`` types them (tuples as lists)."""
    return list(indices) if isinstance(indices, tuple) else indices


def pool_map(x: torch.Tensor, pool: str) -> torch.Tensor:
    """timm's global pooling of an NCHW map: ``avg``, ``max``, ``avgmax`` or ``""`` (none)."""
    if pool == "avg":
        return x.mean(dim=(2, 3))
    if pool == "max":
        return x.amax(dim=(2, 3))
    if pool == "avgmax":
        return 0.5 * (x.mean(dim=(2, 3)) + x.amax(dim=(2, 3)))
    return x


def pool_tokens(x: torch.Tensor, pool: str, prefix: int = 0) -> torch.Tensor:
    """timm's global pooling of tokens ``(B, N, C)``: ``token`` (the first, the class token),
    ``avg``, ``max``, ``avgmax`` over the non-prefix tokens, or ``""`` (none)."""
    if pool == "token":
        return x[:, 0]
    if pool == "":
        return x
    x = x[:, prefix:] if prefix else x
    if pool == "avg":
        return x.mean(dim=1)
    if pool == "max":
        return x.amax(dim=1)
    return 0.5 * (x.mean(dim=1) + x.amax(dim=1))


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """timm-style init: truncated normal (std 0.02) for Linear weights, zero biases."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class DualHead(nn.Module):
    """LookupViT's two classifiers (lookup and compressed features), averaged at inference.

    Input is the concatenation ``[pooled lookup, pooled compressed]`` (``2 * dim``). With
    ``num_classes = 0`` both heads are identities and the pooled features pass through.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        self.dim = dim
        self.num_classes = num_classes
        self.lookup = nn.Linear(dim, num_classes) if num_classes else nn.Identity()
        self.compressed = nn.Linear(dim, num_classes) if num_classes else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.num_classes:
            return x
        return 0.5 * (self.lookup(x[:, : self.dim]) + self.compressed(x[:, self.dim :]))


class TimmHeadMixin:
    """timm's classifier interface for models that build their head with ``_make_head``.

    ``num_features`` is the channel width of :meth:`forward_features`' output and
    ``head_hidden_size`` the width the classifier reads (the pooled ``pre_logits``); they differ
    only for LookupViT, whose two heads read the lookup and the compressed tokens pooled apart.
    """

    num_classes: int
    global_pool: str
    head: nn.Module
    _make_head: Callable[[int], nn.Module]  # defined by every model class
    _check_pool: Callable[[str, int], str]  # defined by every model class

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        names = [n for n, _ in self.named_parameters()]  # type: ignore[attr-defined]
        return {n for n in names if n in NO_DECAY_NAMES or n.endswith(NO_DECAY_SUFFIXES)}

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier (``num_classes = 0``: none) and optionally the pooling."""
        pool = self._check_pool(
            self.global_pool if global_pool is None else global_pool, num_classes
        )
        self.num_classes = num_classes
        self.global_pool = pool
        ref = next(self.parameters(), None)  # type: ignore[attr-defined]
        head = self._make_head(num_classes)
        self.head = head.to(ref.device) if ref is not None else head
