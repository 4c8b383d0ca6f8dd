"""One row of ``trials.csv``: its columns, their order and their types, defined once.

:class:`TrialRecord` is what the study driver produces for each trial and what ``report`` and
``export`` read back: :func:`trials_frame` turns records into a table with fixed dtypes and
:func:`read_trials` reads ``trials.csv`` into the same table, so a run folder without its Optuna
journal is still a complete result. The sampled design choices sit between ``baseline`` and
``params``, one column each, with their own types (integer choices stay integers).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats
from .errors import ArchsearchError

__all__ = [
    "TrialRecord",
    "HEAD_COLUMNS",
    "TAIL_COLUMNS",
    "TRIAL_COLUMNS",
    "DTYPES",
    "trials_frame",
    "read_trials",
    "accuracy_se",
    "trained",
    "design_rows",
    "aggregate_seeds",
]

#: Column -> pandas dtype, in column order; the choices go between the head and the tail.
DTYPES: dict[str, str] = {
    "trial": "Int64",
    "state": "string",
    "archid": "string",
    "feasible": "boolean",
    "baseline": "string",
    "params": "Int64",
    "macs": "Int64",
    "latency_ms": "Float64",
    "proxy_accuracy": "Float64",
    "accuracy_se": "Float64",
    "seeds": "Int64",
    "accuracy_mean": "Float64",
    "accuracy_lo": "Float64",
    "accuracy_hi": "Float64",
    "val_images": "Int64",
    "rung": "Int64",
    "fidelity": "Int64",
    "seed": "Int64",
    "repeat_of": "Int64",
    "promoted_from": "Int64",
    "trained_with": "Int64",
    "epochs": "Int64",
    "train_seconds": "Float64",
    "violations": "string",
    "error": "string",
    "total_params": "Int64",
    "reused_from": "Int64",
    "weights": "string",
    "config": "string",
}
#: Columns added after the first release, with the value older tables imply.
ADDED_COLUMNS = {
    "seeds": "",
    "accuracy_mean": "",
    "accuracy_lo": "",
    "accuracy_hi": "",
    "rung": "0",
    "fidelity": "",
    "seed": "0",
    "repeat_of": "",
    "promoted_from": "",
    "trained_with": "",
}
HEAD_COLUMNS = ["trial", "state", "archid", "feasible", "baseline"]
TAIL_COLUMNS = [c for c in DTYPES if c not in HEAD_COLUMNS]
TRIAL_COLUMNS = HEAD_COLUMNS + TAIL_COLUMNS


def accuracy_se(accuracy: float | None, n: int | None) -> float | None:
    """Binomial standard error of an accuracy measured on ``n`` validation images."""
    if accuracy is None or not n or (isinstance(accuracy, float) and math.isnan(accuracy)):
        return None
    return float(stats.accuracy_se(accuracy, n))


@dataclass
class TrialRecord:
    """One trial as recorded in ``trials.csv``.

    ``baseline`` names the reference design ("" for a searched one); ``reused_from`` is set on a
    repeat of an architecture already trained (it reuses that result, does not count towards
    ``--trials`` and is not a point of the front); ``violations`` lists the budgets a candidate
    exceeds (it was never trained); ``error`` says why training failed or stopped.

    ``rung`` is the training budget: 0 is the run's proxy schedule (the top), ``k`` has
    ``eta ** k`` times fewer images x epochs (``fidelity``); ``promoted_from`` names the
    lower-rung trial a design moved up from. ``seed`` > 0 marks a retraining of trial
    ``repeat_of`` with another seed. Only rung-0, seed-0 rows are designs of the front; their
    ``seeds``, ``accuracy_mean``, ``accuracy_lo`` and ``accuracy_hi`` aggregate every seed
    (see :func:`aggregate_seeds`). ``trained_with`` marks a LookupViT grid scored from the
    multi-resolution training of that trial: a design of its own (own archid, counts and
    accuracy) whose ``train_seconds`` is the shared training's, not a second training.
    """

    trial: int
    state: str
    archid: str | None = None
    feasible: bool = False
    baseline: str = ""
    choices: dict[str, Any] = field(default_factory=dict)
    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    proxy_accuracy: float | None = None
    accuracy_se: float | None = None
    seeds: int | None = None  # the design's aggregate over seeds: derived by trials_frame
    accuracy_mean: float | None = None
    accuracy_lo: float | None = None
    accuracy_hi: float | None = None
    val_images: int | None = None
    rung: int = 0
    fidelity: int | None = None
    seed: int = 0
    repeat_of: int | None = None
    promoted_from: int | None = None
    trained_with: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    violations: str = ""
    error: str = ""
    total_params: int | None = None
    reused_from: int | None = None
    weights: str | None = None
    config: str | None = None

    def row(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        choices = d.pop("choices")
        out = {k: d[k] for k in HEAD_COLUMNS}
        out.update(choices)
        out.update({k: d[k] for k in TAIL_COLUMNS})
        return out


def _choice_dtype(values: list[Any]) -> str | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not present:
        return "object"
    if all(isinstance(v, bool) for v in present):
        return "boolean"
    if all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "Int64"
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "Float64"
    return "string"


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for col, dtype in DTYPES.items():
        values = df[col]
        if dtype in ("Int64", "Float64"):
            values = pd.to_numeric(values, errors="coerce")
        elif dtype == "boolean":
            values = values.map(lambda v: v if v is None or isinstance(v, bool) else v == "True")
        df[col] = values.astype(dtype)
    for col in ("baseline", "violations", "error"):
        df[col] = df[col].fillna("")
    return df


def trials_frame(records: list[TrialRecord], run_dir: Path | None = None) -> pd.DataFrame:
    """Records as a table in column order with fixed dtypes.

    With ``run_dir``, ``weights`` keeps only paths of files that still exist.
    """
    choices: list[str] = []
    for r in records:
        choices.extend(k for k in r.choices if k not in choices)
    rows = [r.row() for r in records]
    df = pd.DataFrame(rows, columns=HEAD_COLUMNS + choices + TAIL_COLUMNS)
    df = _typed(df)
    for col in choices:
        df[col] = df[col].astype(_choice_dtype([r.choices.get(col) for r in records]) or "object")
    if run_dir is not None:
        df["weights"] = [
            w if isinstance(w, str) and (run_dir / w).is_file() else pd.NA for w in df["weights"]
        ]
        df["weights"] = df["weights"].astype("string")
    return aggregate_seeds(df)


def design_rows(table: pd.DataFrame) -> pd.Series:
    """Rows that are designs of the front's pool: trained at the top rung with the run's own
    seed (seed repeats, lower rungs, repeats of an evaluated design and failures are not)."""
    ok = (table["state"] == "COMPLETE") & table["feasible"].fillna(False).astype(bool)
    ok &= table["proxy_accuracy"].notna() & table["reused_from"].isna()
    ok &= table["rung"].fillna(0).eq(0) & table["seed"].fillna(0).eq(0)
    return ok & table["repeat_of"].isna()


def aggregate_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Fill ``seeds``, ``accuracy_mean``, ``accuracy_lo`` and ``accuracy_hi`` of every design row
    from its own accuracy and its seed repeats (rows with ``repeat_of`` = its trial); other rows
    get none. The 95% interval combines the seed-to-seed spread of the mean (t interval, two or
    more seeds) with the validation set's binomial error of the mean; one seed gives the
    validation error alone."""
    df = table.copy()
    for col in ("seeds", "accuracy_mean", "accuracy_lo", "accuracy_hi"):
        df[col] = pd.Series(pd.NA, index=df.index, dtype=DTYPES[col])
    designs = design_rows(df)
    done = (df["state"] == "COMPLETE") & df["proxy_accuracy"].notna() & df["repeat_of"].notna()
    extra: dict[int, list[float]] = {}
    for src, acc in zip(df.loc[done, "repeat_of"], df.loc[done, "proxy_accuracy"]):
        extra.setdefault(int(src), []).append(float(acc))
    for i in df.index[designs]:
        values = [float(df.at[i, "proxy_accuracy"]), *extra.get(int(df.at[i, "trial"]), [])]
        mean = sum(values) / len(values)
        n_val = df.at[i, "val_images"]
        val_se = accuracy_se(mean, None if pd.isna(n_val) else int(n_val)) or 0.0
        seed_lo, seed_hi = stats.mean_interval(values, se=0.0)
        half = math.hypot((seed_hi - seed_lo) / 2, stats.z_quantile(0.95) * val_se)
        df.at[i, "seeds"] = len(values)
        df.at[i, "accuracy_mean"] = mean
        df.at[i, "accuracy_lo"] = mean - half
        df.at[i, "accuracy_hi"] = mean + half
    return df


def _parse_cell(text: str) -> Any:
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def read_trials(path: Path) -> pd.DataFrame:
    """Read ``trials.csv`` into the table :func:`trials_frame` makes (same columns and dtypes)."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        raise ArchsearchError(f"{path}: expected archsearch's trials.csv, got {msg}") from None
    for col, default in ADDED_COLUMNS.items():  # a table written before the column existed
        if col not in raw.columns:
            raw[col] = default
    missing = [c for c in TRIAL_COLUMNS if c not in raw.columns]
    if missing:
        raise ArchsearchError(f"{path}: expected a column {missing[0]!r}, found none")
    cols = list(raw.columns)
    choices = cols[len(HEAD_COLUMNS) : cols.index(TAIL_COLUMNS[0])]
    raw = raw[HEAD_COLUMNS + choices + TAIL_COLUMNS]
    df = raw.replace("", None)
    df = _typed(df.astype(object))
    for col in choices:
        values = [None if v is None else _parse_cell(v) for v in raw[col].replace("", None)]
        df[col] = pd.Series(values, dtype=_choice_dtype(values) or "object", index=df.index)
    return aggregate_seeds(df)


def trained(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that trained a design at the top rung with the run's seed (see :func:`design_rows`)."""
    return table[design_rows(table)]
