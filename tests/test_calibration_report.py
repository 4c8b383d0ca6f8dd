"""archsearch.report.calibration: from calibration.csv rows to figures, a figure and HTML."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archsearch.errors import ArchsearchError
from archsearch.report.calibration import (
    COLUMNS,
    analyse,
    html_section,
    write_calibration,
)
from archsearch.report.calibration_plot import scatter_png

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _frame(
    designs: int = 10,
    seeds: int = 3,
    *,
    faithful: bool = True,
    seed: int = 0,
    reference_seeds: int = 1,
    reference_sd: float = 0.0,
) -> pd.DataFrame:
    """Synthetic runs: reference accuracy rises with the design index; the proxy either
    follows it exactly (every seed equal) or is pure noise around a constant."""
    rng = np.random.default_rng(seed)
    truth = np.linspace(0.80, 0.90, designs)
    rows = []
    for i, t in enumerate(truth):
        design = f"{i:012x}"
        label = f"H csa:{i + 1}x64" if i else "a<b & c"
        common = {
            "design": design,
            "label": label,
            "params": int(rng.integers(1_000_000, 3_500_000)),
            "macs": int(rng.integers(100_000_000, 900_000_000)),
        }
        for s in range(seeds):
            acc = t - 0.15 if faithful else 0.70 + rng.normal(0, 0.02)
            rows.append(
                {
                    **common,
                    "tier": "proxy",
                    "seed": s,
                    "accuracy": round(float(acc), 4),
                    "val_images": 2000,
                    "train_seconds": 10.0,
                    "images_x_epochs": 10_000,
                }
            )
        for s in range(reference_seeds):
            rows.append(
                {
                    **common,
                    "tier": "reference",
                    "seed": 100 + s,
                    "accuracy": round(float(t + rng.normal(0, reference_sd)), 4),
                    "val_images": 6000,
                    "train_seconds": 60.0,
                    "images_x_epochs": 50_000,
                }
            )
    return pd.DataFrame(rows)[list(COLUMNS)]


@pytest.fixture(scope="module")
def faithful() -> dict:
    return analyse(_frame(), n_boot=300)


def test_faithful_proxy_has_tau_one(faithful: dict) -> None:
    rank = faithful["rank"]["proxy_mean"]
    assert rank["tau"] == pytest.approx(1.0)
    assert rank["rho"] == pytest.approx(1.0)
    assert rank["tau_ci"] == pytest.approx([1.0, 1.0])
    assert faithful["rank"]["proxy_one_seed"]["tau"] == pytest.approx(1.0)
    assert faithful["rank"]["proxy_one_seed"]["top_k"] == 5
    assert faithful["top_k"] == {"k": 5, "overlap": 5}
    assert faithful["seed_to_seed"]["tau"] == pytest.approx(1.0)
    assert faithful["seed_to_seed"]["pairs"] == 3
    # Every seed equal: no seed-to-seed spread; the validation SE is the binomial one.
    assert faithful["noise"]["proxy_seed_std_max"] == pytest.approx(0.0, abs=1e-12)
    se = np.sqrt(0.7 * 0.3 / 2000)
    assert faithful["noise"]["proxy_val_se"] == pytest.approx(se, rel=0.05)
    c = faithful["counts"]
    assert (c["designs"], c["seeds"], c["proxy_runs"], c["reference_runs"]) == (10, 3, 30, 10)
    assert (c["proxy_images_x_epochs"], c["reference_images_x_epochs"]) == (10_000, 50_000)
    assert (c["proxy_cpu_seconds"], c["reference_cpu_seconds"]) == (300.0, 600.0)
    # Random sizes cannot rank as well as a perfect proxy.
    assert faithful["versus"]["params"]["result"] == "better"
    assert "beats ranking by params" in faithful["verdict"]


def test_per_design_rows(faithful: dict) -> None:
    rows = faithful["per_design"]
    assert len(rows) == 10
    best = rows[0]
    assert best["design"] == f"{9:012x}" and best["reference_rank"] == 1.0
    assert best["proxy_rank"] == 1.0 and best["proxy_seeds"] == 3
    assert best["reference"] == pytest.approx(0.90)
    lo, hi = best["reference_ci"]
    se = math.sqrt(0.9 * 0.1 / 6000)
    assert (lo, hi) == pytest.approx((0.90 - 1.96 * se, 0.90 + 1.96 * se), abs=1e-4)
    assert best["proxy_ci"] == pytest.approx([0.75, 0.75])  # three equal seeds


def test_noise_proxy_interval_covers_zero() -> None:
    a = analyse(_frame(designs=12, faithful=False, seed=5), n_boot=500)
    lo, hi = a["rank"]["proxy_mean"]["tau_ci"]
    assert lo < 0 < hi
    assert a["noise"]["proxy_seed_std_mean"] > 0.005
    assert a["versus"]["params"]["result"] == "tied"


def test_missing_columns_is_one_line() -> None:
    df = _frame().drop(columns=["val_images", "tier"])
    with pytest.raises(ArchsearchError) as info:
        analyse(df)
    msg = str(info.value)
    assert "\n" not in msg
    assert "missing tier, val_images" in msg


def test_needs_three_designs_with_both_tiers() -> None:
    df = _frame(designs=4)
    df = df[~((df["tier"] == "reference") & df["design"].isin([f"{0:012x}", f"{1:012x}"]))]
    with pytest.raises(ArchsearchError, match="at least 3 designs .* got 2"):
        analyse(df)


def test_single_seed_and_failed_runs() -> None:
    df = _frame(designs=5, seeds=1)
    df.loc[0, "accuracy"] = math.nan  # a failed run is ignored, not compared
    df = pd.concat([df, _frame(designs=5, seeds=1).iloc[:1]])
    a = analyse(df, n_boot=100)
    assert a["counts"]["failed_runs"] == 1
    assert math.isnan(a["seed_to_seed"]["tau"]) and a["seed_to_seed"]["pairs"] == 0
    assert math.isnan(a["noise"]["proxy_seed_std_mean"])
    lo, hi = a["per_design"][-1]["proxy_ci"]  # one seed: the validation interval
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.65 * 0.35 / 2000), rel=1e-3)
    assert "Two proxy seeds" not in a["verdict"]


def test_html_section(faithful: dict) -> None:
    text = html_section(faithful, "calibration.png")
    assert text.startswith('<section id="calibration">') and text.endswith("</section>")
    assert "1.00 [1.00, 1.00]" in text  # the proxy's tau with its interval
    for row in faithful["per_design"]:
        assert row["design"] in text
    assert text.count("<tr>") >= 10 + 4 + 1
    assert "a&lt;b &amp; c" in text and "a<b" not in text
    assert 'src="calibration.png"' in text


def test_html_section_from_json(faithful: dict, tmp_path: Path) -> None:
    paths = write_calibration(tmp_path, _frame())
    loaded = json.loads(paths["json"].read_text())
    assert loaded["rank"]["proxy_mean"]["tau"] == pytest.approx(1.0)
    loaded["rank"]["params"]["tau"] = None  # nan is stored as null
    assert "n/a" in html_section(loaded, "x.png")


def test_scatter_png(faithful: dict) -> None:
    png = scatter_png(faithful)
    assert png.startswith(PNG_SIGNATURE)
    width, height = struct.unpack(">II", png[16:24])
    assert width >= 1200 and height > 400


def test_write_calibration(tmp_path: Path) -> None:
    paths = write_calibration(tmp_path, _frame(seeds=2))
    assert set(paths) == {"json", "png"}
    assert paths["png"].read_bytes().startswith(PNG_SIGNATURE)
    data = json.loads(paths["json"].read_text())  # valid JSON: no NaN literals
    assert data["counts"]["designs"] == 10 and len(data["per_design"]) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibration.json", "calibration.png"]


def test_seed_to_seed_uses_seeds_every_design_has() -> None:
    df = _frame(designs=6, seeds=3, faithful=False, seed=2)
    drop = (df["design"] == f"{0:012x}") & (df["tier"] == "proxy") & (df["seed"] == 2)
    a = analyse(df[~drop], n_boot=100)
    assert a["seed_to_seed"]["seeds"] == [0, 1] and a["seed_to_seed"]["pairs"] == 1
    assert (a["counts"]["seeds"], a["counts"]["seeds_min"]) == (3, 2)
    assert -1.0 <= a["seed_to_seed"]["tau"] <= 1.0


def test_one_reference_run_says_its_noise_is_not_measured(faithful: dict) -> None:
    assert math.isnan(faithful["reference"]["ceiling"])
    assert math.isnan(faithful["noise"]["reference_seed_std"])
    assert "trained once per design, so its own noise is not measured" in faithful["verdict"]


def test_reference_seeds_measure_the_ceiling(tmp_path: Path) -> None:
    quiet = analyse(_frame(12, reference_seeds=2, reference_sd=0.001, seed=3), n_boot=200)
    noisy = analyse(_frame(12, reference_seeds=2, reference_sd=0.05, seed=3), n_boot=200)
    for a in (quiet, noisy):
        assert a["reference"]["seeds"] == [100, 101]
        assert a["per_design"][0]["reference_runs"] == 2
    # the pooled seed std recovers the noise put in; the ceiling falls with it
    assert quiet["noise"]["reference_seed_std"] == pytest.approx(0.001, abs=0.0007)
    assert noisy["noise"]["reference_seed_std"] == pytest.approx(0.05, rel=0.5)
    assert quiet["reference"]["ceiling"] > 0.95 > 0.75 > noisy["reference"]["ceiling"]
    assert quiet["reference"]["tau"] > noisy["reference"]["tau"]
    assert "a perfect predictor would reach about tau" in noisy["verdict"]
    section = html_section(noisy, "x.png")
    assert "reference seed vs seed (2 seeds)" in section and "a perfect predictor" in section
    write_calibration(tmp_path, _frame(6, reference_seeds=2, reference_sd=0.01))
    saved = json.loads((tmp_path / "calibration.json").read_text())
    assert 0.0 <= saved["reference"]["ceiling"] <= 1.0


def test_one_seed_is_the_expected_tau_of_a_single_proxy_run() -> None:
    """A search trains each design once: the one-seed figure is each seed's tau against the
    reference averaged over the seeds, not whichever seed happened to come first."""
    from archsearch.stats import kendall_tau_b

    df = _frame(designs=8, seeds=3, faithful=False, seed=7)
    a = analyse(df, n_boot=200)
    proxy = df[df["tier"] == "proxy"].sort_values(["design", "seed"])
    ref = df[df["tier"] == "reference"].sort_values("design")["accuracy"].to_numpy()
    taus = [
        kendall_tau_b(g.sort_values("design")["accuracy"].to_numpy(), ref)
        for _, g in proxy.groupby("seed")
    ]
    one = a["rank"]["proxy_one_seed"]
    assert one["tau"] == pytest.approx(float(np.mean(taus)))
    assert one["tau_ci"][0] <= one["tau"] <= one["tau_ci"][1]
    assert one["label"] == "proxy, one seed (mean over the seeds)"
    assert list(a["rank"]) == ["proxy_mean", "proxy_one_seed", "params", "macs"]
    html = html_section(a, "x.png")
    assert "proxy, one seed (mean over 3 seeds)" in html


def test_a_family_the_proxy_underrates_is_named() -> None:
    """Columnar designs gain 0.15 more from longer training than hierarchical ones: the
    verdict says the proxy underrates them, and ranks within each family are given."""
    df = _frame(designs=10)
    idx = df["design"].map(lambda d: int(d, 16))
    df["family"] = np.where(idx % 2 == 0, "columnar", "hierarchical")
    df.loc[(df["family"] == "columnar") & (df["tier"] == "reference"), "accuracy"] += 0.05
    df.loc[(df["family"] == "columnar") & (df["tier"] == "proxy"), "accuracy"] -= 0.10
    a = analyse(df, n_boot=200)
    fam = a["families"]
    assert set(fam) == {"columnar", "hierarchical"} and fam["columnar"]["designs"] == 5
    assert fam["columnar"]["gain"] == pytest.approx(fam["hierarchical"]["gain"] + 0.15)
    assert fam["hierarchical"]["tau"] == pytest.approx(1.0)
    assert "underrates columnar designs against hierarchical ones" in a["verdict"]
    assert "By family" in html_section(a, "x.png")
    # a table written before the family column: no breakdown, nothing claimed
    plain = analyse(_frame(designs=10), n_boot=100)
    assert plain["families"] == {} and "family" not in plain["verdict"]
