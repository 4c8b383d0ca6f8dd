"""The LookupViT claim from one trained model: its grids scored side by side.

A multi-resolution training (``lookup_multires``) scores one set of weights at every compressed
grid of its set on the same validation images, so the accuracy change between two adjacent
grids of one training is free of the seed noise that separates two separately trained designs:
only the validation error of the difference remains. This part pairs those rows (a trial and
the rows with ``trained_with`` = that trial) and estimates the accuracy change per grid step
smaller, with the MACs it saves.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ..config import ArchConfig
from ..stats import t_quantile, z_quantile
from .claims import MARGIN

__all__ = ["multires_part", "grid_steps"]


def grid_steps(table: pd.DataFrame) -> list[dict[str, float]]:
    """Adjacent grid pairs of every multi-resolution training in ``table`` (a trials table):
    per pair the accuracy change (smaller grid minus larger), its validation standard error and
    the relative MACs change."""
    if "trained_with" not in table or not table["trained_with"].notna().any():
        return []
    ok = (table["state"] == "COMPLETE") & table["proxy_accuracy"].notna() & table["feasible"]
    rows = table[ok & table["reused_from"].isna()]
    steps: list[dict[str, float]] = []
    for source in sorted({int(n) for n in rows["trained_with"].dropna()}):
        group = rows[(rows["trial"] == source) | (rows["trained_with"] == source)]
        by_grid = sorted(
            (ArchConfig.from_json(r["config"]).stages[0].lookup_grid, r)
            for _, r in group.iterrows()
        )
        for (_, small), (_, big) in zip(by_grid, by_grid[1:]):
            se = math.hypot(float(small["accuracy_se"]), float(big["accuracy_se"]))
            steps.append({
                "trial": float(source),
                "accuracy": float(small["proxy_accuracy"]) - float(big["proxy_accuracy"]),
                "se": se,
                "macs": float(small["macs"]) / float(big["macs"]) - 1.0,
            })  # fmt: skip
    return steps


def multires_part(table: pd.DataFrame, *, level: float = 0.95) -> dict[str, Any] | None:
    """The paired part of the LookupViT claim, or None when the run has no multi-resolution
    training. Supported when the accuracy change per grid step smaller is above ``-MARGIN``
    (the interval's lower end), contradicted when the whole interval is below 0."""
    steps = grid_steps(table)
    if not steps:
        return None
    acc = np.array([s["accuracy"] for s in steps])
    macs = np.array([s["macs"] for s in steps])
    n = len(steps)
    if n >= 2:  # spread over pairs (it holds the validation error of each difference too)
        half = t_quantile(level, n - 1) * float(acc.std(ddof=1)) / math.sqrt(n)
        how = f"t interval over {n} grid steps"
    else:  # one pair: its validation standard error (seed noise cancels within one model)
        half = z_quantile(level) * steps[0]["se"]
        how = "the validation standard error of the one grid step"
    effect = float(acc.mean())
    lo, hi = effect - half, effect + half
    verdict = "supported" if lo > -MARGIN else "contradicted" if hi < 0 else "cannot tell"
    trainings = len({s["trial"] for s in steps})
    return {
        "part": "lookup_multires",
        "name": "grid one step smaller, same trained model: accuracy",
        "unit": "accuracy per grid step smaller",
        "rule": "not_less",
        "effect": effect,
        "ci": [lo, hi],
        "method": f"paired: {trainings} multi-resolution training(s) scored at every grid on the "
        f"same validation images; mean of the adjacent-grid differences, {how}",
        "n": trainings,
        "pairs": n,
        "macs": {
            "effect": float(np.median(macs)),
            "ci": [float(macs.min()), float(macs.max())],
            "unit": "relative change of MACs",
        },
        "verdict": verdict,
        "reason": "",
    }
