"""LookupViT multi-resolution: one training scored at 3x3, 5x5 and 7x7 vs three trainings.

A lookup design of the committed default search (``results/default-3.5M-params/trials.csv``;
``--trial N``, default 13: ``conv_stem+lookup5x10@128h2m2``, a conv-stem design as the best lookup
designs of that run; trial 18, the cheapest, ``patch+lookup5x4@128h2m3``, stays undertrained at
112 px under the 2-epoch proxy) is trained on Fashion-MNIST by the default CPU proxy schedule

* once with ``lookup_multires = (3, 5, 7)`` (compressed grid drawn per batch), then scored at
  each grid on the whole validation split (:func:`archsearch.train.multires.train_multires`);
* three times at a single grid (``lookup_grid`` 3, 5, 7; ``Trainer.train``, as the search does),

side by side in one process, for ``--seeds`` seeds (run seed 0, 1, ...). Printed: per grid the
target's counted params/MACs (fvcore, 224x224x3, 1000 classes) and their closed form, the
accuracy +- binomial standard error of both, their difference against the seed noise, and the
CPU seconds (``time.process_time``; torch on one thread) of the one training against the three.

The default proxy's 32 px images give a patch-16 design a 2x2 token grid, on which every
compressed grid of the set is clipped to 2x2 (the three grids are the same network), so the
benchmark raises the proxy image size to the smallest that holds a 7x7 compressed grid (112 px
for patch 16: 7x7 lookup tokens) and keeps the rest of the default schedule; ``--img-size``
overrides it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from archsearch.blocks import notation
from archsearch.config import ArchConfig
from archsearch.cost import count
from archsearch.cost.analytic import estimate
from archsearch.models._common import token_grid
from archsearch.stats import accuracy_se
from archsearch.train.candidate import Trainer
from archsearch.train.data import load_dataset
from archsearch.train.multires import effective_grids, grid_configs, train_multires
from archsearch.train.proxy import ProxySchedule

ROOT = Path(__file__).resolve().parents[1]
TRIALS = ROOT / "results" / "default-3.5M-params" / "trials.csv"
GRIDS = (3, 5, 7)
#: Seed-to-seed std of a design's proxy accuracy (default schedule, 6,000 validation images,
#: mean over 12 designs x 2 seeds), from docs/proxy.md: the noise floor when --seeds is 1.
DOCUMENTED_SEED_STD = 0.0139


def design(trial: int) -> ArchConfig:
    df = pd.read_csv(TRIALS)
    row = df[df["trial"] == trial]
    if row.empty:
        raise SystemExit(f"--trial: no trial {trial} in {TRIALS}")
    cfg = ArchConfig.from_json(str(row["config"].iloc[0]))
    if cfg.stages[0].mixer != "lookup":
        raise SystemExit(f"--trial: trial {trial} is not a lookup design ({notation(cfg)})")
    return cfg


def with_grids(cfg: ArchConfig) -> tuple[ArchConfig, list[ArchConfig]]:
    """The multi-resolution config over :data:`GRIDS` and the three single-grid configs."""
    s = cfg.stages[0]
    grid = s.lookup_grid if s.lookup_grid in GRIDS else GRIDS[1]
    multi = cfg.replace(stages=(replace(s, lookup_grid=grid, lookup_multires=GRIDS),))
    single = [
        c.replace(stages=(replace(c.stages[0], lookup_multires=()),)) for c in grid_configs(multi)
    ]
    return multi, single


def costs(single: list[ArchConfig]) -> None:
    print("costs at the target (224x224x3, 1000 classes; params without the two classifiers):")
    print("| grid | M | counted params | counted MACs | closed-form MACs |")
    print("|---|---|---|---|---|")
    for c in single:
        g = c.stages[0].lookup_grid
        rep = count(c, img_size=224, in_chans=3, num_classes=1000)
        est = estimate(c, img_size=224, in_chans=3, num_classes=1000)
        print(f"| {g}x{g} | {g * g} | {rep.backbone_params:,} | {rep.macs:,} | {est.macs:,} |")


def _pm(acc: list[float], n: int) -> str:
    """Mean over seeds +- its standard error (binomial, per seed, combined)."""
    mean = statistics.fmean(acc)
    se = statistics.fmean(float(accuracy_se(a, n)) for a in acc) / len(acc) ** 0.5
    return f"{mean:.4f} +- {se:.4f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trial", type=int, default=13, help="lookup trial of the committed run")
    p.add_argument("--seeds", type=int, default=1, help="run seeds (each: 1 + 3 trainings)")
    p.add_argument("--img-size", type=int, default=None, help="proxy image side (default: 7x7)")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = design(args.trial)
    multi, single = with_grids(base)
    patch = base.tokenizer.patch_size
    img = args.img_size or next(
        s for s in range(16, 1025, 16) if token_grid(base.tokenizer, s) >= max(GRIDS)
    )
    sched = ProxySchedule.for_device("cpu", img_size=img)
    print(f"torch {torch.__version__}, 1 thread; load average {os.getloadavg()[0]:.2f}")
    print(
        f"design: trial {args.trial} {notation(base)} (patch {patch});"
        f" multi-resolution: {notation(multi)}"
    )
    side = token_grid(base.tokenizer, img)
    print(f"schedule: default CPU proxy with img_size={img} ({side}x{side} lookup tokens): {sched}")
    run = effective_grids(multi, img)
    if len(set(run.values())) < len(GRIDS):
        print(f"note: at {img} px the grids {list(GRIDS)} run as {list(run.values())}")
    costs(single)
    data = load_dataset("fashion-mnist")
    n_val = int(data.val_x.shape[0])
    acc_m: dict[int, list[float]] = {g: [] for g in GRIDS}
    acc_s: dict[int, list[float]] = {g: [] for g in GRIDS}
    cpu_m: list[float] = []
    cpu_s: dict[int, list[float]] = {g: [] for g in GRIDS}
    draws: dict[int, int] = dict.fromkeys(GRIDS, 0)
    for seed in range(args.seeds):
        trainer = Trainer(data, sched, torch.device("cpu"), seed)
        c0 = time.process_time()
        out = train_multires(trainer, multi)
        cpu_m.append(time.process_time() - c0)
        for gs in out.grids:
            acc_m[gs.grid].append(gs.accuracy)
        for g, k in out.draws.items():
            draws[g] += k
        line = ", ".join(f"{g.grid}x{g.grid} {g.accuracy:.4f}" for g in out.grids)
        print(f"seed {seed}: multi-resolution {line}; {cpu_m[-1]:.0f} CPU s", flush=True)
        for c in single:
            g = c.stages[0].lookup_grid
            c0 = time.process_time()
            res = trainer.train(c)
            cpu_s[g].append(time.process_time() - c0)
            acc_s[g].append(res.accuracy)
            print(
                f"seed {seed}: single grid {g}x{g} {res.accuracy:.4f}; {cpu_s[g][-1]:.0f} CPU s",
                flush=True,
            )
    print(f"\nbatches per grid in the multi-resolution training(s): {draws}")
    print(f"accuracy on {n_val} validation images, mean of {args.seeds} seed(s) +- SE:")
    print(
        "| grid | multi-resolution (1 training) | single grid (1 training each) "
        "| difference | seed std (single) |"
    )
    print("|---|---|---|---|---|")
    for g in GRIDS:
        diff = statistics.fmean(acc_m[g]) - statistics.fmean(acc_s[g])
        std = f"{statistics.stdev(acc_s[g]):.4f}" if args.seeds > 1 else "-"
        print(
            f"| {g}x{g} | {_pm(acc_m[g], n_val)} | {_pm(acc_s[g], n_val)} | {diff:+.4f} | {std} |"
        )
    seed_std = (
        statistics.fmean(statistics.stdev(acc_s[g]) for g in GRIDS)
        if args.seeds > 1
        else DOCUMENTED_SEED_STD
    )
    noise = seed_std * (2 / args.seeds) ** 0.5  # std of a difference of two seed means
    worst = max(abs(statistics.fmean(acc_m[g]) - statistics.fmean(acc_s[g])) for g in GRIDS)
    src = "measured" if args.seeds > 1 else "docs/proxy.md"
    print(
        f"seed noise of a difference: {noise:.4f} (seed std {seed_std:.4f}, {src}); "
        f"largest |difference| {worst:.4f} = {worst / noise:.2f} x noise"
    )
    m, s = sum(cpu_m), sum(sum(v) for v in cpu_s.values())
    print(
        f"CPU time: multi-resolution {m:.0f} s, three single-grid {s:.0f} s "
        f"({', '.join(f'{g}x{g} {sum(cpu_s[g]):.0f} s' for g in GRIDS)}); ratio {m / s:.2f}"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
