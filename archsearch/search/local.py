"""The local backend: the study driver's candidates trained in this process (and in
``--workers - 1`` more processes sharing the same study: the run's journal, or ``--storage``)."""

from __future__ import annotations

import multiprocessing as mp
import time
import warnings
from collections.abc import Callable
from typing import Any

import optuna
import yaml

from .._logging import get_logger
from ..errors import ArchsearchError, TrainingCutOff, TrainingError
from ..rundir import write_atomic
from ..settings import RunSettings
from ..train.candidate import Trainer
from ..train.device import available_cpus, configure_threads
from ..train.proxy import CandidateOOMError
from . import study as st
from .driver import RUNNING, Candidate, Progress, StudyDriver
from .identity import RUN_ATTR, study_key
from .plan import OBJECTIVES, Plan, prepare
from .storage import redact

__all__ = ["start_run", "open_run_study", "execute_local"]

log = get_logger("local")


def start_run(plan: Plan) -> None:
    """Create (or clear, with --force) the run folder and write run.yaml."""
    if plan.replace:
        plan.run.clear()
    if plan.replace_study:  # --force on a shared study that holds another run
        st.delete_study(str(plan.settings.storage), plan.study_name)
    plan.run.root.mkdir(parents=True, exist_ok=True)
    st.repair_journal(plan.run.journal)
    write_atomic(plan.run.settings, yaml.safe_dump(plan.record, sort_keys=False))


def open_run_study(plan: Plan, journal: str | None = None, *, worker: bool = False) -> optuna.Study:
    """Create or join the run's study: in ``--storage`` (named :attr:`Plan.study_name`), else in
    the run folder's journal; a given ``journal`` (a calibration's) is always used instead. A
    worker, or any process joining a shared study, samples with its own random seed."""
    directions = [OBJECTIVES[o][1] for o in plan.objectives]
    s = plan.settings
    sampler = st.make_sampler(s.sampler, seed=s.seed, n_objectives=len(directions))
    pruner = st.make_pruner(s.pruner, len(directions))
    url = s.storage if journal is None else None
    name = plan.study_name if url else st.STUDY_NAME
    study = st.open_study(
        plan.run.root,
        directions,
        sampler,
        pruner,
        journal=journal or st.JOURNAL,
        url=url,
        name=name,
        reseed_if_joined=worker or bool(url),
    )
    if url:  # a shared study holds one run: stamp it, or check the stamp of who made it
        key = study_key(plan.record)
        if RUN_ATTR not in study.user_attrs:
            study.set_user_attr(RUN_ATTR, key)
        if study.user_attrs.get(RUN_ATTR) != key:
            raise ArchsearchError(
                f"study {name!r} in {redact(url)} holds another run (started meanwhile); use "
                "another --name/--out (the study is named after the run folder)"
            )
    if study.metric_names is None:  # objective names for optuna-dashboard and load_study users
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(plan.objectives))
    return study


def _train(driver: StudyDriver, trainer: Trainer, cand: Candidate, prune: bool) -> None:
    epochs = (cand.schedule or driver.plan.schedule).epochs

    def on_epoch(epoch: int, acc: float) -> None:
        driver.progress.epoch(epoch, epochs, acc)
        if prune:
            cand.trial.report(acc, step=epoch)
            if cand.trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch} at accuracy {acc:.4f}")

    try:
        with st.Heartbeat(driver.study, lambda: [cand.trial]):
            out = trainer.train_grids(
                cand.config, weights=driver.weights_path(cand), on_epoch=on_epoch,
                seed_offset=cand.seed_offset, schedule=cand.schedule, deadline=cand.deadline,
            )  # fmt: skip
    except optuna.TrialPruned as e:
        driver.fail(cand, str(e), pruned=True)
    except TrainingCutOff as e:
        driver.cut_off(cand, str(e))
    except CandidateOOMError as e:
        driver.out_of_memory(cand, str(e))
    except TrainingError as e:
        driver.fail(cand, str(e))
    except BaseException:
        driver.interrupt(cand.trial)
        raise
    else:
        driver.complete(cand, out)


def _wait_for_repeats(driver: StudyDriver, trainer: Trainer, prune: bool) -> None:
    """A sampled architecture in flight in another worker: wait for it, then reuse it."""
    while driver.waiting:
        for archid in list(driver.waiting):
            for trial in driver.settle_waiting(archid):  # the original failed: train this one
                cand = driver.retry(trial)
                if cand is not None:
                    _train(driver, trainer, cand, prune)
        if driver.waiting:
            time.sleep(0.5)


def _loop(driver: StudyDriver, trainer: Trainer, prune: bool) -> None:
    """Train the driver's jobs (promotions, new samples, finalists) until none is left."""
    while driver.stop_reason() is None:
        got = driver.propose()
        if isinstance(got, Candidate):
            _train(driver, trainer, got, prune)
        elif got == RUNNING:
            _wait_for_repeats(driver, trainer, prune)


DriverFactory = Callable[[Plan, optuna.Study, "Progress | None"], StudyDriver]


def execute_local(
    plan: Plan,
    progress: Progress | None = None,
    *,
    worker: bool = False,
    driver: DriverFactory = StudyDriver,
    study: optuna.Study | None = None,
) -> Any:
    """Run the study of ``plan`` in this process; returns the final Pareto front.

    ``driver`` and ``study`` replace the search's own (``archsearch calibrate`` passes a driver
    with fixed jobs and its own study; then the run folder is not (re)initialised).
    """
    s = plan.settings
    own = study is None
    if own and not worker:
        start_run(plan)
    if plan.device.type == "cpu":
        configure_threads(max(1, available_cpus() // max(1, s.workers)))
    study = study or open_run_study(plan, worker=worker)
    drv = driver(plan, study, progress)
    if own and not worker:
        recovered = st.recover_interrupted(study) + st.requeue_cut_off(study)
        if recovered:
            log.info("re-queued interrupted trials %s", recovered)
    trainer = Trainer(plan.data, plan.schedule, plan.device, s.seed)
    procs = _spawn_workers(plan) if (s.workers > 1 and not worker and own) else []
    drv.progress.start(plan, st.counted_trials(study))
    try:
        if not worker:
            for i, name in enumerate(drv.baselines_left()):
                cand = drv.baseline(name, i + 1)
                if cand is not None:
                    _train(drv, trainer, cand, prune=False)
        _loop(drv, trainer, s.pruner)
    finally:
        for p in procs:
            p.join()
            if p.exitcode:
                log.warning("worker process %s exited with code %s", p.pid, p.exitcode)
    if procs:  # the workers' last results may call for more promotions or finalists
        st.recover_interrupted(study)  # a worker that died left its trial running
        _loop(drv, trainer, s.pruner)
    front = drv.write_table()
    if not worker:
        drv.progress.finish(plan, front)
    return front


def _worker_main(options: dict[str, Any]) -> None:
    plan = prepare(RunSettings.from_dict(options))
    execute_local(plan, worker=True)


def _spawn_workers(plan: Plan) -> list[Any]:
    ctx = mp.get_context("spawn")
    opts = plan.settings.replace(out=str(plan.run.root), force=False).to_dict()
    procs = []
    for _ in range(plan.settings.workers - 1):
        p = ctx.Process(target=_worker_main, args=(opts,), daemon=False)
        p.start()
        procs.append(p)
    return procs
