"""ACmix's learned mixing weights, read from the saved weights of the run's designs.

An ACmix mixer outputs ``alpha * attention + beta * conv`` (both scalars start at 0.5). The
share of convolution in a stage is ``|beta| / (|alpha| + |beta|)``, averaged over the stage's
ACmix blocks. The paper's claim (convolution early, attention late) says the share falls with
the stage index *within* a network, so the effect is the least-squares slope of the share on the
stage number of each design with ACmix in two stages or more, averaged over designs, with a t
interval over designs (:func:`archsearch.stats.mean_interval`; one design gives no interval).
Only designs whose weights file is in the run folder can be read: the search keeps the weights
of the Pareto front only, and a copied run folder may hold none.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from .. import stats
from .designs import Designs
from .estimate import Estimate, verdict

__all__ = ["mixing_shares", "acmix_part"]

_KEY = re.compile(r"(?:^|\.)stages\.(\d+)\..*\.(alpha|beta)$")


def mixing_shares(path: Path) -> dict[int, float]:
    """Stage number (from 1) -> conv share ``|beta| / (|alpha| + |beta|)`` of a weights file.

    Raises:
        OSError, ValueError: the file cannot be read as safetensors.
    """
    from safetensors import safe_open

    pairs: dict[tuple[int, str], dict[str, float]] = {}
    with safe_open(str(path), framework="np") as f:
        for key in f.keys():  # noqa: SIM118  (safe_open is not a mapping)
            m = _KEY.search(key)
            if m is None:
                continue
            block = key[: key.rfind(".")]
            pairs.setdefault((int(m.group(1)) + 1, block), {})[m.group(2)] = float(
                np.asarray(f.get_tensor(key)).reshape(-1)[0]
            )
    by_stage: dict[int, list[float]] = {}
    for (stage, _), ab in pairs.items():
        if {"alpha", "beta"} <= set(ab):
            a, b = abs(ab["alpha"]), abs(ab["beta"])
            if a + b > 0:
                by_stage.setdefault(stage, []).append(b / (a + b))
    return {s: float(np.mean(v)) for s, v in sorted(by_stage.items())}


def _slope(shares: dict[int, float]) -> float:
    s = np.array(list(shares), dtype=float)
    v = np.array(list(shares.values()), dtype=float)
    return float(np.polyfit(s, v, 1)[0])


def acmix_part(designs: Designs, run_dir: Path, *, level: float = 0.95) -> dict[str, Any]:
    """The ACmix part: the conv share's slope over stages, with what it was read from."""
    f = designs.frame
    acmix = [i for i, c in enumerate(f["config"]) if any(s.mixer == "acmix" for s in c.stages)]
    read: dict[str, dict[int, float]] = {}
    unreadable = 0
    for i in acmix:
        w = f["weights"].iloc[i]
        path = run_dir / w if isinstance(w, str) else None
        if path is None or not path.is_file():
            continue
        try:
            shares = mixing_shares(path)
        except Exception:  # safetensors raises its own error types on a damaged file
            unreadable += 1
            continue
        if shares:
            read[str(f["archid"].iloc[i])] = shares
    slopes = [_slope(s) for s in read.values() if len(s) >= 2]
    est = Estimate(n=len(slopes))
    est.method = (
        "saved weights: slope of the conv share over stage numbers, t interval over designs"
    )
    if slopes:
        est.effect = float(np.mean(slopes))
        est.lo, est.hi = stats.mean_interval(slopes, level)
    if not acmix:
        est.reason = "no trained design of the run uses ACmix"
    elif not read:
        where = (
            "the run folder has no weights/ (a copied run may keep its tables only)"
            if not (run_dir / "weights").is_dir()
            else "the search keeps the front's weights only"
        )
        est.reason = (
            f"none of the {len(acmix)} trained ACmix designs has its weights file in the run "
            f"folder: {where}"
        )
        if unreadable:
            est.reason += f"; {unreadable} weights file(s) unreadable"
    elif not slopes:
        est.reason = "no design with readable weights has ACmix in two stages or more"
    elif len(slopes) == 1:
        est.reason = "one design with ACmix in 2+ stages: no interval over designs"
    return {
        "part": "acmix_conv_share",
        "name": "conv share beta/(alpha+beta) per stage",
        "unit": "share per stage",
        "rule": "less",
        **est.as_dict(),
        "verdict": verdict(est, "less"),
        "shares": {k: {str(s): v for s, v in d.items()} for k, d in read.items()},
        "designs_with_acmix": len(acmix),
    }
