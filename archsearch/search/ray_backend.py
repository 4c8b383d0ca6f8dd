"""``archsearch run --backend ray``: the same search, with trials trained on Ray Tune.

The driver owns the archsearch study (``study.journal``): a :class:`ray.tune.search.optuna.
OptunaSearch` subclass asks it for candidates through the same define-by-run function and
sampler as the local backend, costs each candidate on the driver (analytic count, then the
fvcore audit and latency when within budget) and records over-budget candidates and repeated
architectures at once, so only feasible, new candidates become Ray trials and reach a worker
(and a GPU). Workers train by the proxy schedule and report every epoch (``--scheduler asha``
stops weak trials early); finished trials are recorded in the study with the local backend's
attributes, so ``trials.csv``, ``weights/``, ``archsearch report`` and ``archsearch export`` are
unchanged. The journal is the state of record: the same command resumes an interrupted run,
re-queues the candidates that were in flight and keeps every finished trial.

Workers write weights to ``RUN_DIR/weights`` directly: on a multi-node cluster the run directory
must be on a filesystem shared by all nodes. Ray Tune's own logs go to ``RUN_DIR/ray``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .._logging import get_logger
from ..config import ArchConfig
from ..cost.budget import Budget
from ..errors import ArchsearchError, ConfigError, TrainingError
from ..models import reference_config
from ..train.data import ImageData
from ..train.device import available_cpus, configure_threads
from ..train.proxy import ProxySchedule
from . import study as st
from .evaluate import CostRecord, CostTarget, Evaluator, Outcome, TrialHooks, describe
from .results import write_trials_csv
from .runner import OBJECTIVES, Plan, Progress, _after_trial, _front, _make_study, _write_yaml

__all__ = ["run_ray"]

log = get_logger("ray")

#: Result keys every report carries (the searcher's metrics must be in each result).
_COST_KEYS = ("params", "macs", "latency_ms")
_WAIT = "wait"
_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What a worker needs besides the dataset (sent once through the object store)."""

    budget: Budget
    target: CostTarget
    schedule: ProxySchedule
    seed: int
    weights_dir: str
    device: str
    threads: int


class _Precosted(Evaluator):
    """An evaluator whose cost check was done on the driver: no second audit in the worker."""

    def __init__(self, record: CostRecord, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record = record

    def cost(self, config: ArchConfig, *, audit: bool = True) -> CostRecord:
        return copy.deepcopy(self.record)


def _trainable(spec: dict[str, Any], setup: _Setup, data: ImageData) -> None:
    """Ray Tune function trainable: train one feasible candidate, reporting every epoch."""
    device = torch.device(setup.device)
    if device.type == "cpu":
        configure_threads(setup.threads)
    record = CostRecord(**spec["cost"])
    costs = {k: float(getattr(record, k) or 0.0) for k in _COST_KEYS}
    evaluator = _Precosted(
        record,
        budget=setup.budget,
        target=setup.target,
        data=data,
        schedule=setup.schedule,
        device=device,
        seed=setup.seed,
        weights_dir=Path(setup.weights_dir),
    )

    class Hooks(TrialHooks):
        def report(self, epoch: int, accuracy: float) -> None:
            tune.report({"epoch": epoch, "proxy_accuracy": accuracy, **costs})

    config = ArchConfig.from_json(spec["config"])
    try:
        outcome = evaluator.train(config, hooks=Hooks(), tag=spec["tag"])
    except Exception as e:  # recorded as a failed trial; the search goes on (stops are SystemExit)
        if not isinstance(e, TrainingError):
            log.exception("trial %s failed", spec["number"])
        msg = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
        tune.report({"proxy_accuracy": 0.0, **costs, "failed": msg})
        return
    final = json.dumps(dataclasses.asdict(outcome))
    tune.report({"proxy_accuracy": outcome.accuracy or 0.0, **costs, "outcome": final})


def _set(trial: optuna.Trial, **attrs: Any) -> None:
    for k, v in attrs.items():
        trial.set_user_attr(k, v)


def _outcome(text: str) -> Outcome:
    data = json.loads(text)
    cost = CostRecord(**data.pop("cost"))
    return Outcome(cost=cost, **data)


class _StudySearcher(OptunaSearch):
    """OptunaSearch over the run's own study; over-budget and repeated candidates never launch."""

    def __init__(self, plan: Plan, study: optuna.Study, progress: Progress) -> None:
        cols = [OBJECTIVES[o][0] for o in plan.objectives]
        modes = ["max" if OBJECTIVES[o][1] == "maximize" else "min" for o in plan.objectives]
        super().__init__(space=None, metric=cols, mode=modes)
        self._space = self._define
        self._ot_study = study  # type: ignore[assignment]
        self.plan, self.study, self.progress = plan, study, progress
        self.evaluator = Evaluator(
            budget=plan.budget,
            target=plan.target,
            data=None,
            schedule=plan.schedule,
            device=plan.device,
            seed=plan.options.seed,
            measure_latency_always="latency" in plan.objectives,
        )
        done = {
            t.user_attrs.get("baseline")
            for t in study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")
        }
        self.baselines = [n for n in plan.baselines if n not in done]
        self.waiting: dict[str, list[optuna.Trial]] = {}  # archid -> trials awaiting its result
        self.ready: list[optuna.Trial] = []  # deferred trials whose original did not complete
        self.labels: dict[int, tuple[int, int, str, str]] = {}
        self.last_label = -1
        self.started, self.attempts, self.stopped = time.monotonic(), 0, False

    def _define(self, trial: optuna.Trial) -> dict[str, Any]:
        """The define-by-run space: the local backend's sampling code."""
        cfg = self.plan.space.sample(lambda name, opts: trial.suggest_categorical(name, opts))
        return {"config": cfg.to_json(), "archid": cfg.archid}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its config; the journal is the state
        return {"_metric": self._metric, "_mode": self._mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"study": str(self.plan.run_dir / st.JOURNAL)}, f)

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new run reopens the study journal."""

    # ------------------------------------------------------------------ asking
    def _stop(self) -> bool:
        plan = self.plan
        if self.stopped or st.counted_trials(self.study, include_running=True) >= plan.trials:
            return True
        if plan.timeout is not None and time.monotonic() - self.started > plan.timeout:
            log.warning("timeout of %.0f s reached; stopping the search", plan.timeout)
            self.stopped = True
        elif self.attempts >= max(200, 50 * plan.trials):
            log.warning("%d candidates sampled, too few within budget; stopping", self.attempts)
            self.stopped = True
        return self.stopped

    def _label(self, trial: optuna.Trial, label: tuple[int, int, str, str]) -> None:
        self.labels[trial.number] = label
        self.last_label = trial.number
        self.progress.trial_start(label[0], label[1], trial.number, label[2], label[3])

    def _next(self) -> tuple[optuna.Trial, ArchConfig] | None | str:
        """A trial to launch; None after recording a candidate without Ray; FINISHED or _WAIT."""
        if self.ready:
            trial = self.ready.pop(0)
            return trial, ArchConfig.from_json(trial.user_attrs["config"])
        if self.baselines:
            name = self.baselines.pop(0)
            cfg = reference_config(name)
            trial = self.study.ask()
            _set(trial, owner=st._owner(), baseline=name, archid=cfg.archid, config=cfg.to_json())
            i = len(self.plan.baselines) - len(self.baselines)
            self._label(trial, (i, len(self.plan.baselines), describe(cfg), f"baseline {name}"))
            return trial, cfg
        if self._stop():
            return _WAIT if self.waiting else Searcher.FINISHED
        self.attempts += 1
        trial = self.study.ask()
        trial.set_user_attr("owner", st._owner())
        values = self._suggest_from_define_by_run_func(self._define, trial)
        cfg = ArchConfig.from_json(values["config"])
        _set(trial, archid=cfg.archid, config=values["config"])
        index = st.counted_trials(self.study, include_running=True)
        self._label(trial, (index, self.plan.trials, describe(cfg), "trial"))
        done = st._find_done(self.study, cfg.archid, trial.number)
        if done == "running":  # in flight on Ray: reuse its result when it arrives
            self.waiting.setdefault(cfg.archid, []).append(trial)
            return None
        if isinstance(done, FrozenTrial):
            self._reuse(trial, done)
            return None
        return trial, cfg

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        while True:
            nxt = self._next()
            if nxt is None:
                continue
            if nxt == _WAIT:
                return None  # the deferred duplicates wait for the trials in flight
            if isinstance(nxt, str):
                return nxt
            trial, cfg = nxt
            record = self.evaluator.cost(cfg)  # the budget check, before any worker is involved
            if not record.feasible:
                outcome = Outcome(archid=cfg.archid, cost=record)
                st._record(trial, outcome)
                self.study.tell(trial, st.objective_values(self.plan.objectives, outcome))
                self._finished(trial)
                continue
            self._ot_trials[trial_id] = trial
            trial.set_user_attr("ray_trial", trial_id)
            baseline = trial.user_attrs.get("baseline")
            tag = f"baseline-{baseline}" if baseline else f"trial{trial.number:05d}"
            spec = {
                "number": trial.number,
                "archid": cfg.archid,
                "tag": tag,
                "config": cfg.to_json(),
            }
            return {**spec, "cost": dataclasses.asdict(record)}

    # ------------------------------------------------------------------ results
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "epoch" in result:
            self.progress.epoch(
                result["epoch"], self.plan.schedule.epochs, result["proxy_accuracy"]
            )

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        trial = self._ot_trials.pop(trial_id, None)
        if trial is None:
            return
        result = result or {}
        if "outcome" in result:
            outcome = _outcome(result["outcome"])
            st._record(trial, outcome)
            self.study.tell(trial, st.objective_values(self.plan.objectives, outcome))
        else:
            if "failed" in result:
                state, msg = TrialState.FAIL, result["failed"]
            elif error:
                state, msg = TrialState.FAIL, f"Ray trial {trial_id} failed (log under ray/)"
            elif "epoch" in result:
                state = TrialState.PRUNED
                msg = f"stopped by ASHA after epoch {result['epoch']} at accuracy "
                msg += f"{result['proxy_accuracy']:.4f}"
            else:
                state, msg = TrialState.PRUNED, "stopped by Ray Tune before its first epoch"
            trial.set_user_attr("error", msg)
            self.study.tell(trial, state=state)
        self._finished(trial)

    def _reuse(self, trial: optuna.Trial, done: FrozenTrial) -> None:
        for k, v in done.user_attrs.items():
            if k not in ("owner", "retry_of", "ray_trial"):
                trial.set_user_attr(k, v)
        trial.set_user_attr("reused_from", done.number)
        for k, v in dict(done.constraints).items():
            trial.set_constraint(k, v)
        self.study.tell(trial, done.values)
        self._finished(trial)

    def _finished(self, trial: optuna.Trial) -> None:
        ft = self.study.get_trials(deepcopy=False)[trial.number]
        label = self.labels.pop(ft.number, None)
        if label is not None and ft.number != self.last_label:
            self._label(trial, label)  # concurrent trials: name the one that ends
        _after_trial(self.plan, self.study, ft, self.progress)
        waiting = self.waiting.pop(ft.user_attrs.get("archid", ""), [])
        if waiting and ft.state == TrialState.COMPLETE and "reused_from" not in ft.user_attrs:
            for w in waiting:
                self._reuse(w, ft)
        elif waiting:  # the original failed or was stopped: train the first duplicate instead
            self.ready.append(waiting[0])
            if waiting[1:]:
                self.waiting[ft.user_attrs["archid"]] = waiting[1:]

    def abandon(self) -> int:
        """Mark trials still in flight as interrupted and queue them again (as a crash would)."""
        left = [
            *self._ot_trials.values(),
            *self.ready,
            *(t for w in self.waiting.values() for t in w),
        ]
        for trial in left:
            _set(trial, error="interrupted", interrupted=True)
            self.study.tell(trial, state=TrialState.FAIL)
            if not trial.user_attrs.get("baseline"):
                self.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        self._ot_trials.clear()
        self.ready.clear()
        self.waiting.clear()
        return len(left)


def _number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _check_options(opts: Any) -> None:
    c, g, m = opts.cpus_per_trial, opts.gpus_per_trial, opts.max_concurrent
    if c is not None and not (_number(c) and c > 0):
        raise ConfigError(f"--cpus-per-trial: expected a number > 0, got {c!r}")
    if g is not None and not (_number(g) and g >= 0):
        raise ConfigError(f"--gpus-per-trial: expected a number >= 0, got {g!r}")
    if m is not None and not (isinstance(m, int) and not isinstance(m, bool) and m >= 1):
        raise ConfigError(f"--max-concurrent: expected an integer >= 1, got {m!r}")


def _connect(address: str | None) -> bool:
    """Start or join Ray; True when this call started it (and must shut it down)."""
    if ray.is_initialized():
        return False
    common: dict[str, Any] = {"log_to_driver": False, "logging_level": "WARNING"}
    try:
        if address:
            ray.init(address=address, **common)
        else:
            ray.init(num_cpus=available_cpus(), include_dashboard=False, **common)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = f"at {address!r}" if address else "locally"
        raise ArchsearchError(f"--backend ray: cannot start or reach Ray {where}: {e}") from None
    return True


def _resources(plan: Plan, local: bool) -> tuple[float, float, int]:
    """CPUs and GPUs per trial and the number of trials run at once."""
    opts = plan.options
    have = ray.cluster_resources()
    cpus_total, gpus_total = float(have.get("CPU", 0)), float(have.get("GPU", 0))
    gpus = opts.gpus_per_trial if opts.gpus_per_trial is not None else float(gpus_total >= 1)
    cpus = opts.cpus_per_trial if opts.cpus_per_trial is not None else 1.0
    if cpus > cpus_total or gpus > gpus_total:
        need = f"a trial needs {cpus:g} CPUs and {gpus:g} GPUs, Ray has {cpus_total:g} and "
        need += f"{gpus_total:g}"
        if local:  # a local instance never grows: trials would wait forever
            raise ConfigError(f"--cpus-per-trial/--gpus-per-trial: {need} on this machine")
        log.warning("%s; trials wait for the cluster to grow", need)
    fits = min(cpus_total / cpus if cpus else math.inf, gpus_total / gpus if gpus else math.inf)
    limit = opts.max_concurrent or max(1, int(fits) if math.isfinite(fits) else 1)
    return cpus, gpus, limit


def _trial_name(trial: Any) -> str:
    return f"trial{trial.config['number']:05d}"


def run_ray(plan: Plan, progress: Progress) -> Any:
    """Run the search of ``plan`` on Ray Tune; returns the Pareto front (DataFrame).

    Args:
        plan: a validated plan (``plan.options.backend == "ray"``) from
            :func:`archsearch.search.runner.prepare`.
        progress: receives the run's events (as for the local backend).

    Returns:
        The final Pareto front, as :func:`archsearch.search.runner.execute` returns it.

    Raises:
        ConfigError: a Ray option is out of range.
        ArchsearchError: Ray cannot be started or reached.
        KeyboardInterrupt: the run was interrupted (Ctrl-C); the same command resumes it.
    """
    opts = plan.options
    _check_options(opts)
    if opts.pruner:
        log.warning("--pruner is not used by the Ray backend; use --scheduler asha")
    if opts.workers > 1:
        log.warning("--workers is not used by the Ray backend; use --max-concurrent")
    started_ray = _connect(opts.ray_address)
    try:
        cpus, gpus, limit = _resources(plan, local=started_ray and not opts.ray_address)
        if opts.force and plan.run_dir.exists() and not plan.resumed:
            shutil.rmtree(plan.run_dir)
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        _write_yaml(plan.run_dir / "run.yaml", plan.settings)
        study = _make_study(plan)
        recovered = st.recover_interrupted(study)
        if recovered:
            log.info("re-queued interrupted trials %s", recovered)
        searcher = _StudySearcher(plan, study, progress)
        device = "cuda" if gpus > 0 else ("cpu" if plan.device.type == "cuda" else str(plan.device))
        setup = _Setup(
            budget=plan.budget,
            target=plan.target,
            schedule=plan.schedule,
            seed=opts.seed,
            weights_dir=str((plan.run_dir / "weights").resolve()),
            device=device,
            threads=max(1, int(cpus)),
        )
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, setup=setup, data=plan.data),
            {"cpu": cpus, "gpu": gpus},
        )
        epochs = plan.schedule.epochs
        scheduler = None
        if opts.scheduler == "asha":  # the outcome report is iteration epochs + 1
            scheduler = ASHAScheduler(
                metric="proxy_accuracy", mode="max", max_t=epochs + 1, reduction_factor=2
            )
        log.info("Ray: %g CPUs and %g GPUs per trial, up to %d at once", cpus, gpus, limit)
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=-1,
                max_concurrent_trials=limit,
                reuse_actors=True,
                trial_name_creator=_trial_name,
                trial_dirname_creator=_trial_name,
            ),
            run_config=tune.RunConfig(
                name=time.strftime("tune-%Y%m%d-%H%M%S"),
                storage_path=str((plan.run_dir / "ray").resolve()),
                verbose=0,
            ),
        )
        progress.start(plan, st.counted_trials(study))
        saved = os.environ.get(_NEW_OUTPUT)
        os.environ[_NEW_OUTPUT] = "0"  # with verbose=0, Tune then prints nothing on the console
        try:
            tuner.fit()
        finally:
            left = searcher.abandon()
            if saved is None:
                os.environ.pop(_NEW_OUTPUT, None)
            else:
                os.environ[_NEW_OUTPUT] = saved
        if left:
            raise KeyboardInterrupt(f"{left} Ray trials interrupted")
    finally:
        if started_ray:
            ray.shutdown()
    front = _front(plan, study)
    write_trials_csv(study, plan.run_dir / "trials.csv")
    progress.finish(plan, front)
    return front
