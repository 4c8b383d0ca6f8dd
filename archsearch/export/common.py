"""What export selection and folder writing share: names, the picked trial, the proxy target."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ArchConfig

__all__ = ["ARCHITECTURE", "CONFIG_NAME", "WEIGHTS_NAME", "README_NAME", "Pick", "ProxyInfo"]

#: timm registry name every export is built with.
ARCHITECTURE = "archsearch_net"
#: File names timm's ``local-dir:`` loader looks for.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"


@dataclass
class Pick:
    """One trial chosen for export."""

    trial: int
    archid: str
    config: ArchConfig
    row: dict[str, Any]
    weights: Path | None  # proxy-trained weights, when they still exist


@dataclass
class ProxyInfo:
    """What the weights were trained on (from run.yaml, completed by loading the dataset)."""

    dataset: str
    img_size: int
    in_chans: int
    num_classes: int
    mean: list[float]
    std: list[float]
    label_names: list[str] | None
