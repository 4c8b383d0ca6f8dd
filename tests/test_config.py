from __future__ import annotations

import json

import pytest

from archsearch.config import ArchConfig, StageConfig, load_config
from archsearch.errors import ConfigError
from archsearch.models import reference_config, reference_names


@pytest.mark.parametrize("name", reference_names())
def test_round_trip_json_and_yaml(name: str) -> None:
    cfg = reference_config(name)
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    assert ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ArchConfig.from_json(cfg.to_json()).archid == cfg.archid


def test_archid_is_independent_of_key_order_and_int_float() -> None:
    cfg = reference_config("lvt")
    d = cfg.to_dict()
    shuffled = json.loads(json.dumps(d, sort_keys=False))
    shuffled = dict(reversed(list(shuffled.items())))
    shuffled["stages"] = [dict(reversed(list(s.items()))) for s in shuffled["stages"]]
    shuffled["stages"][0]["mlp_ratio"] = 4  # int spelling of 4.0
    assert ArchConfig.from_dict(shuffled).archid == cfg.archid
    assert len(cfg.archid) == 12
    assert reference_config("t2t_vit_7").archid != reference_config("t2t_vit_10").archid


def test_archid_is_stable_across_releases() -> None:
    # The archid is a persisted identifier (run directories, trials.csv): it must not drift.
    cfg = ArchConfig(macro="columnar", stages=(StageConfig(depth=2, dim=32, heads=2),))
    assert cfg.to_json() == (
        '{"cb":{"kind":"none","layers":"all","position":"mlp_end"},"class_token":false,'
        '"drop_path_rate":0.0,"macro":"columnar","pos_embed":"none","stages":[{"depth":2,'
        '"dim":32,"heads":2,"kernel_size":3,"lookup_grid":0,"mixer":"attn","mlp":"mlp",'
        '"mlp_ratio":4.0,"qkv_bias":false,"recursion":1,"sr_ratio":1}],"tokenizer":'
        '{"kind":"patch","patch_size":16,"t2t_dim":64}}'
    )


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stages": [{"depth": 2, "dim": 100, "heads": 3}]}, "stages[0].dim"),
        ({"stages": [{"depth": 2, "dim": 96, "heads": 3, "mixer": "foo"}]}, "stages[0].mixer"),
        ({"stages": [{"depth": 2, "dim": 96, "heads": 3, "mixer": "csa"}]}, "stages[0].mixer"),
        ({"stages": [{"depth": 2, "dim": 96, "heads": 3, "bogus": 1}]}, "unknown key 'bogus'"),
        ({"stages": [{"depth": 2, "dim": 96, "heads": 3, "recursion": 2}]}, "recursion"),
        ({"macro": "pyramid"}, "macro"),
        ({"tokenizer": {"kind": "overlap_patch"}}, "tokenizer.kind"),
        ({"cb": {"kind": "cb", "position": "nowhere"}}, "cb.position"),
        ({"stages": []}, "stages"),
        ({"stages": [{"depth": 0, "dim": 96, "heads": 3}]}, "stages[0].depth"),
    ],
)
def test_validation_names_field_and_value(change: dict, message: str) -> None:
    base = {"macro": "columnar", "stages": [{"depth": 2, "dim": 96, "heads": 3}]}
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict({**base, **change})
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_hierarchical_rules() -> None:
    with pytest.raises(ConfigError, match="pos_embed"):
        ArchConfig(
            macro="hierarchical",
            tokenizer={"kind": "overlap_patch", "patch_size": 4},  # type: ignore[arg-type]
            stages=(StageConfig(depth=1, dim=32, heads=1),),
            pos_embed="learned",
        )
    with pytest.raises(ConfigError, match="1 to 4 stages"):
        ArchConfig(
            macro="hierarchical",
            tokenizer={"kind": "overlap_patch", "patch_size": 4},  # type: ignore[arg-type]
            stages=tuple(StageConfig(depth=1, dim=32, heads=1) for _ in range(5)),
        )


def test_cb_deeper_half() -> None:
    cfg = ArchConfig.from_dict(
        {
            "macro": "columnar",
            "stages": [{"depth": 6, "dim": 32, "heads": 2}],
            "cb": {"kind": "cb", "layers": "deeper_half"},
        }
    )
    assert [cfg.cb_enabled(i) for i in range(6)] == [False] * 3 + [True] * 3


def test_load_config_files(tmp_path) -> None:
    cfg = reference_config("lvt")
    (tmp_path / "a.json").write_text(cfg.to_json(indent=2))
    (tmp_path / "a.yaml").write_text(cfg.to_yaml())
    assert load_config(tmp_path / "a.json") == cfg
    assert load_config(tmp_path / "a.yaml") == cfg
    (tmp_path / "bad.yaml").write_text("macro: [unclosed")
    with pytest.raises(ConfigError, match="YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="existing file"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "a.txt").write_text("{}")
    with pytest.raises(ConfigError, match=r"\.json, \.yaml"):
        load_config(tmp_path / "a.txt")


def test_lookup_multires_leaves_single_grid_archids_alone() -> None:
    # A lookup design without multi-resolution: the same JSON and archid as before the field.
    stage = {"depth": 2, "dim": 32, "heads": 2, "mixer": "lookup", "lookup_grid": 5}
    cfg = ArchConfig.from_dict({"macro": "columnar", "stages": [stage]})
    assert "lookup_multires" not in cfg.to_json()
    assert cfg.archid == "25be2eaa5dfc"
    assert reference_config("lookupvit_tiny").archid == "5142890a5ab1"
    multi = ArchConfig.from_dict(
        {"macro": "columnar", "stages": [{**stage, "lookup_multires": [7, 3, 5]}]}
    )
    assert multi.stages[0].lookup_multires == (3, 5, 7)
    assert json.loads(multi.to_json())["stages"][0]["lookup_multires"] == [3, 5, 7]
    assert ArchConfig.from_yaml(multi.to_yaml()) == multi
    assert multi.archid != cfg.archid


@pytest.mark.parametrize(
    "multires, message",
    [
        ([5], "stages[0].lookup_multires: expected at least two distinct grid sides"),
        ([3, 7], "stages[0].lookup_grid: expected one of lookup_multires [3, 7], got 5"),
        ([5, 65], "stages[0].lookup_multires[1]: expected an integer in [1, 64], got 65"),
    ],
)
def test_lookup_multires_validation(multires: list, message: str) -> None:
    stage = {"depth": 2, "dim": 32, "heads": 2, "mixer": "lookup", "lookup_grid": 5}
    with pytest.raises(ConfigError) as err:
        ArchConfig.from_dict(
            {"macro": "columnar", "stages": [{**stage, "lookup_multires": multires}]}
        )
    assert message in str(err.value)
    assert "\n" not in str(err.value)
