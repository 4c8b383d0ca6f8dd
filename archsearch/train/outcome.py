"""What one proxy training produced, and the per-architecture seed rule (shared by the
single-grid trainer, :mod:`archsearch.train.candidate`, and LookupViT multi-resolution,
:mod:`archsearch.train.multires`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ..config import ArchConfig

__all__ = ["GridRows", "TrainOutcome", "trial_seed"]


def trial_seed(seed: int, archid: str) -> int:
    """Per-candidate seed: the same architecture under the same run seed trains identically."""
    digest = hashlib.sha1(f"{seed}:{archid}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


@dataclass
class TrainOutcome:
    """What one proxy training produced."""

    accuracy: float
    val_images: int
    epochs: int
    train_seconds: float
    history: list[float] = field(default_factory=list)
    weights: Path | None = None


#: What one training produced, per architecture it stands for: ``(config, outcome)`` pairs (one
#: pair, except for a LookupViT multi-resolution training: one per compressed grid).
GridRows = list[tuple[ArchConfig, TrainOutcome]]
