"""``archsearch run``: resolve options, check everything, then search.

:func:`prepare` validates every option, loads the space and the data and refuses impossible
budgets before anything is written; :func:`execute` runs the study (baselines first, then
search trials until ``--trials`` trained candidates or ``--timeout``), keeps ``trials.csv`` and
the weights of the Pareto front up to date after every trial, and resumes a run directory
left by an earlier (possibly killed) invocation of the same command.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from .._logging import get_logger
from ..config import ArchConfig
from ..cost.analytic import estimate
from ..cost.budget import Budget, format_count, parse_budget
from ..errors import ArchsearchError, BudgetError, ConfigError
from ..models import reference_config, reference_names
from ..train.data import ImageData, load_dataset
from ..train.device import configure_threads, select_device
from ..train.proxy import ProxySchedule
from .evaluate import CostTarget, Evaluator, describe
from .results import prune_weights, write_trials_csv
from .space import SearchSpace, load_space

__all__ = ["RunOptions", "Plan", "Progress", "prepare", "execute", "run", "OBJECTIVES"]

log = get_logger("run")

#: objective name -> (trials.csv column, direction)
OBJECTIVES = {
    "accuracy": ("proxy_accuracy", "maximize"),
    "params": ("params", "minimize"),
    "macs": ("macs", "minimize"),
    "latency": ("latency_ms", "minimize"),
}

#: Per-device defaults for the search itself (the proxy schedule has its own).
CPU_DEFAULTS = {"trials": 30, "timeout": 13 * 60.0}
GPU_DEFAULTS = {"trials": 100, "timeout": None}

#: Options that define a run: changing any of them for an existing run directory needs --force.
FINGERPRINT_KEYS = (
    "budget",
    "space",
    "dataset",
    "objectives",
    "seed",
    "sampler",
    "img_size",
    "in_chans",
    "num_classes",
    "baselines",
    "pruner",
)


@dataclass(frozen=True)
class RunOptions:
    """Every option of ``archsearch run`` (``None``: the device default)."""

    budget: str
    space: str = "default"
    trials: int | None = None
    timeout: float | None = None
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    epochs: int | None = None
    subset: int | None = None
    batch_size: int | None = None
    proxy_img_size: int | None = None
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    sampler: str = "tpe"
    objectives: str = "accuracy,macs"
    seed: int = 0
    device: str = "auto"
    name: str | None = None
    out: str | None = None
    workers: int = 1
    force: bool = False
    quiet: bool = False
    pruner: bool = False
    baselines: bool = True
    compile: bool = False
    backend: str = "local"
    ray_address: str | None = None
    gpus_per_trial: float | None = None
    cpus_per_trial: float | None = None
    max_concurrent: int | None = None
    scheduler: str = "none"


@dataclass
class Plan:
    """A fully resolved, validated run: what :func:`execute` needs."""

    options: RunOptions
    run_dir: Path
    budget: Budget
    space: SearchSpace
    objectives: list[str]
    device: torch.device
    schedule: ProxySchedule
    target: CostTarget
    data: ImageData
    trials: int
    timeout: float | None
    baselines: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False


class Progress:
    """Receives run events; the CLI renders them. All methods are no-ops here."""

    def start(self, plan: Plan, done: int) -> None: ...
    def trial_start(self, index: int, total: int, number: int, desc: str, kind: str) -> None: ...
    def epoch(self, epoch: int, epochs: int, accuracy: float) -> None: ...
    def trial_end(self, row: dict[str, Any], best: float | None, front: int) -> None: ...
    def finish(self, plan: Plan, front: Any) -> None: ...


def _int_opt(name: str, value: Any, lo: int) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < lo):
        raise ConfigError(f"--{name.replace('_', '-')}: expected an integer >= {lo}, got {value!r}")


def parse_objectives(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in OBJECTIVES]
    if not names or bad or names[0] != "accuracy" or len(set(names)) != len(names):
        raise ConfigError(
            f"--objectives: expected 'accuracy' followed by distinct costs among params, macs, "
            f"latency (e.g. accuracy,macs), got {text!r}"
        )
    return names


def _run_name(options: RunOptions) -> str:
    if options.name:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", options.name):
            raise ConfigError(
                f"--name: expected letters, digits, '.', '_' or '-', got {options.name!r}"
            )
        return options.name
    stem = Path(options.space).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{options.budget}")


def _versions() -> dict[str, str]:
    import fvcore  # noqa: F401
    import optuna
    import timm

    from .. import __version__

    return {
        "archsearch": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "timm": timm.__version__,
        "optuna": optuna.__version__,
    }


def check_budget_reachable(space: SearchSpace, budget: Budget, target: CostTarget) -> None:
    """Refuse a budget that even the cheapest member of the space exceeds."""

    def params(cfg: ArchConfig) -> float:
        return float(
            estimate(cfg, img_size=target.img_size, in_chans=target.in_chans, num_classes=0).params
        )

    def macs(cfg: ArchConfig) -> float:
        return float(
            estimate(
                cfg,
                img_size=target.img_size,
                in_chans=target.in_chans,
                num_classes=target.num_classes,
            ).macs
        )

    for metric, fn, unit in (("params", params, "params"), ("macs", macs, "MACs")):
        limit = getattr(budget, metric)
        if limit is None:
            continue
        _, smallest = space.cheapest(fn)
        if smallest > limit:
            raise BudgetError(
                f"the smallest architecture in {space.name} has {format_count(smallest)} {unit}; "
                f"budget {budget.text or budget} cannot be met"
            )


def prepare(options: RunOptions) -> Plan:
    """Validate everything and load what the run needs; writes nothing."""
    budget = parse_budget(options.budget)
    objectives = parse_objectives(options.objectives)
    for name, lo in (
        ("trials", 1),
        ("epochs", 1),
        ("subset", 1),
        ("batch_size", 1),
        ("proxy_img_size", 8),
        ("img_size", 8),
        ("in_chans", 1),
        ("num_classes", 1),
        ("workers", 1),
        ("seed", 0),
    ):
        _int_opt(name, getattr(options, name), lo)
    if options.timeout is not None and not options.timeout > 0:
        raise ConfigError(
            f"--timeout: expected a positive number of seconds, got {options.timeout}"
        )
    if options.backend not in ("local", "ray"):
        raise ConfigError(f"--backend: expected local or ray, got {options.backend!r}")
    if options.scheduler not in ("none", "asha"):
        raise ConfigError(f"--scheduler: expected none or asha, got {options.scheduler!r}")
    if options.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--backend ray: Ray is not installed; install it with "
                "pip install 'archsearch[ray]' (ray[tune])"
            ) from None
    if options.sampler not in ("tpe", "nsga2", "random"):
        raise ConfigError(f"--sampler: expected tpe, nsga2 or random, got {options.sampler!r}")
    if options.pruner and len(objectives) > 1:
        raise ConfigError(
            "--pruner: expected a single objective (--objectives accuracy), "
            f"got {options.objectives!r}"
        )
    space = load_space(options.space)
    device = select_device(options.device)
    target = CostTarget(
        img_size=options.img_size, in_chans=options.in_chans, num_classes=options.num_classes
    )
    check_budget_reachable(space, budget, target)
    overrides = {
        k: v
        for k, v in {
            "epochs": options.epochs,
            "subset": options.subset,
            "batch_size": options.batch_size,
            "img_size": options.proxy_img_size,
            "compile": options.compile or None,
        }.items()
        if v is not None
    }
    schedule = ProxySchedule.for_device(device, **overrides)
    data = load_dataset(
        options.dataset,
        data_dir=options.data_dir,
        download=options.download,
        split_seed=options.seed,
    )
    defaults = CPU_DEFAULTS if device.type == "cpu" else GPU_DEFAULTS
    trials = options.trials if options.trials is not None else int(defaults["trials"] or 0)
    timeout = options.timeout if options.timeout is not None else defaults["timeout"]
    baselines: list[str] = []
    if options.baselines:
        for name in reference_names():
            cfg = reference_config(name)
            est = estimate(
                cfg,
                img_size=target.img_size,
                in_chans=target.in_chans,
                num_classes=target.num_classes,
            )
            head = estimate(cfg, img_size=target.img_size, in_chans=target.in_chans, num_classes=0)
            if budget.is_feasible(params=head.params, macs=est.macs):
                baselines.append(name)
    run_dir = Path(options.out) if options.out else Path("results") / _run_name(options)
    settings = {
        "options": dataclasses.asdict(options),
        "resolved": {
            "budget": str(budget),
            "space": str(space.path),
            "space_sha1": _file_hash(space.path),
            "objectives": objectives,
            "trials": trials,
            "timeout_seconds": timeout,
            "device": str(device),
            "baselines": baselines,
            "cost_target": dataclasses.asdict(target),
            "proxy_target": {
                "dataset": data.name,
                "img_size": schedule.img_size or data.img_size,
                "in_chans": data.in_chans,
                "num_classes": data.num_classes,
                "train_images": int(data.train_x.shape[0]),
                "val_images": int(data.val_x.shape[0]),
                "mean": list(data.mean),
                "std": list(data.std),
                "class_names": list(data.class_names) if data.class_names else None,
            },
            "schedule": dataclasses.asdict(schedule),
        },
        "versions": _versions(),
    }
    settings = json.loads(json.dumps(settings, default=str))  # plain YAML-safe types only
    plan = Plan(
        options,
        run_dir,
        budget,
        space,
        objectives,
        device,
        schedule,
        target,
        data,
        trials,
        timeout,
        baselines,
        settings,
    )
    _check_existing(plan)
    return plan


def _file_hash(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _fingerprint(settings: dict[str, Any]) -> dict[str, Any]:
    opts = settings["options"]
    res = settings["resolved"]
    fp = {k: opts.get(k) for k in FINGERPRINT_KEYS}
    fp["space_sha1"] = res.get("space_sha1")
    fp["schedule"] = res.get("schedule")
    return fp


def _check_existing(plan: Plan) -> None:
    path = plan.run_dir / "run.yaml"
    if not path.is_file():
        if plan.run_dir.exists() and any(plan.run_dir.iterdir()) and not plan.options.force:
            raise ArchsearchError(
                f"run directory {str(plan.run_dir)!r}: expected an empty directory or an "
                "archsearch run, found other files (use --force to overwrite)"
            )
        return
    old = yaml.safe_load(path.read_text()) or {}
    if not isinstance(old, dict) or "options" not in old:
        old = {"options": {}, "resolved": {}}
    a, b = _fingerprint(old), _fingerprint(plan.settings)
    diff = [k for k in a if json.dumps(a[k], sort_keys=True) != json.dumps(b[k], sort_keys=True)]
    if diff and not plan.options.force:
        raise ArchsearchError(
            f"run directory {str(plan.run_dir)!r} holds a run with a different {diff[0]} "
            f"({a[diff[0]]!r} there, {b[diff[0]]!r} now); use another --name/--out, or --force "
            "to start it over"
        )
    plan.resumed = not diff


def _write_yaml(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    os.replace(tmp, path)


def _make_study(plan: Plan):  # noqa: ANN202 - optuna type kept out of the signature
    from .study import make_pruner, make_sampler, open_study

    directions = [OBJECTIVES[o][1] for o in plan.objectives]
    sampler = make_sampler(
        plan.options.sampler, seed=plan.options.seed, n_objectives=len(directions)
    )
    pruner = make_pruner(plan.options.pruner, len(directions))
    return open_study(plan.run_dir, directions, sampler, pruner)


def execute(plan: Plan, progress: Progress | None = None, *, worker: bool = False) -> Any:
    """Run the search described by ``plan``; returns the final Pareto table (DataFrame)."""
    from . import study as st

    if plan.options.backend == "ray" and not worker:
        from .ray_backend import run_ray

        return run_ray(plan, progress or Progress())

    progress = progress or Progress()
    opts = plan.options
    if not worker:
        if opts.force and plan.run_dir.exists() and not plan.resumed:
            shutil.rmtree(plan.run_dir)
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        _write_yaml(plan.run_dir / "run.yaml", plan.settings)
    threads = max(1, (os.cpu_count() or 1) // max(1, opts.workers))
    if plan.device.type == "cpu":
        configure_threads(threads)
    study = _make_study(plan)
    if not worker:
        recovered = st.recover_interrupted(study)
        if recovered:
            log.info("re-queued interrupted trials %s", recovered)
    weights = plan.run_dir / "weights"
    epochs = plan.schedule.epochs
    evaluator = Evaluator(
        budget=plan.budget,
        target=plan.target,
        data=plan.data,
        schedule=plan.schedule,
        device=plan.device,
        seed=opts.seed,
        weights_dir=weights,
        measure_latency_always="latency" in plan.objectives,
        on_epoch=lambda e, a: progress.epoch(e, epochs, a),
    )
    procs = _spawn_workers(plan) if (opts.workers > 1 and not worker) else []
    progress.start(plan, st.counted_trials(study))
    started = time.monotonic()
    try:
        if not worker:
            done = {
                t.user_attrs.get("baseline")
                for t in study.get_trials(deepcopy=False)
                if t.state.is_finished() and not t.user_attrs.get("interrupted")
            }
            for i, name in enumerate(n for n in plan.baselines if n not in done):
                progress.trial_start(
                    i + 1,
                    len(plan.baselines),
                    len(study.trials),
                    describe(reference_config(name)),
                    f"baseline {name}",
                )
                ft = st.run_baseline(
                    study, name, reference_config(name), evaluator, plan.objectives
                )
                _after_trial(plan, study, ft, progress)
        attempts = 0
        max_attempts = max(200, 50 * plan.trials)
        while True:
            if st.counted_trials(study, include_running=True) >= plan.trials:
                break
            if plan.timeout is not None and time.monotonic() - started > plan.timeout:
                log.warning("timeout of %.0f s reached; stopping the search", plan.timeout)
                break
            if attempts >= max_attempts:
                log.warning("%d candidates sampled, too few within budget; stopping", attempts)
                break
            attempts += 1
            index = st.counted_trials(study) + 1

            def sampled(number: int, cfg: ArchConfig, index: int = index) -> None:
                progress.trial_start(index, plan.trials, number, describe(cfg), "trial")

            ft = st.run_trial(
                study, plan.space, evaluator, plan.objectives, prune=opts.pruner, on_sampled=sampled
            )
            _after_trial(plan, study, ft, progress)
    finally:
        for p in procs:
            p.join()
            if p.exitcode:
                log.warning("worker process %s exited with code %s", p.pid, p.exitcode)
    front = _front(plan, study)
    if not worker:
        write_trials_csv(study, plan.run_dir / "trials.csv")
        progress.finish(plan, front)
    return front


def _front(plan: Plan, study: Any, rows: list[dict[str, Any]] | None = None) -> Any:
    """The current Pareto front (a DataFrame) of the study, or of already loaded ``rows``."""
    import pandas as pd

    from ..pareto import pareto_table
    from .study import trial_rows

    df = pd.DataFrame(rows if rows is not None else trial_rows(study))
    if df.empty or "proxy_accuracy" not in df:
        return df
    table = pareto_table(df, plan.objectives, feasible_col="feasible")
    return table[table["pareto_rank"] == 0]


def _after_trial(plan: Plan, study: Any, ft: Any, progress: Progress) -> None:
    from .study import trial_rows

    rows = trial_rows(study)
    row = next(r for r in rows if r["trial"] == ft.number)
    front = _front(plan, study, rows)
    keep = set(front["trial"]) if "trial" in front else set()
    prune_weights(plan.run_dir, rows, keep)
    write_trials_csv(study, plan.run_dir / "trials.csv", rows=rows)
    accs = [r["proxy_accuracy"] for r in rows if r["feasible"] and r["proxy_accuracy"] is not None]
    progress.trial_end(row, max(accs) if accs else None, len(keep))


def _worker_main(options: dict[str, Any]) -> None:
    opts = RunOptions(**options)
    plan = prepare(dataclasses.replace(opts, force=False))
    execute(plan, worker=True)


def _spawn_workers(plan: Plan) -> list[Any]:
    ctx = mp.get_context("spawn")
    opts = dataclasses.asdict(plan.options)
    opts["out"] = str(plan.run_dir)
    opts["workers"] = plan.options.workers
    procs = []
    for _ in range(plan.options.workers - 1):
        p = ctx.Process(target=_worker_main, args=(opts,), daemon=False)
        p.start()
        procs.append(p)
    return procs


def run(options: RunOptions, progress: Progress | None = None) -> Any:
    """:func:`prepare` then :func:`execute`."""
    return execute(prepare(options), progress)


def fmt_seconds(s: float | None) -> str:
    if s is None or math.isnan(s):
        return "-"
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"
