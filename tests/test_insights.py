"""archsearch.insights: effects with intervals and verdicts, on synthetic tables and the
committed run."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archsearch.config import ArchConfig, CBConfig
from archsearch.cost.analytic import estimate as cost_estimate
from archsearch.insights import Designs, analyse, verdict, write_insights
from archsearch.insights.acmix import acmix_part, mixing_shares
from archsearch.insights.claims import PARTS, data_part
from archsearch.insights.designs import from_run
from archsearch.insights.dimensions import children, dimension_effects
from archsearch.insights.estimate import Estimate, matched_pairs
from archsearch.insights.exact import lookup_macs, rasa_macs
from archsearch.models import reference_config
from archsearch.report import load_run, write_report

COMMITTED = Path(__file__).resolve().parents[1] / "results" / "default-3.5M-params"
CLAIM_IDS = ["cb", "deep_narrow", "rasa", "acmix", "lookup", "csa"]
VERDICTS = {"supported", "contradicted", "cannot tell"}
NOISE = 0.01


# ------------------------------------------------------------------------- synthetic tables
def _designs(frame: dict, choices: list[str], n: int) -> Designs:
    params = frame.pop("params")
    base = {
        "archid": [f"d{i}" for i in range(n)],
        "trial": list(range(n)),
        "baseline": "",
        "seeds": 1,
        "seed_std": math.nan,
        "val_se": NOISE / 2,
        "var": NOISE**2,
        "params": params,
        "macs": params * 100.0,
        "config": [reference_config("lvt")] * n,
        "weights": None,
    }
    return Designs(pd.DataFrame({**base, **frame}), choices, NOISE, "synthetic")


def _table(seed: int, effect: float, *, n: int = 30, wide: bool = True) -> Designs:
    """Random designs over five choices; ``a`` ("x" or "y") moves accuracy by ``effect``, the
    others by their own amounts; Gaussian noise of sd :data:`NOISE`. ``wide``: a six-option
    choice makes matched pairs rare (the regression on every choice is used); narrow tables
    repeat designs' other choices often (matched pairs)."""
    rng = np.random.default_rng(seed)
    a = rng.choice(["x", "y"], n)
    b = rng.choice(["p", "q", "r"], n)
    c = rng.choice([True, False], n)
    d = rng.choice([1, 2, 3], n)
    e = rng.choice(list("uvwxyz") if wide else ["u"], n)
    acc = 0.7 + effect * (a == "y") + 0.02 * (b == "q") - 0.03 * (b == "r") + 0.01 * c + 0.01 * d
    acc += 0.01 * (e == "z") + rng.normal(0, NOISE, n)
    frame = {"accuracy": acc, "params": np.exp(rng.uniform(13.8, 14.9, n))}
    frame |= {"a": list(a), "b": list(b), "c": list(c), "d": [int(v) for v in d], "e": list(e)}
    return _designs(frame, ["a", "b", "c", "d", "e"], n)


def _focal(designs: Designs, seed: int) -> tuple[str, float, float, float, str]:
    """``(verdict, effect of "y" over "x", lo, hi, method)`` for choice ``a``."""
    (e,) = dimension_effects(designs, names=["a"], n_boot=100, seed=seed)
    sign = 1.0 if e["option"] == "y" else -1.0  # the reference is the more frequent option
    lo, hi = sorted(sign * v for v in e["accuracy"]["ci"])
    flipped = {"higher": "lower", "lower": "higher"}.get(e["verdict"], e["verdict"])
    verdict_y = e["verdict"] if sign > 0 else flipped
    return verdict_y, sign * e["accuracy"]["effect"], lo, hi, e["accuracy"]["method"]


@pytest.mark.parametrize("wide", [True, False], ids=["regression", "matched-pairs"])
def test_planted_effect_is_found_with_its_sign_and_covered(wide: bool) -> None:
    planted = 0.03
    found = [_focal(_table(s, planted, wide=wide), s) for s in range(40)]
    methods = {f[4].split(" ")[0] for f in found}
    assert ("regression" in methods) if wide else ("matched" in methods)
    higher = np.mean([f[0] == "higher" for f in found])
    covered = np.mean([f[2] <= planted <= f[3] for f in found])
    assert higher >= 0.9, found
    assert covered >= 0.9, found
    assert all(f[1] > 0 for f in found)


@pytest.mark.parametrize("wide", [True, False], ids=["regression", "matched-pairs"])
def test_no_effect_says_cannot_tell_in_at_least_90_percent(wide: bool) -> None:
    found = [_focal(_table(s, 0.0, wide=wide), s) for s in range(100)]
    cannot = np.mean([f[0] == "cannot tell" for f in found])
    covers_zero = np.mean([f[2] <= 0.0 <= f[3] for f in found])
    assert cannot >= 0.9 and covers_zero >= 0.9, (cannot, covers_zero)


def test_too_few_designs_give_a_hint_and_no_verdict() -> None:
    designs = _table(0, 0.05, n=12)  # 12 designs cannot carry the 12-term regression
    (e,) = dimension_effects(designs, names=["a"], n_boot=100)
    assert e["accuracy"]["method"].startswith("hint")
    assert e["accuracy"]["adjusted"] is False and e["verdict"] == "cannot tell"
    assert "not adjusted" in e["accuracy"]["reason"]
    assert e["macs"]["effect"] is None or math.isnan(e["macs"]["effect"])


def test_matched_pairs_noise_floor_and_verdict_rules() -> None:
    # One pair: the interval comes from the two designs' noise alone.
    one = matched_pairs(np.array([0.70, 0.75]), np.array([1e-4, 1e-4]), np.array([0.0, 1.0]),
                        ["k", "k"])  # fmt: skip
    assert one is not None and one.pairs == 1 and one.effect == pytest.approx(0.05)
    assert one.hi - one.effect == pytest.approx(1.959964 * math.sqrt(2e-4), rel=1e-5)
    assert verdict(one, "greater") == "supported" and verdict(one, "less") == "contradicted"
    assert matched_pairs(np.ones(2), np.ones(2), np.array([0.0, 1.0]), ["a", "b"]) is None
    small = Estimate(-0.004, -0.008, -0.001)
    assert verdict(small, "not_less", 0.01) == "supported"
    assert verdict(Estimate(-0.02, -0.03, -0.01), "not_less", 0.01) == "contradicted"
    assert verdict(Estimate(0.0, -0.02, 0.02), "not_less", 0.01) == "cannot tell"
    assert verdict(Estimate(0.05, 0.02, 0.08, adjusted=False), "greater") == "cannot tell"
    assert verdict(Estimate(), "greater") == "cannot tell"


def test_children_of_a_conditional_choice() -> None:
    f = pd.DataFrame(
        {
            "kind": ["none", "cb", "cbs", "none"],
            "position": [None, "end", "mid", None],
            "depth": [1, 2, 3, 4],
        }
    )
    cols = ["kind", "position", "depth"]
    # CB off against on: the position exists on one side only; between CB and CBS it must match.
    assert children(f[f["kind"].isin(["none", "cb"])], "kind", cols) == ["position"]
    assert children(f[f["kind"].isin(["cb", "cbs"])], "kind", cols) == []


# ------------------------------------------------------------------------- claims
def _claim_designs(effect: float, seed: int) -> Designs:
    """Pairs of real configs with CB off and on (at the MLP end), CB worth ``effect``."""
    rng = np.random.default_rng(seed)
    bases = []
    for depth in (4, 6, 8, 10, 12):
        for dim, heads in ((128, 2), (192, 3)):
            bases.append(reference_config("t2t_vit_7").replace(pos_embed="sincos"))
            s = dataclasses.replace(bases[-1].stages[0], depth=depth, dim=dim, heads=heads)
            bases[-1] = bases[-1].replace(stages=(s,))
    rows = []
    for i, cfg in enumerate(bases):
        level = 0.6 + 0.01 * i
        for on in (False, True):
            c = cfg.replace(cb=CBConfig(kind="cb")) if on else cfg
            est = cost_estimate(c)
            acc = level + effect * on + rng.normal(0, NOISE)
            rows.append((c, acc, est.params, est.macs, i))
    n = len(rows)
    frame = {
        "accuracy": [r[1] for r in rows],
        "params": np.array([r[2] for r in rows], dtype=float),
        "base": [r[4] for r in rows],
    }
    designs = _designs(frame, ["base"], n)
    designs.frame["config"] = [r[0] for r in rows]
    designs.frame["macs"] = [float(r[3]) for r in rows]
    return designs


def test_cb_claim_from_matched_configs() -> None:
    cb_on = next(p for p in PARTS if p.id == "cb_on")
    planted = [data_part(cb_on, _claim_designs(0.03, s), n_boot=100) for s in range(30)]
    assert all(p["verdict"] == "supported" for p in planted), planted
    assert all(p["method"].startswith("matched pairs: 10 pairs") for p in planted)
    assert np.mean([p["ci"][0] <= 0.03 <= p["ci"][1] for p in planted]) >= 0.9
    assert all(p["macs"]["effect"] == pytest.approx(0.0, abs=0.01) for p in planted)
    null = [data_part(cb_on, _claim_designs(0.0, s), n_boot=100) for s in range(30)]
    assert np.mean([p["verdict"] == "cannot tell" for p in null]) >= 0.9


def test_exact_cost_parts() -> None:
    lvt = reference_config("lvt")
    rasa = rasa_macs([lvt], {"img_size": 224, "in_chans": 3, "num_classes": 1000})
    assert rasa["verdict"] == "supported" and rasa["n"] == 1
    assert 0 < rasa["ci"][0] <= rasa["effect"] <= rasa["ci"][1]
    cfg = reference_config("t2t_vit_7")
    s = dataclasses.replace(cfg.stages[0], mixer="lookup", lookup_grid=5)
    lookup = cfg.replace(stages=(s,), class_token=False)
    part = lookup_macs([lookup, lvt], {"img_size": 224, "in_chans": 3, "num_classes": 1000})
    assert part["verdict"] == "supported" and part["n"] == 1 and part["ci"][1] < 0
    assert lookup_macs([lvt], {"img_size": 224, "in_chans": 3, "num_classes": 0})["verdict"] == (
        "cannot tell"
    )


def test_acmix_shares_read_from_saved_weights(tmp_path: Path, one_thread: None) -> None:
    from archsearch.models import build_model
    from archsearch.train.weights import save_weights

    stages = [
        {"depth": 1, "dim": 16, "heads": 1, "mixer": "acmix", "mlp_ratio": 2.0, "sr_ratio": 1}
        for _ in range(3)
    ]
    rows = []
    for k, drop in enumerate((0.2, 0.15, 0.1)):
        cfg = ArchConfig.from_dict(
            {"macro": "hierarchical", "stages": stages, "tokenizer": {"kind": "overlap_patch"},
             "drop_path_rate": 0.01 * k}
        )  # fmt: skip
        model = build_model(cfg, num_classes=10, in_chans=1, img_size=32)
        for i, stage in enumerate(model.stages):
            stage.blocks[0].mixer.beta.data.fill_(0.7 - drop * i)  # conv share falls
            stage.blocks[0].mixer.alpha.data.fill_(0.3 + drop * i)
        save_weights(model, tmp_path / f"weights/d{k}.safetensors")
        rows.append((cfg, f"weights/d{k}.safetensors"))
    shares = mixing_shares(tmp_path / "weights/d0.safetensors")
    assert shares == pytest.approx({1: 0.7, 2: 0.5, 3: 0.3})
    designs = _designs({"accuracy": [0.7] * 3, "params": np.full(3, 1e5)}, [], 3)
    designs.frame["config"] = [r[0] for r in rows]
    designs.frame["weights"] = [r[1] for r in rows]
    part = acmix_part(designs, tmp_path)
    assert part["n"] == 3 and part["effect"] == pytest.approx(-0.15)
    assert part["verdict"] == "supported"  # slopes -0.2, -0.15, -0.1: t interval below 0
    two = acmix_part(dataclasses.replace(designs, frame=designs.frame.iloc[:2]), tmp_path)
    assert two["verdict"] == "cannot tell"  # two designs: t(1) interval covers 0
    designs.frame["weights"] = None
    part = acmix_part(designs, tmp_path)
    assert part["verdict"] == "cannot tell" and "weights" in part["reason"]


# ------------------------------------------------------------------------- a run folder
@pytest.fixture(scope="module")
def committed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("insights") / "run"
    shutil.copytree(COMMITTED, copy)
    return copy


def test_rung_and_seed_repeats(committed: Path) -> None:
    data = load_run(committed)
    base = from_run(data).frame.set_index("archid")
    table = data.table.copy()
    row = table[table["trial"] == 2].iloc[[0]].copy()
    low = row.assign(trial=100, proxy_accuracy=0.1, rung=1)
    table["rung"] = 0
    data.table = pd.concat([table, low], ignore_index=True)
    after = from_run(data).frame.set_index("archid")
    archid = str(row["archid"].iloc[0])
    assert after.loc[archid, "accuracy"] == pytest.approx(base.loc[archid, "accuracy"])
    assert (after["seeds"] == base["seeds"]).all()
    assert base["seeds"].max() == 3  # the calibration's proxy seeds count as repeats
    assert from_run(data).seed_std == pytest.approx(0.0123, abs=1e-4)


def test_committed_run_has_a_section_and_six_verdicts(committed: Path) -> None:
    paths = write_report(committed)
    html = paths["html"].read_text()
    assert 'id="insights"' in html and "Design insights" in html
    saved = json.loads((committed / "insights.json").read_text())
    assert [c["id"] for c in saved["claims"]] == CLAIM_IDS
    for claim in saved["claims"]:
        assert claim["verdict"] in VERDICTS
        assert claim["verdict"] in html
        for part in claim["parts"]:
            assert part["verdict"] in VERDICTS and len(part["ci"]) == 2
            assert part["method"] and part["n"] >= 0
    acmix = next(c for c in saved["claims"] if c["id"] == "acmix")
    assert acmix["verdict"] == "cannot tell" and "weights" in acmix["parts"][0]["reason"]
    assert saved["dimensions"] and saved["designs"]["designs"] == 14


def test_analyse_is_reproducible_and_json_safe(committed: Path) -> None:
    a, b = analyse(committed, n_boot=200), analyse(committed, n_boot=200)
    assert a == b or json.dumps(a, default=str) == json.dumps(b, default=str)
    path = write_insights(committed, a)
    assert json.loads(path.read_text())["n_boot"] == 200


def test_cli_table_json_and_errors(
    committed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from archsearch.cli import main

    assert main(["insights", str(committed)]) == 0
    out = capsys.readouterr().out
    for cid in CLAIM_IDS:
        assert f"{cid}: " in out
    assert "effect [95% interval]" in out and "insights.json" in out
    assert main(["insights", str(committed), "--format", "json"]) == 0
    assert [c["id"] for c in json.loads(capsys.readouterr().out)["claims"]] == CLAIM_IDS
    for bad in (tmp_path / "missing", tmp_path):
        assert main(["insights", str(bad)]) != 0
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and "archsearch: error:" in lines[0]
