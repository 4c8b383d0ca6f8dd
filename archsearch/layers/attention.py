"""Global multi-head self-attention (ViT) on ``scaled_dot_product_attention``.

Also home of the switch for the layers' fast paths (like timm's ``set_fused_attn``): mixers
whose direct formulation runs many small or badly supported CPU kernels (CSA, RASA, the
conv-MLP) compute the same function by fewer, larger kernels while training, and in eval mode
inside :func:`fast_paths_in_eval` (the proxy's validation). The direct formulation stays the
reference: it runs in eval mode otherwise and whenever the model is traced (``torch.jit.trace``
for fvcore's counts, ``torch.fx`` symbolic tracing for timm's feature extraction), so counting and
latency always see the documented operators and FX graphs hold no shape-dependent branch.
``ARCHSEARCH_FAST_PATHS=0`` in the environment, or :func:`set_fast_paths`, turns the fast paths
off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Attention",
    "split_heads",
    "merge_heads",
    "set_fast_paths",
    "fast_paths_in_eval",
    "use_fast_path",
    "is_fx_tracing",
]

_FAST_PATHS = os.environ.get("ARCHSEARCH_FAST_PATHS", "1").strip().lower() not in ("0", "false")
_FAST_IN_EVAL: ContextVar[bool] = ContextVar("archsearch_fast_paths_in_eval", default=False)


def set_fast_paths(enable: bool = True) -> bool:
    """Turn the layers' fast paths on (the default) or off (reference ops only).

    Returns:
        The previous setting, so that a caller can restore it.
    """
    global _FAST_PATHS
    previous, _FAST_PATHS = _FAST_PATHS, bool(enable)
    return previous


@contextlib.contextmanager
def fast_paths_in_eval() -> Iterator[None]:
    """Let modules in eval mode take their fast paths too, in this thread (or task) only.

    For evaluation whose speed matters but is no measured cost (the proxy's validation);
    counting and latency measurements run outside it.
    """
    token = _FAST_IN_EVAL.set(True)
    try:
        yield
    finally:
        _FAST_IN_EVAL.reset(token)


def is_fx_tracing() -> bool:
    """Whether a ``torch.fx`` symbolic trace is being recorded (not torch.export / compile)."""
    fx = torch.fx._symbolic_trace
    check = getattr(fx, "is_fx_symbolic_tracing", None)
    return bool(check()) if check is not None else bool(fx._get_is_fx_tracing())


def use_fast_path(module: nn.Module) -> bool:
    """Whether ``module`` should take its fast path now: fast paths are on, the module is
    training (or in eval mode inside :func:`fast_paths_in_eval`) and no ``torch.jit`` trace
    (a count) or ``torch.fx`` symbolic trace is being recorded."""
    if not _FAST_PATHS or torch.jit.is_tracing() or is_fx_tracing():
        return False
    return module.training or _FAST_IN_EVAL.get()


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, C) -> (B, heads, N, C // heads)``."""
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(B, heads, N, d) -> (B, N, heads * d)``."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class Attention(nn.Module):
    """Standard multi-head self-attention: fused qkv Linear, SDPA, output projection."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = False) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, hw: tuple[int, int] | None = None) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        q, k, v = (split_heads(t, self.heads) for t in (q, k, v))
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))
