"""Wall-clock latency of a forward pass, robust enough to serve as a search objective, and a
lower bound of it that no other process's load can raise (for refusing impossible budgets)."""

from __future__ import annotations

import dataclasses
import os
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .._logging import get_logger
from ..errors import CountError
from .count import _eval_mode, _first_param

__all__ = ["LatencyReport", "measure_latency", "latency_floor_ms", "FLOOR_MARGIN", "max_threads"]

_log = get_logger("cost.latency")


@dataclass(frozen=True)
class LatencyReport:
    """Timing of repeated forward passes.

    Attributes:
        median_ms: median time per forward pass (per batch, not per image).
        iqr_ms: interquartile range (75th minus 25th percentile).
        p10_ms: 10th percentile.
        p90_ms: 90th percentile.
        batch_size: images per forward pass.
        device: where the model ran (``"cpu"``, ``"cuda:0"``).
        threads: intra-op CPU threads used (``None`` on CUDA).
        img_size: input side.
        repeats: number of timed passes.
    """

    median_ms: float
    iqr_ms: float
    p10_ms: float
    p90_ms: float
    batch_size: int
    device: str
    threads: int | None
    img_size: int
    repeats: int

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return dataclasses.asdict(self)


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CountError(f"{name}: expected an integer >= {lo}, got {value!r}")


def _check_pass(img_size: Any, batch_size: Any, in_chans: Any, repeats: Any, threads: Any) -> None:
    """The arguments every timed forward pass takes."""
    for name, value in (
        ("img_size", img_size), ("batch_size", batch_size), ("in_chans", in_chans),
        ("repeats", repeats),
    ):  # fmt: skip
        _check_int(name, value, 1)
    if threads is not None:
        _check_int("threads", threads, 1)


def _quantile(sorted_ms: list[float], q: float) -> float:
    """Linear-interpolation quantile of an already sorted list."""
    if len(sorted_ms) == 1:
        return sorted_ms[0]
    pos = q * (len(sorted_ms) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_ms) - 1)
    return sorted_ms[lo] + (sorted_ms[hi] - sorted_ms[lo]) * (pos - lo)


def measure_latency(
    model: nn.Module,
    *,
    img_size: int,
    batch_size: int = 1,
    device: str | torch.device = "cpu",
    in_chans: int = 3,
    warmup: int = 5,
    repeats: int = 20,
    threads: int | None = None,
) -> LatencyReport:
    """Time ``model`` on random ``(batch_size, in_chans, img_size, img_size)`` inputs.

    Runs in eval mode under ``torch.inference_mode``: ``warmup`` untimed passes, then ``repeats``
    timed ones, summarised by the median and interquartile range. On CPU the intra-op thread
    count is fixed for the measurement (``threads``, default: the current setting) and restored
    afterwards. On CUDA each pass is timed with CUDA events between synchronisations. The model
    is moved to ``device`` if needed and moved back afterwards; each submodule's training flag is
    restored.

    Args:
        model: the network to time.
        img_size: input side.
        batch_size: images per forward pass.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        in_chans: input channels.
        warmup: untimed passes first (allocator, caches, cuDNN autotuning).
        repeats: timed passes.
        threads: CPU intra-op threads (``torch.set_num_threads``) during the measurement.

    Raises:
        CountError: an argument is invalid, CUDA is requested but unavailable, or the model lives
            on the meta device.
    """
    _check_pass(img_size, batch_size, in_chans, repeats, threads)
    _check_int("warmup", warmup, 0)
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CountError(f"device: expected an available device, got {str(dev)!r} (no CUDA)")
    if dev.type not in ("cpu", "cuda"):
        raise CountError(f"device: expected 'cpu' or 'cuda[:N]', got {str(dev)!r}")
    reference = _first_param(model)
    home = reference.device if reference is not None else dev
    if home.type == "meta":
        raise CountError("model: expected weights on a real device (cpu/cuda), got meta")
    dtype = (
        reference.dtype
        if reference is not None and reference.is_floating_point()
        else torch.float32
    )

    prev_threads = torch.get_num_threads()
    use_threads = (threads or prev_threads) if dev.type == "cpu" else None
    times_ms: list[float] = []
    moved = home != dev
    try:
        if moved:
            model.to(dev)
        if use_threads is not None:
            torch.set_num_threads(use_threads)
        x = torch.randn(batch_size, in_chans, img_size, img_size, dtype=dtype, device=dev)
        with _eval_mode(model), torch.inference_mode():
            for _ in range(warmup):
                model(x)
            if dev.type == "cuda":
                times_ms = _time_cuda(model, x, repeats, dev)
            else:
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    model(x)
                    times_ms.append((time.perf_counter() - t0) * 1000.0)
    finally:
        torch.set_num_threads(prev_threads)
        if moved:
            model.to(home)

    ordered = sorted(times_ms)
    report = LatencyReport(
        median_ms=statistics.median(ordered),
        iqr_ms=_quantile(ordered, 0.75) - _quantile(ordered, 0.25),
        p10_ms=_quantile(ordered, 0.10),
        p90_ms=_quantile(ordered, 0.90),
        batch_size=batch_size,
        device=str(dev),
        threads=use_threads,
        img_size=img_size,
        repeats=repeats,
    )
    _log.debug(
        "latency of %s: %.2f ms median (IQR %.2f ms) on %s",
        type(model).__name__,
        report.median_ms,
        report.iqr_ms,
        report.device,
    )
    return report


def _time_cuda(model: nn.Module, x: torch.Tensor, repeats: int, dev: torch.device) -> list[float]:
    """Per-pass times from CUDA events, with the device idle before each pass."""
    times = []
    with torch.cuda.device(dev):
        for _ in range(repeats):
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(dev)
            start.record()
            model(x)
            end.record()
            end.synchronize()
            times.append(float(start.elapsed_time(end)))
    return times


#: Safety factor of :func:`latency_floor_ms`: the bound is this many times below the best
#: single-thread time split perfectly over every thread. It covers what the split leaves out: a
#: busy sibling hyperthread or shared cache inflating the CPU time measured (up to ~1.8x),
#: kernels chosen per thread count, and members a little faster than the space's cheapest (random
#: members of the built-in spaces were at most 1.25x faster, and all 6x above this bound or more).
FLOOR_MARGIN = 3.0


def max_threads() -> int:
    """The most intra-op threads a run may time a candidate with: every CPU this process may
    use (a run sets that many, split among its workers), or torch's setting if it is higher."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, cpus, torch.get_num_threads())


def _fastest_cpu_pass_ms(model: nn.Module, x: torch.Tensor, repeats: int, seconds: float) -> float:
    """The least CPU time one forward pass takes on one intra-op thread, in eval mode: two
    untimed passes, then up to ``repeats`` timed ones (fewer once ``seconds`` have passed).
    Timed by this thread's CPU clock, which stands still while the thread is descheduled."""
    prev_threads = torch.get_num_threads()
    best = float("inf")
    try:
        torch.set_num_threads(1)
        with _eval_mode(model), torch.inference_mode():
            for _ in range(2):
                model(x)
            deadline = time.monotonic() + seconds
            for _ in range(repeats):
                t0 = time.thread_time_ns()
                model(x)
                best = min(best, (time.thread_time_ns() - t0) / 1e6)
                if time.monotonic() > deadline:
                    break
    finally:
        torch.set_num_threads(prev_threads)
    return best


def latency_floor_ms(
    model: nn.Module,
    *,
    img_size: int,
    batch_size: int = 1,
    in_chans: int = 3,
    threads: int | None = None,
    margin: float = FLOOR_MARGIN,
    repeats: int = 10,
    seconds: float = 2.0,
) -> float:
    """A lower bound of what :func:`measure_latency` reports for ``model`` on this machine's CPU.

    The fastest pass on one intra-op thread is timed by the thread's CPU time, which a busy
    machine cannot lengthen (it deschedules the thread instead). No run can do that work in
    less than that time split over ``threads`` cores (default :func:`max_threads`); the bound is
    that share divided by ``margin`` again (see :data:`FLOOR_MARGIN`). CPU only: a GPU's latency
    has no such bound here.

    Args:
        model: the network (on the CPU).
        img_size: input side.
        batch_size: images per forward pass.
        in_chans: input channels.
        threads: the most threads a run times the model with.
        margin: safety factor, at least 1.
        repeats: timed passes at most.
        seconds: stop timing passes after this long (at least one pass is timed).

    Raises:
        CountError: an argument is invalid or the model is not on the CPU.
    """
    _check_pass(img_size, batch_size, in_chans, repeats, threads)
    if not margin >= 1:
        raise CountError(f"margin: expected a number >= 1, got {margin!r}")
    reference = _first_param(model)
    if reference is not None and reference.device.type != "cpu":
        raise CountError(f"model: expected weights on the CPU, got {reference.device}")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
    x = torch.randn(batch_size, in_chans, img_size, img_size, dtype=dtype or torch.float32)
    best = _fastest_cpu_pass_ms(model, x, repeats, seconds)
    floor = best / ((threads or max_threads()) * margin)
    _log.debug("latency floor of %s: %.3f ms (one thread: %.3f ms)", type(model).__name__,
               floor, best)  # fmt: skip
    return floor
