"""How fast is proxy training, and how close to this machine's arithmetic peak?

Prints, measured in one run on this machine:

* the fp32 GEMM peak: ``torch.mm`` of two 2048 x 2048 fp32 matrices, same thread count, best
  of several timings spread over the run;
* the model's training FLOPs per image: forward MACs at the proxy input size counted by
  ``archsearch.cost.count`` (fvcore with archsearch's handles), x2 for FLOPs, x3 for forward
  plus backward (input-gradient and weight-gradient passes);
* ``train_proxy`` throughput (training images/s) at the default CPU proxy schedule (with its
  augmentation) before (the layers' fast paths off, fp32: the trainer as it was) and after
  (fast paths on; fp32, and also with bf16 autocast where the CPU computes bf16 natively or
  with ``--amp``), each as a fraction of the GEMM peak (target >= 50% for the default
  configuration);
* the same fractions by CPU time (steps and GEMM timed by ``time.process_time``): with one
  thread (``--threads 1``) they do not move when other processes preempt this one, which on a
  shared box makes them the steadier figures;
* ``train_proxy`` without augmentation against a plain ``DataLoader`` loop over a
  ``TensorDataset`` of the same preprocessed images (default per-sample collate, same batch
  size, optimiser, loss and number of images), and the ratio of the two (target >= 1.0).

The trainers run alternately, ``--rounds`` times each; every training step of each is timed
by the same forward pre-hook and throughputs are medians over steps, so bursts of load from
other processes on a shared machine move the figures little.

The model is a reference design (default ``lvt``) built by ``archsearch.models.build_model``
for the dataset's channels and classes.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from archsearch.cost import count
from archsearch.layers.attention import set_fast_paths
from archsearch.models import build_model, reference_config
from archsearch.train import (
    ImageData,
    ProxySchedule,
    configure_threads,
    load_dataset,
    param_groups,
    train_proxy,
)
from archsearch.train.device import native_bf16

TARGET_RATIO = 1.0
TARGET_PEAK_FRACTION = 0.5
BEFORE = "before: fast paths off, fp32"
AFTER = "after: fast paths on, fp32"
AFTER_BF16 = "after: fast paths on, bf16 autocast"
GEMM_SIZE = 2048


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="dataset directory")
    p.add_argument("--images", type=int, default=768, help="training images per measured run")
    p.add_argument("--epochs", type=int, default=1, help="epochs per measured run")
    p.add_argument("--rounds", type=int, default=3, help="measured runs per trainer")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all available)")
    p.add_argument("--model", default="lvt", help="reference design (default: %(default)s)")
    p.add_argument(
        "--amp", action="store_true", help="also measure bf16 autocast on a CPU without native bf16"
    )
    return p.parse_args()


def _build(name: str, data: ImageData, size: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    config = reference_config(name)
    return build_model(config, num_classes=data.num_classes, in_chans=data.in_chans, img_size=size)


def _peak_macs_per_second(n: int = GEMM_SIZE, repeats: int = 5) -> tuple[float, float]:
    """Best ``torch.mm`` rate of two ``n x n`` fp32 matrices, in MACs per second of wall time
    and per second of process CPU time."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(2):
        torch.mm(a, b)
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        wall, cpu = min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0)
    return n**3 / wall, n**3 / max(cpu, 1e-9)


def _forward_macs(model: nn.Module, data: ImageData, size: int) -> int:
    """MACs of one forward pass on one image (fvcore through archsearch's handles)."""
    return count(model, img_size=size, in_chans=data.in_chans, num_classes=data.num_classes).macs


def _preprocessed(data: ImageData, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The baseline's tensors: the same images, resized and normalised once, as float32."""
    x = data.train_x[:n].float()
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=size < x.shape[-1])
    mean = torch.tensor(data.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.std).view(1, -1, 1, 1)
    return ((x / 255.0 - mean) / std).contiguous(), data.train_y[:n].clone()


class StepClock:
    """Times training steps of any trainer: a forward pre-hook stamps each training forward.

    The gap between consecutive stamps is one whole step (batch preparation or collate,
    forward, backward, optimiser). Medians of these gaps shrug off bursts of load from other
    processes, which totals over a run do not. ``clock`` is wall time by default;
    ``time.process_time`` gives the CPU time of the step instead (with one thread, immune to
    the process being preempted by others).
    """

    def __init__(self, model: nn.Module, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.stamps: list[float] = []
        self.gaps: list[float] = []
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: object) -> None:
        if module.training and torch.is_grad_enabled():
            self.stamps.append(self.clock())
        else:  # evaluation between epochs is not a training step
            self.close_run()

    def close_run(self) -> None:
        """End a run: keep its gaps, forget its stamps (gaps never span two runs)."""
        self.gaps += [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        self.stamps.clear()

    def take(self) -> list[float]:
        gaps, self.gaps = self.gaps, []
        return gaps


def _adamw_step_ms(model: nn.Module, fused: bool | None, repeats: int = 20) -> float:
    """Median time of one AdamW step over ``model``'s parameters (random gradients)."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    for p in params:
        p.grad = torch.randn_like(p)
    opt = torch.optim.AdamW(params, fused=fused)
    opt.step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def _dataloader_run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: ProxySchedule) -> None:
    """Plain loop: DataLoader(TensorDataset) with per-sample default collate and torch's
    default AdamW implementation (same hyper-parameters and param groups as train_proxy)."""
    loader = DataLoader(TensorDataset(x, y), batch_size=s.batch_size, shuffle=True, drop_last=True)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=s.weight_decay), lr=s.lr)
    model.train()
    for _ in range(s.epochs):
        for xb, yb in loader:
            loss = F.cross_entropy(model(xb), yb, label_smoothing=s.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


def _ips(gaps: list[float], bs: int) -> float:
    return bs / statistics.median(gaps)


def _spread(gaps: list[float], bs: int) -> str:
    return f"median of {len(gaps)} steps; range {bs / max(gaps):.0f}-{bs / min(gaps):.0f}"


def main() -> None:
    args = _parse()
    threads = configure_threads(args.threads or None)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}; {threads} CPU threads; load average {load:.2f} at start")
    if load > 0.5:
        print("note: other processes are using the CPU; figures are noisier than on an idle box")

    data = load_dataset(args.dataset, data_dir=args.data_dir, max_train=args.images)
    base = ProxySchedule.for_device("cpu")
    # The default CPU schedule, on fewer images and a smaller validation set per measured run.
    short = ProxySchedule.for_device("cpu", epochs=args.epochs, subset=args.images, val_subset=512)
    plain = dataclasses.replace(short, augment=False, amp=False)  # like the DataLoader loop
    size = short.img_size or data.img_size
    model = _build(args.model, data, size, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    n_train = min(args.images, len(data))
    bs = short.batch_size
    print(
        f"model: {args.model}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
        f"data: {data.name}, {n_train} images at {size}x{size}, batch {bs}, "
        f"{short.epochs} epoch(s) per run, {args.rounds} runs per trainer, alternating; "
        f"default CPU proxy: epochs={base.epochs}, img_size={base.img_size}, "
        f"subset={base.subset}, batch_size={base.batch_size}, augment={base.augment}, "
        f"bf16 autocast={base.uses_amp(torch.device('cpu'))}"
    )
    peak, peak_cpu = _peak_macs_per_second()
    x, y = _preprocessed(data, n_train, size)
    # Warm-up (allocator, oneDNN primitives) so that no trainer pays it in its timing.
    for fast in (False, True):
        set_fast_paths(fast)
        _dataloader_run(model, x[:bs], y[:bs], plain)
    clock, cpu_clock = StepClock(model), StepClock(model, time.process_time)
    fp32, bf16 = dataclasses.replace(short, amp=False), dataclasses.replace(short, amp=True)
    default_bf16 = short.uses_amp(torch.device("cpu"))
    variants = {BEFORE: (False, fp32), AFTER: (True, fp32)}
    if args.amp or default_bf16 or native_bf16(torch.device("cpu")):
        variants[AFTER_BF16] = (True, bf16)
    names = (*variants, "plain", "loader")
    gaps: dict[str, list[float]] = {k: [] for k in names}
    cpu_gaps: dict[str, list[float]] = {k: [] for k in names}

    def collect(key: str) -> None:
        for c, into in ((clock, gaps), (cpu_clock, cpu_gaps)):
            c.close_run()
            into[key] += c.take()

    run_ips, e2e_ips = [], []
    try:
        for r in range(args.rounds):
            for key, (fast, schedule) in variants.items():
                set_fast_paths(fast)
                model.load_state_dict(init)
                train_proxy(model, data, schedule, device="cpu", seed=r)
                collect(key)
            set_fast_paths(True)
            model.load_state_dict(init)
            res = train_proxy(model, data, plain, device="cpu", seed=r)
            collect("plain")
            run_ips.append(res.images_per_second)
            e2e_ips.append(plain.epochs * (n_train // bs) * bs / res.train_seconds)
            model.load_state_dict(init)
            torch.manual_seed(r)
            _dataloader_run(model, x, y, plain)
            collect("loader")
            wall, cpu = _peak_macs_per_second()
            peak, peak_cpu = max(peak, wall), max(peak_cpu, cpu)
    finally:
        set_fast_paths(True)
    fwd = _forward_macs(model, data, size)
    train_flops = 2 * 3 * fwd  # FLOPs per training image: 2 per MAC, forward + backward = 3x

    print(
        f"fp32 GEMM peak: {2 * peak / 1e9:.1f} GFLOP/s (torch.mm {GEMM_SIZE}x{GEMM_SIZE}, best"
        f" over the run, {threads} threads; {2 * peak_cpu / 1e9:.1f} GFLOP per CPU-second)"
    )
    print(
        f"training FLOPs per image: {train_flops / 1e6:.1f} MFLOP = {fwd / 1e6:.2f} MMAC forward"
        f" at {size}x{size} (archsearch.cost.count) x 2 FLOP/MAC x 3 (forward + backward)"
    )
    print(
        "train_proxy, default CPU schedule        img/s  GFLOP/s  of peak |"
        " img/CPU-s  of peak (CPU time)"
    )
    fractions, cpu_fractions = {}, {}
    for key in variants:
        ips, cpu_ips = _ips(gaps[key], bs), _ips(cpu_gaps[key], bs)
        fractions[key] = ips * train_flops / (2 * peak)
        cpu_fractions[key] = cpu_ips * train_flops / (2 * peak_cpu)
        print(
            f"  {key:36s} {ips:7.1f}  {ips * train_flops / 1e9:7.2f}  {100 * fractions[key]:6.1f}%"
            f" | {cpu_ips:9.1f}  {100 * cpu_fractions[key]:6.1f}%   ({_spread(gaps[key], bs)})"
        )
    default = AFTER_BF16 if default_bf16 else AFTER
    before, after = fractions[BEFORE], fractions[default]
    verdict = "ok" if after >= TARGET_PEAK_FRACTION else "BELOW TARGET"
    print(
        f"fraction of the fp32 GEMM peak: before {100 * before:.1f}%, after {100 * after:.1f}%"
        f" ({default}, the default here; x{after / before:.2f}; target >="
        f" {100 * TARGET_PEAK_FRACTION:.0f}%): {verdict}; by CPU time: before"
        f" {100 * cpu_fractions[BEFORE]:.1f}%, after {100 * cpu_fractions[default]:.1f}%"
    )
    if AFTER_BF16 in variants and not default_bf16:
        print(
            f"  opt-in bf16 autocast (ProxySchedule amp=True): {100 * fractions[AFTER_BF16]:.1f}%"
            f" of the fp32 peak ({100 * cpu_fractions[AFTER_BF16]:.1f}% by CPU time)"
        )

    proxy, loader = _ips(gaps["plain"], bs), _ips(gaps["loader"], bs)
    ratio = proxy / loader
    print(
        f"train_proxy, no augmentation  : {proxy:7.1f} img/s  ({_spread(gaps['plain'], bs)};"
        f" per-run totals {', '.join(f'{v:.0f}' for v in run_ips)})"
    )
    print(f"DataLoader(TensorDataset) loop: {loader:7.1f} img/s  ({_spread(gaps['loader'], bs)})")
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio train_proxy / DataLoader: {ratio:.3f}  (target >= {TARGET_RATIO}): {verdict}")
    print(
        f"  where the gap comes from: AdamW step {_adamw_step_ms(model, True):.1f} ms fused"
        f" (train_proxy) vs {_adamw_step_ms(model, None):.1f} ms default (loop); batch"
        " assembly: one on-device gather vs per-sample collate"
    )
    print(
        f"train_proxy end to end, best run (incl. device copy, resize, {plain.val_subset}-image"
        f" eval): {max(e2e_ips):.1f} img/s"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
