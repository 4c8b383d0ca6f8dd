"""The one study driver: ask, deduplicate by archid, count, check budgets, train, tell, record.

Both backends (the local loop of :mod:`archsearch.search.local`, the Ray adapter of
:mod:`archsearch.search.ray_backend`) train a :class:`Candidate` and hand the outcome back here.
:meth:`StudyDriver.earlier` alone decides reuse: an architecture (archid) already trained is never
trained again; its repeat reuses the result, is not counted and is no second point on the front.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from .._logging import get_logger
from ..config import ArchConfig
from ..cost.candidate import CostRecord, cost_candidate
from ..models import reference_config
from ..pareto import front as pareto_front
from ..progress import Progress
from ..records import TrialRecord, design_rows, trials_frame
from ..rundir import write_atomic
from ..train.candidate import GridRows, TrainOutcome
from ..train.multires import grid_configs, grid_costs, is_multires
from ..train.proxy import ProxySchedule
from . import study as st
from .fidelity import bracket_of, next_promotion, next_seed, repeats_done
from .outcome import CONSTRAINTS_KEY, constraints, grid_trial, objective_values, result_attrs
from .plan import OBJECTIVES, Plan

__all__ = ["Candidate", "Progress", "StudyDriver", "describe"]

log = get_logger("driver")

#: Trial attributes that are the result of an evaluation (copied onto a repeat; its
#: ``train_seconds`` is then set to 0: it trained nothing).
RESULT_ATTRS = (
    "feasible",
    "params",
    "total_params",
    "macs",
    "latency_ms",
    "violations",
    "counted_by",
    "proxy_accuracy",
    "val_images",
    "history",
    "epochs",
    "train_seconds",
    "weights",
)
RUNNING = "running"
#: Samples in a row that only repeat evaluated architectures before the space counts as exhausted.
MAX_REPEATS = 25


@dataclass
class Candidate:
    """A feasible, new architecture to train, with its open Optuna trial."""

    trial: optuna.Trial
    config: ArchConfig
    cost: CostRecord
    baseline: str = ""
    schedule: ProxySchedule | None = None  # None: the run's proxy schedule
    seed_offset: int = 0  # > 0: a repeat training of the same design with another seed
    #: LookupViT multi-resolution: the counted cost of every grid design, by archid (the
    #: candidate's own included); empty otherwise.
    grids: dict[str, CostRecord] = field(default_factory=dict)
    #: ``time.time()`` at which training stops (``--timeout``); None: no limit (finalists).
    deadline: float | None = None

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def tag(self) -> str:
        return f"baseline-{self.baseline}" if self.baseline else f"trial{self.number:05d}"


def describe(config: ArchConfig) -> str:
    """A short human-readable summary of an architecture (for progress lines)."""
    from ..blocks import notation

    return notation(config)


class StudyDriver:
    """One run's study: every decision about a trial is taken here."""

    def __init__(self, plan: Plan, study: optuna.Study, progress: Progress | None = None) -> None:
        self.plan, self.study = plan, study
        self.progress = progress or Progress()
        self.started = time.monotonic()
        #: when ``--timeout`` ends the search, as a wall-clock time (workers may be other
        #: processes): a training still running then is cut off at its next batch
        self.deadline = None if plan.timeout is None else time.time() + plan.timeout
        self.repeats = 0  # samples in a row that repeated an evaluated architecture
        self.over_budget = 0  # over-budget samples in all
        self.waiting: dict[str, list[optuna.Trial]] = {}
        self.rungs = plan.ladder
        self.directions = [OBJECTIVES[o][1] for o in plan.objectives]
        self._said: set[str] = set()  # stop reasons already logged

    # ------------------------------------------------------------------ asking
    def baselines_left(self) -> list[str]:
        done = {
            t.user_attrs.get("baseline")
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")
        }
        return [n for n in self.plan.baselines if n not in done]

    def baseline(self, name: str, index: int) -> Candidate | None:
        """Open the trial of a reference design (None if it turned out over budget)."""
        cfg = reference_config(name)
        trial = self.study.ask()
        self._open(trial, cfg, baseline=name)
        total = len(self.plan.baselines)
        self.progress.trial_start(index, total, trial.number, describe(cfg), f"baseline {name}")
        return self._costed(trial, cfg, baseline=name)

    def propose(self) -> Candidate | str | None:
        """The next job: a design moving up a rung, a new sample, or a finalist's seed repeat.

        Returns a :class:`Candidate` to train, :data:`RUNNING` when a sampled architecture is in
        flight (the trial waits, see :meth:`settle_waiting`), or None when the job was settled
        without training (a repeat, over budget, or nothing left to do)."""
        with self.plan.run.lock():  # two workers must not plan the same promotion
            job = self._job(self._sampling_stop())
            if job is None:
                return None
            if job[0] != "sample":
                self.study.enqueue_trial(job[1].params, user_attrs=job[2])
            trial = self.study.ask()
        try:
            if trial.user_attrs.get("promoted_from") is not None:
                return self._planned(trial, "promoted_from")
            if trial.user_attrs.get("repeat_of") is not None:
                return self._planned(trial, "repeat_of")
            cfg = self.plan.space.sample(lambda n, opts: trial.suggest_categorical(n, opts))
            self._open(trial, cfg)
            index = st.counted_trials(self.study, include_running=True)
            bracket = bracket_of(self.rungs, index - 1)
            self._set_rung(trial, self.rungs.start(bracket), bracket, 0)
            self.progress.trial_start(index, self.plan.trials, trial.number, describe(cfg), "trial")
            earlier = self.earlier(cfg.archid, trial.number)
            if earlier == RUNNING:
                self.waiting.setdefault(cfg.archid, []).append(trial)
                return RUNNING
            if isinstance(earlier, FrozenTrial):
                self._reuse(trial, earlier)
                return None
            return self._at_rung(self._costed(trial, cfg), self.rungs.start(bracket), 0)
        except BaseException:
            self.interrupt(trial)
            raise

    def _set_rung(self, trial: optuna.Trial, rung: int, bracket: int, seed: int) -> None:
        for k, v in (("rung", rung), ("bracket", bracket), ("seed", seed)):
            trial.set_user_attr(k, v)
        trial.set_user_attr("fidelity", self.rungs.fidelity(rung))

    def _planned(self, trial: optuna.Trial, link: str) -> Candidate | None:
        """A queued job (a promotion or a seed repeat) of an earlier trial's design."""
        a = trial.user_attrs
        src = self.study.get_trials(deepcopy=False)[int(a[link])]
        cfg = ArchConfig.from_json(src.user_attrs["config"])
        baseline = src.user_attrs.get("baseline") or ""
        rung, seed = int(a.get("rung", 0)), int(a.get("seed", 0))
        self._open(trial, cfg, baseline=baseline)
        self._set_rung(trial, rung, int(a.get("bracket", 0)), seed)
        kind = f"to rung {rung}" if link == "promoted_from" else f"seed {seed}"
        final = link == "repeat_of"  # finalists run after --timeout, to the end
        name = f"{baseline} " if baseline else ""
        self.progress.trial_start(
            st.counted_trials(self.study), self.plan.trials, trial.number, describe(cfg),
            f"{name}{kind} (from trial {src.number})",
        )  # fmt: skip
        cand = self._at_rung(self._costed(trial, cfg, baseline=baseline), rung, seed)
        if cand is not None and final:
            cand.deadline = None
        return cand

    def _at_rung(self, cand: Candidate | None, rung: int, seed: int) -> Candidate | None:
        if cand is not None:
            cand.schedule = self.rungs.schedule(rung) if rung else None
            cand.seed_offset = seed
        return cand

    # ------------------------------------------------------------------ planning
    def _job(self, stop: str | None) -> tuple[Any, ...] | None:
        """What to do next, given why sampling stopped (``stop``, see :meth:`_sampling_stop`):
        ``("promote", source, attrs)``, ``("sample",)``, ``("final", source, attrs)`` or None."""
        trials = self.study.get_trials(deepcopy=False)
        if stop != "timeout":
            up = next_promotion(trials, self.rungs, self.directions)
            if up is not None:
                return ("promote", *up)
        if stop is None:
            return ("sample",)
        if self.plan.settings.final_seeds < 2:
            return None
        table = trials_frame([st.to_record(t) for t in trials])
        front = set(pareto_front(table, self.plan.objectives)["trial"])
        pool = table[design_rows(table)]
        pool = pool[pool["trial"].isin(front) | (pool["baseline"] != "")]
        final = next_seed(trials, [int(n) for n in pool["trial"]], self.plan.settings.final_seeds)
        return None if final is None else ("final", *final)

    def earlier(self, archid: str, number: int) -> FrozenTrial | str | None:
        """The finished, trained trial of the same architecture (at any rung, its own seed);
        :data:`RUNNING` if one is in flight in a live process; None if this architecture is
        new."""
        running = False
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            if t.number == number or a.get("archid") != archid or a.get("reused_from") is not None:
                continue
            if a.get("repeat_of") is not None:
                continue
            if t.state == TrialState.COMPLETE:
                return t
            if t.state == TrialState.RUNNING and st.is_live(t):
                running = True
        return RUNNING if running else None

    def _open(self, trial: optuna.Trial, cfg: ArchConfig, baseline: str = "") -> None:
        trial.set_user_attr("owner", st.owner())
        trial.set_user_attr("heartbeat", time.time())
        trial.set_user_attr("archid", cfg.archid)
        trial.set_user_attr("config", cfg.to_json())
        trial.set_user_attr("notation", describe(cfg))
        if baseline:
            trial.set_user_attr("baseline", baseline)

    def retry(self, trial: optuna.Trial) -> Candidate | None:
        """A waiting trial whose in-flight original did not complete: cost it to train itself."""
        return self._costed(trial, ArchConfig.from_json(trial.user_attrs["config"]))

    def _costed(self, trial: optuna.Trial, cfg: ArchConfig, baseline: str = "") -> Candidate | None:
        plan = self.plan
        latency = "latency" in plan.objectives
        grids: dict[str, CostRecord] = {}
        if is_multires(cfg):  # one training for every grid: worth it when any grid fits
            per_grid = grid_costs(cfg, plan.budget, plan.target, latency=latency)
            grids = {g.archid: per_grid[g.stages[0].lookup_grid] for g in grid_configs(cfg)}
            cost = grids[cfg.archid]
        else:
            cost = cost_candidate(cfg, plan.budget, plan.target, latency=latency)
        if not any(c.feasible for c in (grids or {cfg.archid: cost}).values()):
            log.info("trial %d over budget: %s", trial.number, "; ".join(cost.violations))
            self._tell(trial, cost, None)
            self.over_budget += 1
            return None
        self.repeats = 0
        return Candidate(trial, cfg, cost, baseline, grids=grids, deadline=self.deadline)

    # ------------------------------------------------------------------ telling
    def _tell(self, trial: optuna.Trial, cost: CostRecord, out: TrainOutcome | None) -> None:
        for k, v in result_attrs(self.plan.run, cost, out).items():
            trial.set_user_attr(k, v)
        trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, constraints(cost))
        acc = out.accuracy if out else None
        self.study.tell(trial, objective_values(self.plan.objectives, cost, acc))
        self.after(trial.number)

    def complete(self, cand: Candidate, out: TrainOutcome | GridRows) -> None:
        """Record a finished training: ``out`` is its outcome, or ``(config, outcome)`` per
        grid of a multi-resolution training (``train_grids``). The other grids are designs of
        their own, recorded from the search's training only (rung 0, run seed, and unless that
        architecture has a result); promotions and seed repeats of a grid are its own jobs."""
        rows = [(cand.config, out)] if isinstance(out, TrainOutcome) else out
        own = next(o for c, o in rows if c.archid == cand.config.archid)
        if cand.schedule is None and not cand.seed_offset:
            for cfg, o in rows:
                done = isinstance(self.earlier(cfg.archid, -1), FrozenTrial)
                if cfg.archid == cand.config.archid or done:
                    continue
                base = dict(owner=st.owner(), archid=cfg.archid, config=cfg.to_json(),
                            notation=describe(cfg))  # fmt: skip
                self.study.add_trial(grid_trial(
                    cand.trial, cfg, cand.grids[cfg.archid], o, run=self.plan.run,
                    objectives=self.plan.objectives, base_attrs=base,
                ))  # fmt: skip
        elif cand.schedule is None and len(rows) > 1:
            self._sibling_repeats(cand, rows)
        self._tell(cand.trial, cand.cost, own if cand.cost.feasible else None)

    def _sibling_repeats(self, cand: Candidate, rows: GridRows) -> None:
        """A finalist's seed repeat of a multi-resolution design is that seed's repeat of every
        grid's design too (the seed follows the shared training, not the grid): recorded so."""
        have = repeats_done(self.study.get_trials(deepcopy=False))
        for cfg, o in rows:
            d = self.earlier(cfg.archid, -1)
            if cfg.archid == cand.config.archid or not isinstance(d, FrozenTrial):
                continue
            if int(d.user_attrs.get("rung", 0)) or cand.seed_offset in have.get(d.number, ()):
                continue
            base = dict(owner=st.owner(), archid=cfg.archid, config=cfg.to_json(),
                        notation=describe(cfg), repeat_of=d.number)  # fmt: skip
            self.study.add_trial(grid_trial(
                cand.trial, cfg, cand.grids[cfg.archid], o, run=self.plan.run,
                objectives=self.plan.objectives, base_attrs=base,
            ))  # fmt: skip

    def out_of_memory(self, cand: Candidate, message: str) -> None:
        """The candidate does not fit in memory: recorded as infeasible, the search goes on."""
        cand.cost.violations.append("out of memory")
        cand.cost.ratios["oom"] = 1.0
        cand.trial.set_user_attr("error", message)
        self._tell(cand.trial, cand.cost, None)

    def fail(self, cand: Candidate, message: str, *, pruned: bool = False) -> None:
        """Training failed (non-finite loss, a worker error) or was stopped early."""
        cand.trial.set_user_attr("error", message)
        self._cost_attrs(cand)
        self.study.tell(cand.trial, state=TrialState.PRUNED if pruned else TrialState.FAIL)
        self.after(cand.number)

    def _cost_attrs(self, cand: Candidate) -> None:
        c = cand.cost
        for k, v in (("params", c.params), ("total_params", c.total_params), ("macs", c.macs)):
            cand.trial.set_user_attr(k, v)

    def cut_off(self, cand: Candidate, message: str) -> None:
        """``--timeout`` stopped the training: no result, not queued again in this run (finalists
        must not wait behind it); the next resume queues it (``study.requeue_cut_off``)."""
        log.warning("trial %d %s", cand.number, message)
        cand.trial.set_user_attr("cut_off", True)
        self.interrupt(cand.trial, message, requeue=False)

    def interrupt(
        self, trial: optuna.Trial, message: str = "interrupted", requeue: bool = True
    ) -> None:
        """Not the candidate's fault (Ctrl-C, a crash of ours): run it again next time."""
        trial.set_user_attr("error", message)
        trial.set_user_attr("interrupted", True)
        self.study.tell(trial, state=TrialState.FAIL)
        if requeue:
            self.requeue(trial)

    def requeue(self, trial: optuna.Trial) -> None:
        """Have an interrupted trial's candidate run again (:func:`study.queue_retry`)."""
        st.queue_retry(self.study, self.study.trials[trial.number])

    def _reuse(self, trial: optuna.Trial, done: FrozenTrial) -> None:
        for k in RESULT_ATTRS:
            if k in done.user_attrs:
                trial.set_user_attr(k, done.user_attrs[k])
        trial.set_user_attr("reused_from", done.number)
        trial.set_user_attr("train_seconds", 0.0)  # a repeat trains nothing (the time is done's)
        cons = done.system_attrs.get(CONSTRAINTS_KEY) or list(done.constraints.values())
        trial.storage.set_trial_system_attr(trial._trial_id, CONSTRAINTS_KEY, cons)
        self.study.tell(trial, done.values)
        self.repeats += 1
        self.after(trial.number)

    def settle_waiting(self, archid: str) -> list[optuna.Trial]:
        """Trials waiting for ``archid``: reuse its result if it completed; otherwise the first
        waiting trial is returned (with the rest still waiting) to be trained itself."""
        waiting = self.waiting.pop(archid, [])
        if not waiting:
            return []
        done = self.earlier(archid, -1)
        if isinstance(done, FrozenTrial):
            for trial in waiting:
                self._reuse(trial, done)
            return []
        if done == RUNNING:
            self.waiting[archid] = waiting
            return []
        if waiting[1:]:
            self.waiting[archid] = waiting[1:]
        return waiting[:1]

    def weights_path(self, cand: Candidate) -> Path | None:
        """Where the trained weights go (None for lower rungs and seed repeats: not exported)."""
        if cand.schedule is not None or cand.seed_offset:
            return None
        return self.plan.run.weights_file(cand.tag, cand.config.archid)

    # ------------------------------------------------------------------ stopping, recording
    def stop_reason(self) -> str | None:
        """Why there is nothing more to do now (no promotion, sample or finalist), or None."""
        reason = self._sampling_stop()
        if reason is None or self._job(reason) is not None:
            return None
        return reason

    def _sampling_stop(self) -> str | None:
        """Why no further new design should be sampled, or None."""
        plan = self.plan
        reason, why = None, ""
        if st.counted_trials(self.study, include_running=True) >= plan.trials:
            reason = "trials"
        elif plan.timeout is not None and time.monotonic() - self.started > plan.timeout:
            reason, why = "timeout", f"timeout of {plan.timeout:.0f} s reached; stopping the search"
        elif self.repeats >= MAX_REPEATS:
            reason, why = "exhausted", f"{self.repeats} samples in a row repeated evaluated designs"
        elif self.over_budget >= max(200, 50 * plan.trials):
            reason, why = "exhausted", f"{self.over_budget} candidates over budget, too few within"
        if why and reason not in self._said:
            self._said.add(str(reason))
            log.warning("%s", why)
        return reason

    def records(self) -> list[TrialRecord]:
        return [st.to_record(t) for t in self.study.get_trials(deepcopy=False)]

    def write_table(self, records: list[TrialRecord] | None = None) -> Any:
        """Write ``trials.csv`` (under the run's lock), then remove the weights of designs no
        longer on the front; returns the front."""
        run = self.plan.run
        records = records if records is not None else self.records()
        table = trials_frame(records)
        front = pareto_front(table, self.plan.objectives)
        keep = set(front["weights"].dropna())
        table["weights"] = table["weights"].where(table["trial"].isin(set(front["trial"])))
        with run.lock():
            write_atomic(run.trials, table.to_csv(index=False))
            for r in records:
                stale = r.weights and r.weights not in keep and r.reused_from is None
                if stale and r.state != "RUNNING":
                    (run.root / str(r.weights)).unlink(missing_ok=True)
        return front

    def after(self, number: int) -> None:
        """Write the table, then report the trial (and the other grids it was scored at)."""
        records = self.records()
        front = self.write_table(records)
        best = front["accuracy_mean"].max() if len(front) else None
        for r in records:
            if r.trial == number or (r.trained_with == number and r.state == "COMPLETE"):
                self.progress.trial_end(r.row(), None if best is None else float(best), len(front))
