"""Resource budgets: ``3.5M-params``, ``0.9G-macs``, ``5ms-latency`` and combinations.

MACs are multiply-accumulates (fvcore's convention). ``flops`` is accepted as a synonym for
``macs`` because most papers report MACs under that name (DeiT-Ti's "1.3 GFLOPs" are 1.26 GMACs).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..errors import BudgetError

__all__ = ["Budget", "parse_budget", "format_count", "ACCEPTED_FORMS"]

#: Shown in every parse error and in the CLI help.
ACCEPTED_FORMS = (
    "expected forms like 3.5M-params, 900M-macs, 0.9G-macs (MACs; 'flops' is a synonym), "
    "5ms-latency, joined by commas"
)

_COUNT_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9}
_TIME_UNITS = {"": 1.0, "ms": 1.0, "s": 1000.0, "us": 1e-3}
_METRICS = {
    "params": "params",
    "param": "params",
    "macs": "macs",
    "mac": "macs",
    "flops": "macs",
    "flop": "macs",
    "latency": "latency_ms",
}
_DISPLAY = {"params": "params", "macs": "macs", "latency_ms": "latency"}
_PIECE = re.compile(
    r"""^\s*
    (?P<number>(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?)
    \s*(?P<unit>[a-z]*)
    \s*[-_\s]\s*
    (?P<metric>[a-z]+)
    \s*$""",
    re.IGNORECASE | re.VERBOSE,
)


def format_count(n: float, *, digits: int = 2) -> str:
    """Human-readable parameter or MAC count: ``3.41M``, ``1.26G``, ``12.35K``, ``512``."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= unit:
            return f"{n / unit:.{digits}f}{suffix}"
    return f"{n:.0f}" if float(n).is_integer() else f"{n:.{digits}f}"


def _compact(n: float) -> str:
    """Shortest exact-enough count for a budget string: ``3.5M``, ``900M``, ``1.26G``."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= unit:
            return f"{n / unit:.12g}{suffix}"
    return f"{n:.12g}"


def _pair(value: float, limit: float, fmt: str) -> tuple[str, str]:
    """Format a value and its limit, adding digits until they no longer print the same."""
    if fmt == "ms":
        render = (
            [f"{value:.{d}f}ms" for d in range(2, 7)],
            [f"{limit:.{d}f}ms" for d in range(2, 7)],
        )
    else:
        render = (
            [format_count(value, digits=d) for d in range(2, 7)],
            [format_count(limit, digits=d) for d in range(2, 7)],
        )
    for v, lim in zip(*render):
        if v != lim:
            return v, lim
    return render[0][-1], render[1][-1]


@dataclass(frozen=True)
class Budget:
    """Upper limits on a candidate's cost; ``None`` means unconstrained.

    Attributes:
        params: maximum parameter count.
        macs: maximum multiply-accumulates per image.
        latency_ms: maximum latency in milliseconds.
        text: the string the budget was parsed from.
    """

    params: int | None = None
    macs: int | None = None
    latency_ms: float | None = None
    text: str = ""

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the constrained metrics (``params``, ``macs``, ``latency_ms``)."""
        return tuple(m for m in ("params", "macs", "latency_ms") if getattr(self, m) is not None)

    def _values(
        self, params: float | None, macs: float | None, latency_ms: float | None
    ) -> list[tuple[str, float, float]]:
        pairs = (("params", params), ("macs", macs), ("latency_ms", latency_ms))
        out = []
        for metric, value in pairs:
            limit = getattr(self, metric)
            if limit is not None and value is not None:
                out.append((metric, float(value), float(limit)))
        return out

    def check(
        self,
        *,
        params: float | None = None,
        macs: float | None = None,
        latency_ms: float | None = None,
    ) -> list[str]:
        """Violations of this budget, e.g. ``["params 3.61M > budget 3.50M"]``; empty if feasible.

        Metrics passed as ``None`` (not measured) and metrics the budget leaves free are skipped.
        """
        problems = []
        for metric, value, limit in self._values(params, macs, latency_ms):
            if value > limit:
                v, lim = _pair(value, limit, "ms" if metric == "latency_ms" else "count")
                problems.append(f"{_DISPLAY[metric]} {v} > budget {lim}")
        return problems

    def is_feasible(
        self,
        *,
        params: float | None = None,
        macs: float | None = None,
        latency_ms: float | None = None,
    ) -> bool:
        """Whether :meth:`check` finds no violation."""
        return not self.check(params=params, macs=macs, latency_ms=latency_ms)

    def violations_ratio(
        self,
        *,
        params: float | None = None,
        macs: float | None = None,
        latency_ms: float | None = None,
    ) -> dict[str, float]:
        """``value / limit - 1`` per constrained, measured metric (``<= 0`` is feasible).

        Suitable as Optuna constraint values: a ``constraints_func`` can return
        ``list(ratios.values())``.
        """
        return {m: v / lim - 1.0 for m, v, lim in self._values(params, macs, latency_ms)}

    def __str__(self) -> str:
        parts = []
        if self.params is not None:
            parts.append(f"{_compact(self.params)}-params")
        if self.macs is not None:
            parts.append(f"{_compact(self.macs)}-macs")
        if self.latency_ms is not None:
            parts.append(f"{self.latency_ms:.12g}ms-latency")
        return ",".join(parts) if parts else "unconstrained"


def parse_budget(text: str) -> Budget:
    """Parse a budget string.

    Accepted: ``<number><unit>-<metric>`` pieces joined by commas, e.g. ``3.5M-params``,
    ``900M-macs``, ``0.9G-macs``, ``1.26G-flops`` (``flops`` = MACs), ``5ms-latency``, or
    ``3.5M-params,0.9G-macs``. Count units are K, M, G or none; latency units are ms, s, us or
    none (milliseconds). Case-insensitive; whitespace is tolerated; ``_`` or a space may stand in
    for the ``-``.

    Raises:
        BudgetError: the text is empty, a piece is malformed, a unit does not fit its metric, a
            limit is not positive, or a metric is given twice.
    """
    if not isinstance(text, str):
        raise BudgetError(f"budget: expected a string, got {type(text).__name__}")

    def fail(problem: str) -> BudgetError:
        return BudgetError(f"budget {text!r}: {problem}; {ACCEPTED_FORMS}")

    if not text.strip():
        raise fail("empty")
    limits: dict[str, float] = {}
    for piece in text.split(","):
        match = _PIECE.match(piece)
        if not match:
            raise fail(f"cannot read {piece.strip()!r}" if piece.strip() else "empty item")
        number, unit, word = match["number"], match["unit"].lower(), match["metric"].lower()
        metric = _METRICS.get(word)
        if metric is None:
            raise fail(f"unknown metric {match['metric']!r}")
        units = _TIME_UNITS if metric == "latency_ms" else _COUNT_UNITS
        if unit not in units:
            allowed = "ms, s, us" if metric == "latency_ms" else "K, M, G"
            raise fail(f"unit {match['unit']!r} does not fit {word} (use {allowed} or none)")
        value = float(number) * units[unit]
        if not math.isfinite(value) or value <= 0:
            raise fail(f"expected a positive limit for {word}, got {number}")
        if metric in limits:
            raise fail(f"{_DISPLAY[metric]} given twice")
        limits[metric] = value
    params = limits.get("params")
    macs = limits.get("macs")
    return Budget(
        params=round(params) if params is not None else None,
        macs=round(macs) if macs is not None else None,
        latency_ms=limits.get("latency_ms"),
        text=text,
    )
