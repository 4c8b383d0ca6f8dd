"""Every reference design and every block type through the builder: forward, backward, timm."""

from __future__ import annotations

import pytest
import timm
import torch

import archsearch  # noqa: F401  (registers the models in timm)
from archsearch.config import ArchConfig
from archsearch.errors import ConfigError
from archsearch.models import build_model, reference_config, reference_names


def _hier(mixer: str, **stage) -> ArchConfig:
    s1 = {"depth": 1, "dim": 16, "heads": 2, "mixer": mixer, **stage}
    s2 = {"depth": 1, "dim": 24, "heads": 2, "mixer": "rasa", "mlp": "conv_mlp", "sr_ratio": 2}
    return ArchConfig.from_dict(
        {
            "macro": "hierarchical",
            "tokenizer": {"kind": "overlap_patch", "patch_size": 4},
            "stages": [s1, s2],
        }
    )


def _col(**over) -> ArchConfig:
    base = {
        "macro": "columnar",
        "tokenizer": {"kind": "patch", "patch_size": 8},
        "stages": [{"depth": 2, "dim": 24, "heads": 2}],
        "pos_embed": "learned",
        "class_token": True,
    }
    return ArchConfig.from_dict({**base, **over})


#: One tiny config per block type and per option that builds different modules.
TINY = {
    "hier_attn": _hier("attn"),
    "hier_sra": _hier("sra", sr_ratio=2),
    "hier_rasa_r3": _hier("rasa", sr_ratio=2, recursion=3),
    "hier_csa": _hier("csa"),
    "hier_conv": _hier("conv", kernel_size=5),
    "hier_acmix": _hier("acmix", sr_ratio=2),
    "hier_conv_mlp": _hier("csa", mlp="conv_mlp"),
    "hier_conv_stem": _hier("conv").replace(tokenizer={"kind": "conv_stem", "patch_size": 4}),
    "col_attn": _col(),
    "col_sincos": _col(pos_embed="sincos"),
    "col_t2t_performer": _col(tokenizer={"kind": "t2t_performer", "patch_size": 16}),
    "col_t2t_transformer": _col(tokenizer={"kind": "t2t_transformer", "patch_size": 16}),
    "col_conv_stem": _col(tokenizer={"kind": "conv_stem", "patch_size": 8}),
    "col_lookup": _col(
        class_token=False,
        stages=[{"depth": 2, "dim": 24, "heads": 2, "mixer": "lookup", "lookup_grid": 2}],
    ),
}
for _kind in ("cb", "cbs"):
    for _pos in ("mlp_end", "mlp_mid", "mlp_front", "attn", "both"):
        TINY[f"col_{_kind}_{_pos}"] = _col(cb={"kind": _kind, "position": _pos})
    TINY[f"hier_{_kind}_deeper"] = _hier("csa").replace(
        cb={"kind": _kind, "position": "mlp_mid", "layers": "deeper_half"}
    )
TINY["lookup_cb"] = TINY["col_lookup"].replace(cb={"kind": "cbs", "position": "both"})


def _check_forward_backward(model: torch.nn.Module, x: torch.Tensor, classes: int) -> None:
    model.train()
    out = model(x)
    assert out.shape == (x.shape[0], classes)
    assert torch.isfinite(out).all()
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None)]
    assert not missing, f"parameters without gradient: {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def _check_timm_interface(model: torch.nn.Module, x: torch.Tensor, classes: int) -> None:
    model.eval()
    assert model.num_classes == classes
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        # head_hidden_size: what the classifier reads (LookupViT: two pooled token sets)
        assert pre.shape == (x.shape[0], model.head_hidden_size)
        assert model.forward_head(feats).shape == (x.shape[0], classes)
        names = {n for n, _ in model.named_parameters()}
        assert model.no_weight_decay() <= names
        model.reset_classifier(0)
        assert model(x).shape == (x.shape[0], model.head_hidden_size)
        model.reset_classifier(5)
        assert model(x).shape == (x.shape[0], 5)
    # num_features: the channels of forward_features' output; one feature_info entry per stage
    # (hierarchical) or per block (columnar, as timm's ViT)
    cfg = model.config
    if cfg.macro == "hierarchical":
        assert [f["num_chs"] for f in model.feature_info] == [s.dim for s in cfg.stages]
        assert feats.shape[1] == model.num_features == model.feature_info[-1]["num_chs"]
    else:
        assert [f["num_chs"] for f in model.feature_info] == [cfg.stages[0].dim] * cfg.depth
        assert feats.shape[-1] == model.num_features == cfg.stages[0].dim


@pytest.mark.parametrize("name", sorted(TINY))
def test_block_types_forward_backward_interface(name: str) -> None:
    cfg = TINY[name]
    model = build_model(cfg, num_classes=7, in_chans=1, img_size=32)
    x = torch.randn(2, 1, 32, 32)
    _check_forward_backward(model, x, 7)
    _check_timm_interface(model, x, 7)


@pytest.mark.parametrize("name", sorted(TINY))
def test_block_types_meta_build_and_timm_by_config(name: str) -> None:
    cfg = TINY[name]
    real = build_model(cfg, num_classes=7, in_chans=1, img_size=32)
    meta = build_model(cfg, num_classes=7, in_chans=1, img_size=32, device="meta")
    assert all(p.is_meta for p in meta.parameters())
    assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters())
    via_timm = timm.create_model(
        "archsearch_net", arch=cfg.to_dict(), num_classes=7, in_chans=1, img_size=32
    )
    assert via_timm.state_dict().keys() == real.state_dict().keys()


@pytest.mark.parametrize("name", reference_names())
def test_reference_designs(name: str) -> None:
    model = timm.create_model(name, num_classes=10, in_chans=3)
    cfg = reference_config(name)
    assert model.config == cfg
    x = torch.randn(2, 3, 64, 64)  # proxy-sized input; columnar models resize their pos embed
    _check_forward_backward(model, x, 10)
    _check_timm_interface(model, x, 10)
    meta = build_model(cfg, device="meta")
    assert sum(p.numel() for p in meta.parameters()) == sum(
        p.numel() for p in build_model(cfg).parameters()
    )


def test_timm_lists_reference_designs() -> None:
    listed = set(timm.list_models())
    assert set(reference_names()) | {"archsearch_net"} <= listed


def test_features_only_for_hierarchical() -> None:
    model = timm.create_model("lvt", features_only=True)
    feats = model(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [64, 64, 160, 256]
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]


def test_lookup_grid_is_selectable_at_run_time() -> None:
    model = build_model(reference_config("lookupvit_tiny"), num_classes=3).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        for g in (3, 5, 7):
            model.set_compressed_grid(g)
            feats = model.forward_features(x)
            assert feats.shape[1] == 196 + g * g
            assert model.forward_head(feats).shape == (1, 3)


def test_input_size_checks() -> None:
    with pytest.raises(ConfigError, match="sr_ratio"):
        build_model(reference_config("lvt"), img_size=16)
    with pytest.raises(ConfigError, match="img_size"):
        build_model(reference_config("vit_tiny_cb"), img_size=8)
    with pytest.raises(ConfigError, match="num_classes"):
        build_model(reference_config("lvt"), num_classes=-1)


def test_build_at_other_sizes() -> None:
    model = build_model(reference_config("t2t_vit_7"), num_classes=4, img_size=32).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, 4)
        assert model(torch.randn(1, 3, 48, 48)).shape == (1, 4)  # pos embed resized
    lvt = build_model(reference_config("lvt"), num_classes=4).eval()
    with torch.no_grad():
        assert lvt(torch.randn(1, 3, 256, 256)).shape == (1, 4)


def test_lookup_grid_never_exceeds_the_token_grid() -> None:
    from archsearch.cost.analytic import estimate

    cfg = reference_config("lookupvit_tiny")  # 5x5 compressed grid
    model = build_model(cfg, num_classes=3, img_size=32).eval()  # 2x2 lookup tokens at 32 px
    with torch.no_grad():
        feats = model.forward_features(torch.randn(1, 3, 32, 32))
        assert feats.shape[1] == 4 + 4
        assert model.forward_head(feats).shape == (1, 3)
    from archsearch.cost import count

    assert (
        count(model, img_size=32, num_classes=3).macs
        == estimate(cfg, img_size=32, num_classes=3, pos_embed_size=32).macs
    )
