"""``archsearch run --backend ray``: the study driver's candidates trained as Ray Tune trials.

A :class:`ray.tune.search.optuna.OptunaSearch` subclass asks the run's own study for candidates
through :class:`~archsearch.search.driver.StudyDriver` (the same sampling, repeat rule and budget
check as the local backend, all on the driver), so only feasible, new candidates become Ray trials
and reach a worker (and a GPU). Workers train by the proxy schedule and report every epoch
(``--scheduler asha`` stops weak trials early); the outcome goes back to the driver, which tells
the study and writes the run folder. The journal is the state of record: the same command resumes
an interrupted run.

Nothing on a worker writes into the run folder: a worker fetches the dataset from Ray's object
store, saves the weights into a temporary folder of its own and reports it as a Ray Tune
checkpoint, which Ray copies to its storage (``--storage-path``: a folder every node reaches or an
object-store URI; by default ``RUN_DIR/ray``, enough on one machine). The driver copies the weights
from there into ``RUN_DIR/weights`` before it tells the study. A trial whose node is lost is
retried by Ray on another node; a node that cannot load the dataset or write the storage ends the
run with a one-line error naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.tune.stopper import Stopper

from .._logging import get_logger
from ..errors import ArchsearchError, ConfigError, DataError
from ..train.device import available_cpus
from . import ray_trial as rt
from . import study as st
from .driver import RUNNING, Candidate, Progress, StudyDriver
from .local import open_run_study, start_run
from .plan import OBJECTIVES, Plan, proxy_tier

__all__ = ["run_ray"]

log = get_logger("ray")

_NEW_OUTPUT = "RAY_AIR_NEW_OUTPUT"
#: Times Ray starts a trial again after its worker or node was lost (then it is a failed trial).
_RETRIES = 2


class _StudySearcher(OptunaSearch):
    """OptunaSearch over the run's own study, deciding through the study driver."""

    def __init__(self, driver: StudyDriver, storage: str) -> None:
        plan = driver.plan
        cols = [OBJECTIVES[o][0] for o in plan.objectives]
        modes = ["max" if OBJECTIVES[o][1] == "maximize" else "min" for o in plan.objectives]
        super().__init__(space=None, metric=cols, mode=modes)
        self._ot_study = driver.study  # type: ignore[assignment]
        self.plan, self.driver = plan, driver
        self.baselines = self.driver.baselines_left()
        self.ready: list[optuna.Trial] = []  # waiting trials whose original did not complete
        self.running: dict[str, Candidate] = {}
        self.storage = storage  # Ray's storage path, for messages
        self.checkpoints: dict[str, Any] = {}  # trial id -> its last checkpoint (see _Checkpoints)
        self.nodes: dict[str, str] = {}  # trial id -> the node it last reported from
        #: a node could not do its part: the run ends with this error (see _Fatal)
        self.fatal: ArchsearchError | None = None

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
        if self.fatal is not None:
            return Searcher.FINISHED
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
                "weights": weights.name if weights else None,  # a file name in the checkpoint
                "schedule": dataclasses.asdict(cand.schedule) if cand.schedule else None,
                "seed_offset": cand.seed_offset,
                "deadline": cand.deadline,
                "costs": costs,
            }

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if "node_id" in result:
            self.nodes[trial_id] = f"node {result.get('hostname')} (id {result['node_id'][:12]})"
        cand = self.running.get(trial_id)
        if "epoch" in result and cand is not None:
            epochs = (cand.schedule or self.plan.schedule).epochs
            self.driver.progress.epoch(result["epoch"], epochs, result["proxy_accuracy"])

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        self._ot_trials.pop(trial_id, None)
        cand = self.running.pop(trial_id, None)
        checkpoint = self.checkpoints.pop(trial_id, None)
        node = self.nodes.pop(trial_id, None)
        if cand is not None:
            self._settle(trial_id, cand, result or {}, error, checkpoint, node)
            self.ready.extend(self.driver.settle_waiting(cand.config.archid))
        rt.discard(checkpoint)

    def _settle(
        self,
        trial_id: str,
        cand: Candidate,
        result: dict[str, Any],
        error: bool,
        checkpoint: Any,
        node: str | None,
    ) -> None:
        """Tell the driver how the trial ended."""
        if "outcome" in result:
            self._complete(cand, result["outcome"], checkpoint)
        elif "data_error" in result:
            self._stop(cand, DataError(result["data_error"]))
        elif "storage_error" in result:
            msg = f"--storage-path {self.storage}: expected a folder or URI every node can write, "
            self._stop(cand, ArchsearchError(msg + f"but {result['storage_error']}"))
        elif "cutoff" in result:
            self.driver.cut_off(cand, result["cutoff"])
        elif "oom" in result:
            self.driver.out_of_memory(cand, result["oom"])
        elif "failed" in result:
            self.driver.fail(cand, result["failed"])
        elif error:
            where = f" on {node}" if node else ""
            msg = f"Ray trial {trial_id} failed{where} {_RETRIES + 1} times (log in {self.storage})"
            self.driver.fail(cand, msg)
        elif "epoch" in result:
            msg = f"stopped by ASHA after epoch {result['epoch']} at accuracy "
            self.driver.fail(cand, msg + f"{result['proxy_accuracy']:.4f}", pruned=True)
        else:
            self.driver.fail(cand, "stopped by Ray Tune before its first epoch", pruned=True)

    def _complete(self, cand: Candidate, outcome: str, checkpoint: Any) -> None:
        """Copy the trial's weights from its checkpoint into the run folder, then record it."""
        name, dest = rt.kept_weights(outcome), self.driver.weights_path(cand)
        if name and dest:
            if checkpoint is None:
                self.driver.fail(cand, "trained, but no checkpoint with its weights came back")
                return
            try:
                rt.fetch_weights(checkpoint, name, dest)
            except Exception as e:
                where = f"{checkpoint.path} (--storage-path {self.storage})"
                self._stop(
                    cand, ArchsearchError(f"cannot read the weights of {where}: {rt.one_line(e)}")
                )
                return
        self.driver.complete(cand, rt.outcome_rows(outcome, dest if name else None))

    def _stop(self, cand: Candidate, error: ArchsearchError) -> None:
        """A node could not do its part: queue the trial again and end the run with ``error``."""
        self.driver.interrupt(cand.trial)
        if self.fatal is None:
            self.fatal = error

    def abandon(self) -> int:
        """Mark trials still in flight as interrupted and queue them again (as a crash would)."""
        left = [c.trial for c in self.running.values()]
        left += [*self.ready, *(t for w in self.driver.waiting.values() for t in w)]
        for trial in left:
            self.driver.interrupt(trial)
        self.running.clear()
        for checkpoint in self.checkpoints.values():
            rt.discard(checkpoint)
        self.checkpoints.clear()
        self._ot_trials.clear()
        self.ready.clear()
        self.driver.waiting.clear()
        return len(left)


class _Checkpoints(tune.Callback):
    """Hands each trial's checkpoint to the searcher (Tune passes checkpoints to callbacks only;
    a trial's last one arrives before the searcher hears that it completed)."""

    def __init__(self, searcher: _StudySearcher) -> None:
        self.searcher = searcher

    def on_checkpoint(self, iteration: int, trials: Any, trial: Any, checkpoint: Any, **info: Any):
        old = self.searcher.checkpoints.get(trial.trial_id)
        if old is not None and old.path != checkpoint.path:  # a retried trial's earlier one
            rt.discard(old)
        self.searcher.checkpoints[trial.trial_id] = checkpoint


class _Fatal(Stopper):
    """Ends the experiment once a node could not do its part (``_StudySearcher.fatal``)."""

    def __init__(self, searcher: _StudySearcher) -> None:
        self.searcher = searcher

    def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.searcher.fatal is not None


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
    if opts.storage_path is not None:
        rt.check_storage_path(opts.storage_path)


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


def _warn_tier(plan: Plan, gpus: float) -> None:
    """Say so when trials get GPUs but the proxy schedule is the CPU tier, or the reverse
    (``--gpus-per-trial`` left to the cluster and no explicit ``--epochs``/``--subset``)."""
    s = plan.settings
    if s.gpus_per_trial is not None or s.epochs is not None or s.subset is not None:
        return
    tier = proxy_tier(s, plan.device).type
    if (gpus > 0) != (tier != "cpu"):
        log.warning(
            "trials get %g GPUs but the proxy schedule is the %s tier, chosen from this machine's "
            "device; give --gpus-per-trial to choose it from the trials' resources",
            gpus, "CPU" if tier == "cpu" else "GPU",
        )  # fmt: skip


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
        _warn_tier(plan, gpus)
        storage = rt.storage_path(opts.storage_path, plan.run_dir)
        if study is None:
            start_run(plan)
            study = open_run_study(plan)
            recovered = st.recover_interrupted(study) + st.requeue_cut_off(study)
            if recovered:
                log.info("re-queued interrupted trials %s", recovered)
        searcher = _StudySearcher(driver(plan, study, progress), storage)
        device = "cuda" if gpus > 0 else ("cpu" if plan.device.type == "cuda" else str(plan.device))
        setup = rt.Setup(plan.schedule, opts.seed, device, threads=max(1, int(cpus)))
        shipped = rt.ship(plan.data)
        trainable = tune.with_resources(
            tune.with_parameters(rt.trainable, setup=setup, data=shipped),
            {"cpu": cpus, "gpu": gpus},
        )
        epochs = plan.schedule.epochs
        scheduler = None
        if opts.scheduler == "asha":  # the outcome report is iteration epochs + 1
            scheduler = ASHAScheduler(
                metric="proxy_accuracy", mode="max", max_t=epochs + 1, reduction_factor=2
            )
        log.info("Ray: %g CPUs and %g GPUs per trial, up to %d at once, storage %s", cpus, gpus,
                 limit, storage)  # fmt: skip
        name = time.strftime("tune-%Y%m%d-%H%M%S")
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
                name=f"{plan.run_dir.resolve().name}-{name}" if opts.storage_path else name,
                storage_path=storage,
                verbose=0,
                callbacks=[_Checkpoints(searcher)],
                stop=_Fatal(searcher),
                failure_config=tune.FailureConfig(max_failures=_RETRIES),
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
        if searcher.fatal is not None:
            raise searcher.fatal
        if left:
            raise KeyboardInterrupt(f"{left} Ray trials interrupted")
    finally:
        if started_ray:
            ray.shutdown()
    front = searcher.driver.write_table()
    progress.finish(plan, front)
    return front
