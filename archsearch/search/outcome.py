"""What the study records of an evaluated candidate: objective values, constraints, attributes.

The driver (:mod:`archsearch.search.driver`) decides what happens to a trial; this module only
says how a cost and a training outcome are written into it, including the extra finished trial
of each other grid of a LookupViT multi-resolution training.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.samplers._base import _CONSTRAINTS_KEY
from optuna.trial import FrozenTrial, TrialState

from ..config import ArchConfig
from ..cost.candidate import CostRecord
from ..rundir import RunDir
from ..train.candidate import TrainOutcome

__all__ = ["CONSTRAINTS_KEY", "constraints", "grid_trial", "objective_values", "result_attrs"]

#: Where Optuna's constrained samplers and optuna-dashboard read a trial's constraints.
CONSTRAINTS_KEY = _CONSTRAINTS_KEY


def objective_values(
    objectives: list[str], cost: CostRecord, accuracy: float | None
) -> list[float]:
    """The trial's values in the order of ``objectives`` (accuracy 0 when not trained)."""
    values = {"accuracy": accuracy or 0.0, "latency": cost.latency_ms or 0.0}
    values.update(params=float(cost.params), macs=float(cost.macs))
    return [float(values[o]) for o in objectives]


def constraints(cost: CostRecord) -> list[float]:
    """Constraint values (> 0: violated), the list optuna-dashboard reads."""
    return list((cost.ratios or {"budget": 0.0}).values())


def result_attrs(run: RunDir, cost: CostRecord, out: TrainOutcome | None) -> dict[str, Any]:
    """The user attributes of a counted (and, with ``out``, trained) candidate."""
    attrs: dict[str, Any] = {
        "feasible": cost.feasible,
        "params": cost.params,
        "total_params": cost.total_params,
        "macs": cost.macs,
        "latency_ms": cost.latency_ms,
        "violations": "; ".join(cost.violations),
        "counted_by": cost.counted_by,
        "epochs": 0,
        "train_seconds": 0.0,
    }
    if out is not None:
        attrs.update(proxy_accuracy=out.accuracy, val_images=out.val_images)
        attrs.update(history=out.history, epochs=out.epochs)
        attrs.update(train_seconds=round(out.train_seconds, 3))
        if out.weights is not None:
            attrs["weights"] = run.relative(out.weights)
    return attrs


def grid_trial(
    src: optuna.Trial,
    cfg: ArchConfig,
    cost: CostRecord,
    out: TrainOutcome,
    *,
    run: RunDir,
    objectives: list[str],
    base_attrs: dict[str, Any],
) -> FrozenTrial:
    """A finished trial for another grid ``cfg`` of the multi-resolution training of ``src``
    (``trained_with`` = its number; its own counts; its accuracy when within budget)."""
    params = {k: (cfg.stages[0].lookup_grid if k.endswith("lookup_grid") else v)
              for k, v in src.params.items()}  # fmt: skip
    trained = out if cost.feasible else None
    attrs = {**result_attrs(run, cost, trained), **base_attrs, "trained_with": src.number}
    for k in ("rung", "bracket", "seed", "fidelity"):
        if k in src.user_attrs:
            attrs[k] = src.user_attrs[k]
    return optuna.trial.create_trial(
        state=TrialState.COMPLETE,
        params=params,
        distributions=dict(src.distributions),
        values=objective_values(objectives, cost, trained.accuracy if trained else None),
        user_attrs=attrs,
        system_attrs={CONSTRAINTS_KEY: constraints(cost)},
    )
