"""The proxy trainer's optimiser: AdamW over decay / no-decay groups, warm-up then cosine."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..errors import TrainingError

__all__ = ["param_groups", "adamw", "lr_factor"]


def param_groups(model: nn.Module, *, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay for weights; none for 1-d params and ``model.no_weight_decay()``.

    Only parameters with ``requires_grad`` are included. Names returned by
    ``no_weight_decay()`` match a parameter exactly or as a module prefix.

    Raises:
        TrainingError: the model has no trainable parameter.
    """
    model = getattr(model, "_orig_mod", model)
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if callable(skip_fn) else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or any(name.startswith(k + ".") for k in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    if not decay and not no_decay:
        raise TrainingError("model: expected trainable parameters, got none")
    groups = [{"params": decay, "weight_decay": weight_decay}]
    groups.append({"params": no_decay, "weight_decay": 0.0})
    return [g for g in groups if g["params"]]


def adamw(groups: list[dict[str, Any]], lr: float, dev: torch.device) -> torch.optim.AdamW:
    """AdamW, fused into one kernel per step where torch supports it (CUDA; CPU since 2.4)."""
    if dev.type in ("cuda", "cpu"):
        try:
            return torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):  # older torch: no fused CPU kernel
            pass
    return torch.optim.AdamW(groups, lr=lr)


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Per-step multiplier: linear warm-up to 1, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------- tensors on device
