"""The effect of one choice on accuracy (or on log MACs) from designs that differ in many.

Two estimators, chosen by what the run has:

* **Matched pairs**: designs that are equal in everything but the focal choice (same matching
  key) are paired; each pair gives a difference per unit of the focal variable and the effect is
  their mean. Used when the run has :data:`MIN_PAIRS` such pairs or more and they involve at
  least half of the designs; with fewer, only when the regression below is not possible.
* **Regression on every choice**: least squares of the outcome on the focal variable and every
  other choice (one-hot, a missing value as its own level), when the run has
  :data:`DESIGNS_PER_TERM` designs per coefficient. The interval is a percentile bootstrap over
  designs (:func:`archsearch.stats.bootstrap_ci`).

Only these two compare designs that differ in the focal choice alone (or adjust for every other
difference), so only they give a verdict. With fewer designs, the effect is still estimated as a
*hint*: a regression on the focal variable, the family (when both are present) and log2 params,
i.e. at equal parameter count but not adjusted for the other choices; its verdict is "cannot
tell", since any other choice the designs happen to share may be what makes the difference.

Seed noise enters twice. Each design's outcome is a mean over its seeds, and its noise variance
``var`` (validation error plus seed variance over seeds, see :mod:`.designs`) sets a floor: since
both estimators are linear in the outcomes, ``sum(c_i^2 var_i)`` is the variance the estimate
has from measurement noise alone, and no interval is narrower than ``effect -+ z`` times its
root. With few pairs the interval is the wider of that floor and the t interval of the pair
differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from .. import stats

__all__ = [
    "Estimate",
    "estimate",
    "matched_pairs",
    "regression",
    "verdict",
    "direction",
    "MIN_PAIRS",
    "MIN_PER_LEVEL",
    "DESIGNS_PER_TERM",
]

Array = NDArray[np.float64]

#: Matched pairs are preferred to a regression from this many pairs on.
MIN_PAIRS = 3
#: A regression on a yes/no choice needs this many designs on each side.
MIN_PER_LEVEL = 2
#: A regression needs this many residual degrees of freedom.
MIN_DF = 2
#: The regression on every choice is used when there are this many designs per coefficient.
DESIGNS_PER_TERM = 2
CANNOT_TELL = "cannot tell"
NOT_ESTIMATED = "not estimated"


@dataclass
class Estimate:
    """One effect with its interval (``nan`` where it could not be estimated).

    Attributes:
        effect: the estimate (outcome change per unit of the focal variable).
        lo, hi: its interval.
        method: how it was estimated, in words.
        n: designs behind it.
        pairs: matched pairs used (0 for a regression).
        reason: why there is no interval or no verdict ('' when there are both).
        adjusted: the estimate compares like with like (matched pairs, or a regression on every
            choice); a hint otherwise, which gives no verdict.
    """

    effect: float = math.nan
    lo: float = math.nan
    hi: float = math.nan
    method: str = ""
    n: int = 0
    pairs: int = 0
    reason: str = ""
    adjusted: bool = True

    @property
    def ok(self) -> bool:
        return math.isfinite(self.lo) and math.isfinite(self.hi)

    def as_dict(self) -> dict[str, object]:
        d = asdict(self)
        return {"effect": d.pop("effect"), "ci": [d.pop("lo"), d.pop("hi")], **d}


def _noise_floor(weights: Array, var: Array) -> float:
    return float(math.sqrt(float(np.sum(weights**2 * var))))


def matched_pairs(
    y: Array,
    var: Array,
    x: Array,
    keys: Sequence[Hashable],
    *,
    level: float = 0.95,
    pair_ok: Callable[[int, int], bool] | None = None,
) -> Estimate | None:
    """Mean difference per unit of ``x`` over pairs of designs with equal keys (None: no pair).

    Every two designs with the same key and different ``x`` form a pair (``pair_ok`` may refuse
    some); a pair gives ``(y_j - y_i) / (x_j - x_i)``.
    """
    groups: dict[Hashable, list[int]] = {}
    for i, k in enumerate(keys):
        if np.isfinite(x[i]):
            groups.setdefault(k, []).append(i)
    slopes: list[float] = []
    weights = np.zeros(len(y))
    used: set[int] = set()
    for members in groups.values():
        for a, i in enumerate(members):
            for j in members[a + 1 :]:
                dx = float(x[j] - x[i])
                if dx == 0 or (pair_ok is not None and not pair_ok(i, j)):
                    continue
                slopes.append(float(y[j] - y[i]) / dx)
                weights[j] += 1.0 / dx
                weights[i] -= 1.0 / dx
                used.update((i, j))
    if not slopes:
        return None
    p = len(slopes)
    weights /= p
    effect = float(np.mean(slopes))
    half = stats.z_quantile(level) * _noise_floor(weights, var)
    if p > 1:
        spread = float(np.std(slopes, ddof=1)) / math.sqrt(p)
        half = max(half, stats.t_quantile(level, p - 1) * spread)
    noun = "pair" if p == 1 else "pairs"
    return Estimate(
        effect,
        effect - half,
        effect + half,
        f"matched pairs: {p} {noun} of designs differing only in this choice",
        len(used),
        p,
    )


def _ranks(m: Array) -> tuple[Array, Array, Array, NDArray[np.intp]]:
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    keep = s > 1e-9 * s[..., :1]
    return u, s, vt, keep.sum(axis=-1)


def _coef(design: Array, y: Array) -> Array:
    """The focal (second) least-squares coefficient of every stacked ``(design, y)``.

    ``design`` is ``(..., n, p)`` and ``y`` ``(..., n)``. A covariate a resample lacks (an
    option no resampled design took) gives an empty column: the minimum-norm solution leaves it
    out and the focal coefficient stays the least-squares one. ``nan`` where the focal column
    itself is not identified (in the span of the others).
    """
    u, s, vt, rank = _ranks(design)
    others = np.delete(design, 1, axis=-1)
    focal_free = rank > _ranks(others)[3]
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(s > 1e-9 * s[..., :1], 1.0 / s, 0.0)
    z = np.einsum("...np,...n->...p", u, y) * inv
    coef = np.einsum("...pq,...p->...q", vt, z)[..., 1]
    return np.where(focal_free, coef, np.nan)


def _rank(m: Array) -> int:
    return int(np.linalg.matrix_rank(m)) if m.size else 0


def design_matrix(x: Array, covariates: Sequence[Array]) -> Array:
    """``[1, x, covariates...]``, keeping only covariates that add to the rank (in order)."""
    cols = [np.ones_like(x), x]
    rank = _rank(np.column_stack(cols))
    for c in covariates:
        trial = np.column_stack([*cols, c])
        r = _rank(trial)
        if r > rank:
            cols.append(np.asarray(c, dtype=float))
            rank = r
    return np.column_stack(cols)


def regression(
    y: Array,
    var: Array,
    design: Array,
    *,
    what: str,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """Least-squares coefficient of ``design[:, 1]`` with a bootstrap interval over designs.

    The interval is never narrower than the noise floor (see the module docstring).
    """
    n, p = design.shape
    method = f"regression on {what} ({n} designs, {p} terms), bootstrap over designs"
    if _rank(design) < p or n - p < MIN_DF:
        return Estimate(method=method, n=n, reason=f"too few designs ({n}) for {p} terms")
    effect = float(_coef(design, y))
    weights = np.linalg.pinv(design)[1]
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed, "vectorized": True}
    lo, hi = stats.bootstrap_ci(_coef, design, y, **boot)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        reason = "the focal choice is not separable from the others in most bootstrap resamples"
        return Estimate(effect, method=method, n=n, reason=reason)
    half = stats.z_quantile(level) * _noise_floor(weights, var)
    return Estimate(effect, min(lo, effect - half), max(hi, effect + half), method, n)


def one_hot(frame: pd.DataFrame) -> list[Array]:
    """Indicator columns of every value of every column but the first value of each
    (a missing value is a value); constant columns give none."""
    out: list[Array] = []
    for name in frame.columns:
        col = frame[name].map(lambda v: "<missing>" if v is None or v != v else v)
        values = list(dict.fromkeys(col.tolist()))
        out += [(col == v).to_numpy(float) for v in values[1:]]
    return out


def estimate(
    y: Array,
    var: Array,
    x: Array,
    keys: Sequence[Hashable],
    *,
    binary: bool,
    others: pd.DataFrame | None = None,
    size: Array | None = None,
    family: Array | None = None,
    keep_size: bool = False,
    pair_ok: Callable[[int, int], bool] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> Estimate:
    """The focal effect by the best method the data allow (see the module docstring).

    Args:
        y: outcome per design (accuracy, or log MACs with ``var`` zero).
        var: noise variance of each outcome.
        x: the focal variable (0/1 for a yes/no choice); ``nan`` marks designs left out.
        keys: matching keys: designs with equal keys differ only in ``x``.
        binary: ``x`` is a yes/no choice (each side then needs :data:`MIN_PER_LEVEL` designs).
        others: the other choices, one column each (for the regression on every choice).
        size: log2 params (covariate of the small regression).
        family: 0/1 family indicator (covariate of the small regression when it varies).
        keep_size: also hold ``size`` fixed in the regression on every choice ("at equal
            params").
        pair_ok: refuses some pairs (e.g. too different in params).
    """
    sub = np.flatnonzero(np.isfinite(x))
    n = int(sub.size)
    if n == 0:
        return Estimate(method=NOT_ESTIMATED, reason="no design in the run has this choice")
    pairs = matched_pairs(
        y[sub],
        var[sub],
        x[sub],
        [keys[int(i)] for i in sub],
        level=level,
        pair_ok=_sub(pair_ok, sub),
    )
    if pairs is not None and pairs.pairs >= MIN_PAIRS and 2 * pairs.n >= n:
        return pairs
    xs = x[sub]
    too_few = ""
    if np.unique(xs).size < 2:
        what = ("have it" if xs[0] == 1 else "lack it") if binary else "have the same value"
        too_few = f"all {n} designs it applies to {what}"
    elif binary and min(int((xs == 1).sum()), int((xs == 0).sum())) < MIN_PER_LEVEL:
        k = (int((xs == 1).sum()), int((xs == 0).sum()))
        too_few = f"{k[0]} vs {k[1]} designs: a regression needs {MIN_PER_LEVEL} on each side"
    boot: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed}
    needed = terms = 0
    if not too_few and others is not None:
        held = [size[sub]] if keep_size and size is not None else []
        full = design_matrix(xs, held + one_hot(others.iloc[sub]))
        terms = full.shape[1]
        needed = max(DESIGNS_PER_TERM * terms, terms + MIN_DF)
        if n >= needed:
            reg = regression(y[sub], var[sub], full, what="every choice", **boot)
            if reg.ok:
                return reg
    if pairs is not None:
        return pairs
    if too_few:
        return Estimate(method=NOT_ESTIMATED, n=n, reason=too_few)
    covs, names = [], ["this choice"]
    if family is not None and np.unique(family[sub]).size > 1:
        covs.append(family[sub])
        names.append("the family")
    if size is not None and np.unique(size[sub]).size > 1:
        covs.append(size[sub])
        names.append("log2 params")
    what = ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else names[0]
    hint = regression(y[sub], var[sub], design_matrix(xs, covs), what=what, **boot)
    hint.adjusted = False
    hint.method = "hint: " + hint.method
    if hint.ok:
        if not needed:
            why = "the other choices are unknown"
        elif n >= needed:
            why = "the regression on every choice gave no interval"
        else:
            why = f"the regression on every choice has {terms} terms and needs {needed} designs"
            why += f", the run has {n}"
        hint.reason = f"a hint, not adjusted for the other choices ({why}); no verdict"
    return hint


def _sub(
    pair_ok: Callable[[int, int], bool] | None, sub: NDArray[np.intp]
) -> Callable[[int, int], bool] | None:
    if pair_ok is None:
        return None
    return lambda i, j: pair_ok(int(sub[i]), int(sub[j]))


def verdict(est: Estimate, rule: str, margin: float = 0.0) -> str:
    """A claim's verdict from the interval of its effect.

    ``rule`` is what the claim expects: ``"greater"`` (effect above 0), ``"less"`` (below 0),
    or ``"not_less"`` (at least as good, within ``margin``: supported when the interval lies
    above ``-margin``). An interval on the wrong side of 0 contradicts the claim; anything else
    (an interval covering 0, or no interval) cannot tell.
    """
    if not est.ok or not est.adjusted:
        return CANNOT_TELL
    if rule == "greater":
        side = stats.compare((est.lo, est.hi), (0.0, 0.0))
        return {"better": "supported", "worse": "contradicted"}.get(side, CANNOT_TELL)
    if rule == "less":
        side = stats.compare((est.lo, est.hi), (0.0, 0.0))
        return {"worse": "supported", "better": "contradicted"}.get(side, CANNOT_TELL)
    if rule == "not_less":
        if est.lo > -margin:
            return "supported"
        return "contradicted" if est.hi < 0 else CANNOT_TELL
    raise ValueError(f"rule: expected greater, less or not_less, got {rule!r}")


def direction(est: Estimate) -> str:
    """``higher``, ``lower`` or ``cannot tell``: where the interval lies against 0 (a hint
    tells nothing)."""
    if not est.ok or not est.adjusted:
        return CANNOT_TELL
    side = stats.compare((est.lo, est.hi), (0.0, 0.0))
    return {"better": "higher", "worse": "lower"}.get(side, CANNOT_TELL)
