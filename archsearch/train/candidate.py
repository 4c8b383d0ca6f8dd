"""Train one candidate architecture by the proxy schedule (no costing, no study)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import ArchConfig
from ..models import build_model
from .data import ImageData
from .multires import is_multires, train_multires
from .outcome import GridRows, TrainOutcome, trial_seed
from .proxy import ProxySchedule, train_proxy
from .weights import save_weights

__all__ = ["GridRows", "TrainOutcome", "Trainer", "trial_seed"]  # outcome types re-exported


@dataclass
class Trainer:
    """Trains candidates on one dataset under one schedule and device.

    Raises (from :meth:`train`): :class:`~archsearch.train.proxy.CandidateOOMError` when the
    candidate does not fit in memory, :class:`~archsearch.errors.TrainingError` on a non-finite
    loss; anything else is not the candidate's fault.
    """

    data: ImageData
    schedule: ProxySchedule
    device: torch.device
    seed: int

    def val_images(self, schedule: ProxySchedule | None = None) -> int:
        n = int(self.data.val_x.shape[0])
        cap = (schedule or self.schedule).val_subset
        return min(n, cap) if cap else n

    def train(
        self,
        config: ArchConfig,
        *,
        weights: Path | None = None,
        on_epoch: Callable[[int, float], None] | None = None,
        seed_offset: int = 0,
        schedule: ProxySchedule | None = None,
        deadline: float | None = None,
    ) -> TrainOutcome:
        """Train ``config`` (by ``schedule``, default the trainer's; with the run seed plus
        ``seed_offset``); save the weights to ``weights`` (atomically) when given; stop with
        :class:`~archsearch.errors.TrainingCutOff` once ``time.time()`` passes ``deadline``."""
        data = self.data
        sched = schedule or self.schedule
        seed = trial_seed(self.seed + seed_offset, config.archid)
        torch.manual_seed(seed)  # weight init: a candidate trains identically on a re-run
        model = build_model(
            config,
            num_classes=data.num_classes,
            in_chans=data.in_chans,
            img_size=sched.img_size or data.img_size,
        )
        result = train_proxy(
            model, data, sched, device=self.device, seed=seed, on_epoch=on_epoch,
            deadline=deadline,
        )  # fmt: skip
        if weights is not None:
            weights.parent.mkdir(parents=True, exist_ok=True)
            save_weights(model.cpu(), weights)
        return TrainOutcome(
            accuracy=result.accuracy,
            val_images=self.val_images(sched),
            epochs=result.epochs,
            train_seconds=result.train_seconds,
            history=list(result.history),
            weights=weights,
        )

    def train_grids(self, config: ArchConfig, **kw: Any) -> GridRows:
        """:meth:`train` (same keywords), or for a LookupViT multi-resolution ``config`` one
        training scored at every grid of its set
        (:func:`~archsearch.train.multires.train_multires`)."""
        if is_multires(config):
            return train_multires(self, config, **kw).rows()
        return [(config, self.train(config, **kw))]
