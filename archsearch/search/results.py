"""Run-directory files: ``trials.csv`` and the weights kept for the Pareto front."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["TRIAL_COLUMNS", "write_trials_csv", "prune_weights", "trials_frame"]

#: Fixed columns of trials.csv, in order; the sampled choices go between "baseline" and "params".
HEAD_COLUMNS = ["trial", "state", "archid", "feasible", "baseline"]
TAIL_COLUMNS = [
    "params",
    "macs",
    "latency_ms",
    "proxy_accuracy",
    "epochs",
    "train_seconds",
    "error",
    "total_params",
    "reused_from",
    "weights",
    "config",
]
TRIAL_COLUMNS = HEAD_COLUMNS + TAIL_COLUMNS


def trials_frame(rows: list[dict[str, Any]], run_dir: Path | None = None) -> pd.DataFrame:
    """Rows (from :func:`archsearch.search.study.trial_rows`) as a DataFrame in column order.

    ``weights`` holds paths relative to the run directory; with ``run_dir`` given, only files
    that still exist are shown (weights of trials that left the Pareto front are deleted).
    """
    choices: list[str] = []
    for r in rows:
        for k in r:
            if k not in TRIAL_COLUMNS and k not in choices:
                choices.append(k)
    df = pd.DataFrame(rows, columns=HEAD_COLUMNS + choices + TAIL_COLUMNS)
    if run_dir is not None:
        df["weights"] = [
            w if isinstance(w, str) and (run_dir / w).is_file() else None for w in df["weights"]
        ]
    for col in ("params", "macs", "epochs", "total_params", "reused_from"):
        df[col] = df[col].astype("Int64")
    for col in choices:  # integer choices stay integers where other branches leave gaps
        values = [r[col] for r in rows if r.get(col) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            df[col] = df[col].astype("Int64")
    return df


def write_trials_csv(study: Any, path: Path, *, rows: list[dict[str, Any]] | None = None) -> Path:
    """Write ``trials.csv`` atomically (a reader never sees a half-written file)."""
    from .study import trial_rows

    df = trials_frame(rows if rows is not None else trial_rows(study), run_dir=path.parent)
    tmp = path.with_name(path.name + ".tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)
    return path


def prune_weights(run_dir: Path, rows: list[dict[str, Any]], keep_trials: set[int]) -> list[str]:
    """Delete weight files of finished trials that are not on the Pareto front.

    Only files referenced by finished trials are considered, so a file another worker has just
    written for a trial it has not yet reported is never touched. Returns the deleted paths.
    """
    keep = {r["weights"] for r in rows if r["trial"] in keep_trials and r.get("weights")}
    deleted = []
    for r in rows:
        w = r.get("weights")
        if not w or w in keep or r["state"] == "RUNNING":
            continue
        p = run_dir / w
        if p.is_file():
            p.unlink()
            deleted.append(w)
    return deleted
