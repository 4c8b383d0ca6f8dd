"""Report figures rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, never
through ``pyplot``, so making a report neither needs a display nor changes the backend of a
program (or notebook) that calls it.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from ..pareto import pareto_table
from .data import Dimension

__all__ = [
    "DPI",
    "short_count",
    "pareto_plot",
    "pareto_figure",
    "hypervolume_plot",
    "dimensions_plot",
    "importance_plot",
]

DPI = 110
#: A cost axis spanning more than this ratio (max / min) is drawn on a log scale.
LOG_RATIO = 20.0
_POINTS = "#4c72b0"
_FRONT = "#dd8452"
_BASELINE = "#55a868"
_BUDGET = "#c44e52"


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def short_count(n: float) -> str:
    """A count with 3 significant digits and a K/M/G suffix: ``50M``, ``1.26G``, ``3.5K``."""
    for suffix, unit in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= unit:
            return f"{n / unit:.3g}{suffix}"
    return f"{n:.3g}"


def _count_axis(ax: Axes, values: Sequence[float], unit: str) -> None:
    """Log scale for a wide range; tick labels like ``120M`` (or ``3.2 ms``)."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_RATIO:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    if unit == "ms":
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g} ms"))
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: short_count(v)))


def pareto_plot(
    points: pd.DataFrame,
    cost: str,
    cost_label: str,
    *,
    limit: float | None = None,
    knee_trial: int | None = None,
) -> bytes | None:
    """:func:`pareto_figure` as PNG bytes (None when it has nothing to draw)."""
    fig = pareto_figure(points, cost, cost_label, limit=limit, knee_trial=knee_trial)
    return None if fig is None else _png(fig)


def pareto_figure(
    points: pd.DataFrame,
    cost: str,
    cost_label: str,
    *,
    limit: float | None = None,
    knee_trial: int | None = None,
) -> Figure | None:
    """Proxy accuracy against one cost, with the 2-D Pareto front as a step line.

    Args:
        points: Result rows (feasible, trained) with ``trial``, ``baseline``,
            ``accuracy_mean`` (with ``accuracy_lo``/``accuracy_hi``: error bars of the front) and
            the cost column.
        cost: The cost column (``macs``, ``params`` or ``latency_ms``).
        cost_label: Axis label for the cost.
        limit: The budget's limit on this cost, drawn as a vertical line.
        knee_trial: Trial number of the run's knee point, highlighted if among ``points``.

    Returns:
        The figure, or None when no row has both values.
    """
    pts = points[points[cost].notna() & points["accuracy_mean"].notna()]
    if pts.empty:
        return None
    x = pts[cost].to_numpy(float)
    y = pts["accuracy_mean"].to_numpy(float)
    is_base = (pts["baseline"] != "").to_numpy()
    fig = _figure(6.0, 4.0)
    ax = fig.add_subplot()
    ax.scatter(
        x[~is_base], y[~is_base], s=18, color=_POINTS, alpha=0.55, label="feasible candidates"
    )
    ranked = pareto_table(pts, ["accuracy", cost], feasible_col=None)
    best = ranked[ranked["pareto_rank"] == 0].sort_values([cost, "accuracy_mean"])
    fx = best[cost].to_numpy(float)
    fy = best["accuracy_mean"].to_numpy(float)
    ax.step(fx, fy, where="post", color=_FRONT, lw=1.8, label="Pareto front")
    ax.scatter(best[cost], best["accuracy_mean"], s=26, color=_FRONT, zorder=3)
    if "accuracy_lo" in best.columns:  # the front's 95% intervals
        bars = best[best["accuracy_lo"].notna()]
        mean = bars["accuracy_mean"].to_numpy(float)
        low, high = bars["accuracy_lo"].to_numpy(float), bars["accuracy_hi"].to_numpy(float)
        ax.errorbar(bars[cost].to_numpy(float), mean, yerr=[mean - low, high - mean], fmt="none",
                    ecolor=_FRONT, elinewidth=1, capsize=2, zorder=3)  # fmt: skip
    if is_base.any():
        ax.scatter(
            x[is_base], y[is_base], s=42, marker="s", color=_BASELINE, zorder=4, label="baselines"
        )
        for name, bx, by in zip(pts["baseline"][is_base], x[is_base], y[is_base]):
            ax.annotate(
                str(name),
                (bx, by),
                xytext=(5, 4),
                textcoords="offset points",
                fontsize=8,
                color="#2d6a3e",
            )
    knee = pts[pts["trial"] == knee_trial] if knee_trial is not None else pts.iloc[:0]
    if not knee.empty:
        ax.scatter(
            knee[cost].iloc[:1],
            knee["accuracy_mean"].iloc[:1],
            s=170,
            marker="*",
            color="gold",
            edgecolor="black",
            lw=0.7,
            zorder=5,
            label=f"knee (trial {knee_trial})",
        )
    unit = "ms" if cost == "latency_ms" else "count"
    span = list(x)
    if limit is not None:
        shown = f"{limit:g} ms" if unit == "ms" else short_count(limit)
        ax.axvline(limit, color=_BUDGET, ls="--", lw=1.2, label=f"budget {shown}")
        span.append(limit)
    _count_axis(ax, span, unit)
    ax.set_xlabel(cost_label)
    ax.set_ylabel("proxy accuracy (mean over seeds)")
    ax.set_title(f"Proxy accuracy vs {cost_label.split(' (')[0]}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def hypervolume_plot(history: pd.Series, objectives: Sequence[str]) -> bytes | None:
    """Hypervolume of the feasible results after each trial.

    Returns:
        PNG bytes, or None when the history is empty.
    """
    if history.empty:
        return None
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    ax.step(history.index, history.to_numpy(float), where="post", color=_POINTS, lw=1.6)
    ax.plot(history.index, history.to_numpy(float), "o", ms=3, color=_POINTS)
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume")
    ax.set_title(f"Hypervolume of the feasible front ({', '.join(objectives)})", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _png(fig)


def dimensions_plot(dims: Sequence[Dimension], columns: int = 3) -> bytes | None:
    """One panel per design dimension: the EDF of accuracy for each of its options.

    A curve further right means that option's designs reach higher accuracy (design-space
    analysis as in RegNet, with accuracy in place of error).

    Returns:
        PNG bytes, or None when there is no dimension.
    """
    if not dims:
        return None
    ncols = min(columns, len(dims))
    nrows = math.ceil(len(dims) / ncols)
    fig = _figure(3.4 * ncols, 2.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, dim in zip(axes.flat, dims):
        for label, accs in dim.options:
            xs = np.concatenate([[accs[0]], accs])
            ys = np.concatenate([[0.0], np.arange(1, len(accs) + 1) / len(accs)])
            ax.step(
                xs,
                ys,
                where="post",
                lw=1.5,
                label=f"{label} (n={len(accs)}, med {np.median(accs):.3f})",
            )
        ax.set_title(dim.name, fontsize=9)
        ax.set_ylim(0, 1.03)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper left")
        ax.tick_params(labelsize=7, labelbottom=True)
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of designs", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("proxy accuracy", fontsize=8)
    for ax in axes.flat[len(dims) :]:
        ax.set_visible(False)
    fig.suptitle("Accuracy EDF per option (curve further right = better)", fontsize=10)
    return _png(fig)


def importance_plot(importances: dict[str, float]) -> bytes | None:
    """Horizontal bars of parameter importances, the most important on top.

    Returns:
        PNG bytes, or None when there is nothing to show.
    """
    if not importances:
        return None
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _figure(6.0, 1.1 + 0.28 * len(items))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=_POINTS)
    ax.set_xlabel("importance for top proxy accuracy (PED-ANOVA, sums to 1)")
    ax.tick_params(axis="y", labelsize=8)
    ax.set_xlim(0, max(1e-9, max(v for _, v in items)) * 1.1)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Parameter importances", fontsize=10)
    return _png(fig)
