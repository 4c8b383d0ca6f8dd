"""LookupViT multi-resolution: config, per-batch grid draws, per-grid scores and costs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from archsearch.blocks import notation
from archsearch.config import ArchConfig, StageConfig
from archsearch.cost import Budget, count
from archsearch.cost.analytic import estimate
from archsearch.cost.candidate import CostTarget
from archsearch.errors import ConfigError
from archsearch.layers.lookup import MultiResolution, attach_multires
from archsearch.models import build_model
from archsearch.train import ImageData, ProxySchedule, load_dataset, load_weights, train_proxy
from archsearch.train.candidate import Trainer
from archsearch.train.multires import (
    effective_grids,
    grid_configs,
    grid_costs,
    is_multires,
    train_multires,
    training_archid,
)

pytestmark = pytest.mark.usefixtures("one_thread")
GRIDS = (2, 3, 4)


def tiny(pos_embed: str = "sincos", **stage: object) -> ArchConfig:
    """A one-block LookupViT on 4x4 patches: 16 px images give a 4x4 lookup grid."""
    s = {"depth": 1, "dim": 16, "heads": 2, "mixer": "lookup", "lookup_grid": 3}
    return ArchConfig.from_dict(
        {
            "macro": "columnar",
            "tokenizer": {"kind": "patch", "patch_size": 4},
            "pos_embed": pos_embed,
            "stages": [{**s, "lookup_multires": list(GRIDS), **stage}],
        }
    )


@pytest.fixture(scope="module")
def synthetic() -> ImageData:
    return load_dataset("synthetic")


def schedule() -> ProxySchedule:  # 32 steps of 16 images: every grid drawn
    return ProxySchedule.for_device("cpu", epochs=1, img_size=16, subset=512, batch_size=16)


# --------------------------------------------------------------------------- training, scoring
def test_training_draws_every_grid_and_scores_each(synthetic: ImageData, tmp_path: Path) -> None:
    cfg = tiny()
    trainer = Trainer(synthetic, schedule(), torch.device("cpu"), seed=0)
    out = train_multires(trainer, cfg, weights=tmp_path / "w.safetensors")
    assert set(out.draws) == set(GRIDS) and all(n > 0 for n in out.draws.values())
    assert sum(out.draws.values()) == 512 // 16
    assert [g.grid for g in out.grids] == list(GRIDS)
    assert [g.run_grid for g in out.grids] == list(GRIDS)  # 4x4 lookup tokens: none clipped
    n_val = int(synthetic.val_x.shape[0])
    for g in out.grids:
        assert 0.0 <= g.accuracy <= 1.0 and g.val_images == n_val
        assert g.accuracy_se == pytest.approx((g.accuracy * (1 - g.accuracy) / n_val) ** 0.5)
    assert out.grids[1].accuracy == out.history[-1]  # lookup_grid 3 is the per-epoch grid
    rows = out.rows()
    assert [c.archid for c, _ in rows] == [g.archid for g in out.grids]
    assert len({c.archid for c, _ in rows}) == 3
    assert {o.train_seconds for _, o in rows} == {out.train_seconds}  # one shared training
    assert {o.weights for _, o in rows} == {tmp_path / "w.safetensors"}
    for c in grid_configs(cfg):  # one weights file for every grid config
        load_weights(
            build_model(c, num_classes=synthetic.num_classes, in_chans=1, img_size=16), out.weights
        )
    # the same training whichever grid config of the set the search drew
    again = train_multires(trainer, replace_grid(cfg, 4))
    assert [g.accuracy for g in again.grids] == [g.accuracy for g in out.grids]


def replace_grid(cfg: ArchConfig, grid: int) -> ArchConfig:
    return cfg.replace(stages=(replace(cfg.stages[0], lookup_grid=grid),))


def test_compressed_tokens_follow_the_draws(synthetic: ImageData) -> None:
    cfg = tiny()
    model = build_model(cfg, num_classes=synthetic.num_classes, in_chans=1, img_size=16)
    mr = attach_multires(model, GRIDS, eval_grid=3, seed=0)
    seen: list[tuple[bool, int]] = []
    model.blocks[0].register_forward_pre_hook(
        lambda m, args: seen.append((m.training, args[1].shape[1]))
    )
    train_proxy(model, synthetic, schedule(), device="cpu", seed=0)
    train = [m for training, m in seen if training]
    assert sorted(set(train)) == [g * g for g in GRIDS]
    assert {g: train.count(g * g) for g in GRIDS} == mr.draws
    assert {m for training, m in seen if not training} == {9}  # evaluation at eval_grid
    model.eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        for g in GRIDS:
            with mr.evaluating_at(model, g):
                assert model.forward_features(x).shape[1] == 16 + g * g
                model(x)
                assert seen[-1] == (False, g * g)
        model(x)
    assert seen[-1] == (False, 9) and model.compressed_grid == 3
    model.set_compressed_grid(2)  # the model's own control still chooses the evaluation grid
    with torch.no_grad():
        model(x)
    assert seen[-1] == (False, 4)
    with pytest.raises(ValueError, match="grid: expected one of"), mr.evaluating_at(model, 5):
        pass


def test_draws_are_seeded_and_leave_the_global_rng_alone() -> None:
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    a, b = MultiResolution(GRIDS, seed=1), MultiResolution(GRIDS, seed=1)
    assert [a.draw() for _ in range(20)] == [b.draw() for _ in range(20)]
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="model: expected a LookupViT model"):
        attach_multires(torch.nn.Linear(2, 2), GRIDS, eval_grid=3)


def test_clipped_grids_are_reported(synthetic: ImageData) -> None:
    cfg = tiny(lookup_multires=[2, 3, 5], lookup_grid=5)
    assert effective_grids(cfg, 16) == {2: 2, 3: 3, 5: 4}
    assert effective_grids(cfg, 8) == {2: 2, 3: 2, 5: 2}  # a 2x2 token grid: one network


def test_refuses_a_single_grid_design(synthetic: ImageData) -> None:
    cfg = tiny(lookup_multires=[])
    assert not is_multires(cfg)
    trainer = Trainer(synthetic, schedule(), torch.device("cpu"), seed=0)
    with pytest.raises(ConfigError, match="lookup_multires") as err:
        train_multires(trainer, cfg)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- costs
def test_counted_macs_per_grid_match_the_closed_form() -> None:
    cfg = tiny("learned", depth=2)
    configs = grid_configs(cfg)
    assert [c.stages[0].lookup_grid for c in configs] == list(GRIDS)
    macs, params = [], []
    for c in configs:
        rep = count(c, img_size=16, in_chans=1, num_classes=10)
        est = estimate(c, img_size=16, in_chans=1, num_classes=10)
        assert (rep.macs, rep.params) == (est.macs, est.params)
        macs.append(rep.macs)
        params.append(rep.params)
    assert macs == sorted(set(macs))  # more compressed tokens, more MACs
    assert len(set(params)) == 1  # the compressed tokens have no weights
    target = CostTarget(img_size=16, in_chans=1, num_classes=10)
    recs = grid_costs(cfg, Budget(), target)
    assert list(recs) == list(GRIDS)
    assert [r.macs for r in recs.values()] == macs
    assert {r.counted_by for r in recs.values()} == {"fvcore"}
    limit = Budget(macs=(macs[0] + macs[1]) // 2)  # only the smallest grid fits
    assert [r.feasible for r in grid_costs(cfg, limit, target, audit=False).values()] == [
        True,
        False,
        False,
    ]


# --------------------------------------------------------------------------- config
def test_ids_notation_and_round_trip() -> None:
    cfg = tiny()
    assert ArchConfig.from_json(cfg.to_json()) == cfg
    assert ArchConfig.from_yaml(cfg.to_yaml()) == cfg
    assert tiny(lookup_multires=[4, 2, 3]) == cfg  # a set: one spelling, one archid
    assert cfg.stages[0].lookup_multires == GRIDS
    single = tiny(lookup_multires=[])
    assert "lookup_multires" not in single.to_json()  # single-grid JSON and archid unchanged
    assert single.archid != cfg.archid
    ids = {c.archid for c in grid_configs(cfg)}
    assert len(ids) == 3 and cfg.archid in ids and single.archid not in ids
    assert {training_archid(c) for c in grid_configs(cfg)} == {training_archid(cfg)}
    assert notation(cfg) == "patch+lookup3of2-3-4x1@16h2m4"
    assert notation(single) == "patch+lookup3x1@16h2m4"


@pytest.mark.parametrize(
    "stage, message",
    [
        ({"lookup_multires": [3]}, "stages[0].lookup_multires: expected at least two distinct"),
        ({"lookup_multires": [3, 3]}, "stages[0].lookup_multires: expected at least two distinct"),
        ({"lookup_multires": [0, 3]}, "stages[0].lookup_multires[0]: expected an integer in"),
        ({"lookup_multires": [3, True]}, "stages[0].lookup_multires[1]: expected an integer"),
        ({"lookup_multires": [3, "5"]}, "stages[0].lookup_multires[1]: expected an integer"),
        ({"lookup_multires": 5}, "stages[0].lookup_multires: expected a list of"),
        ({"lookup_multires": [5, 7]}, "stages[0].lookup_grid: expected one of lookup_multires"),
        (
            {"mixer": "attn", "lookup_grid": 0, "lookup_multires": [3, 5]},
            "stages[0].lookup_multires: expected empty unless mixer is 'lookup'",
        ),
    ],
)
def test_validation_errors_are_one_line(stage: dict, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        tiny(**stage)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_stage_config_default_is_single_grid() -> None:
    assert StageConfig(depth=1, dim=16, heads=2).lookup_multires == ()


# --------------------------------------------------------------------------- in the search
def multires_space(folder: Path) -> Path:
    """A space of exactly two architectures: one LookupViT at grid 2 or 4, trained at both."""
    path = folder / "mr.yaml"
    path.write_text(
        "macro: columnar\ntokenizer: {kind: patch, patch_size: 4}\npos_embed: sincos\n"
        "stages:\n  - {depth: 1, dim: 16, heads: 2, mixer: lookup, lookup_grid: [2, 4],"
        " lookup_multires: true}\n"
    )
    return path


@pytest.fixture(scope="module")
def mr_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests._tiny import tiny_run

    tmp = tmp_path_factory.mktemp("mr")
    return tiny_run(tmp / "run", space=str(multires_space(tmp)), trials=2, budget="1M-params")


def test_search_records_one_row_per_grid_from_one_training(mr_run: Path) -> None:
    from archsearch.records import read_trials

    t = read_trials(mr_run / "trials.csv")
    done = t[(t["state"] == "COMPLETE") & t["reused_from"].isna()]
    assert len(done) == 2, done
    trained, grid = done[done["trained_with"].isna()].iloc[0], done[done["trained_with"].notna()]
    assert len(grid) == 1 and int(grid.iloc[0]["trained_with"]) == int(trained["trial"])
    sibling = grid.iloc[0]
    configs = [ArchConfig.from_json(r["config"]) for r in (trained, sibling)]
    assert {c.stages[0].lookup_grid for c in configs} == {2, 4}
    assert trained["archid"] != sibling["archid"]
    # own counts (the compressed tokens cost MACs, no params), own accuracy, one training time
    assert trained["params"] == sibling["params"] and trained["macs"] != sibling["macs"]
    by_grid = {c.stages[0].lookup_grid: int(r["macs"]) for c, r in zip(configs, (trained, sibling))}
    assert by_grid[2] < by_grid[4]
    for r in (trained, sibling):
        assert 0 <= r["proxy_accuracy"] <= 1 and r["accuracy_se"] > 0 and r["feasible"]
    assert trained["train_seconds"] == sibling["train_seconds"]
    # one weights file (kept while a grid of it is on the front)
    files = {w for w in (trained["weights"], sibling["weights"]) if not pd.isna(w)}
    assert len(files) == 1 and (mr_run / files.pop()).is_file()


def test_a_sampled_sibling_grid_reuses_the_shared_training(mr_run: Path) -> None:
    """Only two architectures exist and both came from the first training: every later sample
    is a repeat, so the second trial never trains (the run ends as exhausted)."""
    from archsearch.records import read_trials

    t = read_trials(mr_run / "trials.csv")
    trainings = t[(t["state"] == "COMPLETE") & t["reused_from"].isna() & t["trained_with"].isna()]
    assert len(trainings) == 1
    assert t["reused_from"].notna().sum() >= 1
    assert (t.loc[t["reused_from"].notna(), "train_seconds"] == 0).all()  # repeats train nothing


def test_export_of_a_grid_design_names_its_grid_and_runs_at_the_others(
    mr_run: Path, tmp_path: Path
) -> None:
    import json

    import timm

    from archsearch.export import export
    from archsearch.records import read_trials

    t = read_trials(mr_run / "trials.csv")
    sibling = t[t["trained_with"].notna()].iloc[0]
    (folder,) = export(mr_run, trial=int(sibling["trial"]), out=tmp_path / "out")
    cfg = json.loads((folder / "config.json").read_text())
    grid = ArchConfig.from_json(sibling["config"]).stages[0].lookup_grid
    assert cfg["archsearch"]["lookup_grid"] == grid
    assert cfg["archsearch"]["lookup_grids"] == [2, 4]
    assert cfg["model_args"]["arch"]["stages"][0]["lookup_grid"] == grid
    assert "set_compressed_grid" in (folder / "README.md").read_text()
    model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        at_own = model(x)
        model.set_compressed_grid(6 - grid)  # the other grid of the set
        at_other = model(x)
    assert at_own.shape == at_other.shape == (2, 10)
    assert not torch.allclose(at_own, at_other)


def test_insights_pair_the_grids_of_one_training(mr_run: Path) -> None:
    from archsearch.insights import analyse
    from archsearch.records import read_trials

    t = read_trials(mr_run / "trials.csv")
    rows = t[(t["state"] == "COMPLETE") & t["reused_from"].isna()]
    acc = {ArchConfig.from_json(r["config"]).stages[0].lookup_grid: r for _, r in rows.iterrows()}
    found = analyse(mr_run, n_boot=50)
    (claim,) = [c for c in found["claims"] if c["id"] == "lookup"]
    (part,) = [p for p in claim["parts"] if p["part"] == "lookup_multires"]
    assert part["pairs"] == 1 and part["n"] == 1
    diff = acc[2]["proxy_accuracy"] - acc[4]["proxy_accuracy"]
    assert part["effect"] == pytest.approx(diff)
    lo, hi = part["ci"]
    assert lo < diff < hi  # the validation error of the difference
    assert part["macs"]["effect"] == pytest.approx(acc[2]["macs"] / acc[4]["macs"] - 1)
    assert part["macs"]["effect"] < 0
    assert part["verdict"] in ("supported", "contradicted", "cannot tell")


def test_a_finalist_seed_is_one_training_for_every_grid(tmp_path: Path) -> None:
    """Both grids are designs of their own; a finalist's seed repeat of one trains every grid,
    so it is recorded as that seed's repeat of the other grid too, not trained again."""
    from archsearch.records import read_trials
    from tests._tiny import tiny_run

    space = str(multires_space(tmp_path))
    run = tiny_run(tmp_path / "run", space=space, trials=2, budget="1M-params", final_seeds=2)
    t = read_trials(run / "trials.csv")
    done = t[t["state"] == "COMPLETE"]
    designs = done[done["reused_from"].isna() & done["repeat_of"].isna()]
    repeats = done[done["repeat_of"].notna()]
    assert len(designs) == 2 and len(repeats) == 2 and (repeats["seed"] == 1).all()
    # seed 1 of each grid's design, from one training
    assert set(repeats["repeat_of"].astype(int)) == set(designs["trial"].astype(int))
    trained = repeats[repeats["trained_with"].isna()]
    sibling = repeats[repeats["trained_with"].notna()]
    assert len(trained) == len(sibling) == 1
    assert int(sibling.iloc[0]["trained_with"]) == int(trained.iloc[0]["trial"])
    assert sibling.iloc[0]["train_seconds"] == trained.iloc[0]["train_seconds"] > 0
    by_design = dict(zip(designs["trial"].astype(int), designs["archid"]))
    for r in repeats.itertuples():
        assert r.archid == by_design[int(r.repeat_of)]
