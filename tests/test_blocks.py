"""Each block's maths, pinned against direct computations written independently of the code."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from archsearch.layers import (
    ACMix,
    ContextBroadcast,
    ConvMlp,
    ConvSelfAttention,
    LookupBlock,
    SpatialReductionAttention,
    T2TTokenizer,
)
from archsearch.layers.attention import fast_paths_in_eval, set_fast_paths, use_fast_path
from archsearch.layers.sra import ATROUS_DILATIONS, depthwise_tap_matrices, patch_linear


def test_cb_is_half_input_plus_half_mean() -> None:
    x = torch.randn(2, 7, 5)
    expected = 0.5 * x + 0.5 * x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(ContextBroadcast(5)(x), expected)
    assert sum(p.numel() for p in ContextBroadcast(5).parameters()) == 0


def test_cbs_starts_equal_to_cb_and_has_one_weight_per_channel() -> None:
    x = torch.randn(2, 7, 5)
    cbs = ContextBroadcast(5, scaled=True)
    torch.testing.assert_close(cbs(x), ContextBroadcast(5)(x))
    assert sum(p.numel() for p in cbs.parameters()) == 5
    with torch.no_grad():
        cbs.lam.zero_()
    torch.testing.assert_close(cbs(x), x)  # lambda = 0: identity


def _naive_attention(q, k, v, heads):
    b, n, c = q.shape
    d = c // heads
    out = torch.empty_like(q)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        a = (q[..., sl] @ k[..., sl].transpose(1, 2) * d**-0.5).softmax(-1)
        out[..., sl] = a @ v[..., sl]
    return out


def _naive_asa(m: SpatialReductionAttention, x: torch.Tensor, hw) -> torch.Tensor:
    b, n, c = x.shape
    q = m.q(x).transpose(1, 2).reshape(b, c, *hw)
    qs = torch.zeros_like(q)
    for d in (1, 3, 5):  # one shared depthwise kernel, three dilations, SiLU per branch
        qs = qs + F.silu(F.conv2d(q, m.atrous, padding=d, dilation=d, groups=c))
    q = qs.flatten(2).transpose(1, 2)
    red = m.sr(x.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
    k, v = m.kv(m.sr_norm(red)).chunk(2, -1)
    return m.proj(_naive_attention(q, k, v, m.heads))


def test_asa_matches_direct_computation() -> None:
    assert ATROUS_DILATIONS == (1, 3, 5)
    m = SpatialReductionAttention(16, 2, sr_ratio=2, atrous=True, recursion=1)
    x = torch.randn(2, 36, 16)
    torch.testing.assert_close(m(x, (6, 6)), _naive_asa(m, x, (6, 6)), rtol=1e-4, atol=1e-5)


def test_rasa_recursion_shares_weights() -> None:
    asa = SpatialReductionAttention(16, 2, sr_ratio=2, atrous=True, recursion=1)
    counts = set()
    x = torch.randn(2, 36, 16)
    hw = (6, 6)
    for r in (1, 2, 3, 4):
        rasa = SpatialReductionAttention(16, 2, sr_ratio=2, atrous=True, recursion=r)
        rasa.load_state_dict(asa.state_dict())
        counts.add(sum(p.numel() for p in rasa.parameters()))
        if r == 1:
            torch.testing.assert_close(rasa(x, hw), asa(x, hw))
        if r == 2:
            expected = F.silu(asa(F.silu(asa(x, hw)) + x, hw))
            torch.testing.assert_close(rasa(x, hw), expected)
    assert len(counts) == 1  # parameters do not depend on r
    # the atrous query adds exactly 9C parameters over plain SRA
    sra = SpatialReductionAttention(16, 2, sr_ratio=2)
    assert counts.pop() - sum(p.numel() for p in sra.parameters()) == 9 * 16


def test_csa_parameter_count_matches_paper() -> None:
    csa = ConvSelfAttention(64, 2)
    assert sum(p.numel() for p in csa.attn.parameters()) == 10_530
    assert sum(p.numel() for p in csa.slot_proj.parameters()) == 36_864
    assert sum(p.numel() for p in csa.proj.parameters()) == 4_160
    assert sum(p.numel() for p in csa.parameters()) == 51_554


@pytest.mark.parametrize("hw", [(8, 8), (7, 5)])
def test_csa_matches_naive_window_loop(hw) -> None:
    c, heads, k = 8, 2, 3
    m = ConvSelfAttention(c, heads, kernel_size=k)
    h, w = hw
    x = torch.randn(1, h * w, c)
    xm = x[0].t().reshape(c, h, w)
    pad = F.pad(xm, (1, 1, 1, 1))
    w_slots = m.slot_proj.weight.reshape(k * k, c, c)  # slot s: out <- in
    out = torch.zeros(c, h + 2, w + 2)
    d = c // heads
    for i in range(0, h, 2):
        for j in range(0, w, 2):
            patch = xm[:, i : i + 2, j : j + 2]
            logits = m.attn(patch.mean(dim=(1, 2))).reshape(heads, 9, 9) * d**-0.5
            a = logits.softmax(-1)
            nbrs = [w_slots[s] @ pad[:, i + s // 3, j + s % 3] for s in range(9)]
            v = torch.stack(nbrs)  # 9, C
            for hd in range(heads):
                res = a[hd] @ v[:, hd * d : (hd + 1) * d]  # 9, d
                for s in range(9):
                    out[hd * d : (hd + 1) * d, i + s // 3, j + s % 3] += res[s]
    expected = m.proj(out[:, 1:-1, 1:-1].reshape(c, -1).t()).unsqueeze(0)
    torch.testing.assert_close(m(x, hw), expected, rtol=1e-4, atol=1e-5)


def test_acmix_conv_path_at_init_is_sum_of_shifted_inputs() -> None:
    m = ACMix(16, 4)
    assert m.alpha.item() == 0.5 and m.beta.item() == 0.5
    b, h, w = 2, 5, 6
    qkv = torch.randn(b, h * w, 48)
    d = m.head_dim
    groups = qkv.reshape(b, h * w, 12, d).transpose(2, 3)
    maps = m.fc(groups).reshape(b, h, w, d, 9).permute(0, 3, 4, 1, 2)  # B, d, 9, H, W
    padded = F.pad(maps, (1, 1, 1, 1))
    shifted = sum(
        padded[:, :, s, s // 3 : s // 3 + h, s % 3 : s % 3 + w] for s in range(9)
    )  # B, d, H, W: out[y, x] = sum_s in_s[y + dy_s, x + dx_s]
    out = m.conv_path(qkv, (h, w)).reshape(b, h, w, 16).permute(0, 3, 1, 2)
    per_group = 16 // d
    for g in range(d):
        for o in range(per_group):
            torch.testing.assert_close(out[:, g * per_group + o], shifted[:, g])


def test_lookup_reverse_update_reuses_transposed_attention() -> None:
    blk = LookupBlock(12, 3)
    lookup, compressed = torch.randn(2, 20, 12), torch.randn(2, 4, 12)
    upd, attn = blk.cross_attention(lookup, compressed)
    assert attn.shape == (2, 3, 4, 20)
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 3, 4))  # softmax over lookup tokens
    v = blk.v_rev(blk.norm_rev(compressed))
    direct = torch.zeros(2, 20, 12)
    for h in range(3):
        for n in range(20):
            for mm in range(4):
                sl = slice(4 * h, 4 * h + 4)
                direct[:, n, sl] += attn[:, h, mm, n, None] * v[:, mm, sl]
    torch.testing.assert_close(blk.reverse_update(compressed, attn), blk.proj_l(direct))
    # and the block's forward is exactly those steps in order
    c1 = compressed + upd
    c2 = blk.vit(c1)
    l1 = lookup + blk.reverse_update(c2, attn)
    l2 = l1 + blk.mlp_l(blk.norm_mlp(l1))
    out_l, out_c = blk(lookup, compressed)
    torch.testing.assert_close(out_c, c2)
    torch.testing.assert_close(out_l, l2)
    assert blk.mlp_l.fc1.out_features == 6  # lookup MLP hidden size D/2
    assert blk.vit.mlp.fc1.out_features == 48  # compressed ViT MLP ratio 4


@pytest.mark.parametrize("kind", ["performer", "transformer"])
def test_t2t_token_counts_at_224(kind: str) -> None:
    tok = T2TTokenizer(3, 32, kind=kind)
    seen = []
    for layer in (tok.t2t1, tok.t2t2, tok.proj):
        layer.register_forward_hook(lambda mod, inp, out: seen.append(inp[0].shape[1:]))
    with torch.no_grad():
        out, hw = tok(torch.randn(1, 3, 224, 224))
    assert seen == [(3136, 147), (784, 576), (196, 576)]
    assert out.shape == (1, 196, 32) and hw == (14, 14)


def test_performer_projections_are_fixed() -> None:
    tok = T2TTokenizer(3, 32, kind="performer")
    assert not tok.t2t1.w.requires_grad
    assert tok.t2t1.w.shape == (32, 64)  # m = 32 random features of the 64-d tokens


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (4, 4), (7, 7), (9, 6)])
@pytest.mark.parametrize("dilation", ATROUS_DILATIONS)
def test_dilated_depthwise_taps_equal_the_convolution(hw, dilation: int) -> None:
    from archsearch.layers.sra import dilated_depthwise_taps

    x = torch.randn(2, 5, *hw, requires_grad=True)
    w = torch.randn(5, 1, 3, 3, requires_grad=True)
    conv = F.conv2d(x, w, padding=dilation, dilation=dilation, groups=5)
    taps = dilated_depthwise_taps(x, w, dilation)
    torch.testing.assert_close(taps, conv)
    g1 = torch.autograd.grad(conv.square().sum(), (x, w))
    g2 = torch.autograd.grad(taps.square().sum(), (x, w))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)


def test_asa_train_and_eval_paths_agree() -> None:
    m = SpatialReductionAttention(16, 2, sr_ratio=2, atrous=True, recursion=2)
    x = torch.randn(2, 36, 16)
    out_train = m.train()(x, (6, 6))
    out_eval = m.eval()(x, (6, 6))
    torch.testing.assert_close(out_train, out_eval)


# --------------------------------------------------------------------------- fast paths
def _run_both_paths(module: nn.Module, x: torch.Tensor, hw) -> list[tuple]:
    """Output, input gradient and parameter gradients in training mode with the layers' fast
    paths off, then on (same upstream gradient)."""
    module.train()
    results = []
    previous = set_fast_paths(False)
    try:
        for fast in (False, True):
            set_fast_paths(fast)
            xx = x.clone().requires_grad_()
            out = module(xx, hw)
            upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(0))
            module.zero_grad(set_to_none=True)
            out.backward(upstream)
            grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
            results.append((out.detach(), xx.grad, grads))
    finally:
        set_fast_paths(previous)
    return results


def _assert_paths_agree(module: nn.Module, x: torch.Tensor, hw) -> None:
    (out0, gx0, gp0), (out1, gx1, gp1) = _run_both_paths(module, x, hw)
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out1, out0, **tol)
    torch.testing.assert_close(gx1, gx0, **tol)
    assert gp1.keys() == gp0.keys()
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], **tol, msg=name)


@pytest.mark.parametrize(
    ("hw", "k"), [((8, 8), 3), ((4, 6), 3), ((2, 2), 3), ((7, 5), 3), ((8, 8), 7)]
)
def test_csa_fast_path_matches_reference(hw, k: int) -> None:
    torch.manual_seed(0)
    m = ConvSelfAttention(16, 2, kernel_size=k)
    _assert_paths_agree(m, torch.randn(3, hw[0] * hw[1], 16), hw)


@pytest.mark.parametrize(
    ("hw", "sr_ratio", "recursion", "qkv_bias"),
    [
        ((4, 4), 4, 2, False),  # LVT stage 2 at the 32 px proxy: dense atrous, patch Linear
        ((2, 3), 1, 1, True),
        ((1, 1), 1, 2, False),
        ((6, 6), 2, 2, False),
        ((14, 12), 2, 1, False),  # more tokens than DENSE_MAX_TOKENS: tap query
        ((5, 5), 2, 1, False),  # not a whole number of patches: reduction by the conv
    ],
)
def test_rasa_fast_path_matches_reference(hw, sr_ratio: int, recursion: int, qkv_bias) -> None:
    torch.manual_seed(0)
    m = SpatialReductionAttention(
        16, 2, sr_ratio=sr_ratio, atrous=True, recursion=recursion, qkv_bias=qkv_bias
    )
    _assert_paths_agree(m, torch.randn(3, hw[0] * hw[1], 16), hw)


@pytest.mark.parametrize("hw", [(1, 1), (2, 2), (1, 3), (4, 4)])
def test_conv_mlp_fast_path_matches_reference(hw) -> None:
    torch.manual_seed(0)
    _assert_paths_agree(ConvMlp(8, 24), torch.randn(3, hw[0] * hw[1], 8), hw)


@pytest.mark.parametrize("hw", [(1, 1), (2, 3), (4, 4)])
def test_depthwise_tap_matrices_equal_the_convolutions(hw) -> None:
    x = torch.randn(2, 5, *hw)
    w = torch.randn(5, 1, 3, 3)
    n = hw[0] * hw[1]
    out = torch.bmm(x.reshape(2, 5, n).transpose(0, 1), depthwise_tap_matrices(w, hw, (1, 3, 5)))
    for k, d in enumerate((1, 3, 5)):
        conv = F.conv2d(x, w, padding=d, dilation=d, groups=5).reshape(2, 5, n)
        torch.testing.assert_close(out[:, :, k * n : (k + 1) * n].transpose(0, 1), conv)


def test_patch_linear_equals_the_reduction_conv() -> None:
    conv = nn.Conv2d(6, 4, 2, stride=2)
    x = torch.randn(3, 4 * 6, 6)
    expected = conv(x.transpose(1, 2).reshape(3, 6, 4, 6)).flatten(2).transpose(1, 2)
    torch.testing.assert_close(patch_linear(x, (4, 6), conv), expected)
    assert patch_linear(x[:, :20], (4, 5), conv) is None  # 5 is not a multiple of 2


class _Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(use_fast_path(self))
        return x * 2


def test_fast_paths_in_eager_training_and_proxy_evaluation_only() -> None:
    probe = _Probe()
    probe.train()(torch.ones(1))
    probe.eval()(torch.ones(1))  # eval mode (counting, latency) sees the reference ops ...
    with fast_paths_in_eval():
        probe(torch.ones(1))  # ... except in the proxy's validation
    probe(torch.ones(1))
    assert probe.seen == [True, False, True, False]
    probe.seen.clear()
    with fast_paths_in_eval():
        for mode in (True, False):
            torch.jit.trace(probe.train(mode), torch.ones(1), check_trace=False)
    assert probe.seen and not any(probe.seen)  # fvcore traces: never the fast path
    probe.train()
    previous = set_fast_paths(False)
    try:
        assert torch.equal(probe(torch.ones(1)), torch.full((1,), 2.0))
        assert probe.seen[-1] is False
    finally:
        set_fast_paths(previous)


def test_lvt_training_step_same_with_and_without_fast_paths() -> None:
    from archsearch.models import build_model, reference_config

    torch.manual_seed(0)
    model = build_model(
        reference_config("lvt"), num_classes=10, in_chans=1, img_size=32, drop_path_rate=0.0
    )

    class Whole(nn.Module):  # adapts the model to (x, hw) for _run_both_paths
        def __init__(self) -> None:
            super().__init__()
            self.net = model

        def forward(self, x: torch.Tensor, hw) -> torch.Tensor:
            return self.net(x)

    (out0, gx0, gp0), (out1, gx1, gp1) = _run_both_paths(Whole(), torch.randn(4, 1, 32, 32), None)
    torch.testing.assert_close(out1, out0, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(gx1, gx0, rtol=1e-4, atol=1e-5)
    assert gp1.keys() == gp0.keys()
    for name in gp0:
        torch.testing.assert_close(gp1[name], gp0[name], rtol=1e-3, atol=1e-5, msg=name)


def test_lvt_evaluation_same_with_and_without_fast_paths() -> None:
    from archsearch.models import build_model, reference_config

    torch.manual_seed(0)
    model = build_model(reference_config("lvt"), num_classes=10, in_chans=1, img_size=32).eval()
    x = torch.randn(4, 1, 32, 32)
    with torch.inference_mode():
        reference = model(x)
        with fast_paths_in_eval():
            fast = model(x)
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)


def test_lookup_registry_entry_reads_multires() -> None:
    from archsearch.blocks import MIXERS
    from archsearch.config import StageConfig

    entry = MIXERS["lookup"]
    assert "lookup_multires" in entry.fields
    s = StageConfig(depth=1, dim=8, heads=1, mixer="lookup", lookup_grid=5)
    assert entry.token(s) == "lookup5"
    multi = StageConfig(
        depth=1, dim=8, heads=1, mixer="lookup", lookup_grid=5, lookup_multires=(7, 3, 5)
    )
    assert entry.token(multi) == "lookup5of3-5-7"
