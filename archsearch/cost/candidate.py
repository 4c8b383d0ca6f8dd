"""One candidate's costs at the deployment target, checked against the budget before training.

The closed-form count comes first (microseconds); only a candidate within budget is then built on
the meta device and counted by fvcore (and timed, when a latency is needed).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..config import ArchConfig
from ..errors import BudgetError
from .analytic import estimate
from .budget import Budget
from .count import count

__all__ = [
    "CostTarget",
    "CostRecord",
    "cost_candidate",
    "head_params",
    "latency_floor",
    "check_latency_reachable",
]


@dataclass(frozen=True)
class CostTarget:
    """The deployment target costs are counted for (default: the papers', 224x224 RGB, 1000)."""

    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000
    latency_device: str = "cpu"
    latency_batch: int = 1


@dataclass
class CostRecord:
    """Costs of one candidate at the target. ``params`` is the backbone (encoder, no
    classifier), the quantity the papers budget (LVT: "encoders under 3.5M");
    ``total_params`` includes the classifier for ``num_classes``."""

    params: int
    total_params: int
    macs: int
    latency_ms: float | None = None
    violations: list[str] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    counted_by: str = "analytic"
    count_seconds: float = 0.0

    @property
    def feasible(self) -> bool:
        return not self.violations


def head_params(config: ArchConfig, num_classes: int) -> int:
    """Parameters of the classifier (two heads for a LookupViT stage)."""
    if not num_classes:
        return 0
    d = config.stages[-1].dim
    heads = 2 if config.stages[0].mixer == "lookup" else 1
    return heads * (d * num_classes + num_classes)


def cost_candidate(
    config: ArchConfig,
    budget: Budget,
    target: CostTarget,
    *,
    audit: bool = True,
    latency: bool = False,
) -> CostRecord:
    """Analytic count first; the fvcore audit (and latency) only for a candidate within budget.

    Args:
        config: the candidate.
        budget: what it must fit.
        target: the deployment target costs are counted for.
        audit: count a candidate within budget by fvcore too.
        latency: also measure latency (always, when the budget has a latency limit).
    """
    t0 = time.perf_counter()
    t = target
    est = estimate(config, img_size=t.img_size, in_chans=t.in_chans, num_classes=t.num_classes)
    rec = CostRecord(
        params=est.params - head_params(config, t.num_classes),
        total_params=est.params,
        macs=est.macs,
    )
    rec.violations = budget.check(params=rec.params, macs=rec.macs)
    if rec.violations or not audit:
        rec.ratios = budget.violations_ratio(params=rec.params, macs=rec.macs)
        rec.count_seconds = time.perf_counter() - t0
        return rec
    report = count(config, img_size=t.img_size, in_chans=t.in_chans, num_classes=t.num_classes)
    rec.params, rec.total_params, rec.macs = report.backbone_params, report.params, report.macs
    rec.counted_by = "fvcore"
    if latency or budget.latency_ms is not None:
        from ..models import build_model
        from .latency import measure_latency

        model = build_model(
            config, num_classes=t.num_classes, in_chans=t.in_chans, img_size=t.img_size
        )
        lat = measure_latency(
            model,
            img_size=t.img_size,
            in_chans=t.in_chans,
            batch_size=t.latency_batch,
            device=t.latency_device,
        )
        rec.latency_ms = lat.median_ms
    rec.violations = budget.check(params=rec.params, macs=rec.macs, latency_ms=rec.latency_ms)
    rec.ratios = budget.violations_ratio(
        params=rec.params, macs=rec.macs, latency_ms=rec.latency_ms
    )
    rec.count_seconds = time.perf_counter() - t0
    return rec


def _design_floor(config: ArchConfig, target: CostTarget) -> float:
    """:func:`archsearch.cost.latency.latency_floor_ms` of one design at ``target``."""
    from ..models import build_model
    from .latency import latency_floor_ms

    t = target
    model = build_model(config, num_classes=t.num_classes, in_chans=t.in_chans, img_size=t.img_size)
    return latency_floor_ms(
        model, img_size=t.img_size, in_chans=t.in_chans, batch_size=t.latency_batch
    )


def latency_floor(designs: Iterable[ArchConfig], target: CostTarget) -> float:
    """A lower bound (ms) of the latency :func:`cost_candidate` measures for ``designs`` at
    ``target``, or for any design of a space when they are the cheapest member of each of its
    families (see :func:`archsearch.cost.latency.latency_floor_ms`: one thread's CPU time, split
    over every core and divided by a safety margin). 0 when latency is timed on a GPU, for which
    there is no such bound here, or without designs."""
    if target.latency_device != "cpu":
        return 0.0
    return min((_design_floor(config, target) for config in designs), default=0.0)


def check_latency_reachable(
    space: str, designs: Iterable[ArchConfig], budget: Budget, target: CostTarget
) -> None:
    """Refuse a latency budget below :func:`latency_floor` of the space's cheapest members.

    Args:
        space: the space's name, for the message.
        designs: the member with the fewest MACs of each family of the space.
        budget: the run's budget (nothing is checked without a latency limit).
        target: the deployment target latency is timed at.

    Raises:
        BudgetError: no design of the space can run within the budget's latency.
    """
    if budget.latency_ms is None:
        return
    floor = latency_floor(designs, target)
    if floor > budget.latency_ms:
        raise BudgetError(
            f"every architecture in {space} takes at least {floor:.3g}ms per forward pass "
            f"here (a lower bound from its cheapest members); budget {budget.text or budget} "
            "cannot be met"
        )
