"""timm conformance: the checks of timm's own ``tests/test_models.py``, as archsearch's test.

Subjects: every model archsearch registers in timm (the reference designs at their registered
size; ``archsearch_net`` with tiny architectures covering every tokenizer, mixer, MLP, position
embedding and Context Broadcasting kind) and an exported search winner of each macro (a real tiny
run, loaded with ``timm.create_model("local-dir:...", pretrained=True)``).

Checked as timm checks its own models: forward (and with gradient checkpointing), backward (every
parameter gets a gradient: fixed tensors are buffers), the pretrained config (``pool_size``,
``first_conv``, ``classifier``), ``num_features`` / ``head_hidden_size`` / ``reset_classifier`` /
``forward_head(pre_logits=True)`` / ``global_pool``, ``features_only`` (timm's hook, getter and FX
extractors), ``forward_intermediates`` and ``prune_intermediate_layers`` with timm's arguments,
FX tracing with timm's leaf functions and modules (forward equal, backward complete) and
torch.export; for exports also loading at another ``img_size``, ``in_chans`` and
``num_classes``. torch.jit.script is not supported (see docs/timm.md).

Inputs are small (32 px; timm's own limits are larger) except for the one ``forward_features``
at the pretrained config's input size that checks ``pool_size``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
import torch.fx as fx
from timm.models import FeatureInfo, get_notrace_functions, get_notrace_modules
from torch import nn

import archsearch  # noqa: F401  (registers the models in timm)
from archsearch.export import export
from archsearch.layers.embed import sincos_1d
from archsearch.models import reference_config, reference_names
from archsearch.models.columnar import POOLS as COLUMNAR_POOLS
from archsearch.models.hierarchical import POOLS as HIERARCHICAL_POOLS

from ._tiny import tiny_run

SMALL = 32  # input side of the quick checks (every subject accepts it)

_HIER = {"macro": "hierarchical", "tokenizer": {"kind": "overlap_patch", "patch_size": 4}}
_COL = {"macro": "columnar", "tokenizer": {"kind": "patch", "patch_size": 8}}

#: archsearch_net architectures: together every tokenizer, mixer, MLP, position embedding, pooling
#: default and CB kind (tiny widths).
TINY_ARCHS: dict[str, dict[str, Any]] = {
    "net_hier_csa_rasa_acmix_cb": {
        **_HIER,
        "stages": [
            {"depth": 1, "dim": 16, "heads": 2, "mixer": "csa"},
            {"depth": 1, "dim": 24, "heads": 2, "mixer": "rasa", "recursion": 2, "sr_ratio": 2,
             "mlp": "conv_mlp"},
            {"depth": 1, "dim": 32, "heads": 2, "mixer": "acmix", "sr_ratio": 1,
             "qkv_bias": True},
        ],
        "cb": {"kind": "cb", "position": "both"},
    },
    "net_hier_convstem_conv_sra_attn": {
        "macro": "hierarchical",
        "tokenizer": {"kind": "conv_stem", "patch_size": 4},
        "stages": [
            {"depth": 1, "dim": 16, "heads": 1, "mixer": "conv", "kernel_size": 5},
            {"depth": 1, "dim": 24, "heads": 2, "mixer": "sra", "sr_ratio": 2},
            {"depth": 1, "dim": 32, "heads": 2, "mixer": "attn"},
        ],
    },
    "net_col_t2t_performer_sincos": {
        "macro": "columnar",
        "tokenizer": {"kind": "t2t_performer", "patch_size": 16, "t2t_dim": 16},
        "stages": [{"depth": 2, "dim": 24, "heads": 2, "mlp_ratio": 2}],
        "pos_embed": "sincos",
        "class_token": True,
    },
    "net_col_t2t_transformer_learned": {
        "macro": "columnar",
        "tokenizer": {"kind": "t2t_transformer", "patch_size": 16, "t2t_dim": 16},
        "stages": [{"depth": 2, "dim": 24, "heads": 2}],
        "pos_embed": "learned",
        "cb": {"kind": "cbs", "position": "mlp_mid", "layers": "deeper_half"},
    },
    "net_col_lookup_cbs": {
        **_COL,
        "stages": [{"depth": 1, "dim": 24, "heads": 2, "mixer": "lookup", "lookup_grid": 3}],
        "pos_embed": "learned",
        "cb": {"kind": "cbs", "position": "both"},
    },
    "net_col_convstem_nopos": {
        "macro": "columnar",
        "tokenizer": {"kind": "conv_stem", "patch_size": 8},
        "stages": [{"depth": 2, "dim": 24, "heads": 2, "qkv_bias": True}],
        "class_token": True,
    },
}  # fmt: skip

#: A columnar search space whose every member is a T2T-Performer with sincos position embedding
#: and a class token: the fixed tensors (buffers) and the resampled position embedding.
COLUMNAR_SPACE = """\
name: tiny_columnar
macro: columnar
tokenizer: {kind: t2t_performer, patch_size: 16, t2t_dim: 16}
stages:
  - {depth: [1, 2], dim: 16, head_dim: 16, mixer: attn, mlp_ratio: 2}
pos_embed: sincos
class_token: true
"""

EXPORTS = ("export_hierarchical", "export_columnar")
SUBJECTS = [*reference_names(), *TINY_ARCHS, *EXPORTS]


@dataclass
class Subject:
    """A registered model or an exported folder, with a cache of its builds."""

    id: str
    name: str
    macro: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    _cache: dict[str, nn.Module] = field(default_factory=dict)

    def create(self, **kwargs: Any) -> nn.Module:
        """A new build through ``timm.create_model``."""
        return timm.create_model(
            self.name, pretrained=self.pretrained, **{**self.kwargs, **kwargs}
        ).eval()

    def model(self, **kwargs: Any) -> nn.Module:
        """A fresh copy of the build with ``kwargs`` (built once per subject and kwargs)."""
        key = repr(sorted(kwargs.items()))
        if key not in self._cache:
            self._cache[key] = self.create(**kwargs)
        return copy.deepcopy(self._cache[key]).eval()

    @property
    def reference(self) -> bool:
        """A registered reference design (full size: the costliest checks use the tiny ones)."""
        return self.id in reference_names()

    @property
    def config(self) -> Any:
        """The architecture config (of the default build)."""
        if repr([]) not in self._cache:
            self._cache[repr([])] = self.create()
        return self._cache[repr([])].config


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The knee of a real tiny run of each macro, exported as timm folders."""
    root = tmp_path_factory.mktemp("conformance")
    space = root / "columnar.yaml"
    space.write_text(COLUMNAR_SPACE)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        hier = tiny_run(root / "hier", trials=2)
        col = tiny_run(root / "col", trials=2, space=str(space))
        return {
            "export_hierarchical": export(hier, knee=True, out=root / "out")[0],
            "export_columnar": export(col, knee=True, out=root / "out")[0],
        }
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def subject(request: pytest.FixtureRequest) -> Iterator[Subject]:
    """One subject for all the tests (they are grouped by subject; its builds freed after)."""
    sid = request.param
    if sid in EXPORTS:
        folder = request.getfixturevalue("exports")[sid]
        subj = Subject(sid, f"local-dir:{folder}", sid.removeprefix("export_"), pretrained=True)
    elif sid in TINY_ARCHS:
        arch = TINY_ARCHS[sid]
        subj = Subject(sid, "archsearch_net", arch["macro"], {"arch": arch})
    else:
        subj = Subject(sid, sid, reference_config(sid).macro)
    yield subj
    subj._cache.clear()


def each(ids: list[str] | tuple[str, ...] = tuple(SUBJECTS)) -> Any:
    return pytest.mark.parametrize("subject", list(ids), indirect=True, scope="module")


#: Subjects of the costliest checks (torch.export, FX in training mode, constructor variants):
#: the tiny architectures and the exports hold every layer type the references are made of.
TINY_AND_EXPORTS = [*TINY_ARCHS, *EXPORTS]


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> None:
    """Every test here on one thread."""


def _input(model: nn.Module, side: int = SMALL, batch: int = 1) -> torch.Tensor:
    chans = model.pretrained_cfg["input_size"][0]
    return torch.randn(batch, chans, side, side)


def _fx_tracer() -> fx.Tracer:
    """A tracer with timm's leaf modules and functions (what timm's FX feature extraction uses)."""
    leaves = tuple(get_notrace_modules())

    class Tracer(fx.Tracer):
        def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
            return isinstance(m, leaves) or super().is_leaf_module(m, qualname)

    return Tracer(autowrap_functions=tuple(get_notrace_functions()))


def _fx_model(model: nn.Module) -> fx.GraphModule:
    return fx.GraphModule(model, _fx_tracer().trace(model))


# --------------------------------------------------------------------------- forward / backward
@each()
def test_forward_and_grad_checkpointing(subject: Subject) -> None:
    model = subject.model()
    x = _input(model)
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, model.num_classes) and not torch.isnan(out).any()
        model.set_grad_checkpointing()
        assert torch.allclose(model(x), out, rtol=1e-4, atol=1e-5)


@each()
def test_backward_reaches_every_parameter(subject: Subject) -> None:
    model = subject.model(num_classes=42, drop_path_rate=0.0).train()
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert not frozen, f"frozen parameters (fixed tensors belong in buffers): {frozen}"
    x = _input(model, batch=2)
    out = model(x)
    assert out.shape == (2, 42) and not torch.isnan(out).any()
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing}"
    if subject.reference:
        return  # checkpointed gradients: on the tiny and exported models (same code)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    # gradient checkpointing recomputes the blocks in backward: same gradients
    model.zero_grad(set_to_none=True)
    model.set_grad_checkpointing(True)
    model(x).mean().backward()
    for n, p in model.named_parameters():
        assert p.grad is not None and torch.allclose(p.grad, grads[n], rtol=1e-4, atol=1e-6), n


# --------------------------------------------------------------------------- config and head
def _expected_tokens(model: nn.Module, pool_size: tuple[int, int]) -> int:
    """Tokens of a columnar model's ``forward_features`` on a ``pool_size`` token grid."""
    n = model.num_prefix_tokens + pool_size[0] * pool_size[1]
    if model.lookup:
        n += min(model.compressed_grid, pool_size[0]) * min(model.compressed_grid, pool_size[1])
    return n


@each()
def test_pretrained_cfg_and_head_interface(subject: Subject) -> None:
    model = subject.model()
    cfg = model.pretrained_cfg
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    state = model.state_dict()
    # first_conv names the layer that reads the image; classifier the layer(s) timm drops
    first = cfg["first_conv"]
    assert isinstance(first, str) and first + ".weight" in state, first
    stem = model.get_submodule(first)
    chans = cfg["input_size"][0]
    if isinstance(stem, nn.Conv2d):
        assert stem.in_channels == chans
    else:  # T2T: a Linear on unfolded 7x7 patches
        assert isinstance(stem, nn.Linear) and stem.in_features == chans * 49
    if cfg.get("num_classes"):
        classifiers = cfg["classifier"]
        classifiers = [classifiers] if isinstance(classifiers, str) else classifiers
        for c in classifiers:
            assert c + ".weight" in state, c
            assert isinstance(model.get_submodule(c), nn.Linear)

    # pool_size: the final feature grid at the config's input size
    pool_size = tuple(cfg["pool_size"])
    with torch.no_grad():
        full = model.forward_features(torch.randn(1, *cfg["input_size"]))
    if subject.macro == "hierarchical":
        assert full.shape[1] == model.num_features and tuple(full.shape[-2:]) == pool_size
    else:
        assert full.shape[-1] == model.num_features
        assert full.shape[1] == _expected_tokens(model, pool_size)

    x = _input(model)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.shape == pre.shape and torch.allclose(out, pre)
        model.reset_classifier(0, "")  # no pooling: forward gives the unpooled features
        assert torch.allclose(model(x), feats)
        if not subject.reference:  # the same constructor path for every archsearch model
            assert subject.create(num_classes=0, global_pool="")(x).shape == feats.shape


@each()
def test_global_pool_values(subject: Subject) -> None:
    model = subject.model()
    x = _input(model)
    hier = subject.macro == "hierarchical"
    pools = HIERARCHICAL_POOLS if hier else COLUMNAR_POOLS
    with torch.no_grad():
        feats = model.forward_features(x)
        for pool in pools:
            if pool == "token" and not model.num_prefix_tokens:
                with pytest.raises(ValueError, match="global_pool"):
                    model.reset_classifier(5, pool)
                continue
            if pool == "" and getattr(model, "lookup", False):
                with pytest.raises(ValueError, match="global_pool"):
                    model.reset_classifier(5, pool)  # two heads read pooled features
                model.reset_classifier(0, pool)
                assert model(x).shape == feats.shape
                continue
            model.reset_classifier(5, pool)
            assert model.global_pool == pool
            out = model(x)
            if pool:
                assert out.shape == (1, 5)
            elif hier:  # per-position logits
                assert out.shape == (1, 5, *feats.shape[-2:])
            else:  # per-token logits
                assert out.shape == (*feats.shape[:2], 5)
        with pytest.raises(ValueError, match="global_pool"):
            model.reset_classifier(5, "nope")
    if not subject.reference:  # the same constructor path for every archsearch model
        assert subject.create(global_pool="max").global_pool == "max"


# --------------------------------------------------------------------------- features
def _check_features(outputs: list[torch.Tensor], info: FeatureInfo, fmt: str, side: int) -> None:
    channels, reductions = info.channels(), info.reduction()
    assert len(outputs) == len(channels)
    for c, r, o in zip(channels, reductions, outputs):
        assert o.shape[0] == 1 and not torch.isnan(o).any()
        if fmt == "NCHW":
            assert o.shape[1] == c and o.ndim == 4
            spatial = o.shape[-2:]
        else:
            assert o.shape[-1] == c and o.ndim == 4
            spatial = o.shape[1:3]
        assert all(s <= math.ceil(side / r) + 1 for s in spatial), (o.shape, r)


@each()
def test_features_only(subject: Subject) -> None:
    """timm's default extractor: hooks on the stages (hierarchical), the getter (columnar)."""
    model = subject.create(features_only=True)
    info = model.feature_info
    if subject.macro == "hierarchical":
        assert len(info.channels()) == len(subject.config.stages)
    else:
        assert len(info.channels()) == min(3, subject.config.depth)
    with torch.no_grad():
        _check_features(model(_input(model)), info, "NCHW", SMALL)


HIERARCHICAL_TINY_AND_EXPORT = [
    *(k for k, a in TINY_ARCHS.items() if a["macro"] == "hierarchical"),
    "export_hierarchical",
]


@each(HIERARCHICAL_TINY_AND_EXPORT)
@pytest.mark.parametrize("feature_cls", ["getter", "fx"])
@pytest.mark.filterwarnings("ignore:The nodes obtained by tracing the model in train mode")
def test_features_only_getter_and_fx(subject: Subject, feature_cls: str) -> None:
    """timm's other extractors on hierarchical models (columnar ones use the getter already)."""
    last = len(subject.config.stages) - 1
    model = subject.create(features_only=True, feature_cls=feature_cls, out_indices=(0, last))
    info = model.feature_info
    assert info.module_name() == ["stages.0", f"stages.{last}"]
    with torch.no_grad():
        _check_features(model(_input(model)), info, "NCHW", SMALL)


@each()
def test_forward_intermediates(subject: Subject) -> None:
    model = subject.model()
    info = FeatureInfo(model.feature_info, list(range(len(model.feature_info))))
    x = _input(model)
    hier = subject.macro == "hierarchical"
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NCHW")
        _check_features(inter, info, "NCHW", SMALL)
        assert torch.allclose(final, model.forward_features(x))
        # timm's arguments: last-n, negative indices, stop_early, intermediates_only, norm, fmt
        n = min(2, len(inter))
        last = model.forward_intermediates(x, indices=n, intermediates_only=True)
        assert len(last) == n and all(torch.allclose(a, b) for a, b in zip(last, inter[-n:]))
        first = model.forward_intermediates(x, indices=[0, -1], stop_early=True)[1]
        assert torch.allclose(first[0], inter[0]) and torch.allclose(first[-1], inter[-1])
        early = model.forward_intermediates(x, indices=[0], stop_early=True)[1]
        assert torch.allclose(early[0], inter[0])
        fmt = "NHWC" if hier else "NLC"
        other = model.forward_intermediates(x, output_fmt=fmt, intermediates_only=True)
        for a, b in zip(other, inter):
            flat = b.permute(0, 2, 3, 1)
            assert torch.allclose(a, flat if hier else flat.flatten(1, 2))
        normed = model.forward_intermediates(x, norm=True, intermediates_only=True)
        if hier:  # every stage output is already normalised by its stage's norm
            assert all(torch.allclose(a, b) for a, b in zip(normed, inter))
        else:
            assert not torch.allclose(normed[-1], inter[-1])
        if not hier and model.num_prefix_tokens:
            pairs = model.forward_intermediates(x, return_prefix_tokens=True)[1]
            assert all(p.shape == (1, 1, model.num_features) for _, p in pairs)
        model.set_grad_checkpointing()
        again, _ = model.forward_intermediates(x)
        assert torch.allclose(again, final, rtol=1e-4, atol=1e-5)
        with pytest.raises(ValueError, match="output_fmt"):
            model.forward_intermediates(x, output_fmt="NCL")


@each()
def test_prune_intermediate_layers(subject: Subject) -> None:
    model = subject.model()
    x = _input(model)
    with torch.no_grad():
        _, inter = model.forward_intermediates(x)
        kept = model.prune_intermediate_layers([0])
        assert kept == [0] and model.num_classes == 0 and model.global_pool == ""
        assert len(model.stages if subject.macro == "hierarchical" else model.blocks) == 1
        (pruned,) = model.forward_intermediates(x, indices=[0], intermediates_only=True)
        assert torch.allclose(pruned, inter[0])
        assert model(x).shape[0] == 1  # the pruned model still runs (unpooled, no head)


# --------------------------------------------------------------------------- tracing / export
@each()
def test_fx_trace_forward_and_backward(subject: Subject) -> None:
    model = subject.model()
    x = _input(model)
    with torch.inference_mode():
        out = model(x)
        traced = _fx_model(model)(x)
    assert torch.equal(traced, out)
    if subject.reference:
        return  # plain torch.fx and training-mode graphs: on the tiny and exported models
    if not getattr(model, "lookup", False):  # LookupBlock is a leaf of timm's tracer only
        with torch.inference_mode():
            assert torch.equal(fx.symbolic_trace(model)(x), out)
    train = subject.model(num_classes=42, drop_path_rate=0.0).train()
    graph = _fx_model(train)
    y = graph(_input(train, batch=2))
    assert y.shape == (2, 42)
    y.mean().backward()
    missing = [n for n, p in graph.named_parameters() if p.grad is None]
    assert not missing, f"no gradient through the FX graph for {missing}"


@each(TINY_AND_EXPORTS)
def test_torch_export(subject: Subject) -> None:
    model = subject.model()
    x = _input(model)
    with torch.no_grad():
        out = model(x)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), out, atol=1e-5)


# --------------------------------------------------------------------------- exports
@each(EXPORTS)
def test_export_loads_at_another_img_size(subject: Subject) -> None:
    saved = subject.model()
    other = subject.create(img_size=48)
    x = _input(saved, side=48)
    if subject.macro == "columnar":  # resampled (timm's resample_abs_pos_embed) on load
        grid = other.grid[0] * other.grid[1]
        assert other.pos_embed.shape[1] == other.num_prefix_tokens + grid
        assert other.pos_embed.shape != saved.pos_embed.shape
    with torch.no_grad():
        assert torch.allclose(other(x), saved(x), atol=1e-6)  # as the saved model at 48 px


@each(EXPORTS)
def test_export_loads_with_other_in_chans_and_classes(subject: Subject) -> None:
    saved = subject.model()
    x = _input(saved)
    assert x.shape[1] == 1  # the proxy data is grayscale
    rgb = subject.create(in_chans=3, num_classes=5)
    with torch.no_grad():
        assert rgb(x.repeat(1, 3, 1, 1)).shape == (1, 5)
        # timm's input adaptation: the same image in 3 channels gives the same features
        assert torch.allclose(
            rgb.forward_features(x.repeat(1, 3, 1, 1)), saved.forward_features(x), atol=1e-5
        )
        bare = subject.create(num_classes=0)
        assert torch.allclose(bare(x), saved.forward_head(saved.forward_features(x), True))


def test_fixed_tensors_are_saved_buffers_and_old_checkpoints_load() -> None:
    model = timm.create_model("t2t_vit_7", num_classes=3, img_size=64)
    params = {n for n, _ in model.named_parameters()}
    buffers = {n for n, _ in model.named_buffers()}
    fixed = {"pos_embed", "patch_embed.t2t1.w", "patch_embed.t2t2.w"}
    assert fixed <= buffers and not fixed & params
    state = model.state_dict()
    assert fixed <= set(state)
    assert torch.equal(state["pos_embed"], sincos_1d(1 + 16, 256))
    # a checkpoint written when they were (frozen) parameters has the same keys and loads
    other = timm.create_model("t2t_vit_7", num_classes=3, img_size=64)
    other.load_state_dict(state, strict=True)
    assert torch.equal(other.patch_embed.t2t1.w, model.patch_embed.t2t1.w)
