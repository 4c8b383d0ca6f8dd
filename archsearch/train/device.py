"""Device plumbing: selection, CPU threads, host-to-device copies and autocast."""

from __future__ import annotations

import contextlib
import functools
import os
import re

import torch

from .._logging import get_logger
from ..errors import ArchsearchError

__all__ = [
    "DeviceError",
    "select_device",
    "available_cpus",
    "configure_threads",
    "to_device",
    "autocast",
    "native_bf16",
    "synchronize",
]

log = get_logger("train.device")
_SPEC = re.compile(r"^(auto|cpu|mps|cuda(?::(\d+))?)$")


class DeviceError(ArchsearchError, ValueError):
    """A device spec is malformed or names a device this machine does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def select_device(spec: str | torch.device = "auto") -> torch.device:
    """Resolve a device spec to a :class:`torch.device`.

    Args:
        spec: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Returns:
        The device.

    Raises:
        DeviceError: the spec is malformed or the device is not available.
    """
    text = str(spec).strip().lower()
    m = _SPEC.match(text)
    if m is None:
        raise DeviceError(f"device: expected auto, cpu, cuda, cuda:N or mps, got {str(spec)!r}")
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text.startswith("cuda"):
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(f"device: expected a CUDA device for {text!r}, got none available")
        index = int(m.group(2) or 0)
        if index >= count:
            raise DeviceError(f"device: expected a CUDA index below {count}, got {text!r}")
    elif text == "mps" and not _mps_available():
        raise DeviceError("device: expected an available MPS backend for 'mps', got none")
    return torch.device(text)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask when the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op CPU thread count.

    Args:
        num_threads: threads to use; ``None`` or ``0`` means :func:`available_cpus`.

    Returns:
        The thread count now in effect.
    """
    if num_threads is not None and num_threads < 0:
        raise DeviceError(f"threads: expected a non-negative integer, got {num_threads}")
    n = num_threads or available_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
        log.debug("torch CPU threads set to %d", n)
    return n


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a host tensor to ``device``; on CUDA through pinned memory, without blocking."""
    if tensor.device == device:
        return tensor
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager[object]:
    """bf16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively: CUDA, or a CPU with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated on the CPU and autocast slows training down.
    """
    if device.type == "cuda":
        return True
    return device.type == "cpu" and _cpu_native_bf16()


@functools.cache
def _cpu_native_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (for honest timings); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
