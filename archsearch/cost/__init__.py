"""Cost of a candidate before training: parameters, MACs, latency and budgets.

MACs follow fvcore's convention: one multiply-accumulate is one MAC (what papers often call
"FLOPs"; budgets accept ``flops`` as a synonym).
"""

from __future__ import annotations

from .budget import Budget, format_count, parse_budget
from .count import (
    CostReport,
    count,
    count_params,
    count_params_from_config,
    mac_analysis,
    resolve_target,
)
from .handles import MAC_HANDLES, einsum_macs, sdpa_macs
from .ignored import IGNORED_OPS
from .latency import LatencyReport, measure_latency

__all__ = [
    "Budget",
    "CostReport",
    "IGNORED_OPS",
    "LatencyReport",
    "MAC_HANDLES",
    "count",
    "count_params",
    "count_params_from_config",
    "einsum_macs",
    "format_count",
    "mac_analysis",
    "measure_latency",
    "parse_budget",
    "resolve_target",
    "sdpa_macs",
]
