"""archsearch.stats: standard errors, intervals, rank correlations, bootstrap, comparisons."""

from __future__ import annotations

import math

import numpy as np
import pytest

from archsearch.stats import (
    accuracy_se,
    bootstrap_ci,
    compare,
    interval,
    kendall_tau_b,
    mean_interval,
    rank_ceiling,
    rankdata,
    spearman_rho,
    t_quantile,
    top_k_overlap,
    z_quantile,
)


def test_accuracy_se_known_values() -> None:
    assert accuracy_se(0.7, 2000) == pytest.approx(math.sqrt(0.7 * 0.3 / 2000))
    assert accuracy_se(0.7, 2000) == pytest.approx(0.0102470, abs=1e-7)
    assert isinstance(accuracy_se(0.5, 100), float)
    np.testing.assert_allclose(accuracy_se([0.5, 1.0, 0.9], [100, 50, 10_000]), [0.05, 0, 0.003])
    assert math.isnan(accuracy_se(0.5, 0))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        accuracy_se(1.2, 100)


def test_quantiles_match_tables() -> None:
    assert z_quantile(0.95) == pytest.approx(1.959964, abs=1e-6)
    # Student's t, two-sided 95% and 99% (standard tables).
    for df, q95, q99 in [(1, 12.706, 63.657), (2, 4.303, 9.925), (4, 2.776, 4.604)]:
        assert t_quantile(0.95, df) == pytest.approx(q95, abs=1e-3)
        assert t_quantile(0.99, df) == pytest.approx(q99, abs=1e-3)
    assert t_quantile(0.95, 9) == pytest.approx(2.262, abs=1e-3)
    assert t_quantile(0.95, 30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(0.95, 100_000) == pytest.approx(1.960, abs=1e-3)
    with pytest.raises(ValueError):
        t_quantile(0.95, 0)
    with pytest.raises(ValueError):
        t_quantile(1.5, 3)


def test_interval_and_mean_interval() -> None:
    lo, hi = interval(0.7, 0.01)
    assert (lo, hi) == pytest.approx((0.7 - 0.0196, 0.7 + 0.0196), abs=1e-5)
    # Three seeds: mean 0.72, sample std 0.02, t(0.95, 2) = 4.303.
    lo, hi = mean_interval([0.70, 0.72, 0.74])
    half = 4.302653 * 0.02 / math.sqrt(3)
    assert (lo, hi) == pytest.approx((0.72 - half, 0.72 + half), abs=1e-6)
    assert all(math.isnan(v) for v in mean_interval([0.7]))
    assert mean_interval([0.7], se=0.01) == pytest.approx(interval(0.7, 0.01))
    assert mean_interval([0.7, math.nan], se=0.01) == pytest.approx(interval(0.7, 0.01))


def test_rankdata_averages_ties() -> None:
    np.testing.assert_array_equal(rankdata([10, 20, 20, 5]), [2, 3.5, 3.5, 1])


def test_kendall_tau_b_by_hand_with_ties() -> None:
    # Pairs of x = [1, 2, 2, 3, 4], y = [2, 1, 3, 3, 5]: 7 concordant, 1 discordant, one pair
    # tied in x only, one tied in y only: tau-b = (7 - 1) / sqrt((10 - 1) * (10 - 1)) = 2/3.
    assert kendall_tau_b([1, 2, 2, 3, 4], [2, 1, 3, 3, 5]) == pytest.approx(2 / 3)
    # Ties in both: x = [1, 2, 2, 3], y = [1, 3, 2, 3]: C = 4, D = 0 -> 4 / sqrt(5 * 5).
    assert kendall_tau_b([1, 2, 2, 3], [1, 3, 2, 3]) == pytest.approx(0.8)


def test_kendall_identical_reversed_and_degenerate() -> None:
    x = np.array([0.61, 0.70, 0.65, 0.72, 0.58])
    assert kendall_tau_b(x, x) == 1.0
    assert kendall_tau_b(x, 2 * x + 1) == 1.0
    assert kendall_tau_b(x, -x) == -1.0
    assert math.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert math.isnan(kendall_tau_b([1], [1]))
    assert math.isnan(kendall_tau_b([1, 2, math.nan], [1, 2, 3]))
    with pytest.raises(ValueError, match="equal lengths"):
        kendall_tau_b([1, 2, 3], [1, 2])


def test_spearman_by_hand() -> None:
    # Without ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 6 * 4 / 120.
    assert spearman_rho([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    # With ties: Pearson correlation of ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4].
    assert spearman_rho([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman_rho([3, 2, 1], [1, 2, 3]) == pytest.approx(-1.0)
    assert math.isnan(spearman_rho([2, 2, 2], [1, 2, 3]))


def test_bootstrap_ci_covers_true_tau_and_is_reproducible() -> None:
    # Bivariate normal with correlation r: the population Kendall tau is (2 / pi) asin(r).
    r = 0.6
    true_tau = 2 / math.pi * math.asin(r)
    rng = np.random.default_rng(1)
    x = rng.normal(size=300)
    y = r * x + math.sqrt(1 - r**2) * rng.normal(size=300)
    lo, hi = bootstrap_ci(kendall_tau_b, x, y, n_boot=400, seed=3)
    assert lo < true_tau < hi
    assert 0.05 < hi - lo < 0.25
    assert bootstrap_ci(kendall_tau_b, x, y, n_boot=400, seed=3) == (lo, hi)
    assert bootstrap_ci(kendall_tau_b, x, y, n_boot=400, seed=4) != (lo, hi)


def test_bootstrap_ci_pairs_rows_and_skips_degenerate_resamples() -> None:
    x = np.arange(8.0)
    # Paired resampling keeps each design's values together: identical rankings stay identical.
    assert bootstrap_ci(kendall_tau_b, x, x, n_boot=200) == (1.0, 1.0)
    # 2-D arrays resample rows.
    mat = np.column_stack([x, x])
    assert bootstrap_ci(lambda m: kendall_tau_b(m[:, 0], m[:, 1]), mat, n_boot=50) == (1.0, 1.0)
    lo, hi = bootstrap_ci(kendall_tau_b, np.ones(8), x, n_boot=100)
    assert math.isnan(lo) and math.isnan(hi)
    with pytest.raises(ValueError, match="equal row counts"):
        bootstrap_ci(kendall_tau_b, x, x[:5])


def test_bootstrap_ci_vectorized_draws_the_same_resamples() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=25), rng.normal(size=25)

    def slope(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.polyfit(a, b, 1)[0]) if np.ptp(a) > 0 else math.nan

    def slopes(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # a, b: (n_boot, n)
        ac, bc = a - a.mean(1, keepdims=True), b - b.mean(1, keepdims=True)
        return (ac * bc).sum(1) / (ac * ac).sum(1)

    loop = bootstrap_ci(slope, x, y, n_boot=300, seed=5)
    stacked = bootstrap_ci(slopes, x, y, n_boot=300, seed=5, vectorized=True)
    np.testing.assert_allclose(stacked, loop, rtol=1e-9)

    # Non-finite statistics are skipped alike.
    def first_positive(a: np.ndarray) -> np.ndarray:
        return np.where(a[..., 0] > 0, a.mean(-1), np.nan)

    def one(a: np.ndarray) -> float:
        return float(first_positive(a))

    vec = bootstrap_ci(first_positive, x, n_boot=200, seed=1, vectorized=True)
    np.testing.assert_allclose(vec, bootstrap_ci(one, x, n_boot=200, seed=1), rtol=1e-12)


def test_top_k_overlap() -> None:
    ref = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    assert top_k_overlap(ref, ref, k=3) == 3
    assert top_k_overlap(-ref, ref, k=3) == 0
    assert top_k_overlap([0.9, 0.5, 0.7, 0.8, 0.6, 0.4], ref, k=3) == 2
    assert top_k_overlap(ref[:3], ref[:3], k=5) == 3  # k capped at the number of designs


def test_compare_claims_only_separated_intervals() -> None:
    assert compare((0.70, 0.74), (0.72, 0.76)) == "tied"
    assert compare((0.70, 0.74), (0.74, 0.78)) == "tied"  # touching intervals overlap
    assert compare((0.75, 0.79), (0.70, 0.74)) == "better"
    assert compare((0.60, 0.65), (0.70, 0.74)) == "worse"
    assert compare((math.nan, math.nan), (0.1, 0.2)) == "tied"


def test_rank_ceiling_falls_with_the_reference_noise() -> None:
    ref = np.linspace(0.76, 0.79, 12)
    assert rank_ceiling(ref, 0.0) == 1.0
    taus = [rank_ceiling(ref, sd) for sd in (0.001, 0.003, 0.006)]
    assert 1.0 > taus[0] > taus[1] > taus[2] > 0.0
    assert rank_ceiling(ref, 0.003) == rank_ceiling(ref, 0.003)  # seeded: reproducible
    # noise as large as the whole spread: no detectable true difference
    assert rank_ceiling(ref, 0.05) == 0.0
    # per-design noise: only the noisy half loses order
    sd = np.r_[np.zeros(6), np.full(6, 0.004)]
    assert rank_ceiling(ref, np.zeros(12)) > rank_ceiling(ref, sd) > rank_ceiling(ref, 0.004)


def test_rank_ceiling_matches_a_simulated_rerun() -> None:
    """Against a known truth, the ceiling is the mean tau of truth vs truth + noise."""
    rng = np.random.default_rng(5)
    truth = np.linspace(0.70, 0.80, 15)
    sd = 0.01
    # the reference the user sees is one noisy draw; its ceiling estimates the tau of truth
    # against such draws (within the sampling error of one draw's spread)
    observed = truth + rng.normal(0, sd, truth.size)
    direct = np.mean([kendall_tau_b(truth, truth + rng.normal(0, sd, 15)) for _ in range(2000)])
    assert rank_ceiling(observed, sd) == pytest.approx(direct, abs=0.1)


def test_rank_ceiling_bad_input() -> None:
    assert math.isnan(rank_ceiling([0.5], 0.01))
    assert math.isnan(rank_ceiling([0.5, math.nan], 0.01))
    with pytest.raises(ValueError, match="expected 3 noise sds, got 2"):
        rank_ceiling([0.1, 0.2, 0.3], [0.01, 0.02])
    with pytest.raises(ValueError, match="noise_sd: expected values >= 0"):
        rank_ceiling([0.1, 0.2, 0.3], -0.01)
