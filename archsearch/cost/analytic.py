"""Closed-form parameter and MAC counts for every block, straight from an architecture config.

The fast pre-filter of the search (microseconds per candidate, no model is built) and the test
oracle for the fvcore count. The conventions are fvcore's, so the two agree: one multiply-
accumulate is one MAC; a Linear or convolution costs ``outputs x inputs-per-output`` (bias free);
``scaled_dot_product_attention`` costs ``heads x L x S x (d + d_v)``; a matmul ``prod(A) x
B[-1]``; LayerNorm 5 per element, eval-mode BatchNorm 2 per element, bilinear resize 4 per output
element; elementwise work, softmax, pooling and unfold/fold are free (see
:data:`archsearch.cost.ignored.IGNORED_OPS`).
"""

from __future__ import annotations

from ..blocks import MIXERS
from ..config import ArchConfig, StageConfig, TokenizerConfig
from ..layers.t2t import T2T_SPLITS
from .estimate import Estimate, conv, conv_out, linear, norm
from .mixer_costs import attention_cost

__all__ = ["Estimate", "estimate", "block_estimate", "tokenizer_estimate"]


def _mlp(n: int, d: int, ratio: float, conv_mlp: bool) -> Estimate:
    hidden = max(1, round(d * ratio))
    e = linear(n, d, hidden).merge(linear(n, hidden, d))
    if conv_mlp:
        e.merge(conv(n, hidden, hidden, 3, groups=hidden))
    return e


def _cbs_params(config: ArchConfig, d: int, hidden: int, lookup: bool = False) -> int:
    """Parameters of the CBS modules of one block (CB has none)."""
    if config.cb.kind != "cbs":
        return 0
    pos = config.cb.position
    per = {"mlp_end": d, "mlp_front": d, "mlp_mid": hidden, "attn": d, "both": 2 * d}[pos]
    if lookup:  # the compressed ViT block plus the lookup MLP (which has no mixer position)
        lookup_hidden = max(1, round(d * 0.5))
        inner = {"mlp_end": d, "mlp_front": d, "mlp_mid": lookup_hidden, "attn": 0, "both": d}
        return per + inner[pos]
    return per


def block_estimate(
    config: ArchConfig,
    stage: StageConfig,
    hw: tuple[int, int],
    *,
    block_index: int = 0,
    extra_tokens: int = 0,
    compressed: int = 0,
) -> Estimate:
    """One block of ``stage`` at grid ``hw`` (plus ``extra_tokens`` class tokens).

    For a LookupViT block ``compressed`` is the number of compressed tokens M.
    """
    h, w = hw
    d = stage.dim
    hidden = max(1, round(d * stage.mlp_ratio))
    cbs = _cbs_params(config, d, hidden, stage.mixer == "lookup")
    cb_on = config.cb_enabled(block_index)
    if stage.mixer == "lookup":
        n, m = h * w, compressed
        e = norm(m, d).merge(norm(n, d))
        e.merge(linear(m, d, d, stage.qkv_bias)).merge(linear(n, d, 2 * d, stage.qkv_bias))
        e.add(macs=2 * m * n * d).merge(linear(m, d, d))  # A = q k^T, A v, projection
        e.merge(norm(m, d)).merge(attention_cost(m, 1, stage))
        e.merge(norm(m, d)).merge(_mlp(m, d, stage.mlp_ratio, conv_mlp=False))
        e.merge(norm(m, d)).merge(linear(m, d, d, stage.qkv_bias))  # reverse value
        e.add(macs=n * m * d).merge(linear(n, d, d))  # A^T v, projection
        e.merge(norm(n, d)).merge(_mlp(n, d, 0.5, conv_mlp=False))
        return e.add(params=cbs if cb_on else 0)
    n = h * w + extra_tokens
    cost = MIXERS[stage.mixer].cost
    assert cost is not None  # every mixer but lookup (a whole block) has one
    mixer = cost(h, w, stage, extra_tokens)
    e = norm(n, d).merge(mixer).merge(norm(n, d))
    e.merge(_mlp(n, d, stage.mlp_ratio, conv_mlp=stage.mlp == "conv_mlp"))
    return e.add(params=cbs if cb_on else 0)


# ---------------------------------------------------------------------------- tokenizers
def _t2t_layer(t: int, cin: int, dim: int, performer: bool) -> Estimate:
    e = norm(t, cin)
    if performer:
        m = dim // 2
        e.merge(linear(t, cin, 3 * dim))
        e.add(macs=2 * t * dim * m + t * m + 2 * t * m * dim)  # random features: a buffer
    else:
        e.merge(linear(t, cin, 3 * dim, bias=False)).add(macs=2 * t * t * dim)
    e.merge(linear(t, dim, dim)).merge(norm(t, dim))
    return e.merge(linear(t, dim, dim)).merge(linear(t, dim, dim))


def tokenizer_estimate(
    tok: TokenizerConfig, img_size: int, in_chans: int, dim: int
) -> tuple[Estimate, int]:
    """(estimate, grid side) of the tokenizer for a square ``img_size`` input."""
    side = img_size
    if tok.kind == "patch":
        side = img_size // tok.patch_size
        return conv(side * side, in_chans, dim, tok.patch_size), side
    if tok.kind == "overlap_patch":
        k = 2 * tok.patch_size - 1
        side = conv_out(img_size, k, tok.patch_size, k // 2)
        return conv(side * side, in_chans, dim, k).merge(norm(side * side, dim)), side
    if tok.kind == "conv_stem":
        n = max(1, tok.patch_size.bit_length() - 1)
        widths = [max(dim // 2 ** (n - 1 - i), 8) for i in range(n)]
        widths[-1] = dim
        e, cin = Estimate(), in_chans
        for i, cout in enumerate(widths):
            side = conv_out(side, 3, 2, 1)
            e.merge(conv(side * side, cin, cout, 3, bias=i == n - 1))
            if i < n - 1:
                e.add(params=2 * cout, macs=2 * side * side * cout)  # eval-mode BatchNorm
            cin = cout
        return e, side
    performer = tok.kind == "t2t_performer"
    e, cin = Estimate(), in_chans
    for i, (k, s, p) in enumerate(T2T_SPLITS):
        side = conv_out(side, k, s, p)
        cin = cin * k * k
        if i < 2:
            e.merge(_t2t_layer(side * side, cin, tok.t2t_dim, performer))
            cin = tok.t2t_dim
    return e.merge(linear(side * side, cin, dim)), side


# ---------------------------------------------------------------------------- whole network
def estimate(
    config: ArchConfig,
    *,
    img_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    pos_embed_size: int | None = None,
) -> Estimate:
    """Closed-form params and MACs of the whole network (see the module docstring).

    Args:
        pos_embed_size: the image side the (columnar) position embedding is built for; defaults
            to ``img_size`` (parameters depend on it, MACs do not).
    """
    first = config.stages[0]
    tok, side = tokenizer_estimate(config.tokenizer, img_size, in_chans, first.dim)
    total = Estimate().merge(tok, "patch_embed" if config.macro == "columnar" else "stages.0")
    if config.macro == "hierarchical":
        index = 0
        for i, s in enumerate(config.stages):
            st = Estimate()
            if i > 0:
                side = conv_out(side, 3, 2, 1)
                st.merge(conv(side * side, config.stages[i - 1].dim, s.dim, 3))
                st.merge(norm(side * side, s.dim))
            for _ in range(s.depth):
                st.merge(block_estimate(config, s, (side, side), block_index=index))
                index += 1
            st.merge(norm(side * side, s.dim))
            total.merge(st, f"stages.{i}")
        last = config.stages[-1].dim
        return total.merge(linear(1, last, num_classes) if num_classes else Estimate(), "head")
    d = first.dim
    extra = 1 if config.class_token else 0
    pos_side = side
    if pos_embed_size is not None and pos_embed_size != img_size:
        _, pos_side = tokenizer_estimate(config.tokenizer, pos_embed_size, in_chans, d)
    if config.pos_embed == "learned":  # sin-cos position embeddings are a buffer
        total.add(params=(extra + pos_side * pos_side) * d)
    total.add(params=extra * d)
    blocks = Estimate()
    m = min(first.lookup_grid, side) ** 2 if first.mixer == "lookup" else 0  # M <= N
    if m:
        blocks.add(macs=4 * m * d)  # bilinear resize to the compressed grid
    for i in range(first.depth):
        blocks.merge(
            block_estimate(
                config, first, (side, side), block_index=i, extra_tokens=extra, compressed=m
            )
        )
    total.merge(blocks, "blocks")
    total.merge(norm(side * side + extra, d), "norm")
    if m:
        total.merge(norm(m, d), "norm_c")
        head = Estimate()
        if num_classes:
            head.merge(linear(1, d, num_classes)).merge(linear(1, d, num_classes))
        return total.merge(head, "head")
    return total.merge(linear(1, d, num_classes) if num_classes else Estimate(), "head")
