"""``archsearch calibrate``: how far the proxy's ranking can be trusted, measured.

K designs (a run's trained designs, or feasible designs sampled from a space under a budget) are
trained at the run's proxy tier with S seeds each and once at a reference tier (by default 10x the
proxy's images x epochs, scored on the whole validation split). The trainings go through the
same study driver and backends as ``archsearch run`` (a :class:`CalibrationDriver` hands out the
fixed jobs instead of sampling), live in ``calibration.journal`` (so a killed calibration resumes
where it stopped) and end up in ``calibration.csv``; :mod:`archsearch.report.calibration` turns
that table into the figures (noise floor, rank correlations with intervals, top-k agreement).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from ._logging import get_logger
from .blocks import notation
from .config import ArchConfig
from .cost.candidate import cost_candidate
from .errors import ArchsearchError, ConfigError
from .records import read_trials, trained
from .report.calibration import COLUMNS, OPTIONAL, write_calibration
from .rundir import RunDir, write_atomic
from .search import study as st
from .search.driver import Candidate, Progress, StudyDriver
from .search.plan import Plan
from .settings import SCHEDULE_OPTIONS
from .train.proxy import ProxySchedule

__all__ = ["Job", "CalibrationDriver", "CALIBRATION_COLUMNS", "pick_designs", "sample_designs"]

log = get_logger("calibrate")

JOURNAL = "calibration.journal"
#: Reference seed ``s`` trains with seed offset ``REFERENCE_SEED_OFFSET + s``: it shares no
#: initial weights or batch order with a proxy seed (that would tie the tiers beyond the design).
#: Calibrations made before this offset trained reference seed 0 with offset 0; kept as they are.
REFERENCE_SEED_OFFSET = 1000
#: Columns of calibration.csv, one row per training run (``family`` optional when read).
CALIBRATION_COLUMNS = [*COLUMNS, *OPTIONAL]


@dataclass(frozen=True)
class Job:
    """One training of the calibration: a design at a tier with a seed."""

    config: ArchConfig
    label: str
    tier: str
    seed: int
    schedule: ProxySchedule

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.config.archid, self.tier, self.seed)


def reference_schedule(proxy: ProxySchedule, train_images: int, factor: float) -> ProxySchedule:
    """A schedule with ``factor`` x the proxy's images x epochs, scored on all validation images:
    twice the images (as far as the training split goes), the rest in epochs."""
    images = min(train_images, 2 * (proxy.subset or train_images))
    base = (proxy.subset or train_images) * proxy.epochs
    epochs = max(proxy.epochs + 1, math.ceil(factor * base / images))
    return dataclasses.replace(proxy, subset=images, epochs=epochs, val_subset=None)


def images_x_epochs(schedule: ProxySchedule, train_images: int) -> int:
    return int((schedule.subset or train_images) * schedule.epochs)


def pick_designs(run_dir: Path, k: int) -> list[tuple[ArchConfig, str]]:
    """K trained designs of a run, spread evenly over its accuracy range (baselines included),
    cheapest first."""
    path = RunDir(run_dir).trials
    if not path.is_file():
        raise ArchsearchError(f"run directory {str(run_dir)!r}: expected trials.csv, found none")
    df = read_trials(path)
    pool = trained(df).drop_duplicates("archid")
    pool = pool.sort_values("proxy_accuracy", ascending=False, kind="stable")
    if len(pool) < 3:
        raise ArchsearchError(
            f"run directory {str(run_dir)!r}: expected at least 3 trained designs to calibrate "
            f"on, got {len(pool)}"
        )
    rows = list(pool.itertuples())
    chosen = [r for r in rows if r.baseline]
    rest = [r for r in rows if not r.baseline]
    want = max(0, min(k, len(rows)) - len(chosen))
    if want and rest:
        step = (len(rest) - 1) / max(1, want - 1) if want > 1 else 0
        idx = sorted({round(i * step) for i in range(want)})
        chosen += [rest[i] for i in idx]
    out = []
    # cheapest first (by the run's own training time), so a calibration cut short still holds
    # as many whole designs as possible
    chosen = sorted(chosen[:k], key=lambda r: float(r.train_seconds or 0.0))
    for r in chosen:
        cfg = ArchConfig.from_json(str(r.config))
        label = f"{r.baseline} " if r.baseline else f"trial {r.trial}: "
        out.append((cfg, label + notation(cfg)))
    return out


def sample_designs(plan: Plan, k: int, seed: int) -> list[tuple[ArchConfig, str]]:
    """K distinct designs sampled at random from the plan's space, all within its budget."""
    sampler = optuna.samplers.RandomSampler(seed=seed)
    study = optuna.create_study(sampler=sampler)
    found: dict[str, ArchConfig] = {}
    for _ in range(200 * k):
        if len(found) == k:
            break
        trial = study.ask()
        cfg = plan.space.sample(trial.suggest_categorical)
        study.tell(trial, 0.0)
        if cfg.archid in found:
            continue
        if cost_candidate(cfg, plan.budget, plan.target, audit=False).feasible:
            found[cfg.archid] = cfg
    if len(found) < 3:
        raise ArchsearchError(
            f"space {plan.space.name}: expected at least 3 designs within {plan.budget}, "
            f"found {len(found)}"
        )
    return [(cfg, f"sampled: {notation(cfg)}") for cfg in found.values()]


class CalibrationDriver(StudyDriver):
    """The study driver handing out the calibration's fixed jobs instead of sampling."""

    def __init__(
        self, plan: Plan, study: optuna.Study, progress: Progress | None, jobs: list[Job]
    ) -> None:
        super().__init__(plan, study, progress)
        self.jobs = jobs
        self.by_key = {j.key: j for j in jobs}
        self.issued: set[tuple[str, str, int]] = set()

    def _done(self) -> set[Any]:
        done: set[Any] = set()
        for t in self.study.get_trials(deepcopy=False):
            a = t.user_attrs
            finished = t.state == TrialState.COMPLETE or (
                t.state == TrialState.FAIL and not a.get("interrupted")
            )
            if finished or (t.state == TrialState.RUNNING and st.is_live(t)):
                done.add((a.get("archid"), a.get("tier"), a.get("seed")))
        return done

    def baselines_left(self) -> list[str]:
        return []

    def remaining(self) -> list[Job]:
        done = self._done() | self.issued
        return [j for j in self.jobs if j.key not in done]

    def stop_reason(self) -> str | None:
        return None if self.remaining() else "done"

    def propose(self) -> Candidate | str | None:
        left = self.remaining()
        if not left:
            return None
        job = left[0]
        self.issued.add(job.key)
        trial = self.study.ask()
        self._open(trial, job.config)
        for k, v in (("tier", job.tier), ("seed", job.seed), ("label", job.label)):
            trial.set_user_attr(k, v)
        n = len(self.jobs) - len(left) + 1
        what = f"{job.tier} seed {job.seed}"
        work = (self._size(job), sum(self._size(j) for j in left))
        self.progress.trial_start(n, len(self.jobs), trial.number, job.label, what, work)
        cost = cost_candidate(job.config, self.plan.budget, self.plan.target)
        cost.violations, cost.ratios = [], {}  # calibrated designs are trained whatever the budget
        offset = job.seed + (REFERENCE_SEED_OFFSET if job.tier == "reference" else 0)
        return Candidate(trial, job.config, cost, schedule=job.schedule, seed_offset=offset)

    def weights_path(self, cand: Candidate) -> Path | None:
        return None

    def _size(self, job: Job) -> float:
        """A job's training work, for the time left: images x epochs (a reference is larger)."""
        return float(images_x_epochs(job.schedule, int(self.plan.data.train_x.shape[0])))

    def requeue(self, trial: optuna.Trial) -> None:
        """An interrupted job is simply handed out again."""
        a = trial.user_attrs
        self.issued.discard((a.get("archid"), a.get("tier"), a.get("seed")))

    def records_frame(self) -> pd.DataFrame:
        train_images = int(self.plan.data.train_x.shape[0])
        rows = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            a = t.user_attrs
            job = self.by_key.get(
                (str(a.get("archid")), str(a.get("tier")), int(a.get("seed", -1)))
            )
            if job is None or a.get("proxy_accuracy") is None:
                continue
            rows.append(
                {
                    "design": a["archid"],
                    "label": job.label,
                    "tier": job.tier,
                    "seed": job.seed,
                    "accuracy": a["proxy_accuracy"],
                    "val_images": a.get("val_images"),
                    "params": a.get("params"),
                    "macs": a.get("macs"),
                    "train_seconds": a.get("train_seconds"),
                    "images_x_epochs": images_x_epochs(job.schedule, train_images),
                    "family": job.config.macro,
                }
            )
        df = pd.DataFrame(rows, columns=CALIBRATION_COLUMNS)
        return df.sort_values(["design", "tier", "seed"], kind="stable").reset_index(drop=True)

    def write_table(self, records: Any = None) -> Any:
        with self.plan.run.lock():
            write_atomic(self.plan.run.calibration, self.records_frame().to_csv(index=False))
        return pd.DataFrame()

    def after(self, number: int) -> None:
        self.write_table()
        t = self.study.trials[number]
        row = {
            "state": t.state.name,
            "feasible": True,
            "error": t.user_attrs.get("error", ""),
            "violations": "",
            "reused_from": None,
            "proxy_accuracy": t.user_attrs.get("proxy_accuracy"),
            "train_seconds": t.user_attrs.get("train_seconds") or 0.0,
            "params": t.user_attrs.get("params"),
            "macs": t.user_attrs.get("macs"),
            "epochs": t.user_attrs.get("epochs"),
        }
        self.progress.trial_end(row, None, 0)


def _finished_keys(study: optuna.Study) -> set[Any]:
    return {(t.user_attrs.get("archid"), t.user_attrs.get("tier"), t.user_attrs.get("seed"))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}  # fmt: skip


def _add_finished(plan: Plan, study: optuna.Study, attrs: dict[str, Any], latency: Any) -> None:
    """Record a training done elsewhere as a finished trial of the calibration's study."""
    values = {"accuracy": attrs["proxy_accuracy"], "params": attrs["params"]}
    values |= {"macs": attrs["macs"], "latency": 0.0 if pd.isna(latency) else latency}
    study.add_trial(
        optuna.trial.create_trial(
            values=[float(values[o]) for o in plan.objectives], user_attrs=attrs
        )
    )


def _reuse_run_trainings(plan: Plan, study: optuna.Study, jobs: list[Job]) -> None:
    """Proxy seed 0 of a design is the run's own training (same schedule, seed and data; CPU
    training is deterministic): take its result from the run instead of training it again."""
    done = _finished_keys(study)
    table = read_trials(plan.run.trials)
    runs = trained(table)
    by_id = {str(r.archid): r for r in runs.itertuples()}
    for job in jobs:
        r = by_id.get(job.config.archid)
        if job.tier != "proxy" or job.seed != 0 or r is None or job.key in done:
            continue
        if pd.isna(r.val_images) or pd.isna(r.train_seconds):
            continue
        if job.schedule != plan.schedule:
            continue
        attrs = {
            "archid": job.config.archid, "tier": job.tier, "seed": 0, "label": job.label,
            "proxy_accuracy": float(r.proxy_accuracy), "val_images": int(r.val_images),
            "train_seconds": float(r.train_seconds), "params": int(r.params),
            "macs": int(r.macs), "epochs": int(r.epochs), "from_run_trial": int(r.trial),
            "feasible": True,
        }  # fmt: skip
        _add_finished(plan, study, attrs, r.latency_ms)


def _reuse_calibration_csv(plan: Plan, study: optuna.Study, jobs: list[Job]) -> int:
    """The runs of an earlier calibration.csv that its journal no longer holds (a clone keeps
    the table, not the journal): taken as finished instead of trained again. Returns how many."""
    path = plan.run.calibration
    if not path.is_file():
        return 0
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as e:
        raise ArchsearchError(f"{path}: expected a calibration.csv, got {e}") from None
    if not set(COLUMNS) <= set(table.columns):
        missing = sorted(set(COLUMNS) - set(table.columns))
        raise ArchsearchError(f"{path}: expected the columns of calibration.csv, missing {missing}")
    done, by_key = _finished_keys(study), {j.key: j for j in jobs}
    added = 0
    for r in table.dropna(subset=["accuracy"]).itertuples():
        try:
            key = (str(r.design), str(r.tier), int(r.seed))
        except (TypeError, ValueError):
            continue
        job = by_key.get(key)
        if job is None or key in done or pd.isna([r.params, r.macs, r.val_images]).any():
            continue
        attrs = {
            "archid": key[0], "tier": key[1], "seed": key[2], "label": job.label,
            "proxy_accuracy": float(r.accuracy), "val_images": int(r.val_images),
            "train_seconds": float(r.train_seconds), "params": int(r.params),
            "macs": int(r.macs), "from_calibration_csv": True, "feasible": True,
        }  # fmt: skip
        _add_finished(plan, study, attrs, None)
        done.add(key)
        added += 1
    return added


def check_counts(designs: int, seeds: int, factor: float, reference_seeds: int = 1) -> None:
    for name, value, lo in (
        ("--designs", designs, 3), ("--seeds", seeds, 2), ("--reference-seeds", reference_seeds, 1)
    ):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ConfigError(f"{name}: expected an integer >= {lo}, got {value!r}")
    if not isinstance(factor, int | float) or not factor >= 1:
        raise ConfigError(f"--reference-factor: expected a number >= 1, got {factor!r}")


def _plan(
    run_dir: str | None, space: str | None, budget: str | None, out: str | None, **common: Any
) -> tuple[Plan, Path]:
    """The calibration's plan: a run folder's own settings, or a space plus a budget."""
    import yaml

    from .search.plan import resolve
    from .settings import RunSettings

    if run_dir is not None:
        if space is not None or budget is not None:
            raise ConfigError("calibrate: expected a RUN_DIR or --space/--budget, got both")
        root = Path(run_dir)
        try:
            record = yaml.safe_load(RunDir(root).settings.read_text())
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("options"), dict):
            raise ArchsearchError(
                f"run directory {str(root)!r}: expected an archsearch run.yaml, found none"
            )
        settings = RunSettings.from_dict(record["options"])
        # the run's own proxy, even where a later version changed the default it came from
        schedule = (record.get("resolved") or {}).get("schedule") or {}
        pinned = {opt: schedule.get(key) for opt, key in SCHEDULE_OPTIONS.items()}
        settings = settings.replace(
            **{k: v for k, v in pinned.items() if v is not None and getattr(settings, k) is None}
        )
        keep = {k: v for k, v in common.items() if v is not None}
        settings = settings.replace(out=str(root), force=False, workers=1, **keep)
        return resolve(settings), root
    if budget is None:
        raise ConfigError("calibrate: expected a RUN_DIR, or --budget with --space, got neither")
    settings = RunSettings(budget=budget, space=space or "default")
    settings = settings.replace(**{k: v for k, v in common.items() if v is not None})
    plan = resolve(settings)
    name = f"calibration-{Path(settings.space).stem}-{budget}"
    return plan, Path(out) if out else Path("results") / name


def calibrate(
    run_dir: str | None = None,
    *,
    space: str | None = None,
    budget: str | None = None,
    out: str | None = None,
    designs: int = 12,
    seeds: int = 3,
    reference_factor: float = 10.0,
    reference_seeds: int = 1,
    progress: Progress | None = None,
    **common: Any,
) -> dict[str, Any]:
    """Train the calibration's jobs (resuming earlier ones) and write its files.

    Args:
        run_dir: a run folder whose trained designs are calibrated (results go into it).
        space: a space to sample designs from (with ``budget``) instead of a run folder.
        budget: the budget sampled designs must meet.
        out: the folder of a space calibration (default ``results/calibration-SPACE-BUDGET``).
        designs: number of designs K.
        seeds: proxy seeds S per design.
        reference_factor: images x epochs of the reference tier over the proxy's.
        reference_seeds: reference trainings per design (2 or more measure the reference's own
            noise, and the tau ceiling it sets; a later call with more seeds adds the missing).
        progress: receives events (as for ``archsearch run``).
        common: run options passed on (``backend``, ``device``, ``seed`` and the like).

    Returns:
        ``{"csv": Path, "json": Path, "png": Path, "analysis": dict}``.
    """
    from .search.local import execute_local, open_run_study

    check_counts(designs, seeds, reference_factor, reference_seeds)
    plan, root = _plan(run_dir, space, budget, out, **common)
    plan.run = RunDir(root)
    if run_dir is None:
        chosen = sample_designs(plan, designs, plan.settings.seed)
    else:
        chosen = pick_designs(root, designs)
    train_images = int(plan.data.train_x.shape[0])
    ref = reference_schedule(plan.schedule, train_images, reference_factor)
    jobs = []  # design by design, so a calibration cut short still has whole designs
    for c, label in chosen:
        jobs += [Job(c, label, "proxy", s, plan.schedule) for s in range(seeds)]
        jobs += [Job(c, label, "reference", s, ref) for s in range(reference_seeds)]
    plan.title, plan.trials, plan.timeout, plan.baselines = "calibrate", len(jobs), None, []
    root.mkdir(parents=True, exist_ok=True)
    st.repair_journal(root / JOURNAL)
    study = open_run_study(plan, journal=JOURNAL)
    st.recover_interrupted(study, requeue=False)
    reused = _reuse_calibration_csv(plan, study, jobs)
    if reused:
        log.info("calibration: %d runs reused from %s", reused, plan.run.calibration)
    if run_dir is not None:
        _reuse_run_trainings(plan, study, jobs)

    def make(plan: Plan, study: optuna.Study, progress: Progress | None) -> StudyDriver:
        return CalibrationDriver(plan, study, progress, jobs)

    if plan.settings.backend == "ray":
        from .search.ray_backend import run_ray

        run_ray(plan, progress or Progress(), driver=make, study=study)
    else:
        execute_local(plan, progress, driver=make, study=study)
    df = pd.read_csv(plan.run.calibration)
    about = f"space {plan.space.name}, budget {plan.budget}, proxy {plan.schedule.img_size} px"
    paths = {"csv": plan.run.calibration, **write_calibration(root, df, None if run_dir else about)}
    if run_dir is not None:
        from .report import write_report

        paths["html"] = write_report(root)["html"]
    return {**paths, "analysis": json.loads(paths["json"].read_text())}
