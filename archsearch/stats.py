"""Small statistics for noisy accuracies and rankings of designs (numpy only).

A proxy accuracy is an estimate twice over: a finite validation set gives it a binomial standard
error, and a short training run gives it a seed-to-seed spread. These helpers put intervals on
both, measure how well one ranking of designs predicts another (Kendall's tau-b, Spearman's rho,
top-k overlap, each with a bootstrap interval over designs) and turn two intervals into a claim
only when the data support one (:func:`compare`).

Conventions: intervals are two-sided at ``level`` (0.95 by default) and returned as ``(lo, hi)``;
an undefined statistic (for example a rank correlation of a constant) is ``nan``, never an error.
Malformed input (mismatched lengths, a level outside ``(0, 1)``) raises ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from statistics import NormalDist
from typing import Literal, overload

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "accuracy_se",
    "z_quantile",
    "t_quantile",
    "interval",
    "mean_interval",
    "rankdata",
    "kendall_tau_b",
    "spearman_rho",
    "bootstrap_ci",
    "top_k_overlap",
    "rank_ceiling",
    "compare",
]

Verdict = Literal["better", "worse", "tied"]


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level: expected a number in (0, 1), got {level!r}")


@overload
def accuracy_se(acc: float, n: float) -> float: ...
@overload
def accuracy_se(acc: ArrayLike, n: ArrayLike) -> NDArray[np.float64] | float: ...
def accuracy_se(acc: ArrayLike, n: ArrayLike) -> NDArray[np.float64] | float:
    """Binomial standard error ``sqrt(p (1 - p) / n)`` of an accuracy measured on ``n`` images.

    Works element-wise on arrays (broadcasting ``acc`` against ``n``); a scalar in gives a float
    out. ``n < 1`` gives ``nan``.

    Raises:
        ValueError: an accuracy lies outside ``[0, 1]``.
    """
    p = np.asarray(acc, dtype=float)
    m = np.asarray(n, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"accuracy: expected values in [0, 1], got {acc!r}")
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.where(m >= 1, np.sqrt(p * (1.0 - p) / np.where(m >= 1, m, 1.0)), np.nan)
    return float(se) if se.ndim == 0 else se


def z_quantile(level: float = 0.95) -> float:
    """The two-sided standard normal quantile: ``1.96`` for ``level=0.95``."""
    _check_level(level)
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def _t_two_sided_mass(t: float, df: int) -> float:
    """``P(|T| <= t)`` for Student's t with integer ``df`` (Abramowitz & Stegun 26.7.3-4)."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    if df % 2:  # odd: (2/pi) * (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        term, total = 1.0, 1.0 if df > 1 else 0.0
        for k in range(1, (df - 1) // 2):
            term *= c2 * (2 * k) / (2 * k + 1)
            total += term
        return 2.0 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    term, total = 1.0, 1.0  # even: sin * (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
    for k in range(1, df // 2):
        term *= c2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def t_quantile(level: float, df: int) -> float:
    """The two-sided Student's t quantile with ``df`` degrees of freedom.

    ``t_quantile(0.95, 1)`` is 12.706, ``t_quantile(0.95, 2)`` is 4.303. Exact for integer
    ``df`` (a finite series for the distribution function, inverted by bisection); from
    ``df > 1000`` on, the normal quantile (off by less than 0.2%).

    Raises:
        ValueError: ``level`` is outside ``(0, 1)`` or ``df < 1``.
    """
    _check_level(level)
    if isinstance(df, bool) or int(df) != df or df < 1:
        raise ValueError(f"df: expected an integer >= 1, got {df!r}")
    df = int(df)
    if df > 1000:
        return z_quantile(level)
    lo, hi = 0.0, 1.0
    while _t_two_sided_mass(hi, df) < level:
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if _t_two_sided_mass(mid, df) < level:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def interval(mean: float, se: float, level: float = 0.95) -> tuple[float, float]:
    """Normal interval ``mean -+ z * se``: ``(lo, hi)``; ``nan`` bounds when ``se`` is ``nan``."""
    z = z_quantile(level)
    return float(mean - z * se), float(mean + z * se)


def mean_interval(
    values: ArrayLike, level: float = 0.95, *, se: float | None = None
) -> tuple[float, float]:
    """t-based interval of the mean of repeats (e.g. one design's accuracies over seeds).

    With ``n >= 2`` values: ``mean -+ t(level, n - 1) * s / sqrt(n)``, ``s`` the sample standard
    deviation. The interval covers the seed-to-seed spread only; the validation set, shared by
    every seed, adds its own error to all of them alike.

    Args:
        values: the repeats; ``nan`` entries are dropped.
        level: coverage of the interval.
        se: standard error used for a single value (e.g. :func:`accuracy_se`); without it one
            value gives ``(nan, nan)``.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` when there is nothing to go on.
    """
    v = np.asarray(values, dtype=float).ravel()
    v = v[~np.isnan(v)]
    if v.size >= 2:
        half = t_quantile(level, v.size - 1) * float(v.std(ddof=1)) / math.sqrt(v.size)
        m = float(v.mean())
        return m - half, m + half
    if v.size == 1 and se is not None:
        return interval(float(v[0]), se, level)
    _check_level(level)
    return math.nan, math.nan


def _pair(x: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    a = np.asarray(x, dtype=float).ravel()
    b = np.asarray(y, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"rank correlation: expected equal lengths, got {a.size} and {b.size}")
    return a, b


def rankdata(values: ArrayLike) -> NDArray[np.float64]:
    """Ranks from 1 (smallest) to n, ties given the average of the ranks they span."""
    v = np.asarray(values, dtype=float).ravel()
    order = np.argsort(v, kind="stable")
    sorted_v = v[order]
    # Start index of each run of equal values, and the average 1-based rank of each run.
    starts = np.flatnonzero(np.r_[True, sorted_v[1:] != sorted_v[:-1]])
    ends = np.r_[starts[1:], v.size]
    avg = (starts + ends + 1) / 2.0
    ranks = np.empty(v.size, dtype=float)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def kendall_tau_b(x: ArrayLike, y: ArrayLike) -> float:
    """Kendall's tau-b: ``(C - D) / sqrt((n0 - n1) (n0 - n2))``, corrected for ties.

    ``C``/``D`` count concordant/discordant pairs, ``n0`` all pairs, ``n1``/``n2`` the pairs
    tied in ``x``/``y``. 1 for the same ranking, -1 for the reversed one; ``nan`` with fewer
    than two values, any ``nan`` value, or a constant input. O(n^2) memory: meant for tens to a
    few thousand designs.
    """
    a, b = _pair(x, y)
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any():
        return math.nan
    i, j = np.triu_indices(a.size, k=1)
    dx, dy = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
    untied_x, untied_y = int(np.count_nonzero(dx)), int(np.count_nonzero(dy))
    if untied_x == 0 or untied_y == 0:
        return math.nan
    return float(np.sum(dx * dy) / math.sqrt(untied_x * untied_y))


def spearman_rho(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman's rho: the Pearson correlation of the ranks (average ranks for ties).

    ``nan`` with fewer than two values, any ``nan`` value, or a constant input.
    """
    a, b = _pair(x, y)
    if a.size < 2 or np.isnan(a).any() or np.isnan(b).any():
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    ra -= ra.mean()
    rb -= rb.mean()
    denom = math.sqrt(float(np.sum(ra * ra)) * float(np.sum(rb * rb)))
    return float(np.sum(ra * rb) / denom) if denom > 0 else math.nan


def bootstrap_ci(
    stat_fn: Callable[..., float | NDArray[np.float64]],
    *arrays: ArrayLike,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    vectorized: bool = False,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat_fn(*arrays)``, resampling rows (designs).

    Each resample draws ``n`` row indices with replacement and applies the same indices to
    every array (paired: a design keeps its values in all of them). Arrays may be 2-D (rows are
    designs, e.g. one column per seed). Resamples where the statistic is not finite (e.g. all
    values tied) are skipped.

    Args:
        stat_fn: the statistic, called with the resampled arrays in order.
        arrays: one or more arrays with the same number of rows.
        n_boot: number of resamples.
        level: coverage of the interval.
        seed: seed of the resampling (the same seed gives the same interval).
        vectorized: call ``stat_fn`` once with every resample stacked on a new first axis
            (shape ``(n_boot, n, ...)``), returning ``n_boot`` values; the same resamples and
            interval as one call per resample, faster for a statistic that works on stacks.

    Returns:
        ``(lo, hi)``; ``(nan, nan)`` when fewer than half the resamples give a finite value.

    Raises:
        ValueError: no array, arrays of different lengths, ``n_boot < 1`` or a bad ``level``.
    """
    _check_level(level)
    if not arrays:
        raise ValueError("bootstrap_ci: expected at least one array, got none")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected an integer >= 1, got {n_boot!r}")
    data = [np.asarray(a) for a in arrays]
    n = len(data[0])
    if any(len(a) != n for a in data):
        lengths = ", ".join(str(len(a)) for a in data)
        raise ValueError(f"bootstrap_ci: expected arrays with equal row counts, got {lengths}")
    if n == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    if vectorized:
        idx = rng.integers(0, n, size=(n_boot, n))
        stats = np.asarray(stat_fn(*(a[idx] for a in data)), dtype=float).reshape(n_boot)
    else:
        stats = np.empty(n_boot)
        for b in range(n_boot):
            idx = rng.integers(0, n, size=n)
            stats[b] = stat_fn(*(a[idx] for a in data))
    finite = stats[np.isfinite(stats)]
    if finite.size < max(1, n_boot // 2):
        return math.nan, math.nan
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def top_k_overlap(pred: ArrayLike, ref: ArrayLike, k: int = 5) -> int:
    """How many of ``ref``'s top ``k`` designs are among ``pred``'s top ``k`` (higher = better).

    ``k`` is capped at the number of designs. Ties at the cut are broken by position (the
    earlier design first), so the result is deterministic.
    """
    a, b = _pair(pred, ref)
    k = min(int(k), a.size)
    if k < 1:
        return 0
    top_a = set(np.argsort(-a, kind="stable")[:k].tolist())
    top_b = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(top_a & top_b)


def rank_ceiling(ref: ArrayLike, noise_sd: ArrayLike, *, n_sim: int = 2000, seed: int = 0) -> float:
    """The Kendall tau-b a perfect predictor can expect against a noisy reference ranking.

    A reference accuracy is the design's true accuracy plus its own noise (validation error,
    seed spread) with standard deviation ``noise_sd``. Even a predictor that knew the true
    accuracies would then rank the designs like the reference only to this tau, so a proxy's
    tau is judged against it, not against 1. The true spread is estimated by removing the
    noise variance from the reference's spread (classical attenuation): the reference values
    are shrunk towards their mean by ``sqrt(max(var - mean(sd^2), 0) / var)``, fresh noise is
    drawn ``n_sim`` times, and the mean tau between the shrunk values and each noisy draw is
    returned. A ``noise_sd`` that leaves out a source of noise (e.g. the seed spread of a
    reference trained once) makes the ceiling too high, never too low.

    Returns:
        The expected tau in ``[0, 1]``: 1 without noise, 0 when the reference's spread is no
        larger than its noise; ``nan`` for fewer than 2 designs or a non-finite input.

    Raises:
        ValueError: ``ref`` and ``noise_sd`` of different lengths, a negative ``noise_sd`` or
            ``n_sim < 1``.
    """
    r = np.asarray(ref, dtype=float).ravel()
    if np.size(noise_sd) not in (1, r.size):
        raise ValueError(f"rank_ceiling: expected {r.size} noise sds, got {np.size(noise_sd)}")
    sd = np.broadcast_to(np.asarray(noise_sd, dtype=float).ravel(), r.shape).copy()
    if n_sim < 1:
        raise ValueError(f"n_sim: expected an integer >= 1, got {n_sim!r}")
    if r.size < 2 or not (np.isfinite(r).all() and np.isfinite(sd).all()):
        return math.nan
    if (sd < 0).any():
        raise ValueError(f"noise_sd: expected values >= 0, got {float(sd.min())!r}")
    spread = float(r.var(ddof=1))
    if not (sd > 0).any():
        return 1.0 if spread > 0 else math.nan
    true_var = max(spread - float(np.mean(sd**2)), 0.0)
    if true_var == 0.0:
        return 0.0
    truth = r.mean() + (r - r.mean()) * math.sqrt(true_var / spread)
    rng = np.random.default_rng(seed)
    draws = truth + rng.standard_normal((n_sim, r.size)) * sd
    return float(np.mean([kendall_tau_b(truth, d) for d in draws]))


def compare(a: Sequence[float], b: Sequence[float]) -> Verdict:
    """Compare two estimates by their intervals ``(lo, hi)``; higher is better.

    The rule: ``"better"`` when ``a``'s interval lies entirely above ``b``'s (``lo_a > hi_b``),
    ``"worse"`` when entirely below (``hi_a < lo_b``), otherwise ``"tied"``: overlapping
    intervals, or a ``nan`` bound, support no claim. For two 95% intervals of equal width this
    is a conservative test (about the 0.5% level); to compare two statistics of the same
    designs, prefer one interval for their paired difference against ``(0, 0)``.
    """
    lo_a, hi_a = float(a[0]), float(a[1])
    lo_b, hi_b = float(b[0]), float(b[1])
    if lo_a > hi_b:
        return "better"
    if hi_a < lo_b:
        return "worse"
    return "tied"
