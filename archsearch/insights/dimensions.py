"""Every dimension of the space: each option against a reference option, with its interval.

A dimension is a choice column of ``trials.csv`` taking 2+ values among the trained designs. Its
reference option is the smallest value of a numeric choice and the most frequent value of any
other (ties: the first in natural order); every other option is compared with it over the
designs that took one of the two (:func:`archsearch.insights.estimate.estimate`: matched pairs
where the run has them, otherwise a regression at equal parameter count).

Conditional choices are handled by their missing values. For one comparison (option against
reference), a choice that is missing in every design with one of the two options and present
with the other (the CB position when CB is off against on) is downstream of the difference: it
is neither matched on nor adjusted for. Two designs are matched when every other column is
equal (a missing value is a value). A comparison with more than :data:`MAX_CHILDREN` such
columns (the family: its options differ in everything below them) is made by regression only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..report.data import option_label
from .designs import Designs
from .estimate import Estimate, direction, estimate

__all__ = ["dimension_effects", "children", "relative", "MAX_CHILDREN"]

MAX_CHILDREN = 3


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def children(frame: pd.DataFrame, name: str, columns: list[str]) -> list[str]:
    """Columns missing in every design with one value of ``name`` and present in some design
    with another (``frame``: the designs of one comparison)."""
    missing = frame[columns].map(_missing).to_numpy(bool)
    here = ~missing[:, columns.index(name)]
    values = frame.loc[here, name].map(str).to_numpy()
    levels = np.unique(values)
    if levels.size < 2:
        return []
    shown = np.array([(~missing[here][values == v]).mean(axis=0) for v in levels])
    mask = (shown.min(axis=0) == 0) & (shown.max(axis=0) > 0)
    return [c for c, m in zip(columns, mask) if m and c != name]


def _is_numeric(values: list[Any]) -> bool:
    return all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)


def _order(v: Any) -> tuple[int, float, str]:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _reference(column: pd.Series) -> tuple[Any, list[Any]]:
    values = [v for v in column if not _missing(v)]
    levels = sorted(set(values), key=_order)
    if _is_numeric(levels):
        return levels[0], levels[1:]
    counts = pd.Series(values).value_counts()
    ref = max(levels, key=lambda v: (int(counts[v]), -levels.index(v)))
    return ref, [v for v in levels if v != ref]


def relative(est: Estimate) -> dict[str, Any]:
    """A log-MACs estimate as a relative change: ``exp(b) - 1`` (interval likewise).

    A hint (not adjusted for the other choices) is left out: only its reason is kept.
    """
    if not est.adjusted:
        est = Estimate(n=est.n, method=est.method, reason=est.reason)
    d = est.as_dict()
    d["effect"] = math.expm1(est.effect) if math.isfinite(est.effect) else math.nan
    d["ci"] = [math.expm1(v) if math.isfinite(v) else math.nan for v in (est.lo, est.hi)]
    d["unit"] = "relative change of MACs"
    return d


def dimension_effects(
    designs: Designs,
    *,
    names: Sequence[str] | None = None,
    level: float = 0.95,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One entry per (dimension, option other than the reference), in column order.

    ``names`` limits the dimensions to these choice columns (default: every one).

    Each entry: ``dimension``, ``option``, ``reference``, ``n_option``, ``n_reference``,
    ``accuracy`` (the estimate as a dict, see :meth:`Estimate.as_dict`), ``macs`` (the same
    estimator on log MACs, as a relative change) and ``verdict`` (``higher``, ``lower`` or
    ``cannot tell``: the option's accuracy against the reference's).
    """
    f = designs.frame
    if f.empty:
        return []
    y = f["accuracy"].to_numpy(float)
    var = f["var"].to_numpy(float)
    log_macs = np.log(f["macs"].to_numpy(float))
    size = np.log2(f["params"].to_numpy(float))
    family = np.array([c.macro == "hierarchical" for c in f["config"]], dtype=float)
    zeros = np.zeros(len(f))
    out = []
    for name in designs.choices if names is None else [c for c in designs.choices if c in names]:
        column = f[name]
        if column.map(_missing).all():
            continue
        ref, options = _reference(column)
        if not options:
            continue
        for opt in options:
            x = np.where(column == opt, 1.0, np.where(column == ref, 0.0, np.nan))
            x[column.map(_missing).to_numpy()] = np.nan
            kids = children(f[np.isfinite(x)], name, designs.choices)
            rest = [c for c in designs.choices if c != name and c not in kids]
            keys: list[tuple[Any, ...]] = [
                tuple(map(str, row)) for row in f[rest].itertuples(index=False)
            ]
            if len(kids) > MAX_CHILDREN:
                keys = [("design", i) for i in range(len(f))]  # nobody is matched
            common: dict[str, Any] = {
                "keys": keys,
                "binary": True,
                "others": f[rest],
                "size": size,
                "family": family,
                "level": level,
                "n_boot": n_boot,
                "seed": seed,
            }
            acc = estimate(y, var, x, **common)
            macs = estimate(log_macs, zeros, x, **common)
            out.append(
                {
                    "dimension": name,
                    "option": option_label(opt),
                    "reference": option_label(ref),
                    "n_option": int(np.nansum(x == 1)),
                    "n_reference": int(np.nansum(x == 0)),
                    "accuracy": acc.as_dict(),
                    "macs": relative(macs),
                    "verdict": direction(acc),
                }
            )
    return out
