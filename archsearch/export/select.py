"""Which trials of a run to export: read from the run folder's run.yaml and trials.csv."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from .._logging import get_logger
from ..config import ArchConfig
from ..errors import ArchsearchError, ExportError
from .common import Pick

log = get_logger("export")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_request(trial: Any, top: Any, knee: Any, epochs: Any) -> None:
    given = [n for n, v in (("--trial", trial), ("--top", top)) if v is not None]
    if knee:
        given.append("--knee")
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise ExportError(f"export: expected exactly one of --trial, --top, --knee, got {got}")
    if trial is not None and not _is_int(trial):
        raise ExportError(f"--trial: expected a trial number, got {trial!r}")
    if top is not None and (not _is_int(top) or top < 1):
        raise ExportError(f"--top: expected an integer >= 1, got {top!r}")
    if epochs is not None and (not _is_int(epochs) or epochs < 1):
        raise ExportError(f"--epochs: expected an integer >= 1, got {epochs!r}")


def read_settings(run: Path) -> dict[str, Any]:
    path = run / "run.yaml"
    if not path.is_file():
        raise ExportError(f"run directory {str(run)!r}: expected run.yaml in it, found none")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        msg = " ".join(str(e).split())
        raise ExportError(f"{path}: expected readable YAML, got {msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resolved"), dict):
        raise ExportError(f"{path}: expected an archsearch run.yaml, got no 'resolved' section")
    return data


def read_table(run: Path) -> pd.DataFrame:
    """The run's trial table; ``weights`` only where the file still exists."""
    from ..records import read_trials
    from ..rundir import RunDir

    path = RunDir(run).trials
    if not path.is_file():
        raise ExportError(f"run directory {str(run)!r}: expected trials.csv in it, found none")
    try:
        df = read_trials(path)
    except ArchsearchError as e:
        raise ExportError(str(e)) from None
    df["weights_recorded"] = df["weights"]  # before the existence filter
    kept = [w if isinstance(w, str) and (run / w).is_file() else None for w in df["weights"]]
    df["weights"] = kept
    return df


def _plain(value: Any) -> Any:
    """A table cell as a JSON-friendly Python value (NaN/NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def one_line(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _make_pick(row: pd.Series, run: Path) -> Pick:
    n = int(row["trial"])
    archid = str(row["archid"])
    text = row.get("config")
    if not isinstance(text, str):
        raise ExportError(f"trial {n}: expected a stored architecture config, found none")
    try:
        config = ArchConfig.from_json(text)
    except ArchsearchError as e:
        raise ExportError(f"trial {n}: expected a valid stored config, got {e}") from None
    if config.archid != archid:
        raise ExportError(
            f"trial {n}: expected its stored config to have archid {archid}, got "
            f"{config.archid} (the config format changed since the run)"
        )
    w = row.get("weights")
    weights = run / w if isinstance(w, str) else None
    plain = {k: _plain(v) for k, v in row.items() if not isinstance(v, (list, dict))}
    return Pick(n, archid, config, plain, weights)


def pick_trial(df: pd.DataFrame, trial: int, run: Path) -> Pick:
    hits = df[df["trial"] == trial]
    if hits.empty:
        last = int(df["trial"].max()) if len(df) else -1
        have = f"trials 0..{last}" if last >= 0 else "no trials"
        raise ExportError(
            f"--trial: expected a trial of the study in {str(run)!r} ({have}), got {trial}"
        )
    row = hits.iloc[0]
    state = str(row["state"])
    if state != "COMPLETE":
        why = {
            "RUNNING": "it is still being trained",
            "WAITING": "it has not started",
        }.get(state, one_line(row.get("error")) or "no error recorded")
        raise ExportError(f"trial {trial}: expected a COMPLETE trial, got {state} ({why})")
    if not bool(row["feasible"]):
        why = one_line(row.get("error")) or "over budget"
        raise ExportError(
            f"trial {trial}: expected a feasible trial (within the run's budget), "
            f"got an infeasible one ({why})"
        )
    return _make_pick(row, run)


def pick_front(
    df: pd.DataFrame, objectives: list[str], top: int, knee: bool, run: Path
) -> list[Pick]:
    from ..pareto import pareto_table

    table = pareto_table(df, objectives, feasible_col="feasible") if len(df) else df
    front = table[table["pareto_rank"] == 0] if len(df) else df
    if front.empty:
        raise ExportError(
            f"run {str(run)!r}: expected a feasible COMPLETE trial on the Pareto front, found none"
        )
    if knee:
        return [_make_pick(front[front["knee"]].iloc[0], run)]
    acc = pd.to_numeric(front["accuracy_mean"], errors="coerce")
    ordered = front.assign(_acc=acc).sort_values(
        ["_acc", "trial"], ascending=[False, True], kind="stable"
    )
    picks: list[Pick] = []
    seen: set[str] = set()
    for _, row in ordered.iterrows():
        if row["archid"] in seen:
            continue
        seen.add(str(row["archid"]))
        picks.append(_make_pick(row, run))
        if len(picks) == top:
            break
    if len(picks) < top:
        log.info("--top %d: the front holds %d distinct architectures", top, len(picks))
    return picks


def require_weights(p: Pick, run: Path) -> None:
    if p.weights is not None and p.weights.is_file():
        return
    recorded = p.row.get("weights_recorded")
    if recorded:
        why = (
            f"{recorded} was deleted when the trial left the Pareto front; "
            "only front members keep weights"
        )
    else:
        why = "the run saved none for it"
    raise ExportError(
        f"trial {p.trial}: expected proxy-trained weights in {str(run)!r}, found none ({why}); "
        "pass --epochs E to retrain it from scratch"
    )
