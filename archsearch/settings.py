"""Every option of a run, declared once.

:class:`RunSettings` is the single declaration: the ``archsearch run`` command line
(:func:`add_arguments`), the Ray adapter and ``run.yaml`` are all derived from its fields and
their metadata. Each field says its help text, its command-line form, whether it defines the run
(changing it for an existing run folder is refused) and which backend uses it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "RunSettings",
    "add_arguments",
    "from_namespace",
    "DEFINING",
    "SCHEDULE_OPTIONS",
    "schedule_hint",
    "CPU_DEFAULTS",
]

#: Run options that set the proxy schedule, and the schedule field each sets.
SCHEDULE_OPTIONS = {
    "epochs": "epochs",
    "subset": "subset",
    "batch_size": "batch_size",
    "proxy_img_size": "img_size",
}


def schedule_hint(there: Any, now: Any) -> str:
    """How to resume a run whose proxy schedule differs only in fields an option sets (as when
    a later version changed a default): e.g. ``pass --proxy-img-size 32 to resume it; ``."""
    if not isinstance(there, dict) or not isinstance(now, dict):
        return ""
    fields = {k for k in set(there) | set(now) if there.get(k) != now.get(k)}
    by_field = {field: opt for opt, field in SCHEDULE_OPTIONS.items()}
    if not fields or not fields <= set(by_field):
        return ""
    opts = " ".join(f"--{by_field[f].replace('_', '-')} {there[f]}" for f in sorted(fields))
    return f"pass {opts} to resume it; "


#: Per-device defaults of the search itself (the proxy schedule has its own).
#: On a CPU the search gets 9 minutes, then the finalists' extra seeds take about as long again,
#: so ``make run`` stays within 20 minutes on 2 cores, installation included.
CPU_DEFAULTS: dict[str, Any] = {"trials": 30, "timeout": 9 * 60.0}
GPU_DEFAULTS: dict[str, Any] = {"trials": 100, "timeout": None}


def _opt(
    default: Any,
    help: str,
    *,
    defines: bool = False,
    kind: str = "value",
    type: Any = None,
    choices: tuple[str, ...] | None = None,
    group: str = "run",
    backend: str | None = None,
    flag: str | None = None,
) -> Any:
    meta = dict(help=help, defines=defines, kind=kind, type=type, choices=choices, group=group)
    meta.update(backend=backend, flag=flag)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class RunSettings:
    """Every option of ``archsearch run`` (``None``: the device default)."""

    budget: str = _opt(
        None,
        "e.g. 3.5M-params, 0.9G-macs (flops = MACs), 5ms-latency, or several joined by commas",
        defines=True,
        kind="required",
    )
    space: str = _opt(
        "default",
        "built-in space name (default, hierarchical, columnar, tiny) or YAML file",
        defines=True,
    )
    trials: int | None = _opt(None, "trained candidates to evaluate (CPU: 30)", type=int)
    timeout: float | None = _opt(
        None,
        "stop the search after this many seconds (a training still running is cut off and "
        "retried by a resume); finalists still run (CPU: 540)",
        type=float,
    )
    dataset: str = _opt(
        "fashion-mnist",
        "fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic",
        defines=True,
    )
    data_dir: str | None = _opt(None, "where the dataset files are")
    download: bool = _opt(False, "download cifar10/cifar100 if missing", kind="flag")
    epochs: int | None = _opt(None, "proxy epochs", type=int, defines=True)
    subset: int | None = _opt(None, "training images per proxy run", type=int, defines=True)
    batch_size: int | None = _opt(None, "proxy batch size", type=int, defines=True)
    proxy_img_size: int | None = _opt(None, "image side for proxy training", type=int, defines=True)
    img_size: int = _opt(224, "cost target input side", type=int, defines=True)
    in_chans: int = _opt(3, "cost target input channels", type=int, defines=True)
    num_classes: int = _opt(1000, "cost target classes", type=int, defines=True)
    sampler: str = _opt("tpe", "Optuna sampler", choices=("tpe", "nsga2", "random"), defines=True)
    objectives: str = _opt(
        "accuracy,macs", "accuracy followed by costs among params, macs, latency", defines=True
    )
    seed: int = _opt(0, "run seed (sampler, data split, weight init)", type=int, defines=True)
    fidelity: str = _opt(
        "single",
        "single: every design gets the proxy; sh: successive halving, hyperband: Hyperband "
        "brackets (cheap rungs first, the non-dominated designs move up to the proxy)",
        choices=("single", "sh", "hyperband"),
        defines=True,
    )
    rungs: int = _opt(
        3, "rungs of --fidelity sh/hyperband (the proxy is the top)", type=int, defines=True
    )
    eta: int = _opt(
        3, "rung-to-rung reduction of images x epochs (sh/hyperband)", type=int, defines=True
    )
    final_seeds: int = _opt(
        3,
        "seeds each front design and baseline is finally trained with (1: no retraining)",
        type=int,
    )
    device: str = _opt("auto", "auto (cuda, mps, cpu), cpu, cuda, cuda:N")
    name: str | None = _opt(None, "run name: results/NAME")
    out: str | None = _opt(None, "run directory (instead of results/NAME)")
    workers: int = _opt(1, "worker processes sharing the study", type=int, backend="local")
    storage: str | None = _opt(
        None,
        "Optuna RDB URL holding the study, shared by every process given the same URL and run "
        "folder name (the study's name), e.g. postgresql+psycopg2://USER@HOST:5432/DB "
        "(pip install 'archsearch[postgres]'; password from PGPASSWORD or ~/.pgpass) or "
        "sqlite:///PATH (default: RUN_DIR/study.journal)",
        defines=True,
    )
    force: bool = _opt(
        False, "start over in a run directory that holds a different run", kind="flag"
    )
    quiet: bool = _opt(False, "no progress display", kind="flag")
    pruner: bool = _opt(
        False,
        "median pruning of weak trials (single-objective runs)",
        kind="flag",
        defines=True,
        backend="local",
    )
    baselines: bool = _opt(
        True,
        "also train the reference designs that fit the budget, under the same proxy "
        "(default: on; --no-baselines to skip)",
        kind="toggle",
        defines=True,
    )
    compile: bool = _opt(False, "torch.compile candidates (GPU)", kind="flag")
    backend: str = _opt("local", "where trials train", choices=("local", "ray"), group="ray")
    ray_address: str | None = _opt(
        None,
        "auto, or HOST:PORT of a running cluster (default: start Ray locally)",
        group="ray",
        backend="ray",
    )
    storage_path: str | None = _opt(
        None,
        "Ray Tune's storage, through which trials hand their weights back (checkpoints): a "
        "folder every node reaches at the same path (NFS) or a pyarrow URI such as "
        "s3://BUCKET/PATH (default: RUN_DIR/ray, enough on one machine)",
        group="ray",
        backend="ray",
    )
    gpus_per_trial: float | None = _opt(
        None,
        "GPUs per trial; also picks the proxy tier: > 0 the GPU schedule, 0 the CPU one "
        "(default: 1 if the cluster has GPUs, else 0; the tier then follows this machine)",
        type=float,
        group="ray",
        backend="ray",
    )
    cpus_per_trial: float | None = _opt(
        None, "CPUs per trial (default: 1)", type=float, group="ray", backend="ray"
    )
    max_concurrent: int | None = _opt(
        None, "trials running at once", type=int, group="ray", backend="ray"
    )
    scheduler: str = _opt(
        "none",
        "asha: early-stop weak trials on proxy accuracy",
        choices=("none", "asha"),
        group="ray",
        backend="ray",
        defines=True,
    )

    def replace(self, **changes: Any) -> RunSettings:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """Settings from a mapping (``run.yaml``'s ``options``); unknown keys are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def ignored_by_backend(self) -> list[str]:
        """Options given a non-default value that the chosen backend does not use."""
        out = []
        for f in dataclasses.fields(self):
            owner = f.metadata.get("backend")
            if owner and owner != self.backend and getattr(self, f.name) != f.default:
                out.append(f.name)
        return out


#: Options that define a run: changing one of them for an existing run folder is refused.
DEFINING = tuple(f.name for f in dataclasses.fields(RunSettings) if f.metadata.get("defines"))

_GROUP_TITLES = {"ray": "distributed search on Ray Tune (pip install 'archsearch[ray]')"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one command-line option per field of :class:`RunSettings`."""
    groups: dict[str, Any] = {"run": parser}
    for f in dataclasses.fields(RunSettings):
        m = f.metadata
        target = groups.get(m["group"])
        if target is None:
            target = groups[m["group"]] = parser.add_argument_group(_GROUP_TITLES[m["group"]])
        flag = m["flag"] or "--" + f.name.replace("_", "-")
        kw: dict[str, Any] = {"help": m["help"], "dest": f.name}
        if m["kind"] == "flag":
            target.add_argument(flag, action="store_true", **kw)
        elif m["kind"] == "toggle":
            target.add_argument(flag, action=argparse.BooleanOptionalAction, default=True, **kw)
        else:
            if m["kind"] == "required":
                kw["required"] = True
            else:
                kw["default"] = f.default
            if m["type"] is not None:
                kw["type"] = m["type"]
            if m["choices"]:
                kw["choices"] = list(m["choices"])
            target.add_argument(flag, **kw)


def from_namespace(args: argparse.Namespace) -> RunSettings:
    names = [f.name for f in dataclasses.fields(RunSettings)]
    return RunSettings(**{k: getattr(args, k) for k in names if hasattr(args, k)})
