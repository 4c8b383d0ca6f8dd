"""Closed-form params and MACs of each token mixer, one function per block family.

Each takes the token grid ``h x w``, the stage config and the number of extra (class) tokens;
:mod:`archsearch.blocks` binds them to their block.
"""

from __future__ import annotations

from typing import Any

from .estimate import Estimate, ceil_div, conv, conv_out, linear, norm

__all__ = ["attention_cost", "sra_cost", "rasa_cost", "csa_cost", "conv_cost", "acmix_cost"]


def _attention(n: int, d: int, heads: int, bias: bool) -> Estimate:
    e = linear(n, d, 3 * d, bias).merge(linear(n, d, d))
    return e.add(macs=2 * n * n * d)


def _sra(h: int, w: int, s: Any, atrous: bool) -> Estimate:
    d, n, sr = s.dim, h * w, s.sr_ratio
    e = linear(n, d, d, s.qkv_bias)
    kv_tokens = n
    if sr > 1:
        kv_tokens = (h // sr) * (w // sr)
        e.merge(conv(kv_tokens, d, d, sr)).merge(norm(kv_tokens, d))
    e.merge(linear(kv_tokens, d, 2 * d, s.qkv_bias)).merge(linear(n, d, d))
    e.add(macs=2 * n * kv_tokens * d)
    if atrous:
        e.add(params=9 * d, macs=3 * 9 * n * d)
    e.macs *= s.recursion
    return e


def _csa(h: int, w: int, s: Any) -> Estimate:
    d, k = s.dim, s.kernel_size
    kk = k * k
    windows = conv_out(h, k, 2, k // 2) * conv_out(w, k, 2, k // 2)
    e = linear(windows, d, s.heads * kk * kk)
    e.merge(Estimate(kk * d * d, windows * kk * d * d))  # per-slot projections, no bias
    e.add(macs=windows * kk * kk * d)  # (kk x kk attention) @ (kk x d) per head and window
    return e.merge(linear(h * w, d, d))


def _conv_mixer(h: int, w: int, s: Any) -> Estimate:
    n, d = h * w, s.dim
    return conv(n, d, d, s.kernel_size, groups=d).merge(linear(n, d, d))


def _acmix(h: int, w: int, s: Any) -> Estimate:
    n, d, heads, sr, kk = h * w, s.dim, s.heads, s.sr_ratio, 9
    e = linear(n, d, 3 * d, s.qkv_bias)
    kv_tokens = n if sr == 1 else ceil_div(h, sr) * ceil_div(w, sr)
    e.add(macs=2 * n * kv_tokens * d)
    e.merge(linear(n * (d // heads), 3 * heads, kk, bias=False))
    e.merge(conv(n, kk * (d // heads), d, 3, groups=d // heads))
    e.add(params=2)  # alpha, beta
    return e.merge(linear(n, d, d))


def attention_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _attention(h * w + extra, s.dim, s.heads, s.qkv_bias)


def sra_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _sra(h, w, s, atrous=False)


def rasa_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _sra(h, w, s, atrous=True)


def csa_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _csa(h, w, s)


def conv_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _conv_mixer(h, w, s)


def acmix_cost(h: int, w: int, s: Any, extra: int = 0) -> Estimate:
    return _acmix(h, w, s)
