"""Resolve and check a run's settings into a :class:`Plan`, before anything is written.

:func:`prepare` validates every option, loads the space and the data, refuses impossible budgets
and decides what happens to an existing run folder (resume, refuse, or start over).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..config import ArchConfig
from ..cost.analytic import estimate
from ..cost.budget import Budget, format_count, parse_budget
from ..cost.candidate import CostTarget, check_latency_reachable, head_params
from ..errors import ArchsearchError, BudgetError, ConfigError
from ..models import reference_config, reference_names
from ..rundir import MARKER, RunDir
from ..settings import CPU_DEFAULTS, GPU_DEFAULTS, RunSettings, schedule_hint
from ..train.data import ImageData, load_dataset
from ..train.device import select_device
from ..train.proxy import ProxySchedule
from . import study as st
from .fidelity import Rungs
from .identity import RUN_ATTR, fingerprint, study_key
from .space import SearchSpace, load_space
from .storage import redact, storage_url

__all__ = [
    "OBJECTIVES",
    "Plan",
    "prepare",
    "proxy_tier",
    "resolve",
    "parse_objectives",
]

#: objective name -> (trials.csv column, direction)
OBJECTIVES = {
    "accuracy": ("proxy_accuracy", "maximize"),
    "params": ("params", "minimize"),
    "macs": ("macs", "minimize"),
    "latency": ("latency_ms", "minimize"),
}
_MIN = {
    "trials": 1,
    "epochs": 1,
    "subset": 1,
    "batch_size": 1,
    "proxy_img_size": 8,
    "img_size": 8,
    "in_chans": 1,
    "num_classes": 1,
    "workers": 1,
    "seed": 0,
    "rungs": 1,
    "eta": 2,
    "final_seeds": 1,
}


@dataclass
class Plan:
    """A fully resolved, validated run."""

    settings: RunSettings
    run: RunDir
    budget: Budget
    space: SearchSpace
    objectives: list[str]
    device: torch.device
    schedule: ProxySchedule
    target: CostTarget
    data: ImageData
    trials: int = 0
    timeout: float | None = None
    baselines: list[str] = field(default_factory=list)
    record: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    replace: bool = False  # --force on a run folder holding a different run
    title: str = "run"  # the command driving the plan (run, calibrate)
    rungs: Rungs | None = None  # None: single fidelity at ``schedule``
    replace_study: bool = False  # --force on a shared study (--storage) holding a different run

    @property
    def ladder(self) -> Rungs:
        """The run's rungs (one rung, the proxy schedule, for single fidelity)."""
        if self.rungs is not None:
            return self.rungs
        return Rungs(self.schedule, int(self.data.train_x.shape[0]))

    @property
    def run_dir(self) -> Path:
        return self.run.root

    @property
    def study_name(self) -> str:
        """The study's name: the run folder's name in a shared storage (``--storage``; so every
        process given the same URL and run name shares it), ``archsearch`` in a journal."""
        return self.run.root.resolve().name if self.settings.storage else st.STUDY_NAME


def parse_objectives(text: str) -> list[str]:
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    bad = [n for n in names if n not in OBJECTIVES]
    if not names or bad or names[0] != "accuracy" or len(set(names)) != len(names):
        raise ConfigError(
            f"--objectives: expected 'accuracy' followed by distinct costs among params, macs, "
            f"latency (e.g. accuracy,macs), got {text!r}"
        )
    return names


def _check_values(s: RunSettings) -> None:
    for name, lo in _MIN.items():
        v = getattr(s, name)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag}: expected an integer >= {lo}, got {v!r}")
    if s.timeout is not None and not s.timeout > 0:
        raise ConfigError(f"--timeout: expected a positive number of seconds, got {s.timeout}")
    for name in ("backend", "scheduler", "sampler", "fidelity"):
        allowed = RunSettings.__dataclass_fields__[name].metadata["choices"]
        if getattr(s, name) not in allowed:
            raise ConfigError(
                f"--{name}: expected one of {', '.join(allowed)}, got {getattr(s, name)!r}"
            )
    ignored = s.ignored_by_backend()
    if ignored:
        flag = "--" + ignored[0].replace("_", "-")
        raise ConfigError(
            f"{flag}: expected only with the backend that uses it, got it with --backend "
            f"{s.backend} (which ignores it)"
        )
    if s.name and s.out:
        raise ConfigError(
            f"--name: expected either --name or --out, got both ({s.name!r} and {s.out!r})"
        )
    if s.download and not s.dataset.startswith("cifar"):
        raise ConfigError(f"--download: expected a cifar10/cifar100 dataset, got {s.dataset!r}")
    if s.data_dir and s.dataset.startswith("synthetic"):
        raise ConfigError(
            f"--data-dir: expected a dataset read from files, got {s.dataset!r} (made in memory)"
        )
    if s.fidelity != "single" and s.rungs < 2:
        raise ConfigError(
            f"--rungs: expected at least 2 with --fidelity {s.fidelity}, got {s.rungs}"
        )
    if s.fidelity != "single" and s.scheduler != "none":
        raise ConfigError(
            f"--scheduler: expected none with --fidelity {s.fidelity} (it promotes by rungs "
            f"itself), got {s.scheduler!r}"
        )
    if s.backend == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ConfigError(
                "--backend ray: Ray is not installed; install it with "
                "pip install 'archsearch[ray]' (ray[tune])"
            ) from None


def _run_name(s: RunSettings) -> str:
    if s.name:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", s.name):
            raise ConfigError(f"--name: expected letters, digits, '.', '_' or '-', got {s.name!r}")
        return s.name
    stem = Path(s.space).stem
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{stem}-{s.budget}")


def _versions() -> dict[str, str]:
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


def proxy_tier(s: RunSettings, device: torch.device) -> torch.device:
    """The device whose proxy schedule tier (and search defaults) the run gets: on the Ray
    backend what each trial is given (``--gpus-per-trial`` > 0: the GPU tier, 0: the CPU tier),
    otherwise, and while ``--gpus-per-trial`` is left to the cluster, this machine's ``device``.
    Explicit schedule options (``--epochs``, ``--subset`` ...) override the tier's values."""
    gpus = s.gpus_per_trial
    if s.backend != "ray" or isinstance(gpus, bool) or not isinstance(gpus, int | float):
        return device
    return torch.device("cuda" if gpus > 0 else "cpu")


def check_budget_reachable(space: SearchSpace, budget: Budget, target: CostTarget) -> None:
    """Refuse a budget that even the cheapest member of the space exceeds (latency: a lower
    bound timed on the member with the fewest MACs of each family)."""

    def cost(cfg: ArchConfig, params: bool) -> float:
        est = estimate(
            cfg, img_size=target.img_size, in_chans=target.in_chans, num_classes=target.num_classes
        )
        return float(est.params - head_params(cfg, target.num_classes) if params else est.macs)

    for metric, unit in (("params", "params"), ("macs", "MACs")):
        limit = getattr(budget, metric)
        if limit is None:
            continue
        _, smallest = space.cheapest(functools.partial(cost, params=metric == "params"))
        if smallest > limit:
            raise BudgetError(
                f"the smallest architecture in {space.name} has {format_count(smallest)} {unit}; "
                f"budget {budget.text or budget} cannot be met"
            )
    if budget.latency_ms is not None:
        macs = functools.partial(cost, params=False)
        fewest = [SearchSpace(n, {n: b}).cheapest(macs)[0] for n, b in space.branches.items()]
        check_latency_reachable(space.name, fewest, budget, target)


def _fits(name: str, budget: Budget, target: CostTarget) -> bool:
    cfg = reference_config(name)
    t = target
    est = estimate(cfg, img_size=t.img_size, in_chans=t.in_chans, num_classes=t.num_classes)
    return budget.is_feasible(params=est.params - head_params(cfg, t.num_classes), macs=est.macs)


def prepare(settings: RunSettings) -> Plan:
    """Validate everything, load what the run needs and check its run folder (and its shared
    study: ``--storage``); writes nothing."""
    plan = resolve(settings)
    _check_existing(plan)
    if plan.settings.storage:
        _check_shared_study(plan)
    return plan


def resolve(settings: RunSettings) -> Plan:
    """Validate every option and load the space, budget, data and schedule; writes nothing and
    does not look at the run folder."""
    s = settings
    if s.storage is not None:
        s = s.replace(storage=storage_url(s.storage))
    budget = parse_budget(s.budget)
    objectives = parse_objectives(s.objectives)
    _check_values(s)
    if s.pruner and len(objectives) > 1:
        raise ConfigError(
            f"--pruner: expected a single objective (--objectives accuracy), got {s.objectives!r}"
        )
    space = load_space(s.space)
    device = select_device(s.device)
    target = CostTarget(img_size=s.img_size, in_chans=s.in_chans, num_classes=s.num_classes)
    check_budget_reachable(space, budget, target)
    overrides = {
        "epochs": s.epochs,
        "subset": s.subset,
        "batch_size": s.batch_size,
        "img_size": s.proxy_img_size,
        "compile": s.compile or None,
    }
    tier = proxy_tier(s, device)
    schedule = ProxySchedule.for_device(
        tier, **{k: v for k, v in overrides.items() if v is not None}
    )
    data = load_dataset(s.dataset, data_dir=s.data_dir, download=s.download, split_seed=s.seed)
    have = int(data.train_x.shape[0])
    if s.subset is not None and s.subset > have:
        raise ConfigError(
            f"--subset: expected at most the {have} training images of {data.name}, got {s.subset}"
        )
    levels = 1 if s.fidelity == "single" else s.rungs
    rungs = Rungs(schedule, have, levels=levels, eta=s.eta, mode=s.fidelity)
    defaults = CPU_DEFAULTS if tier.type == "cpu" else GPU_DEFAULTS
    trials = s.trials if s.trials is not None else int(defaults["trials"] or 0)
    timeout = s.timeout if s.timeout is not None else defaults["timeout"]
    baselines = [n for n in reference_names() if s.baselines and _fits(n, budget, target)]
    root = Path(s.out) if s.out else Path("results") / _run_name(s)
    record = {
        MARKER: 1,
        "options": {**s.to_dict(), "storage": s.storage and redact(s.storage)},
        "resolved": {
            "budget": str(budget),
            "space": space.name if space.path is None or not Path(s.space).exists() else s.space,
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
            "study": {
                "storage": s.storage and redact(s.storage),  # None: RUN_DIR/study.journal
                "name": (root.resolve().name if s.storage else st.STUDY_NAME),
            },
            "rungs": [
                {"rung": r, "epochs": rungs.schedule(r).epochs, "images": rungs.schedule(r).subset}
                for r in range(levels)
            ],
        },
        "versions": _versions(),
    }
    record = json.loads(json.dumps(record, default=str))  # plain YAML-safe types only
    plan = Plan(s, RunDir(root), budget, space, objectives, device, schedule, target, data)
    plan.trials, plan.timeout, plan.baselines, plan.record = trials, timeout, baselines, record
    plan.rungs = rungs if levels > 1 else None
    return plan


def _file_hash(path: Path | None) -> str | None:
    if path is None or not path.is_file():
        return None
    return hashlib.sha1(path.read_bytes()).hexdigest()[:12]


def _check_existing(plan: Plan) -> None:
    run, force = plan.run, plan.settings.force
    where = repr(str(run.root))
    if run.root.exists() and not run.root.is_dir():
        raise ArchsearchError(f"--out: expected a directory, got the file {where}")
    if not run.settings.is_file():
        if run.root.exists() and any(run.root.iterdir()):
            raise ArchsearchError(
                f"run directory {where}: expected an empty folder or an archsearch run folder, "
                "found other files (archsearch never deletes them); choose another --out"
            )
        return
    try:
        old = yaml.safe_load(run.settings.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        old = None
    if not isinstance(old, dict) or MARKER not in old:
        raise ArchsearchError(
            f"run directory {where}: expected an archsearch run folder, its run.yaml is not "
            "archsearch's (archsearch never deletes it); choose another --out"
        )
    a, b = fingerprint(old), fingerprint(plan.record)
    diff = [k for k in a if json.dumps(a[k], sort_keys=True) != json.dumps(b[k], sort_keys=True)]
    if not run.journal.is_file() and not plan.settings.storage:
        if not force:
            raise ArchsearchError(
                f"run directory {where} holds results without a study journal (a copied or "
                "committed run) and cannot be resumed; use another --out, or --force to start "
                "a new run there (its results are replaced)"
            )
        plan.replace = True
        return
    if diff:
        if not force:
            hint = schedule_hint(a["schedule"], b["schedule"]) if diff[0] == "schedule" else ""
            raise ArchsearchError(
                f"run directory {where} holds a run with a different {diff[0]} "
                f"({a[diff[0]]!r} there, {b[diff[0]]!r} now); {hint}use another --name/--out, "
                "or --force to start it over"
            )
        plan.replace = True
        return
    plan.resumed = True


def _check_shared_study(plan: Plan) -> None:
    """Join the study of the same name in ``--storage`` if it holds this run; refuse (or, with
    --force, replace) one holding another run."""
    url, name, force = str(plan.settings.storage), plan.study_name, plan.settings.force
    where = f"study {name!r} in {redact(url)}"
    got = st.study_record(url, name)
    if got is None:
        if plan.resumed and not force:
            raise ArchsearchError(
                f"run directory {str(plan.run.root)!r} holds a run whose {where} is gone; use "
                "--force to start it over"
            )
        plan.replace, plan.resumed = plan.replace or plan.resumed, False
        return
    attrs, n_trials = got
    ours, theirs = study_key(plan.record), attrs.get(RUN_ATTR)
    if theirs == ours or (theirs is None and n_trials == 0):
        plan.resumed = not plan.replace
        return
    if not force:
        if theirs is None:
            why = "is not an archsearch run's"
        else:
            a, b = json.loads(theirs), json.loads(ours)
            diff = [k for k in b if json.dumps(a.get(k)) != json.dumps(b[k])]
            k = diff[0] if diff else "run"
            why = f"holds a run with a different {k} ({a.get(k)!r} there, {b[k]!r} now)"
        raise ArchsearchError(
            f"{where} {why}; use another --name/--out (the study is named after the run folder), "
            "or --force to start it over"
        )
    plan.replace_study, plan.replace, plan.resumed = True, True, False
