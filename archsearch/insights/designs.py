"""A run's trained designs, one row each, with the noise of every accuracy.

The insights compare designs, so each architecture must count once: rows of ``trials.csv`` with
the same ``archid`` (seed repeats) are averaged, and the proxy-tier seeds of ``archsearch
calibrate`` (``calibration.csv``, trained by the run's own schedule; its seed 0 is the run's own
training) are added to the designs they belong to. Only the top fidelity counts (``rung == 0``
when the table has a ``rung`` column); rows that reuse an earlier result are left out.

Every design's accuracy carries a noise variance: the validation sampling error (``accuracy_se``)
squared, plus the seed-to-seed variance over its number of seeds. The seed-to-seed standard
deviation comes from the run's ``calibration.json`` when there is one (the mean over its designs,
as the report shows it), otherwise from the designs trained with several seeds (pooled), and is
unknown otherwise (then only the validation error is counted, and a note says so).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..config import ArchConfig
from ..errors import ArchsearchError
from ..records import trained
from ..report.data import RunData
from ..report.page import seed_noise

__all__ = ["Designs", "from_run", "table_configs"]

#: Columns of :attr:`Designs.frame` besides the choices.
COLUMNS = (
    *("archid", "trial", "baseline", "accuracy", "seeds", "seed_std", "val_se", "var"),
    *("params", "macs", "config", "weights"),
)


@dataclass
class Designs:
    """Trained designs, one row per architecture.

    Attributes:
        frame: one row per design: ``archid``, ``trial`` (its first trial), ``baseline``,
            ``accuracy`` (mean over seeds), ``seeds``, ``seed_std`` (its own spread, ``nan`` for
            one seed), ``val_se``, ``var`` (noise variance of ``accuracy``), ``params``,
            ``macs``, ``config`` (an :class:`ArchConfig`), ``weights`` (a path or None), then
            the choice columns.
        choices: names of the sampled-choice columns.
        seed_std: the seed-to-seed standard deviation used for ``var`` (None: unknown).
        seed_std_source: where ``seed_std`` comes from, in words.
        cost_target: ``img_size``, ``in_chans``, ``num_classes`` the costs are counted for.
        notes: what could not be used, one sentence each.
    """

    frame: pd.DataFrame
    choices: list[str]
    seed_std: float | None = None
    seed_std_source: str = "unknown"
    cost_target: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.frame)

    def searched(self) -> pd.DataFrame:
        """Designs sampled from the space (baselines have no choice values)."""
        return self.frame[self.frame["baseline"] == ""]

    def summary(self) -> dict[str, Any]:
        f = self.frame
        return {
            "designs": len(f),
            "searched": int((f["baseline"] == "").sum()),
            "with_seed_repeats": int((f["seeds"] > 1).sum()),
            "seeds_max": int(f["seeds"].max()) if len(f) else 0,
            "seed_std": self.seed_std,
            "seed_std_source": self.seed_std_source,
            "val_se_mean": float(f["val_se"].mean()) if len(f) else math.nan,
        }


def _top_rung(table: pd.DataFrame) -> pd.DataFrame:
    if "rung" not in table.columns:
        return table
    return table[pd.to_numeric(table["rung"], errors="coerce").fillna(0) == 0]


def _calibration_seeds(run_dir: Path, archids: set[str], notes: list[str]) -> pd.DataFrame:
    """Proxy-tier runs of ``calibration.csv`` for these designs: ``archid, seed, accuracy``."""
    path = run_dir / "calibration.csv"
    empty = pd.DataFrame(columns=["archid", "seed", "accuracy", "val_images"])
    if not path.is_file():
        return empty
    try:
        df = pd.read_csv(path, dtype={"design": str})
        df = df[df["tier"].astype(str).str.strip().str.lower() == "proxy"]
        out = pd.DataFrame(
            {
                "archid": df["design"].astype(str),
                "seed": pd.to_numeric(df["seed"], errors="coerce"),
                "accuracy": pd.to_numeric(df["accuracy"], errors="coerce"),
                "val_images": pd.to_numeric(df["val_images"], errors="coerce"),
            }
        )
    except (OSError, KeyError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError):
        notes.append("calibration.csv is unreadable; its seed repeats are not used.")
        return empty
    ok = out["archid"].isin(archids) & out["accuracy"].between(0.0, 1.0) & out["seed"].notna()
    return out[ok]


def _pooled_std(groups: list[np.ndarray]) -> float | None:
    """Pooled standard deviation of the designs trained with 2+ seeds (None: none was)."""
    ss = sum(float(((g - g.mean()) ** 2).sum()) for g in groups if g.size > 1)
    df = sum(g.size - 1 for g in groups if g.size > 1)
    return math.sqrt(ss / df) if df else None


def _config(text: Any) -> ArchConfig | None:
    if not isinstance(text, str) or not text.strip():
        return None
    try:
        return ArchConfig.from_json(text)
    except (ArchsearchError, TypeError, ValueError):
        return None


def table_configs(table: pd.DataFrame) -> list[ArchConfig]:
    """Every distinct architecture named in a trial table (any state), as configs."""
    seen: dict[str, ArchConfig] = {}
    for text in table["config"].dropna().unique():
        cfg = _config(text)
        if cfg is not None:
            seen.setdefault(cfg.archid, cfg)
    return list(seen.values())


def from_run(data: RunData) -> Designs:
    """The trained designs of a loaded run (see the module docstring)."""
    notes: list[str] = []
    rows = _top_rung(trained(data.table))
    rows = rows[rows["archid"].notna()]
    seed_col = rows["seed"] if "seed" in rows.columns else pd.Series(0, index=rows.index)
    runs = pd.DataFrame(
        {
            "archid": rows["archid"].astype(str),
            "seed": pd.to_numeric(seed_col, errors="coerce").fillna(0).to_numpy(),
            "accuracy": rows["proxy_accuracy"].astype(float),
            "val_images": pd.to_numeric(rows["val_images"], errors="coerce"),
        }
    )
    calib = _calibration_seeds(data.run_dir, set(runs["archid"]), notes)
    if not calib.empty:
        runs = pd.concat([runs, calib], ignore_index=True)
    runs = runs.drop_duplicates(["archid", "seed"], keep="first")  # the run's own rows first
    by_id = {k: g for k, g in runs.groupby("archid", sort=False)}

    seed_sd, source = seed_noise(data.run_dir), "calibration.json (mean over its designs)"
    if seed_sd is None:
        seed_sd = _pooled_std([g["accuracy"].to_numpy(float) for g in by_id.values()])
        source = "seed repeats in the run (pooled)"
    if seed_sd is None:
        source = "unknown"
        notes.append(
            "The proxy's seed-to-seed noise is not measured for this run (archsearch calibrate "
            "measures it): intervals count validation noise and the spread between designs only."
        )
    out = []
    first = rows.drop_duplicates("archid", keep="first")
    for _, r in first.iterrows():
        cfg = _config(r["config"])
        if cfg is None:
            notes.append(f"Trial {r['trial']} has no readable config; left out.")
            continue
        g = by_id[str(r["archid"])]
        accs = g["accuracy"].to_numpy(float)
        acc = float(accs.mean())
        val = pd.to_numeric(g["val_images"], errors="coerce").dropna()
        if pd.notna(r["accuracy_se"]):
            val_se = float(r["accuracy_se"])
        else:
            val_se = float(stats.accuracy_se(acc, float(val.mean()) if len(val) else 0.0))
        val_se = 0.0 if math.isnan(val_se) else val_se
        seed_var = (seed_sd or 0.0) ** 2 / accs.size
        out.append(
            {
                "archid": str(r["archid"]),
                "trial": int(r["trial"]),
                "baseline": str(r["baseline"] or ""),
                "accuracy": acc,
                "seeds": int(accs.size),
                "seed_std": float(accs.std(ddof=1)) if accs.size > 1 else math.nan,
                "val_se": val_se,
                "var": val_se**2 + seed_var,
                "params": float(r["params"]),
                "macs": float(r["macs"]),
                "config": cfg,
                "weights": r["weights"] if isinstance(r["weights"], str) else None,
                **{c: _plain(r[c]) for c in data.choices},
            }
        )
    frame = pd.DataFrame(out, columns=[*COLUMNS, *data.choices])
    target = data.resolved.get("cost_target") or {}
    cost_target = {
        "img_size": int(target.get("img_size", 224)),
        "in_chans": int(target.get("in_chans", 3)),
        "num_classes": int(target.get("num_classes", 1000)),
    }
    return Designs(frame, list(data.choices), seed_sd, source, cost_target, notes)


def _plain(value: Any) -> Any:
    """A choice value as a hashable Python value (None for a missing one)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
