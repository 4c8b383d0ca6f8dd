"""LookupViT multi-resolution: one proxy training, scored and costed at every compressed grid.

A lookup stage with ``lookup_multires`` (say ``(3, 5, 7)``, ``lookup_grid=5``) is trained once
with the compressed grid drawn per batch from the set (see
:class:`archsearch.layers.lookup.MultiResolution`), then scored at each grid of the set. It stands
for one single-grid architecture per grid: the same config with ``lookup_grid`` set to that grid,
each with its own ``archid``, its own counted params/MACs and its own accuracy; all of them share
the one training (and its weights file).

API for the search driver::

    from archsearch.train.multires import (
        is_multires, grid_configs, training_archid, grid_costs, train_multires,
    )

    is_multires(config) -> bool
        whether ``config`` has a lookup stage trained at several grids.
    grid_configs(config) -> list[ArchConfig]
        the per-grid configs it stands for, one per grid of its set (distinct archids; each keeps
        the set, so none equals a single-grid-trained design's archid; the config itself is one
        of them).
    training_archid(config) -> str
        the id of the shared training: the same for every config of ``grid_configs(config)``
        (use it to seed, and to treat a later draw of a sibling grid as already trained).
    grid_costs(config, budget, target, *, audit=True, latency=False) -> dict[int, CostRecord]
        ``cost_candidate`` of each grid config (closed form, then fvcore within budget): the MACs
        differ per grid (the compressed tokens), the params do not (they have no weights). A grid
        over budget is an infeasible row; train when any grid is feasible.
    train_multires(trainer, config, *, weights=None, on_epoch=None, seed_offset=0,
                   schedule=None) -> MultiresOutcome
        one training by the trainer's data/schedule/device/seed (the proxy loop of
        :func:`~archsearch.train.proxy.train_proxy`, per-epoch evaluation and ``on_epoch`` at
        ``lookup_grid``), then a score at every grid on the same validation images.
    MultiresOutcome.rows() -> list[tuple[ArchConfig, TrainOutcome]]
        one (grid config, outcome) per grid, in the shape ``Trainer.train`` returns:
        ``accuracy`` at that grid, ``val_images``, the shared ``epochs``/``train_seconds``/
        ``weights``. ``MultiresOutcome.grids`` has the same with the standard error
        (``accuracy_se``) and the grid actually run at the proxy's image size.

Model level (builders, export): :func:`archsearch.layers.lookup.attach_multires` gives a built
model the per-batch draws; outside training forwards the model runs at its own grid
(``set_compressed_grid``), and its weights do not depend on the grid, so the one weights file
loads into the model of any grid config and runs there.

At the proxy's small images the token grid may be smaller than a grid of the set (a patch-16
tokenizer at 32 px gives 2x2 tokens); the model then clips the compressed grid to the token grid,
so several grids run the same network. :func:`effective_grids` says which; ``train_multires``
logs a warning and scores each distinct network once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch

from .._logging import get_logger
from ..config import ArchConfig
from ..cost.budget import Budget
from ..cost.candidate import CostRecord, CostTarget, cost_candidate
from ..errors import ConfigError
from ..layers.lookup import attach_multires
from ..models import build_model
from ..models._common import token_grid
from ..stats import accuracy_se
from .data import ImageData
from .outcome import TrainOutcome, trial_seed
from .proxy import ProxySchedule, train_proxy
from .weights import save_weights

__all__ = [
    "GridScore",
    "MultiresOutcome",
    "effective_grids",
    "grid_configs",
    "grid_costs",
    "is_multires",
    "train_multires",
    "training_archid",
]

log = get_logger("train.multires")


class TrainerLike(Protocol):
    """What :func:`train_multires` uses of :class:`archsearch.train.candidate.Trainer`."""

    data: ImageData
    schedule: ProxySchedule
    device: torch.device
    seed: int

    def val_images(self, schedule: ProxySchedule | None = None) -> int: ...


def is_multires(config: ArchConfig) -> bool:
    """Whether ``config`` is a LookupViT trained at several compressed grids."""
    return bool(config.stages[0].lookup_multires)


def _grids(config: ArchConfig) -> tuple[int, ...]:
    if not is_multires(config):
        raise ConfigError(
            "config: expected a lookup stage with lookup_multires, got "
            f"mixer={config.stages[0].mixer!r}, lookup_multires=[]"
        )
    return config.stages[0].lookup_multires


def grid_configs(config: ArchConfig) -> list[ArchConfig]:
    """The per-grid configs a multi-resolution ``config`` stands for, one per grid of its set."""
    stage = config.stages[0]
    return [
        config.replace(stages=(dataclasses.replace(stage, lookup_grid=g),)) for g in _grids(config)
    ]


def training_archid(config: ArchConfig) -> str:
    """The archid of the first grid config: one id per multi-resolution training."""
    return grid_configs(config)[0].archid


def effective_grids(config: ArchConfig, img_size: int) -> dict[int, int]:
    """Each grid of the set, mapped to the grid side the model runs at on ``img_size`` images
    (clipped to the token grid)."""
    side = token_grid(config.tokenizer, img_size)
    return {g: min(g, side) for g in _grids(config)}


def grid_costs(
    config: ArchConfig,
    budget: Budget,
    target: CostTarget,
    *,
    audit: bool = True,
    latency: bool = False,
) -> dict[int, CostRecord]:
    """:func:`~archsearch.cost.candidate.cost_candidate` of each grid config, by grid side."""
    return {
        c.stages[0].lookup_grid: cost_candidate(c, budget, target, audit=audit, latency=latency)
        for c in grid_configs(config)
    }


@dataclass(frozen=True)
class GridScore:
    """One grid of a multi-resolution training.

    Attributes:
        grid: the compressed grid side (M = grid ** 2 at the target).
        config: the grid config (``lookup_grid = grid``); ``archid`` is its id.
        accuracy: validation top-1 at this grid.
        accuracy_se: its binomial standard error.
        val_images: validation images scored.
        run_grid: the grid side actually run at the proxy's image size (clipped).
    """

    grid: int
    config: ArchConfig
    accuracy: float
    accuracy_se: float
    val_images: int
    run_grid: int

    @property
    def archid(self) -> str:
        return self.config.archid


@dataclass
class MultiresOutcome:
    """One multi-resolution training and its per-grid scores.

    Attributes:
        grids: per-grid scores, by grid side ascending.
        draws: training batches run at each grid.
        eval_grid: the config's ``lookup_grid``: the grid of the per-epoch evaluation.
        epochs: epochs completed.
        train_seconds: wall time of the one training (``train_proxy``'s, per-grid scoring
            included), shared by every grid.
        history: validation top-1 after each epoch, at ``eval_grid``.
        weights: the saved weights (shared by every grid), when asked for.
    """

    grids: list[GridScore]
    draws: dict[int, int]
    eval_grid: int
    epochs: int
    train_seconds: float
    history: list[float] = field(default_factory=list)
    weights: Path | None = None

    def rows(self) -> list[tuple[ArchConfig, TrainOutcome]]:
        """One ``(grid config, TrainOutcome)`` per grid, as ``Trainer.train`` returns them (the
        per-epoch history is the eval grid's; other grids have their final score only)."""
        return [
            (
                g.config,
                TrainOutcome(
                    accuracy=g.accuracy,
                    val_images=g.val_images,
                    epochs=self.epochs,
                    train_seconds=self.train_seconds,
                    history=list(self.history) if g.grid == self.eval_grid else [g.accuracy],
                    weights=self.weights,
                ),
            )
            for g in self.grids
        ]


def train_multires(
    trainer: TrainerLike,
    config: ArchConfig,
    *,
    weights: Path | None = None,
    on_epoch: Callable[[int, float], None] | None = None,
    seed_offset: int = 0,
    schedule: ProxySchedule | None = None,
    deadline: float | None = None,
) -> MultiresOutcome:
    """Train a multi-resolution ``config`` once and score it at every grid of its set.

    Like :meth:`Trainer.train` (same data, device, seeding rule and errors), with the seed taken
    from :func:`training_archid`, so every grid config of the set trains identically.
    """
    grids = _grids(config)
    eval_grid = config.stages[0].lookup_grid
    data, sched = trainer.data, schedule or trainer.schedule
    img_size = sched.img_size or data.img_size
    run_grid = effective_grids(config, img_size)
    if len(set(run_grid.values())) < len(grids):
        side = token_grid(config.tokenizer, img_size)
        log.warning(
            "lookup_multires %s at img_size %d: the token grid is %dx%d, so the grids run as %s",
            *(list(grids), img_size, side, side, [run_grid[g] for g in grids]),
        )
    seed = trial_seed(trainer.seed + seed_offset, training_archid(config))
    torch.manual_seed(seed)  # weight init, as Trainer.train
    model = build_model(
        config, num_classes=data.num_classes, in_chans=data.in_chans, img_size=img_size
    )
    mr = attach_multires(model, grids, eval_grid=eval_grid, seed=seed)
    scores: dict[int, float] = {}
    last: list[float] = []

    def epoch_done(epoch: int, acc: float) -> None:
        last[:] = [acc]
        if on_epoch is not None:
            on_epoch(epoch, acc)

    def score_grids(score: Callable[[], float]) -> None:
        # by grid run (clipped grids are the same network); the eval grid was just scored
        done = {run_grid[eval_grid]: last[0]}
        for g in grids:
            if run_grid[g] not in done:
                with mr.evaluating_at(model, g):
                    done[run_grid[g]] = score()
            scores[g] = done[run_grid[g]]

    result = train_proxy(
        model,
        data,
        sched,
        device=trainer.device,
        seed=seed,
        on_epoch=epoch_done,
        on_trained=score_grids,
        deadline=deadline,
    )
    if weights is not None:
        weights.parent.mkdir(parents=True, exist_ok=True)
        save_weights(model.cpu(), weights)
    n_val = trainer.val_images(sched)
    per_grid = [
        GridScore(g, c, scores[g], float(accuracy_se(scores[g], n_val)), n_val, run_grid[g])
        for g, c in zip(grids, grid_configs(config), strict=True)
    ]
    return MultiresOutcome(
        grids=per_grid,
        draws=dict(mr.draws),
        eval_grid=eval_grid,
        epochs=result.epochs,
        train_seconds=result.train_seconds,
        history=list(result.history),
        weights=weights,
    )
