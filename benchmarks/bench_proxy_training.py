"""How fast is proxy training, and how close to this machine's arithmetic peak?

Prints, measured in one run on this machine:

* ``train_proxy`` throughput (training images/s) at the default CPU proxy schedule, without
  augmentation (to match the baseline) and with it (the default);
* the same model trained by a plain ``DataLoader`` loop over a ``TensorDataset`` of the same
  preprocessed images (default per-sample collate, same batch size, optimiser, loss and number
  of images), and the ratio of the two (target >= 1.0);
* the MAC rate achieved by ``train_proxy`` as a share of the measured fp32 ``torch.mm`` peak.

The trainers run alternately, ``--rounds`` times each; every training step of both is timed
by the same forward pre-hook and throughputs are medians over steps, so bursts of load from
other processes on a shared machine move the figures little.

The model is ``timm.create_model("lvt", num_classes=10, in_chans=1)`` (registered by
``import archsearch``); if that fails, timm's ``resnet10t`` stands in.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from archsearch.train import (
    ImageData,
    ProxySchedule,
    configure_threads,
    load_dataset,
    param_groups,
    train_proxy,
)

TARGET_RATIO = 1.0


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="fashion-mnist", help="dataset name (default: %(default)s)")
    p.add_argument("--data-dir", default=None, help="dataset directory")
    p.add_argument("--images", type=int, default=768, help="training images per measured run")
    p.add_argument("--epochs", type=int, default=1, help="epochs per measured run")
    p.add_argument("--rounds", type=int, default=3, help="measured runs per trainer")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0: all available)")
    p.add_argument("--model", default="lvt", help="timm model name (default: %(default)s)")
    return p.parse_args()


def _build(name: str, seed: int) -> tuple[str, nn.Module]:
    import timm

    import archsearch  # noqa: F401  (registers archsearch's models with timm)

    torch.manual_seed(seed)
    try:
        return name, timm.create_model(name, num_classes=10, in_chans=1)
    except Exception as exc:  # the registry may be mid-edit; measure something anyway
        print(f"note: timm model {name!r} unavailable ({type(exc).__name__}: {exc});")
        print("      falling back to timm's resnet10t")
        torch.manual_seed(seed)
        return "resnet10t (fallback)", timm.create_model("resnet10t", num_classes=10, in_chans=1)


def _peak_macs_per_second(n: int = 1024, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return n**3 / best


def _forward_macs(model: nn.Module, in_chans: int, size: int) -> float:
    from fvcore.nn import FlopCountAnalysis

    was_training = model.training
    model.eval()
    flops = FlopCountAnalysis(model, torch.zeros(1, in_chans, size, size))
    flops.unsupported_ops_warnings(False)
    flops.uncalled_modules_warnings(False)
    total = float(flops.total())
    model.train(was_training)
    return total


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
    processes, which totals over a run do not.
    """

    def __init__(self, model: nn.Module) -> None:
        self.stamps: list[float] = []
        self.gaps: list[float] = []
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, args: object) -> None:
        if module.training and torch.is_grad_enabled():
            self.stamps.append(time.perf_counter())
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


def main() -> None:
    args = _parse()
    threads = configure_threads(args.threads or None)
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}; {threads} CPU threads; load average {load:.2f} at start")
    if load > 0.5:
        print("note: other processes are using the CPU; figures are noisier than on an idle box")

    data = load_dataset(args.dataset, data_dir=args.data_dir, max_train=args.images)
    base = ProxySchedule.for_device("cpu")
    plain = ProxySchedule.for_device(
        "cpu", epochs=args.epochs, subset=args.images, augment=False, val_subset=512
    )
    augmented = dataclasses.replace(plain, augment=True)
    size = plain.img_size or data.img_size
    label, model = _build(args.model, seed=0)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    n_train = min(args.images, len(data))
    bs = plain.batch_size
    print(
        f"model: {label}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params; "
        f"data: {data.name}, {n_train} images at {size}x{size}, batch {bs}, "
        f"{plain.epochs} epoch(s) per run, {args.rounds} runs per trainer, alternating; "
        f"default CPU proxy: epochs={base.epochs}, img_size={base.img_size}, "
        f"subset={base.subset}, batch_size={base.batch_size}"
    )
    peak = _peak_macs_per_second()
    x, y = _preprocessed(data, n_train, size)
    # Warm-up (allocator, oneDNN primitives) so that neither trainer pays it in its timing.
    _dataloader_run(model, x[:bs], y[:bs], plain)
    clock = StepClock(model)
    proxy_gaps, loader_gaps, aug_gaps, run_ips, e2e_ips = [], [], [], [], []
    for r in range(args.rounds):
        model.load_state_dict(init)
        res = train_proxy(model, data, plain, device="cpu", seed=r)
        clock.close_run()
        proxy_gaps += clock.take()
        run_ips.append(res.images_per_second)
        e2e_ips.append(plain.epochs * (n_train // bs) * bs / res.train_seconds)
        model.load_state_dict(init)
        torch.manual_seed(r)
        _dataloader_run(model, x, y, plain)
        clock.close_run()
        loader_gaps += clock.take()
        model.load_state_dict(init)
        train_proxy(model, data, augmented, device="cpu", seed=r)
        clock.close_run()
        aug_gaps += clock.take()
    peak = max(peak, _peak_macs_per_second())
    fwd = _forward_macs(model, data.in_chans, size)
    train_macs = 3.0 * fwd

    def ips(gaps: list[float]) -> float:
        return bs / statistics.median(gaps)

    proxy, loader, ratio = ips(proxy_gaps), ips(loader_gaps), ips(proxy_gaps) / ips(loader_gaps)
    spread = f"{bs / max(proxy_gaps):.0f}-{bs / min(proxy_gaps):.0f}"
    print(
        f"train_proxy, no augmentation  : {proxy:7.1f} img/s  (median of {len(proxy_gaps)}"
        f" steps; range {spread}; per-run totals {', '.join(f'{v:.0f}' for v in run_ips)})"
    )
    spread = f"{bs / max(loader_gaps):.0f}-{bs / min(loader_gaps):.0f}"
    print(
        f"DataLoader(TensorDataset) loop: {loader:7.1f} img/s  (median of {len(loader_gaps)}"
        f" steps; range {spread})"
    )
    verdict = "ok" if ratio >= TARGET_RATIO else "BELOW TARGET"
    print(f"ratio train_proxy / DataLoader: {ratio:.3f}  (target >= {TARGET_RATIO}): {verdict}")
    print(
        f"  where the gap comes from: AdamW step {_adamw_step_ms(model, True):.1f} ms fused"
        f" (train_proxy) vs {_adamw_step_ms(model, None):.1f} ms default (loop); batch"
        " assembly: one on-device gather vs per-sample collate"
    )
    print(
        f"train_proxy, with augmentation: {ips(aug_gaps):7.1f} img/s"
        f"  (median of {len(aug_gaps)} steps)"
    )
    print(
        f"train_proxy end to end, best run (incl. device copy, resize, {plain.val_subset}-image"
        f" eval): {max(e2e_ips):.1f} img/s"
    )
    print(
        f"matmul peak: {peak / 1e9:.1f} GMAC/s (fp32 torch.mm 1024x1024, best of 2 x 10, "
        f"{threads} threads); model: {fwd / 1e6:.2f} MMAC forward per image at {size}x{size}"
        " (fvcore, which counts one flop per multiply-accumulate)"
    )
    print(
        f"achieved by train_proxy: {proxy * train_macs / 1e9:.2f} GMAC/s = "
        f"{100 * proxy * train_macs / peak:.1f}% of peak (assumes a training step = 3x forward"
        " MACs: forward, input-gradient and weight-gradient passes)"
    )
    print(f"load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
