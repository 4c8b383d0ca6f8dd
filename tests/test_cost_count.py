"""MAC handles against closed-form counts, and ``count`` on real models."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import timm
import timm.layers.config
import torch
import torch.nn.functional as F
from fvcore.nn.flop_count import _DEFAULT_SUPPORTED_OPS
from fvcore.nn.jit_analysis import _IGNORED_OPS as FVCORE_IGNORED
from torch import nn

from archsearch.cost import (
    IGNORED_OPS,
    MAC_HANDLES,
    CostReport,
    count,
    count_params,
    count_params_from_config,
    einsum_macs,
    mac_analysis,
    resolve_target,
    sdpa_macs,
)
from archsearch.errors import CountError


class Fn(nn.Module):
    """Wrap a function of tensors as a traceable module."""

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)


def macs_of(fn: Callable[..., Any] | nn.Module, *xs: torch.Tensor) -> tuple[int, dict[str, int]]:
    """Total MACs and per-operator MACs of one traced call, asserting nothing went uncounted."""
    module = fn if isinstance(fn, nn.Module) else Fn(fn)
    analysis = mac_analysis(module, xs)
    with torch.no_grad():
        total = analysis.total()
    assert not analysis.unsupported_ops(), analysis.unsupported_ops()
    return total, dict(analysis.by_operator())


r = torch.randn


# --------------------------------------------------------------------------- registry


def test_handles_and_ignores_are_disjoint_and_cover_fvcore() -> None:
    assert not set(MAC_HANDLES) & set(IGNORED_OPS)
    assert len(set(IGNORED_OPS)) == len(IGNORED_OPS)
    assert set(FVCORE_IGNORED) <= set(IGNORED_OPS)
    assert set(_DEFAULT_SUPPORTED_OPS) <= set(MAC_HANDLES)
    assert "aten::scaled_dot_product_attention" in MAC_HANDLES


# --------------------------------------------------------------------------- attention


@pytest.mark.parametrize(
    ("q", "k", "v"),
    [
        ((2, 4, 10, 8), (2, 4, 12, 8), (2, 4, 12, 6)),  # 4-D, Ev != E
        ((3, 10, 8), (3, 12, 8), (3, 12, 5)),  # 3-D
        ((10, 8), (12, 8), (12, 8)),  # no batch dims
        ((2, 3, 4, 10, 8), (2, 3, 4, 12, 8), (2, 3, 4, 12, 8)),  # two batch dims
    ],
)
def test_sdpa_layouts(q: tuple[int, ...], k: tuple[int, ...], v: tuple[int, ...]) -> None:
    batch = torch.Size(q[:-2]).numel()
    expected = batch * q[-2] * k[-2] * (q[-1] + v[-1])
    total, ops = macs_of(F.scaled_dot_product_attention, r(*q), r(*k), r(*v))
    assert total == expected == sdpa_macs(q, k, v)
    assert ops == {"scaled_dot_product_attention": expected}


def test_sdpa_mask_and_causal_do_not_change_count() -> None:
    q, k, v = r(2, 4, 10, 8), r(2, 4, 12, 8), r(2, 4, 12, 8)
    expected = 2 * 4 * 10 * 12 * 16
    bool_mask = torch.ones(10, 12, dtype=torch.bool).tril()
    bool_mask[:, 0] = True
    assert macs_of(lambda q, k, v: F.scaled_dot_product_attention(q, k, v), q, k, v)[0] == expected
    masked = macs_of(
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        q,
        k,
        v,
        bool_mask,
    )
    assert masked[0] == expected
    additive = macs_of(
        lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m),
        q,
        k,
        v,
        r(2, 1, 10, 12),
    )
    assert additive[0] == expected
    sq = r(2, 4, 12, 8)
    causal = macs_of(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), sq, k, v
    )
    assert causal[0] == 2 * 4 * 12 * 12 * 16


def test_sdpa_grouped_query_attention() -> None:
    q, k, v = r(2, 8, 10, 16), r(2, 2, 12, 16), r(2, 2, 12, 16)
    fn = lambda q, k, v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True)  # noqa: E731
    assert macs_of(fn, q, k, v)[0] == 2 * 8 * 10 * 12 * (16 + 16)


def test_sdpa_internal_cpu_kernel_variant() -> None:
    q, k = r(2, 4, 10, 8), r(2, 4, 12, 8)
    fn = lambda q, k: torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, k)[0]  # noqa: E731
    total, ops = macs_of(fn, q, k)
    assert total == 2 * 4 * 10 * 12 * 16
    assert set(ops) == {"_scaled_dot_product_flash_attention_for_cpu"}


def test_sdpa_heads_last_layout() -> None:
    # (B, L, H, E) layout of aten::_flash_attention_forward
    assert sdpa_macs((2, 10, 4, 8), (2, 12, 4, 8), (2, 12, 4, 6), heads_last=True) == (
        2 * 4 * 10 * 12 * 14
    )


def test_fused_and_manual_attention_agree() -> None:
    def manual(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        a = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
        return a.softmax(-1) @ v

    q, k, v = r(2, 3, 17, 8), r(2, 3, 17, 8), r(2, 3, 17, 8)
    assert macs_of(manual, q, k, v)[0] == macs_of(F.scaled_dot_product_attention, q, k, v)[0]


# --------------------------------------------------------------------------- matmul family


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ((5, 7), (7, 3), 5 * 7 * 3),
        ((2, 3, 5, 7), (7, 4), 2 * 3 * 5 * 7 * 4),
        ((5, 7), (2, 7, 4), 2 * 5 * 7 * 4),  # fvcore's default gives 5 * 7 * 4
        ((2, 1, 5, 7), (3, 7, 4), 2 * 3 * 5 * 7 * 4),  # broadcast batch on both sides
        ((7,), (7,), 7),  # fvcore's default raises
        ((2, 5, 7), (7,), 2 * 5 * 7),
        ((7,), (2, 7, 4), 2 * 7 * 4),
    ],
)
def test_matmul_layouts(a: tuple[int, ...], b: tuple[int, ...], expected: int) -> None:
    assert macs_of(torch.matmul, r(*a), r(*b))[0] == expected


def test_matmul_family() -> None:
    x, y = r(2, 5, 7), r(2, 7, 4)
    assert macs_of(torch.bmm, x, y)[0] == 2 * 5 * 7 * 4
    assert macs_of(torch.mm, r(5, 7), r(7, 4))[0] == 5 * 7 * 4
    assert macs_of(lambda b, x, y: torch.baddbmm(b, x, y), r(2, 5, 4), x, y)[0] == 2 * 5 * 7 * 4
    assert macs_of(lambda b, x, y: torch.addbmm(b, x, y), r(5, 4), x, y)[0] == 2 * 5 * 7 * 4
    assert macs_of(lambda b, x, y: torch.addmm(b, x, y), r(4), r(5, 7), r(7, 4))[0] == 140
    assert macs_of(torch.mv, r(5, 7), r(7))[0] == 35
    assert macs_of(torch.dot, r(7), r(7))[0] == 7
    assert macs_of(torch.outer, r(5), r(4))[0] == 20
    assert macs_of(nn.Linear(7, 3), r(2, 5, 7))[0] == 2 * 5 * 7 * 3
    # elementwise multiply is not a MAC
    assert macs_of(torch.mul, r(5, 7), r(5, 7))[0] == 0


# --------------------------------------------------------------------------- einsum


@pytest.mark.parametrize(
    ("equation", "shapes", "expected"),
    [
        ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5),
        ("bhld,bhsd->bhls", [(2, 3, 10, 8), (2, 3, 12, 8)], 2 * 3 * 10 * 12 * 8),
        ("bchw,bkhw->bck", [(2, 3, 4, 5), (2, 6, 4, 5)], 2 * 3 * 4 * 5 * 6),
        ("i,j->ij", [(6,), (5,)], 30),  # outer product: fvcore's default gives 15
        ("ij,ij->ij", [(6, 5), (6, 5)], 30),  # Hadamard: fvcore's default gives 15
        ("ij,jk", [(3, 4), (4, 5)], 60),  # implicit output
        ("...ij,...jk->...ik", [(2, 3, 4, 5), (2, 3, 5, 6)], 2 * 3 * 4 * 5 * 6),
        ("...ij,jk->...ik", [(2, 3, 4, 5), (5, 6)], 2 * 3 * 4 * 5 * 6),
        ("BiJ,BJk->Bik", [(2, 3, 4), (2, 4, 5)], 2 * 3 * 4 * 5),  # upper case labels
        ("ij,jk,kl->il", [(2, 30), (30, 40), (40, 3)], 2 * 30 * 40 + 2 * 40 * 3),  # left to right
        ("ij->ji", [(3, 4)], 0),
    ],
)
def test_einsum(equation: str, shapes: list[tuple[int, ...]], expected: int) -> None:
    assert einsum_macs(equation, shapes) == expected
    ops = [r(*s) for s in shapes]
    assert macs_of(lambda *xs: torch.einsum(equation, *xs), *ops)[0] == expected


def test_einsum_rejects_mismatched_operands() -> None:
    with pytest.raises(CountError, match="einsum"):
        einsum_macs("ij,jk->ik", [(3, 4)])


# --------------------------------------------------------------------------- convolution


@pytest.mark.parametrize(
    ("conv", "x_shape", "expected"),
    [
        # grouped, strided: out (1, 16, 8, 8), Cin/groups = 2
        (nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4), (1, 8, 16, 16), 16 * 64 * 2 * 9),
        # depthwise
        (nn.Conv2d(8, 8, 3, padding=1, groups=8), (2, 8, 6, 6), 2 * 8 * 36 * 9),
        # padding="same" traces as aten::_convolution_mode (fvcore's defaults count 0)
        (nn.Conv2d(4, 8, 3, padding="same"), (1, 4, 10, 10), 8 * 100 * 4 * 9),
        # dilated
        (nn.Conv2d(4, 8, 3, dilation=2), (1, 4, 10, 10), 8 * 36 * 4 * 9),
        # unbatched input
        (nn.Conv2d(4, 8, 3), (4, 10, 10), 8 * 64 * 4 * 9),
        (nn.Conv1d(6, 4, 3, groups=2), (2, 6, 20), 2 * 4 * 18 * 3 * 3),
        (nn.Conv3d(2, 4, 1), (1, 2, 3, 4, 5), 4 * 60 * 2),
        # transposed, grouped: numel(input) * Cout/groups * k*k
        (nn.ConvTranspose2d(8, 4, 2, stride=2, groups=2), (1, 8, 5, 5), 8 * 25 * 2 * 4),
        (nn.ConvTranspose1d(4, 6, 3), (1, 4, 7), 4 * 7 * 6 * 3),
    ],
)
def test_conv(conv: nn.Module, x_shape: tuple[int, ...], expected: int) -> None:
    total, ops = macs_of(conv, r(*x_shape))
    assert total == expected
    assert ops == {"conv": expected}


def test_functional_conv_variants() -> None:
    w = r(6, 2, 3, 3)
    x = r(1, 4, 8, 8)
    assert macs_of(lambda x: F.conv2d(x, w, groups=2), x)[0] == 6 * 36 * 2 * 9
    assert macs_of(lambda x: F.conv2d(x, w, groups=2, padding="same"), x)[0] == 6 * 64 * 2 * 9

    def explicit(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.aten.convolution(x, w, None, [1, 1], [0, 0], [1, 1], False, [0, 0], 2)

    assert macs_of(explicit, x)[0] == 6 * 36 * 2 * 9


def test_norms_and_resampling_keep_fvcore_conventions() -> None:
    x = r(2, 5, 8)
    assert macs_of(nn.LayerNorm(8), x)[0] == 5 * x.numel()
    assert macs_of(nn.LayerNorm(8, elementwise_affine=False), x)[0] == 4 * x.numel()
    assert macs_of(lambda x, w: F.rms_norm(x, (8,), w), x, r(8))[0] == 5 * x.numel()
    assert macs_of(lambda x: F.rms_norm(x, (8,)), x)[0] == 4 * x.numel()
    bn = nn.BatchNorm2d(4).eval()
    assert macs_of(bn, r(1, 4, 3, 3))[0] == 2 * 36
    img = r(1, 2, 4, 4)
    up = {
        m: macs_of(lambda x, m=m: F.interpolate(x, scale_factor=2, mode=m), img)[0]
        for m in ("nearest", "bilinear", "bicubic")
    }
    assert up == {"nearest": 128, "bilinear": 4 * 128, "bicubic": 16 * 128}


# --------------------------------------------------------------------------- count()


@pytest.fixture
def restore_fused_attn(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let a test toggle timm's fused attention; the setting is restored afterwards."""
    monkeypatch.setattr(timm.layers.config, "_USE_FUSED_ATTN", timm.layers.config._USE_FUSED_ATTN)


@pytest.mark.usefixtures("restore_fused_attn")
def test_deit_tiny_same_with_and_without_fused_attention() -> None:
    reports = {}
    for fused in (True, False):
        timm.layers.set_fused_attn(fused)
        model = timm.create_model("deit_tiny_patch16_224", pretrained=False)
        reports[fused] = count(model)
    on, off = reports[True], reports[False]
    assert "scaled_dot_product_attention" in on.by_operator  # the toggle took effect
    assert "matmul" in off.by_operator
    assert on.macs == off.macs
    assert on.macs == pytest.approx(1.26e9, rel=0.02)
    assert on.uncounted_ops == [] and off.uncounted_ops == []
    assert on.params == 5_717_416
    assert on.backbone_params == on.params - (192 * 1000 + 1000)


@pytest.mark.parametrize(("name", "gmacs"), [("pvt_v2_b0", 0.57), ("mobilenetv2_100", 0.31)])
def test_timm_reference_counts(name: str, gmacs: float) -> None:
    report = count(timm.create_model(name, pretrained=False))
    assert report.gmacs == pytest.approx(gmacs, rel=0.02)
    assert report.uncounted_ops == []
    assert sum(report.by_module.values()) == report.macs


def test_report_fields_and_by_module() -> None:
    model = nn.Sequential()
    model.add_module("stem", nn.Conv2d(3, 8, 4, stride=4))
    model.add_module("body", nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 1)))
    model.add_module("pool", nn.AdaptiveAvgPool2d(1))
    model.add_module("flat", nn.Flatten())
    model.add_module("head", nn.Linear(8, 10))
    report = count(model, img_size=32, num_classes=10)
    stem = 8 * 64 * 3 * 16
    body = 2 * 8 * 64 * 8
    pool = 8 * 64  # fvcore's adaptive_avg_pool2d default: one per input element
    assert isinstance(report, CostReport)
    assert report.macs == stem + body + pool + 80
    assert report.by_module == {
        "stem": stem,
        "body.0": body // 2,
        "body.2": body // 2,
        "pool": pool,
        "head": 80,
    }
    assert count(model, img_size=32, by_module_depth=1).by_module["body"] == body
    assert count(model, img_size=32, by_module_depth=0).by_module == {"(root)": report.macs}
    assert report.params == sum(p.numel() for p in model.parameters())
    assert report.backbone_params == report.params  # no get_classifier()
    assert report.img_size == 32 and report.in_chans == 3 and report.num_classes == 10
    assert report.seconds > 0
    d = report.to_dict()
    assert d["macs"] == report.macs and json.loads(json.dumps(d)) == d


def test_training_flags_and_threads_restored() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4))
    model.train()
    model[2].eval()
    before = [m.training for m in model.modules()]
    threads = torch.get_num_threads()
    count(model, img_size=16)
    assert [m.training for m in model.modules()] == before
    assert torch.get_num_threads() == threads
    with pytest.raises(CountError):
        count(model, img_size=16, in_chans=1)
    assert [m.training for m in model.modules()] == before
    assert torch.get_num_threads() == threads


def test_non_trainable_parameters_are_counted() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4))
    model[1].weight.requires_grad_(False)
    model.register_buffer("stat", torch.zeros(100))  # buffers are not parameters
    assert count(model, img_size=2, in_chans=1).params == 20


class _Unhandled(nn.Module):
    def __init__(self, op: str) -> None:
        super().__init__()
        self.op = op
        self.proj = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x)
        if self.op == "cdist":
            return torch.cdist(x, x)
        if self.op == "kron":
            return torch.kron(x, x)
        return torch.linalg.solve(x[..., :8, :8] + torch.eye(8), x[..., :8, :8])


@pytest.mark.parametrize(
    ("op", "aten"),
    [("cdist", "aten::cdist"), ("kron", "aten::kron"), ("solve", "aten::linalg_solve")],
)
def test_unhandled_operator_fails_loudly(op: str, aten: str) -> None:
    model = nn.Sequential()
    model.add_module("blocks", nn.Sequential(nn.Identity(), _Unhandled(op)))
    with pytest.raises(CountError) as info:
        count(model, img_size=8, in_chans=1)
    message = str(info.value)
    assert aten in message
    assert "'blocks.1'" in message
    assert "IGNORED_OPS" in message
    assert "\n" not in message

    report = count(model, img_size=8, in_chans=1, allow_uncounted=True)
    assert aten in report.uncounted_ops
    assert report.macs == 8 * 8 * 8  # the Linear still counts


def test_custom_autograd_function_is_not_silently_skipped() -> None:
    class Double(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
            return x * 2

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            return g * 2

    with pytest.raises(CountError, match="PythonOp.Double"):
        count(Fn(lambda x: Double.apply(x)), img_size=4)


def test_builder_protocol_and_params_on_meta() -> None:
    class Builder:
        def build(self, *, num_classes: int, in_chans: int) -> nn.Module:
            return timm.create_model(
                "resnet10t", pretrained=False, num_classes=num_classes, in_chans=in_chans
            )

    params, backbone = count_params_from_config(Builder(), num_classes=10, in_chans=1)
    model = Builder().build(num_classes=10, in_chans=1)
    assert (params, backbone) == count_params(model)
    assert params - backbone == 512 * 10 + 10
    report = count(Builder(), img_size=64, num_classes=10, in_chans=1)
    assert report.params == params and report.num_classes == 10


def test_arch_config_is_built_lazily() -> None:
    from archsearch.models import reference_config

    config = reference_config("lvt")
    params, backbone = count_params_from_config(config)
    report = count(config, img_size=64)
    assert report.params == params and report.backbone_params == backbone
    assert report.uncounted_ops == [] and report.macs > 0


def test_bad_inputs() -> None:
    with pytest.raises(CountError, match="expected an nn.Module"):
        count(object())
    with pytest.raises(CountError, match="img_size"):
        count(nn.Identity(), img_size=0)
    with torch.device("meta"):
        meta = nn.Linear(2, 2)
    with pytest.raises(CountError, match="meta"):
        count(meta)
    with pytest.raises(CountError, match="tracing"):
        count(nn.Conv2d(1, 2, 3), in_chans=3, img_size=8)


# --------------------------------------------------------------------------- resolve_target


def test_resolve_target(tmp_path: Any) -> None:
    from archsearch.models import reference_config

    model = resolve_target("timm:resnet10t", num_classes=7, in_chans=1, img_size=64)
    assert model.num_classes == 7
    vit = resolve_target("timm:deit_tiny_patch16_224", num_classes=7, in_chans=3, img_size=64)
    assert count(vit, img_size=64).macs > 0  # position embedding sized for img_size
    assert isinstance(resolve_target("lvt", num_classes=10, in_chans=3, img_size=224), nn.Module)
    path = tmp_path / "cand.json"
    path.write_text(reference_config("lvt").to_json())
    built = resolve_target(str(path), num_classes=10, in_chans=3, img_size=224)
    assert (
        count_params(built)[0]
        == count_params_from_config(reference_config("lvt"), num_classes=10)[0]
    )

    with pytest.raises(CountError, match="unknown timm model 'nope'"):
        resolve_target("timm:nope", num_classes=10, in_chans=3, img_size=224)
    with pytest.raises(CountError, match="unknown target 'nonesuch': expected a reference design"):
        resolve_target("nonesuch", num_classes=10, in_chans=3, img_size=224)
    with pytest.raises(CountError, match="config file"):
        resolve_target(str(tmp_path / "missing.yaml"), num_classes=10, in_chans=3, img_size=224)
