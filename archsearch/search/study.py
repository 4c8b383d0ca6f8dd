"""The only module that talks to Optuna: storage, samplers, and one trial's life cycle.

The study lives in a journal file (``study.journal``, append-only, safe across crashes and
shared by several worker processes). Open it with::

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    study = optuna.load_study(study_name="archsearch",
                              storage=JournalStorage(JournalFileBackend("DIR/study.journal")))

or ``optuna-dashboard DIR/study.journal``.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock
from optuna.trial import FrozenTrial, TrialState

from ..config import ArchConfig
from ..errors import ArchsearchError, TrainingError
from .evaluate import Evaluator, Outcome, TrialHooks, as_dict
from .space import SearchSpace

__all__ = [
    "STUDY_NAME",
    "JOURNAL",
    "open_study",
    "load_study",
    "make_sampler",
    "make_pruner",
    "objective_values",
    "recover_interrupted",
    "counted_trials",
    "run_trial",
    "run_baseline",
]

STUDY_NAME = "archsearch"
JOURNAL = "study.journal"
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _storage(run_dir: Path) -> JournalStorage:
    path = str(run_dir / JOURNAL)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def make_sampler(name: str, *, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, grouped: suits conditional spaces), ``nsga2`` or ``random``."""
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=6, constant_liar=True
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ArchsearchError(f"sampler: expected tpe, nsga2 or random, got {name!r}")


def make_pruner(enabled: bool, n_objectives: int) -> optuna.pruners.BasePruner:
    if enabled and n_objectives == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def open_study(
    run_dir: Path,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    run_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=_storage(run_dir),
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def load_study(run_dir: str | Path) -> optuna.Study:
    """Open an existing run's study (read or resume)."""
    path = Path(run_dir)
    if not (path / JOURNAL).is_file():
        raise ArchsearchError(f"run directory {str(path)!r}: expected {JOURNAL} in it, found none")
    return optuna.load_study(study_name=STUDY_NAME, storage=_storage(path))


def objective_values(objectives: Sequence[str], outcome: Outcome) -> list[float]:
    """Values in objective order; untrained candidates get accuracy 0 (they are infeasible)."""
    vals = []
    for name in objectives:
        if name == "accuracy":
            vals.append(float(outcome.accuracy or 0.0))
        elif name == "latency":
            vals.append(float(outcome.cost.latency_ms or 0.0))
        else:
            vals.append(float(getattr(outcome.cost, name)))
    return vals


def _owner() -> str:
    return f"{HOST}:{os.getpid()}"


def _alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != HOST:
        return True  # cannot tell for another machine: assume it is still working
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def recover_interrupted(study: optuna.Study) -> list[int]:
    """Fail trials left RUNNING by a dead process and queue their parameters to run again."""
    recovered = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if owner == _owner() or _alive(owner):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted")
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        baseline = t.user_attrs.get("baseline")
        if not baseline:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        recovered.append(t.number)
    return recovered


def counted_trials(study: optuna.Study, *, include_running: bool = False) -> int:
    """Search trials that count towards ``--trials``: candidates within budget that finished
    (trained, reused, pruned or failed) and, optionally, running ones; over-budget candidates,
    baselines and trials interrupted by a crash or Ctrl-C do not count."""
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    if include_running:
        states.append(TrialState.RUNNING)
    n = 0
    for t in study.get_trials(deepcopy=False, states=tuple(states)):
        if t.user_attrs.get("baseline") or t.user_attrs.get("interrupted"):
            continue
        if t.state == TrialState.COMPLETE and not t.user_attrs.get("feasible"):
            continue
        n += 1
    return n


class _OptunaHooks(TrialHooks):
    def __init__(self, trial: optuna.Trial, prune: bool) -> None:
        self.trial = trial
        self.prune = prune

    def report(self, epoch: int, accuracy: float) -> None:
        if not self.prune:
            return
        self.trial.report(accuracy, step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} at accuracy {accuracy:.4f}")


def _find_done(study: optuna.Study, archid: str, number: int) -> FrozenTrial | None | str:
    """A finished trial of the same architecture, ``"running"`` if one is in flight, or None."""
    running = False
    for t in study.get_trials(deepcopy=False):
        if t.number == number or t.user_attrs.get("archid") != archid:
            continue
        if t.state == TrialState.COMPLETE and "reused_from" not in t.user_attrs:
            return t
        if t.state == TrialState.RUNNING and _alive(t.user_attrs.get("owner")):
            running = True
    return "running" if running else None


def _record(trial: optuna.Trial, outcome: Outcome) -> None:
    for k, v in as_dict(outcome).items():
        trial.set_user_attr(k, v)
    ratios = outcome.cost.ratios or {"budget": 0.0}
    for k, v in ratios.items():
        trial.set_constraint(k, v)


def run_trial(
    study: optuna.Study,
    space: SearchSpace,
    evaluator: Evaluator,
    objectives: Sequence[str],
    *,
    prune: bool = False,
    on_sampled: Callable[[int, ArchConfig], None] | None = None,
    poll_seconds: float = 1.0,
) -> FrozenTrial:
    """Ask for one candidate, evaluate it (or reuse an earlier result) and tell the study."""
    trial = study.ask()
    trial.set_user_attr("owner", _owner())
    try:
        config = space.sample(lambda name, options: trial.suggest_categorical(name, options))
        archid = config.archid
        trial.set_user_attr("archid", archid)
        trial.set_user_attr("config", config.to_json())
        if on_sampled is not None:
            on_sampled(trial.number, config)
        while (done := _find_done(study, archid, trial.number)) == "running":
            time.sleep(poll_seconds)  # another worker trains this architecture: wait and reuse
        if isinstance(done, FrozenTrial):
            for k, v in done.user_attrs.items():
                if k not in ("owner", "retry_of", "baseline", "interrupted"):
                    trial.set_user_attr(k, v)
            trial.set_user_attr("reused_from", done.number)
            for k, v in dict(done.constraints).items():
                trial.set_constraint(k, v)
            study.tell(trial, done.values)
        else:
            outcome = evaluator.train(
                config, hooks=_OptunaHooks(trial, prune), tag=f"trial{trial.number:05d}"
            )
            _record(trial, outcome)
            study.tell(trial, objective_values(objectives, outcome))
    except BaseException as e:
        _close_failed(study, trial, e, requeue=True)
    return study.get_trials(deepcopy=False)[trial.number]


def _close_failed(
    study: optuna.Study, trial: optuna.Trial, exc: BaseException, *, requeue: bool
) -> None:
    """Tell the study how a trial ended abnormally; re-raise what is not the candidate's fault.

    Pruning and training errors (NaN loss, unusable candidate) end the trial and the search goes
    on. Anything else (Ctrl-C, a crash of our own) leaves the trial resumable: it is marked
    interrupted and, for search trials, queued to run again next time.
    """
    if isinstance(exc, optuna.TrialPruned):
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.PRUNED)
        return
    if isinstance(exc, TrainingError):
        trial.set_user_attr("error", str(exc))
        study.tell(trial, state=TrialState.FAIL)
        return
    trial.set_user_attr("error", "interrupted")
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=TrialState.FAIL)
    if requeue:
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
    raise exc


def run_baseline(
    study: optuna.Study,
    name: str,
    config: ArchConfig,
    evaluator: Evaluator,
    objectives: Sequence[str],
) -> FrozenTrial:
    """Train a reference design under the same proxy, recorded as a baseline trial."""
    trial = study.ask()
    trial.set_user_attr("owner", _owner())
    trial.set_user_attr("baseline", name)
    trial.set_user_attr("archid", config.archid)
    trial.set_user_attr("config", config.to_json())
    try:
        outcome = evaluator.train(config, tag=f"baseline-{name}")
        _record(trial, outcome)
        study.tell(trial, objective_values(objectives, outcome))
    except BaseException as e:
        _close_failed(study, trial, e, requeue=False)  # baselines are re-run by name
    return study.get_trials(deepcopy=False)[trial.number]


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One flat dict per trial (the raw material of ``trials.csv``)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        row: dict[str, Any] = {
            "trial": t.number,
            "state": t.state.name,
            "archid": a.get("archid"),
            "feasible": bool(a.get("feasible")) if t.state == TrialState.COMPLETE else False,
            "baseline": a.get("baseline", ""),
        }
        row.update(t.params)
        for k in ("params", "macs", "latency_ms", "proxy_accuracy", "epochs", "train_seconds"):
            row[k] = a.get(k)
        row["error"] = a.get("error") or a.get("violations") or ""
        row["total_params"] = a.get("total_params")
        row["reused_from"] = a.get("reused_from")
        row["weights"] = a.get("weights")
        row["config"] = a.get("config")
        rows.append(row)
    return rows
