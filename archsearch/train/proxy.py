"""Proxy training: a short, fully on-device schedule that ranks candidate architectures.

The (subset of the) training split is copied to the device once as uint8 and resized there once;
each step gathers a batch by index from a per-epoch ``torch.randperm``, applies random-crop and
flip augmentation to the whole batch with one gather, and normalises on the device. There is no
``DataLoader`` and no per-sample Python work.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._logging import get_logger
from ..errors import ConfigError, DataError, TrainingCutOff, TrainingError
from ..layers.attention import fast_paths_in_eval
from .augment import affine, epoch_batches, normalise, resize_u8
from .data import ImageData
from .device import autocast, native_bf16, select_device, synchronize, to_device
from .optim import adamw, lr_factor, param_groups

__all__ = [
    "CandidateOOMError",
    "ProxySchedule",
    "ProxyResult",
    "train_proxy",
    "evaluate",
]

log = get_logger("train.proxy")
# CPU: the cheapest schedule measured to rank designs like longer training (docs/proxy.md:
# Kendall tau 0.70 for one seed, 0.73 for three, against a two-seed 5x reference at 48 px, where
# the 32 px proxy reached 0.56-0.58: at 32 px the attentions of RASA/ACmix stages reduce keys and
# values to a single token); validation on the whole held-out split (6,000 Fashion-MNIST images).
_CPU_DEFAULTS: dict[str, Any] = {
    "epochs": 2,
    "img_size": 48,
    "subset": 5000,
    "batch_size": 128,
    "val_subset": None,  # the whole validation split: standard error ~0.006 instead of ~0.010
}
_GPU_DEFAULTS: dict[str, Any] = {"epochs": 10, "img_size": 64, "subset": None, "batch_size": 256}


class CandidateOOMError(TrainingError):
    """The candidate does not fit in device (or host) memory under the schedule."""


def _is_int(value: Any, lo: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def _is_num(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ConfigError(f"ProxySchedule.{name}: expected {expected}, got {value!r}")


@dataclass(frozen=True)
class ProxySchedule:
    """Hyper-parameters of a proxy-training run. Build one with :meth:`for_device`.

    Attributes:
        epochs: passes over the training subset.
        img_size: side images are resized to on the device (``None``: native size).
        subset: training images used, the first ones of the (already shuffled) training split,
            so every candidate sees the same images (``None``: all).
        batch_size: training batch size; the last partial batch of an epoch is dropped.
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (not applied to 1-d params or ``no_weight_decay()``).
        warmup_epochs: linear warm-up length in epochs (fractions allowed; applied per step).
        min_lr_ratio: the cosine decay ends at ``lr * min_lr_ratio``.
        label_smoothing: cross-entropy label smoothing.
        augment: random crop with zero padding (and flip, see ``hflip``) on whole batches.
        hflip: random horizontal flips when ``augment`` is on.
        crop_padding: crop padding in pixels (``None``: ``img_size // 8``).
        grad_clip: clip the gradient norm to this value (``None``: no clipping).
        amp: bf16 autocast (``None``: where the device computes bf16 natively: CUDA, or a CPU
            with AVX512-BF16 or AMX, where it trains LVT ~1.4x faster on one thread and ranks
            designs like fp32 with the same seed, tau 0.97, see ``docs/proxy.md``; fp32
            elsewhere, where emulated bf16 would be slower).
        channels_last: channels-last memory format (``None``: on CUDA only).
        compile: wrap the model in ``torch.compile``.
        eval_batch_size: batch size for validation.
        val_subset: validation images used (``None``: all).
    """

    epochs: int = 2
    img_size: int | None = 32
    subset: int | None = 5000
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 0.5
    min_lr_ratio: float = 0.01
    label_smoothing: float = 0.1
    augment: bool = True
    hflip: bool = True
    crop_padding: int | None = None
    grad_clip: float | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    eval_batch_size: int = 512
    val_subset: int | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _check(name, getattr(self, name), _is_int(getattr(self, name), 1), "an integer >= 1")
        for name in ("img_size", "subset", "val_subset"):
            v = getattr(self, name)
            _check(name, v, v is None or _is_int(v, 1), "an integer >= 1 or None")
        v = self.crop_padding
        _check("crop_padding", v, v is None or _is_int(v, 0), "an integer >= 0 or None")
        _check("lr", self.lr, _is_num(self.lr) and self.lr > 0, "a number > 0")
        for name in ("weight_decay", "warmup_epochs"):
            v = getattr(self, name)
            _check(name, v, _is_num(v) and v >= 0, "a number >= 0")
        v = self.min_lr_ratio
        _check("min_lr_ratio", v, _is_num(v) and 0 <= v <= 1, "a number in [0, 1]")
        v = self.label_smoothing
        _check("label_smoothing", v, _is_num(v) and 0 <= v < 1, "a number in [0, 1)")
        v = self.grad_clip
        _check("grad_clip", v, v is None or (_is_num(v) and v > 0), "a number > 0 or None")
        for name in ("augment", "hflip", "compile"):
            _check(name, getattr(self, name), isinstance(getattr(self, name), bool), "a bool")
        for name in ("amp", "channels_last"):
            v = getattr(self, name)
            _check(name, v, v is None or isinstance(v, bool), "a bool or None")

    @classmethod
    def for_device(cls, device: torch.device | str, **overrides: Any) -> ProxySchedule:
        """Defaults sized for ``device`` (modest on CPU, fuller on a GPU), then ``overrides``.

        Raises:
            ConfigError: an override names no field or has a bad value.
        """
        dev = select_device(device) if str(device) == "auto" else torch.device(device)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise ConfigError(
                f"ProxySchedule: expected options among {', '.join(names)}, got {unknown[0]!r}"
            )
        base = _CPU_DEFAULTS if dev.type == "cpu" else _GPU_DEFAULTS
        return cls(**{**base, **overrides})

    def uses_amp(self, device: torch.device) -> bool:
        """Whether bf16 autocast is on for ``device`` (by default where bf16 is native)."""
        return native_bf16(device) if self.amp is None else self.amp

    def uses_channels_last(self, device: torch.device) -> bool:
        """Whether the channels-last memory format is used on ``device``."""
        return device.type == "cuda" if self.channels_last is None else self.channels_last


@dataclass(frozen=True)
class ProxyResult:
    """Outcome of :func:`train_proxy`.

    Attributes:
        accuracy: final validation top-1 in ``[0, 1]``.
        epochs: epochs completed.
        train_seconds: wall time of the whole call (data transfer, training, evaluation).
        history: validation top-1 after each epoch.
        images_per_second: training images per second, over the training steps only.
        losses: mean training loss of each epoch.
    """

    accuracy: float
    epochs: int
    train_seconds: float
    history: list[float]
    images_per_second: float
    losses: list[float] = field(default_factory=list)


def train_proxy(
    model: nn.Module,
    data: ImageData,
    schedule: ProxySchedule,
    *,
    device: torch.device | str,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    on_trained: Callable[[Callable[[], float]], None] | None = None,
    deadline: float | None = None,
) -> ProxyResult:
    """Train ``model`` in place on ``data`` under ``schedule``; report validation top-1.

    Runs are reproducible on CPU: the same initial weights and ``seed`` give the same result.
    The caller's global RNG state is restored afterwards. The model is left on ``device``.

    Args:
        model: a classifier mapping ``B x C x H x W`` images to ``B x num_classes`` logits.
        data: the dataset (see :func:`archsearch.train.data.load_dataset`).
        schedule: the proxy schedule.
        device: a ``torch.device`` or a spec for :func:`~archsearch.train.device.select_device`.
        seed: seeds batch order, augmentation and any randomness inside the model.
        on_epoch: called as ``on_epoch(epoch, accuracy)`` (1-based epoch) after each epoch's
            evaluation; an exception it raises (e.g. Optuna pruning) propagates.
        on_trained: called once after the last epoch as ``on_trained(score)``; ``score()`` is
            the validation top-1 of the model as it is then (the per-epoch evaluation's images
            and settings), so the caller can score variants, e.g. LookupViT's other grids.
        deadline: a ``time.time()`` after which training stops at the next batch.

    Returns:
        The final accuracy, per-epoch history and timings.

    Raises:
        TrainingError: the loss became non-finite, or the model is unusable.
        TrainingCutOff: ``deadline`` passed before training finished.
        CandidateOOMError: the candidate ran out of device or host memory.
    """
    dev = device if isinstance(device, torch.device) else select_device(device)
    oom = ""
    try:
        if dev.type == "cuda":
            rng = torch.random.fork_rng(devices=[_cuda_index(dev)], device_type="cuda")
        else:
            rng = torch.random.fork_rng(devices=[])
        with rng:
            return _train(model, data, schedule, dev, seed, on_epoch, on_trained, deadline)
    except MemoryError:
        oom = "host memory exhausted"
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        text = str(e)
        if not (
            isinstance(e, torch.cuda.OutOfMemoryError)
            or "out of memory" in text.lower()
            or "DefaultCPUAllocator" in text
        ):
            raise
        oom = text.strip().splitlines()[0][:200] if text.strip() else type(e).__name__
    # Outside the except block the failed frames (and their tensors) are already released.
    model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    raise CandidateOOMError(
        f"out of memory: expected the candidate to fit on {dev} at batch_size="
        f"{schedule.batch_size}, img_size={schedule.img_size}, got {oom}"
    )


def _cuda_index(dev: torch.device) -> int:
    return dev.index if dev.index is not None else torch.cuda.current_device()


def _seed_all(dev: torch.device, seed: int) -> None:
    torch.default_generator.manual_seed(seed)
    if dev.type == "cuda":
        with torch.cuda.device(dev):
            torch.cuda.manual_seed(seed)
    elif dev.type == "mps":
        torch.mps.manual_seed(seed)


def _train(
    model: nn.Module,
    data: ImageData,
    s: ProxySchedule,
    dev: torch.device,
    seed: int,
    on_epoch: Callable[[int, float], None] | None,
    on_trained: Callable[[Callable[[], float]], None] | None = None,
    deadline: float | None = None,
) -> ProxyResult:
    start = time.perf_counter()
    _seed_all(dev, seed)
    gen = torch.Generator().manual_seed(seed)
    amp, channels_last = s.uses_amp(dev), s.uses_channels_last(dev)
    size = s.img_size or data.img_size
    n = len(data) if s.subset is None else min(s.subset, len(data))
    n_val = data.val_x.shape[0] if s.val_subset is None else min(s.val_subset, len(data.val_x))
    if n < 1 or n_val < 1:
        raise DataError(f"{data.name}: expected training and validation images, got {n}/{n_val}")
    train_x, train_y = resize_u8(to_device(data.train_x[:n], dev), size), data.train_y[:n]
    train_y = to_device(train_y, dev)
    val_x, val_y = resize_u8(to_device(data.val_x[:n_val], dev), size), data.val_y[:n_val]
    val_y = to_device(val_y, dev)
    scaling = affine(data.mean, data.std, dev)

    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    groups = param_groups(model, weight_decay=s.weight_decay)
    opt = adamw(groups, s.lr, dev)
    net: Callable[[torch.Tensor], torch.Tensor] = torch.compile(model) if s.compile else model

    bs = min(s.batch_size, n)
    steps = n // bs
    total, warmup = steps * s.epochs, round(s.warmup_epochs * steps)
    pad = size // 8 if s.crop_padding is None else s.crop_padding
    sync_every = 1 if dev.type == "cpu" else 32  # loss checks sync the device
    history: list[float] = []
    losses: list[float] = []

    def score() -> float:
        return evaluate(net, val_x, val_y, batch_size=s.eval_batch_size, mean=data.mean,
                        std=data.std, amp=amp, channels_last=channels_last)  # fmt: skip

    train_time, step = 0.0, 0
    for epoch in range(1, s.epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_buf = torch.zeros(steps, device=dev)
        checked = 0
        batches = epoch_batches(train_x, train_y, scaling, bs, pad, s, gen, channels_last)
        for i, (xb, yb) in enumerate(batches):
            if deadline is not None and time.time() > deadline:
                raise TrainingCutOff(
                    f"cut off by --timeout in epoch {epoch} of {s.epochs}, batch {i + 1} of {steps}"
                )
            lr = s.lr * lr_factor(step, total, warmup, s.min_lr_ratio)
            for g in opt.param_groups:
                g["lr"] = lr
            with autocast(dev, amp):
                logits = net(xb)
            if logits.shape != (xb.shape[0], data.num_classes):
                expected = (xb.shape[0], data.num_classes)
                raise TrainingError(
                    f"model output: expected shape {expected}, got {tuple(logits.shape)}"
                )
            loss = F.cross_entropy(logits.float(), yb, label_smoothing=s.label_smoothing)
            loss_buf[i] = loss.detach()
            if (i + 1) % sync_every == 0 or i == steps - 1:
                _check_finite(loss_buf, checked, i + 1, epoch)
                checked = i + 1
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if s.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            step += 1
        synchronize(dev)
        epoch_time = time.perf_counter() - t0
        train_time += epoch_time
        acc = score()
        history.append(acc)
        losses.append(float(loss_buf.mean()))
        log.info(
            "epoch %d/%d: loss %.4f, val top-1 %.4f, %.0f img/s, %.1fs",
            *(epoch, s.epochs, losses[-1], acc, steps * bs / max(epoch_time, 1e-9), epoch_time),
        )
        if on_epoch is not None:
            on_epoch(epoch, acc)
    if on_trained is not None:
        on_trained(score)
    return ProxyResult(
        accuracy=history[-1],
        epochs=s.epochs,
        train_seconds=time.perf_counter() - start,
        history=history,
        images_per_second=total * bs / max(train_time, 1e-9),
        losses=losses,
    )


def _check_finite(loss_buf: torch.Tensor, lo: int, hi: int, epoch: int) -> None:
    bad = ~torch.isfinite(loss_buf[lo:hi])
    if bool(bad.any()):
        first = lo + int(bad.nonzero()[0, 0])
        value = float(loss_buf[first])
        raise TrainingError(f"non-finite loss ({value}) at epoch {epoch} step {first + 1}")


def evaluate(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    batch_size: int = 512,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    img_size: int | None = None,
    amp: bool = False,
    channels_last: bool = False,
) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)``, in eval mode under ``torch.inference_mode``
    (the layers' fast paths on, see :func:`~archsearch.layers.attention.fast_paths_in_eval`).

    Batches run on ``x.device``; the model must already be there. uint8 images are scaled to
    ``[0, 1]`` and normalised with ``mean``/``std`` when given; float images are used as given.
    The model's train/eval mode is restored afterwards.

    Args:
        model: the classifier (a module, or a compiled one).
        x: images ``N x C x H x W``.
        y: labels ``N``.
        batch_size: evaluation batch size.
        mean: per-channel mean on the ``[0, 1]`` scale (uint8 input only).
        std: per-channel standard deviation on the ``[0, 1]`` scale (uint8 input only).
        img_size: resize batches to this side first (``None``: as given).
        amp: bf16 autocast.
        channels_last: feed channels-last batches.
    """
    n = int(x.shape[0])
    if n == 0 or n != int(y.shape[0]):
        raise DataError(f"evaluate: expected as many labels as images (> 0), got {n}/{y.shape[0]}")
    dev = x.device
    chans = x.shape[1]
    if x.dtype == torch.uint8:
        mean = mean if mean is not None else (0.0,) * chans
        std = std if std is not None else (1.0,) * chans
        scale, shift = affine(mean, std, dev)
    module = model if isinstance(model, nn.Module) else None
    was_training = bool(module is not None and module.training)
    if module is not None:
        module.eval()
    correct = torch.zeros((), dtype=torch.int64, device=dev)
    try:
        with torch.inference_mode(), autocast(dev, amp), fast_paths_in_eval():
            for i in range(0, n, batch_size):
                xb = x[i : i + batch_size]
                if img_size is not None and xb.shape[-2:] != (img_size, img_size):
                    xb = F.interpolate(xb.float(), size=(img_size, img_size), mode="bilinear")
                if x.dtype == torch.uint8:
                    xb = normalise(xb, scale, shift, channels_last)
                elif channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                pred = model(xb).argmax(dim=1)
                correct += (pred == y[i : i + batch_size].to(dev)).sum()
    finally:
        if module is not None:
            module.train(was_training)
    return int(correct) / n
