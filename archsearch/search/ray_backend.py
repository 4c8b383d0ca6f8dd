"""``archsearch run --backend ray``: the study driver's candidates trained as Ray Tune trials.

A :class:`ray.tune.search.optuna.OptunaSearch` subclass asks the run's own study for candidates
through :class:`~archsearch.search.driver.StudyDriver` (the same sampling, repeat rule and budget
check as the local backend, all on the driver), so only feasible, new candidates become Ray trials
and reach a worker (and a GPU). Workers train by the proxy schedule and report every epoch
(``--scheduler asha`` stops weak trials early); the outcome goes back to the driver, which tells
the study and writes the run folder. The journal is the state of record: the same command resumes
an interrupted run.

Workers write weights to ``RUN_DIR/weights`` directly: on a multi-node cluster the run directory
must be on a filesystem shared by all nodes. Ray Tune's own logs go to ``RUN_DIR/ray``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from .._logging import get_logger
from ..config import ArchConfig
from ..errors import ArchsearchError, ConfigError, TrainingError
from ..train.candidate import GridRows, Trainer, TrainOutcome
from ..train.data import ImageData
from ..train.device import available_cpus, configure_threads
from ..train.proxy import CandidateOOMError, ProxySchedule
from . import study as st
from .driver import RUNNING, Candidate, Progress, StudyDriver
from .local import open_run_study, start_run
from .plan import OBJECTIVES, Plan

__all__ = ["run_ray"]

log = get_logger("ray")

_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"


@dataclasses.dataclass(frozen=True)
class _Setup:
    """What a worker needs besides the dataset (sent once through the object store)."""

    schedule: ProxySchedule
    seed: int
    device: str
    threads: int


def _trainable(spec: dict[str, Any], setup: _Setup, data: ImageData) -> None:
    """Ray Tune function trainable: train one feasible candidate, reporting every epoch."""
    device = torch.device(setup.device)
    if device.type == "cpu":
        configure_threads(setup.threads)
    trainer = Trainer(data, setup.schedule, device, setup.seed)
    schedule = ProxySchedule(**spec["schedule"]) if spec.get("schedule") else None
    costs = spec["costs"]

    def on_epoch(epoch: int, accuracy: float) -> None:
        tune.report({"epoch": epoch, "proxy_accuracy": accuracy, **costs})

    config = ArchConfig.from_json(spec["config"])
    try:
        weights = Path(spec["weights"]) if spec["weights"] else None
        rows = trainer.train_grids(
            config, weights=weights, on_epoch=on_epoch, schedule=schedule,
            seed_offset=spec["seed_offset"],
        )  # fmt: skip
    except CandidateOOMError as e:
        tune.report({"proxy_accuracy": 0.0, **costs, "oom": str(e)})
        return
    except Exception as e:  # recorded as a failed trial; the search goes on (stops are SystemExit)
        if not isinstance(e, TrainingError):
            log.exception("trial %s failed", spec["number"])
        msg = str(e) if isinstance(e, TrainingError) else f"{type(e).__name__}: {e}"
        tune.report({"proxy_accuracy": 0.0, **costs, "failed": msg})
        return
    own = next(o for c, o in rows if c.archid == config.archid)
    final = [
        {**dataclasses.asdict(o), "weights": str(o.weights) if o.weights else None,
         "config": c.to_json()}
        for c, o in rows
    ]  # fmt: skip
    tune.report({"proxy_accuracy": own.accuracy, **costs, "outcome": json.dumps(final)})


def _outcome(text: str, root: Path) -> GridRows:
    """The worker's ``(config, outcome)`` rows; weights paths made relative to the run folder."""
    rows = []
    for data in json.loads(text):
        config = ArchConfig.from_json(data.pop("config"))
        weights = data.pop("weights")
        path = root / Path(weights).relative_to(root.resolve()) if weights else None
        rows.append((config, TrainOutcome(**data, weights=path)))
    return rows


class _StudySearcher(OptunaSearch):
    """OptunaSearch over the run's own study, deciding through the study driver."""

    def __init__(self, driver: StudyDriver) -> None:
        plan = driver.plan
        cols = [OBJECTIVES[o][0] for o in plan.objectives]
        modes = ["max" if OBJECTIVES[o][1] == "maximize" else "min" for o in plan.objectives]
        super().__init__(space=None, metric=cols, mode=modes)
        self._ot_study = driver.study  # type: ignore[assignment]
        self.plan, self.driver = plan, driver
        self.baselines = self.driver.baselines_left()
        self.ready: list[optuna.Trial] = []  # waiting trials whose original did not complete
        self.running: dict[str, Candidate] = {}

    def __getstate__(self) -> dict[str, Any]:  # Tune pickles its config; the journal is the state
        return {"_metric": self._metric, "_mode": self._mode}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"study": str(self.plan.run.journal)}, f)

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: a new run reopens the study journal."""

    def _next(self) -> Candidate | str | None:
        if self.ready:
            return self.driver.retry(self.ready.pop(0))
        if self.baselines:
            name = self.baselines.pop(0)
            index = len(self.plan.baselines) - len(self.baselines)
            return self.driver.baseline(name, index)
        if self.driver.stop_reason() is not None:
            # trials in flight may still earn a promotion or need finalist seeds
            return RUNNING if self.driver.waiting or self.running else Searcher.FINISHED
        got = self.driver.propose()
        return None if got == RUNNING else got

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:  # type: ignore[override]
        while True:
            got = self._next()
            if got is None:
                continue
            if got == RUNNING:
                return None  # the deferred repeats wait for the trials in flight
            if isinstance(got, str):
                return got
            cand = got
            self.running[trial_id] = cand
            self._ot_trials[trial_id] = cand.trial
            cand.trial.set_user_attr("ray_trial", trial_id)
            c = cand.cost
            costs = {"params": c.params, "macs": c.macs, "latency_ms": c.latency_ms or 0.0}
            weights = self.driver.weights_path(cand)
            return {
                "number": cand.number,
                "archid": cand.config.archid,
                "config": cand.config.to_json(),
                "weights": str(weights.resolve()) if weights else None,
                "schedule": dataclasses.asdict(cand.schedule) if cand.schedule else None,
                "seed_offset": cand.seed_offset,
                "costs": costs,
            }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        cand = self.running.get(trial_id)
        if "epoch" in result and cand is not None:
            epochs = (cand.schedule or self.plan.schedule).epochs
            self.driver.progress.epoch(result["epoch"], epochs, result["proxy_accuracy"])

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._ot_trials.pop(trial_id, None)
        cand = self.running.pop(trial_id, None)
        if cand is None:
            return
        result = result or {}
        if "outcome" in result:
            self.driver.complete(cand, _outcome(result["outcome"], self.plan.run.root))
        elif "oom" in result:
            self.driver.out_of_memory(cand, result["oom"])
        elif "failed" in result:
            self.driver.fail(cand, result["failed"])
        elif error:
            self.driver.fail(cand, f"Ray trial {trial_id} failed (log under ray/)")
        elif "epoch" in result:
            msg = f"stopped by ASHA after epoch {result['epoch']} at accuracy "
            self.driver.fail(cand, msg + f"{result['proxy_accuracy']:.4f}", pruned=True)
        else:
            self.driver.fail(cand, "stopped by Ray Tune before its first epoch", pruned=True)
        self.ready.extend(self.driver.settle_waiting(cand.config.archid))

    def abandon(self) -> int:
        """Mark trials still in flight as interrupted and queue them again (as a crash would)."""
        left = [c.trial for c in self.running.values()]
        left += [*self.ready, *(t for w in self.driver.waiting.values() for t in w)]
        for trial in left:
            self.driver.interrupt(trial)
        self.running.clear()
        self._ot_trials.clear()
        self.ready.clear()
        self.driver.waiting.clear()
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
    opts = plan.settings
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


def run_ray(
    plan: Plan,
    progress: Progress,
    *,
    driver: Callable[[Plan, optuna.Study, Progress | None], StudyDriver] = StudyDriver,
    study: optuna.Study | None = None,
) -> Any:
    """Run the search of ``plan`` on Ray Tune; returns the Pareto front (DataFrame).

    Args:
        plan: a validated plan (``plan.settings.backend == "ray"``) from
            :func:`archsearch.search.plan.prepare`.
        progress: receives the run's events (as for the local backend).
        driver: makes the study driver (``archsearch calibrate`` passes its own).
        study: the study to drive (default: the run's; then the run folder is initialised).

    Returns:
        The final Pareto front, as :func:`archsearch.search.execute` returns it.

    Raises:
        ConfigError: a Ray option is out of range.
        ArchsearchError: Ray cannot be started or reached.
        KeyboardInterrupt: the run was interrupted (Ctrl-C); the same command resumes it.
    """
    opts = plan.settings
    _check_options(opts)
    started_ray = _connect(opts.ray_address)
    try:
        cpus, gpus, limit = _resources(plan, local=started_ray and not opts.ray_address)
        if study is None:
            start_run(plan)
            study = open_run_study(plan)
            recovered = st.recover_interrupted(study)
            if recovered:
                log.info("re-queued interrupted trials %s", recovered)
        searcher = _StudySearcher(driver(plan, study, progress))
        device = "cuda" if gpus > 0 else ("cpu" if plan.device.type == "cuda" else str(plan.device))
        setup = _Setup(plan.schedule, opts.seed, device, threads=max(1, int(cpus)))
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
            running = searcher.running
            with st.Heartbeat(study, lambda: [c.trial for c in list(running.values())]):
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
    front = searcher.driver.write_table()
    progress.finish(plan, front)
    return front
