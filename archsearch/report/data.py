"""Read a run directory into the tables a report is drawn from.

Everything is regenerated from the run folder's own files, the settings (``run.yaml``) and the
trial table (``trials.csv``, written after every trial), so a report can be made at any time,
also while the run is still going, and also from a copied run folder without its journal.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import yaml

from .._logging import get_logger
from ..cost.budget import Budget, parse_budget
from ..errors import ArchsearchError, BudgetError
from ..pareto import pareto_table, parse_objectives
from ..records import TRIAL_COLUMNS, design_rows, read_trials
from ..rundir import RunDir

__all__ = [
    "RunData",
    "Dimension",
    "load_run",
    "results",
    "designs",
    "pareto_rows",
    "dimensions",
    "param_importances",
    "option_label",
]

log = get_logger("report")

SETTINGS = "run.yaml"
DEFAULT_OBJECTIVES = ["accuracy", "macs"]
#: Columns of ``pareto.csv`` after the choice columns, in order.
PARETO_TAIL = [
    "accuracy_mean",
    "accuracy_lo",
    "accuracy_hi",
    "seeds",
    "proxy_accuracy",
    "accuracy_se",
    "params",
    "total_params",
    "macs",
    "latency_ms",
    "epochs",
    "train_seconds",
    "reused_from",
    "weights",
    "knee",
    "crowding",
    "config",
]


@dataclass
class RunData:
    """A run directory as tables.

    Attributes:
        run_dir: The run directory.
        settings: Contents of ``run.yaml``.
        objectives: Objective short names, accuracy first (from ``resolved.objectives``).
        budget: The parsed budget, or None when ``run.yaml`` has none readable.
        table: One row per trial (every state) with ``pareto_rank``, ``crowding`` and ``knee``.
        choices: Names of the sampled-choice columns of ``table``.
        notes: Things the report could not do, one sentence each.
    """

    run_dir: Path
    settings: dict[str, Any]
    objectives: list[str]
    budget: Budget | None
    table: pd.DataFrame
    choices: list[str]
    notes: list[str] = field(default_factory=list)

    @property
    def resolved(self) -> dict[str, Any]:
        """The ``resolved`` section of the settings (empty if absent)."""
        value = self.settings.get("resolved")
        return value if isinstance(value, dict) else {}


@dataclass(frozen=True)
class Dimension:
    """Accuracies of trained designs grouped by the option they took for one choice.

    Attributes:
        name: The choice (column) name, e.g. ``stage1.mixer``.
        options: ``(option label, sorted accuracies)`` in the option's natural order.
        best: Label of the option with the highest median accuracy.
        spread: Best minus worst median accuracy among the options.
    """

    name: str
    options: list[tuple[str, np.ndarray]]
    best: str
    spread: float


def _load_settings(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load((path / SETTINGS).read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ArchsearchError(
            f"run directory {str(path)!r}: expected a readable YAML {SETTINGS}, got error: {first}"
        ) from None
    if not isinstance(data, dict):
        raise ArchsearchError(
            f"run directory {str(path)!r}: expected {SETTINGS} to hold a mapping, "
            f"got {type(data).__name__}"
        )
    return data


def _objectives(value: Any) -> list[str] | None:
    """Objective names from run.yaml if they are valid (accuracy first), else None."""
    if not isinstance(value, list) or not value or value[0] != "accuracy":
        return None
    try:
        parse_objectives([str(v) for v in value])
    except ValueError:
        return None
    return [str(v) for v in value]


def load_run(run_dir: str | Path) -> RunData:
    """Load a run directory's settings and every trial of its study.

    Args:
        run_dir: A directory written by ``archsearch run``.

    Returns:
        The run as tables; ``notes`` says what is missing.

    Raises:
        ArchsearchError: ``run_dir`` lacks ``run.yaml``, or ``run.yaml`` or ``trials.csv`` is
            unreadable.
    """
    path = Path(run_dir)
    run = RunDir(path)
    if not run.settings.is_file():
        found = "no run.yaml in it" if path.is_dir() else "no such directory"
        raise ArchsearchError(
            f"run directory {str(path)!r}: expected an archsearch run folder, got {found}"
        )
    settings = _load_settings(path)
    raw = settings.get("resolved")
    resolved: dict[str, Any] = raw if isinstance(raw, dict) else {}
    notes: list[str] = []
    objectives = _objectives(resolved.get("objectives"))
    if objectives is None:
        notes.append(
            f"run.yaml names no valid objectives ({resolved.get('objectives')!r}); assumed "
            f"{', '.join(DEFAULT_OBJECTIVES)}."
        )
        objectives = list(DEFAULT_OBJECTIVES)
    budget: Budget | None = None
    try:
        budget = parse_budget(str(resolved.get("budget")))
    except BudgetError:
        notes.append("run.yaml holds no readable budget; no budget line is drawn.")
    if run.trials.is_file():
        frame = read_trials(run.trials)
    else:
        from ..records import trials_frame

        frame = trials_frame([])
        notes.append("The run has no finished trial yet: no trials to report.")
    frame["weights"] = [
        w if isinstance(w, str) and (path / w).is_file() else None for w in frame["weights"]
    ]
    table = pareto_table(frame, objectives, feasible_col="feasible")
    choices = [c for c in frame.columns if c not in TRIAL_COLUMNS]
    return RunData(path, settings, objectives, budget, table, choices, notes)


def results(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that are results: designs trained at the top rung (each with its seed mean; lower
    rungs, seed repeats and repeats of an evaluated design are not)."""
    return table[design_rows(table)]


def designs(table: pd.DataFrame) -> pd.DataFrame:
    """Results from the search space: no baselines, one row per distinct architecture."""
    res = results(table)
    res = res[res["baseline"] == ""]
    return res[~(res["archid"].notna() & res["archid"].duplicated())]


def pareto_rows(data: RunData) -> pd.DataFrame:
    """The Pareto front (rank 0) as written to ``pareto.csv``, best accuracy first."""
    table = data.table
    front = table[table["pareto_rank"] == 0]
    front = front.sort_values(["accuracy_mean", "trial"], ascending=[False, True], kind="stable")
    head = ["trial", "archid", "baseline"]
    return front[head + data.choices + PARETO_TAIL].reset_index(drop=True)


def option_label(value: Any) -> str:
    """A choice value as shown in plots and tables (``2`` rather than ``2.0``)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _order_key(value: Any) -> tuple[int, float, str]:
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, math.nan, str(value))


def dimensions(data: RunData) -> list[Dimension]:
    """Accuracy per option for every choice taking 2+ values among trained designs.

    Baselines and repeated architectures are left out, so each design counts once. Dimensions
    come out with the largest spread of median accuracy first.
    """
    pool = designs(data.table)
    out = []
    for name in data.choices:
        column = pool[name]
        taken = column[column.notna()]
        values = sorted(set(taken.tolist()), key=_order_key)
        if len(values) < 2:
            continue
        options = []
        for value in values:
            accs = np.sort(pool.loc[taken.index[taken == value], "accuracy_mean"].to_numpy(float))
            options.append((option_label(value), accs))
        medians = [float(np.median(accs)) for _, accs in options]
        best = options[int(np.argmax(medians))][0]
        out.append(Dimension(name, options, best, max(medians) - min(medians)))
    return sorted(out, key=lambda d: -d.spread)


def param_importances(data: RunData) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances for accuracy over the trained designs.

    Returns:
        ``(importances, note)``: importances by parameter (None when Optuna cannot compute
        them) and a sentence on what was used or why nothing could be computed.
    """
    pool = designs(data.table)
    trials = _as_optuna_trials(pool, data.choices)
    if len(trials) < 2:
        return None, (
            f"Parameter importances need at least 2 trained designs, got {len(trials)}; skipped."
        )
    scratch = optuna.create_study(directions=["maximize"])
    scratch.add_trials(trials)
    # PED-ANOVA needs no scikit-learn and handles conditional choices (branched spaces); it
    # minimises its target, hence the negated accuracy. Aim for ~5 designs in the top quantile.
    quantile = min(0.5, max(0.1, 5 / len(trials)))
    evaluator = optuna.importance.PedAnovaImportanceEvaluator(target_quantile=quantile)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                scratch, evaluator=evaluator, target=lambda t: -(t.value or 0.0)
            )
    except Exception as exc:  # Optuna refuses e.g. too few trials or degenerate parameters
        log.debug("parameter importances failed", exc_info=True)
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"Optuna could not compute parameter importances ({first}); skipped."
    if not found:
        return None, "Optuna found no parameter to rank among the trained designs; skipped."
    note = (
        f"PED-ANOVA importances (Optuna) over {len(trials)} trained designs: how much each "
        f"choice matters for reaching the top {quantile:.0%} of proxy accuracy."
    )
    return {k: float(v) for k, v in found.items()}, note


def _as_optuna_trials(pool: pd.DataFrame, choices: list[str]) -> list[Any]:
    """Trained designs as Optuna trials (choices over the values seen), for importances."""
    dists = {}
    for name in choices:
        seen = sorted({_plain(v) for v in pool[name].dropna()}, key=_order_key)
        if len(seen) >= 2:
            dists[name] = optuna.distributions.CategoricalDistribution(seen)
    out = []
    for _, row in pool.iterrows():
        params = {k: _plain(row[k]) for k in dists if not pd.isna(row[k])}
        out.append(
            optuna.trial.create_trial(
                params=params,
                distributions={k: dists[k] for k in params},
                value=float(row["accuracy_mean"]),
            )
        )
    return out


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
