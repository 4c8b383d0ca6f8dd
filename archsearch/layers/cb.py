"""Context Broadcasting (Hyeon-Woo et al., ICCV 2023, arXiv 2210.08457).

CB adds the mean token: ``CB(X) = 0.5 X + 0.5 mean_tokens(X)``; no parameters, negligible MACs.

CBS ("dimension scaling") learns, per channel, how much of the broadcast each channel receives.
The paper's exact formula was not confirmed; we read it as
``CBS(X) = X + lambda * (mean_tokens(X) - X)`` with ``lambda`` in R^d initialised to 0.5, so that
CBS starts exactly equal to CB and can move towards identity (0) or full broadcast (1) per channel.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ContextBroadcast", "make_cb"]


class ContextBroadcast(nn.Module):
    """CB (``scaled=False``) or CBS (``scaled=True``) over the token axis of ``(B, N, C)``."""

    def __init__(self, dim: int, *, scaled: bool = False) -> None:
        super().__init__()
        self.scaled = scaled
        self.lam = nn.Parameter(torch.full((dim,), 0.5)) if scaled else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=1, keepdim=True)
        if self.lam is None:
            return 0.5 * x + 0.5 * mean
        return x + self.lam * (mean - x)

    def extra_repr(self) -> str:
        return "cbs" if self.scaled else "cb"


def make_cb(kind: str, dim: int) -> nn.Module | None:
    """Return a CB/CBS module for ``kind`` in {"cb", "cbs"}, or None for "none"."""
    if kind == "none":
        return None
    return ContextBroadcast(dim, scaled=kind == "cbs")
