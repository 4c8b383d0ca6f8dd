"""Which search finds a good front for the fewest CPU minutes?

A tabular benchmark. Every member of ``benchmarks/bench_space.yaml`` (32 LVT-style pyramids
within 3.5M params) is trained once at each rung of the default proxy (rung 0: 2 epochs x 5,000
Fashion-MNIST images at 32 px; rungs 1 and 2: 3x and 9x fewer images x epochs), and the accuracy
and the CPU seconds of each training are cached under ``benchmarks/.cache/search/``. Then each
search method is replayed through archsearch's own study driver (the real samplers, rung
promotion and repeat rules; ``archsearch.search.execute``) with training replaced by a lookup in
that table and the clock replaced by the CPU seconds the looked-up training took. So every method
is charged the same measured cost for the same training, and the replay of 15 searches takes
minutes instead of hours.

For each method and seed the hypervolume of the front (accuracy at rung 0 against MACs; fixed
normalisation: the table's best and worst values, reference point 1.1) is recorded against CPU
minutes. The table gives the mean and standard deviation over seeds at fractions of the budget
and the CPU minutes each method needs to reach the final hypervolume of single-fidelity random
search. The curves are saved to ``docs/img/bench_search.png``.

Limits, stated: one seed per training in the table (seed noise is not replayed), a space of 32
designs (a search exhausts it), and CPU seconds measured on a shared machine (``process_time``,
which other processes do not inflate).

    python benchmarks/bench_search.py            # train the table (about 35 CPU min), replay
    python benchmarks/bench_search.py --jobs 2   # train with two processes
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "benchmarks" / "bench_space.yaml"
CACHE = ROOT / "benchmarks" / ".cache" / "search"
PLOT = ROOT / "docs" / "img" / "bench_search.png"
BUDGET = "3.5M-params"
METHODS = {  # name -> (sampler, fidelity)
    "random": ("random", "single"),
    "tpe": ("tpe", "single"),
    "nsga2": ("nsga2", "single"),
    "sh (tpe)": ("tpe", "sh"),
    "hyperband (tpe)": ("tpe", "hyperband"),
}
LEVELS, ETA = 3, 3


def _members() -> list[Any]:
    from archsearch.search.space import load_space

    space = load_space(SPACE)
    dims = space.dimensions()
    out = []
    for combo in itertools.product(*[opts for _, opts in dims]):
        choice = dict(zip([n for n, _ in dims], combo))
        out.append(space.sample(lambda n, _o, c=choice: c[n]))
    return out


def _rungs(data: Any) -> Any:
    import torch

    from archsearch.search.fidelity import Rungs
    from archsearch.train.proxy import ProxySchedule

    top = ProxySchedule.for_device(torch.device("cpu"))
    return Rungs(top, int(data.train_x.shape[0]), levels=LEVELS, eta=ETA, mode="sh")


def _train_one(job: tuple[str, int]) -> None:
    """Train one (design, rung) on one thread and cache accuracy and CPU seconds."""
    import torch

    from archsearch.config import ArchConfig
    from archsearch.train.candidate import Trainer
    from archsearch.train.data import load_dataset

    torch.set_num_threads(1)
    config_json, rung = job
    cfg = ArchConfig.from_json(config_json)
    path = CACHE / f"{cfg.archid}-r{rung}.json"
    if path.is_file():
        return
    data = load_dataset("fashion-mnist", split_seed=0)
    rungs = _rungs(data)
    sched = rungs.schedule(rung)
    trainer = Trainer(data, sched, torch.device("cpu"), 0)
    t0 = time.process_time()
    out = trainer.train(cfg)
    cpu = time.process_time() - t0
    rec = {"archid": cfg.archid, "rung": rung, "accuracy": out.accuracy, "cpu_seconds": cpu,
           "fidelity": rungs.fidelity(rung), "val_images": out.val_images}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec))
    os.replace(tmp, path)
    print(f"  {cfg.archid} rung {rung}: acc {out.accuracy:.4f}, {cpu:.0f} CPU s", flush=True)


def build_table(jobs: int) -> dict[tuple[str, int], dict[str, Any]]:
    CACHE.mkdir(parents=True, exist_ok=True)
    members = _members()
    todo = [(m.to_json(), r) for r in range(LEVELS) for m in members]
    todo = [j for j in todo if not (CACHE / f"{_archid(j[0])}-r{j[1]}.json").is_file()]
    if todo:
        print(f"training {len(todo)} (design, rung) pairs with {jobs} process(es)", flush=True)
        if jobs > 1:
            with mp.get_context("spawn").Pool(jobs) as pool:
                pool.map(_train_one, todo, chunksize=1)
        else:
            for j in todo:
                _train_one(j)
    table = {}
    for p in CACHE.glob("*-r*.json"):
        rec = json.loads(p.read_text())
        table[(rec["archid"], rec["rung"])] = rec
    return table


def _archid(config_json: str) -> str:
    from archsearch.config import ArchConfig

    return ArchConfig.from_json(config_json).archid


def _cost_fn() -> Any:
    from archsearch.cost.candidate import cost_candidate

    return cost_candidate


_COST = _cost_fn()


class _Clock:
    """The replay's clock: CPU seconds of the trainings looked up so far."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:  # the driver's wall clock (heartbeats, --timeout's deadline)
        return self.now


def replay(method: str, seed: int, minutes: float, table: dict, out: Path) -> list[tuple]:
    """One search through the real driver; returns (cpu_seconds, archid, rung, accuracy)."""
    from archsearch.search import driver as drv
    from archsearch.search import execute, prepare
    from archsearch.settings import RunSettings
    from archsearch.train.candidate import Trainer, TrainOutcome

    sampler, fidelity = METHODS[method]
    clock = _Clock()
    log: list[tuple] = []
    rungs_of = {}

    def train(self: Any, config: Any, *, weights=None, on_epoch=None, seed_offset=0,
              schedule=None, deadline=None) -> TrainOutcome:  # fmt: skip
        sched = schedule or self.schedule
        fid = sched.epochs * (sched.subset or 0)
        rung = rungs_of[fid]
        rec = table[(config.archid, rung)]
        clock.now += rec["cpu_seconds"]
        log.append((clock.now, config.archid, rung, rec["accuracy"]))
        return TrainOutcome(rec["accuracy"], rec["val_images"], sched.epochs, 0.0, [], None)

    settings = RunSettings(
        budget=BUDGET, space=str(SPACE), trials=10_000, timeout=minutes * 60, sampler=sampler,
        fidelity=fidelity, rungs=LEVELS, eta=ETA, seed=seed, final_seeds=1, baselines=False,
        quiet=True, out=str(out),
    )  # fmt: skip
    plan = prepare(settings)
    for r in range(LEVELS):
        s = _rungs(plan.data).schedule(r)
        rungs_of[s.epochs * (s.subset or 0)] = r
    counted: dict[str, Any] = {}

    def cost(config: Any, *a: Any, **kw: Any) -> Any:  # counting is not what is compared here
        if config.archid not in counted:
            counted[config.archid] = _COST(config, *a, **kw)
        return dataclasses.replace(counted[config.archid], violations=[], ratios={})

    saved = (Trainer.train, drv.time, drv.cost_candidate)
    Trainer.train, drv.time, drv.cost_candidate = train, clock, cost  # type: ignore[assignment]
    try:
        execute(plan)
    finally:
        Trainer.train, drv.time, drv.cost_candidate = saved  # type: ignore[assignment]
    return log


def hv_curve(log: list[tuple], macs: dict[str, int], bounds: list, grid: np.ndarray) -> np.ndarray:
    from archsearch.pareto import hypervolume

    out = np.zeros(len(grid))
    pts: list[tuple[float, float]] = []
    events = [(t, a, acc) for t, a, rung, acc in log if rung == 0]
    j = 0
    for i, t in enumerate(grid):
        while j < len(events) and events[j][0] <= t:
            pts.append((events[j][2], macs[events[j][1]]))
            j += 1
        if pts:
            out[i] = hypervolume(np.array(pts), ["maximize", "minimize"], bounds=bounds)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", type=int, default=1, help="processes training the table")
    ap.add_argument("--seeds", type=int, default=3, help="replays per method")
    ap.add_argument("--minutes", type=float, default=0.0,
                    help="CPU minutes per search (default: half of rung 0)")  # fmt: skip
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from archsearch.cost.budget import parse_budget
    from archsearch.cost.candidate import CostTarget, cost_candidate

    table = build_table(args.jobs)
    members = _members()
    budget, target = parse_budget(BUDGET), CostTarget(224, 3, 1000)
    macs = {m.archid: cost_candidate(m, budget, target, audit=False).macs for m in members}
    top = {a: table[(a, 0)]["accuracy"] for a in macs}
    full = sum(table[(a, 0)]["cpu_seconds"] for a in macs) / 60
    minutes = args.minutes or full / 2
    acc, mac = np.array(list(top.values())), np.array([macs[a] for a in top])
    bounds = [(acc.max(), acc.min()), (mac.min(), mac.max())]
    grid = np.linspace(0, minutes * 60, 241)
    print(f"table: {len(members)} designs x {LEVELS} rungs; training all at rung 0 costs "
          f"{full:.1f} CPU min; each search gets {minutes:.1f} CPU min")  # fmt: skip
    best = hv_curve([(0.0, a, 0, top[a]) for a in top], macs, bounds, grid[-1:])[-1]
    curves: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in METHODS:
            runs = []
            for seed in range(args.seeds):
                log = replay(method, seed, minutes, table, Path(tmp) / f"{method}-{seed}")
                runs.append(hv_curve(log, macs, bounds, grid))
            curves[method] = np.array(runs)
    target_hv = curves["random"][:, -1].mean()
    print(f"\nhypervolume of the whole table's front: {best:.4f}; the final hypervolume of "
          f"random search (mean of {args.seeds} seeds): {target_hv:.4f}\n")  # fmt: skip
    marks = [0.25, 0.5, 1.0]
    head = "| method | " + " | ".join(f"HV at {int(m * 100)}% of budget" for m in marks)
    print(head + " | CPU min to reach random's final HV |")
    print("|---" * (len(marks) + 2) + "|")
    for method, runs in curves.items():
        cells = []
        for m in marks:
            i = int(round(m * (len(grid) - 1)))
            cells.append(f"{runs[:, i].mean():.4f} ± {runs[:, i].std():.4f}")
        reach = []
        for run in runs:
            hit = np.flatnonzero(run >= target_hv - 1e-9)
            reach.append(grid[hit[0]] / 60 if hit.size else np.nan)
        reached = np.array(reach)
        ok = int(np.isfinite(reached).sum())
        when = f"{np.nanmean(reached):.1f} ({ok}/{len(reached)} seeds reach it)" if ok else "never"
        print(f"| {method} | " + " | ".join(cells) + f" | {when} |")
    _plot(curves, grid, best)
    return 0


def _plot(curves: dict[str, np.ndarray], grid: np.ndarray, best: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=150)
    for method, runs in curves.items():
        m, s = runs.mean(0), runs.std(0)
        ax.plot(grid / 60, m, label=method)
        ax.fill_between(grid / 60, m - s, m + s, alpha=0.15)
    ax.axhline(best, color="grey", ls=":", label="front of the whole table")
    ax.set_xlabel("CPU minutes (measured training cost, replayed)")
    ax.set_ylabel("hypervolume (accuracy vs MACs)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    PLOT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(PLOT)
    print(f"\ncurves: {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    raise SystemExit(main())
