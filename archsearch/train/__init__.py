"""Data loading, device selection and proxy training of candidate architectures."""

from __future__ import annotations

from .data import DATASETS, FASHION_MNIST_DIR, ImageData, load_dataset, read_idx
from .device import (
    DeviceError,
    autocast,
    available_cpus,
    configure_threads,
    select_device,
    synchronize,
    to_device,
)
from .optim import param_groups
from .proxy import (
    CandidateOOMError,
    ProxyResult,
    ProxySchedule,
    evaluate,
    train_proxy,
)
from .weights import load_weights, save_weights

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "ImageData",
    "load_dataset",
    "read_idx",
    "DeviceError",
    "autocast",
    "available_cpus",
    "configure_threads",
    "select_device",
    "synchronize",
    "to_device",
    "CandidateOOMError",
    "ProxyResult",
    "ProxySchedule",
    "evaluate",
    "load_weights",
    "param_groups",
    "save_weights",
    "train_proxy",
]
