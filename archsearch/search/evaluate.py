"""One candidate's path, cheap before expensive: cost, budget check, proxy training.

Optuna-free: the study layer passes :class:`TrialHooks` (report an epoch, ask whether to prune)
and receives a plain :class:`Outcome`. The Ray backend drives the same evaluator.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .._logging import get_logger
from ..config import ArchConfig
from ..cost.analytic import estimate
from ..cost.budget import Budget
from ..cost.count import count
from ..cost.latency import measure_latency
from ..errors import TrainingError
from ..models import build_model
from ..train.data import ImageData
from ..train.proxy import CandidateOOMError, ProxySchedule, save_weights, train_proxy

__all__ = ["CostTarget", "CostRecord", "Outcome", "TrialHooks", "Evaluator", "trial_seed"]

log = get_logger("evaluate")


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


@dataclass
class Outcome:
    """What one evaluation produced; ``accuracy`` is None when nothing was trained."""

    archid: str
    cost: CostRecord
    accuracy: float | None = None
    history: list[float] = field(default_factory=list)
    epochs: int = 0
    train_seconds: float = 0.0
    weights: str | None = None  # path relative to the run directory
    error: str | None = None
    oom: bool = False

    @property
    def feasible(self) -> bool:
        return self.cost.feasible and not self.oom


class TrialHooks:
    """What the evaluator may ask of the search layer (no-ops by default)."""

    def report(self, epoch: int, accuracy: float) -> None:  # pragma: no cover - interface
        """Called after each proxy epoch; may raise to stop the trial (pruning)."""


def trial_seed(seed: int, archid: str) -> int:
    """Per-candidate seed: the same architecture under the same run seed trains identically."""
    digest = hashlib.sha1(f"{seed}:{archid}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


class Evaluator:
    """Costs and trains candidates under one budget, target, dataset and schedule."""

    def __init__(
        self,
        *,
        budget: Budget,
        target: CostTarget,
        data: ImageData | None,
        schedule: ProxySchedule,
        device: torch.device,
        seed: int,
        weights_dir: Path | None = None,
        measure_latency_always: bool = False,
        on_epoch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.budget = budget
        self.target = target
        self.data = data
        self.schedule = schedule
        self.device = device
        self.seed = seed
        self.weights_dir = weights_dir
        self.need_latency = measure_latency_always or budget.latency_ms is not None
        self.on_epoch = on_epoch

    # ------------------------------------------------------------------ cost
    def cost(self, config: ArchConfig, *, audit: bool = True) -> CostRecord:
        """Analytic count first (microseconds); fvcore audit and latency only if within budget."""
        t0 = time.perf_counter()
        t = self.target
        est = estimate(config, img_size=t.img_size, in_chans=t.in_chans, num_classes=t.num_classes)
        head = _head_params(config, t.num_classes)
        rec = CostRecord(params=est.params - head, total_params=est.params, macs=est.macs)
        rec.violations = self.budget.check(params=rec.params, macs=rec.macs)
        if rec.violations or not audit:
            rec.ratios = self.budget.violations_ratio(params=rec.params, macs=rec.macs)
            rec.count_seconds = time.perf_counter() - t0
            return rec
        report = count(config, img_size=t.img_size, in_chans=t.in_chans, num_classes=t.num_classes)
        rec.params, rec.total_params, rec.macs = (
            report.backbone_params,
            report.params,
            report.macs,
        )
        rec.counted_by = "fvcore"
        if self.need_latency:
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
        rec.violations = self.budget.check(
            params=rec.params, macs=rec.macs, latency_ms=rec.latency_ms
        )
        rec.ratios = self.budget.violations_ratio(
            params=rec.params, macs=rec.macs, latency_ms=rec.latency_ms
        )
        rec.count_seconds = time.perf_counter() - t0
        return rec

    # ------------------------------------------------------------------ training
    def train(
        self, config: ArchConfig, *, hooks: TrialHooks | None = None, tag: str = "trial"
    ) -> Outcome:
        """Cost the candidate; train it by the proxy schedule only if it is within budget."""
        archid = config.archid
        rec = self.cost(config)
        out = Outcome(archid=archid, cost=rec)
        if not rec.feasible:
            log.info("%s %s over budget: %s", tag, archid, "; ".join(rec.violations))
            return out
        if self.data is None:
            raise TrainingError("no dataset: expected proxy data for training, got none")
        data = self.data
        seed = trial_seed(self.seed, archid)
        torch.manual_seed(seed)  # weight init: a candidate trains identically on a re-run
        model = build_model(
            config,
            num_classes=data.num_classes,
            in_chans=data.in_chans,
            img_size=self.schedule.img_size or data.img_size,
        )

        def on_epoch(epoch: int, acc: float) -> None:
            if self.on_epoch is not None:
                self.on_epoch(epoch, acc)
            if hooks is not None:
                hooks.report(epoch, acc)

        try:
            result = train_proxy(
                model, data, self.schedule, device=self.device, seed=seed, on_epoch=on_epoch
            )
        except CandidateOOMError as e:
            out.oom, out.error = True, str(e)
            out.cost.violations.append("out of memory")
            out.cost.ratios["oom"] = 1.0
            return out
        out.accuracy = result.accuracy
        out.history = list(result.history)
        out.epochs = result.epochs
        out.train_seconds = result.train_seconds
        if self.weights_dir is not None:
            self.weights_dir.mkdir(parents=True, exist_ok=True)
            path = self.weights_dir / f"{tag}-{archid}.safetensors"
            save_weights(model.cpu(), path)
            out.weights = f"{self.weights_dir.name}/{path.name}"  # relative to the run dir
        return out


def _head_params(config: ArchConfig, num_classes: int) -> int:
    if not num_classes:
        return 0
    d = config.stages[-1].dim
    heads = 2 if config.stages[0].mixer == "lookup" else 1
    return heads * (d * num_classes + num_classes)


def describe(config: ArchConfig) -> str:
    """A short human-readable summary of an architecture (for progress lines)."""
    parts = []
    if config.macro == "hierarchical":
        for s in config.stages:
            mix = f"{s.mixer}{s.recursion}" if s.mixer == "rasa" else s.mixer
            parts.append(f"{mix}x{s.depth}@{s.dim}r{s.mlp_ratio:g}")
    else:
        s = config.stages[0]
        mix = f"lookup{s.lookup_grid}" if s.mixer == "lookup" else s.mixer
        parts.append(f"{config.tokenizer.kind}+{mix}x{s.depth}@{s.dim}h{s.heads}r{s.mlp_ratio:g}")
    if config.cb.kind != "none":
        parts.append(f"{config.cb.kind}:{config.cb.position}/{config.cb.layers}")
    return " ".join(parts)


def as_dict(outcome: Outcome) -> dict[str, Any]:
    """Flat, JSON-friendly record of an outcome (stored as trial attributes)."""
    c = outcome.cost
    return {
        "archid": outcome.archid,
        "feasible": outcome.feasible,
        "params": c.params,
        "total_params": c.total_params,
        "macs": c.macs,
        "latency_ms": c.latency_ms,
        "violations": "; ".join(c.violations),
        "counted_by": c.counted_by,
        "proxy_accuracy": outcome.accuracy,
        "history": outcome.history,
        "epochs": outcome.epochs,
        "train_seconds": round(outcome.train_seconds, 3),
        "weights": outcome.weights,
        "error": outcome.error,
    }
