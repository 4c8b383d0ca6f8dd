"""Report figures rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built on :class:`matplotlib.figure.Figure` with an explicit Agg canvas, never
through ``pyplot``, so making a report neither needs a display nor changes the backend of a
program (or notebook) that calls it. The report's figures are :data:`WIDTH` inches wide at
:data:`DPI`, 1210 px: sharp at the width the page shows them.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from ..pareto import pareto_table
from .data import Dimension

__all__ = [
    "DPI",
    "WIDTH",
    "short_count",
    "family_groups",
    "pareto_plot",
    "pareto_figure",
    "hypervolume_plot",
    "dimensions_plot",
    "importance_plot",
]

DPI = 110
#: Width of the report's figures in inches (1210 px at :data:`DPI`).
WIDTH = 11.0
#: A cost axis spanning more than this ratio (max / min) is drawn on a log scale.
LOG_RATIO = 20.0
_POINTS = "#4c72b0"
_FRONT = "#dd8452"
_BASELINE = "#55a868"
_BUDGET = "#c44e52"
#: Bar colours of the importance plot: shared choices first, then one per family.
_GROUP_COLOURS = ("#4c72b0", "#dd8452", "#55a868", "#8172b3", "#937860", "#da8bc3")
#: The second part of a family's choice name (``hierarchical.stage2.dim``, ``columnar.cb.kind``).
_SECTION = re.compile(r"stage\d+|cb|tokenizer")


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
    """Log scale for a wide range, labelled at 1, 2 and 5 per decade; ticks like ``120M``."""
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > LOG_RATIO:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_minor_locator(
            LogLocator(base=10, subs=[2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0])
        )
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
    fig = _figure(WIDTH, 6.0)
    ax = fig.add_subplot()
    ax.scatter(
        x[~is_base], y[~is_base], s=30, color=_POINTS, alpha=0.6, label="feasible candidates"
    )
    ranked = pareto_table(pts, ["accuracy", cost], feasible_col=None)
    best = ranked[ranked["pareto_rank"] == 0].sort_values([cost, "accuracy_mean"])
    fx = best[cost].to_numpy(float)
    fy = best["accuracy_mean"].to_numpy(float)
    ax.step(fx, fy, where="post", color=_FRONT, lw=2.2, label="Pareto front")
    ax.scatter(best[cost], best["accuracy_mean"], s=40, color=_FRONT, zorder=3)
    if "accuracy_lo" in best.columns:  # the front's 95% intervals
        bars = best[best["accuracy_lo"].notna()]
        mean = bars["accuracy_mean"].to_numpy(float)
        low, high = bars["accuracy_lo"].to_numpy(float), bars["accuracy_hi"].to_numpy(float)
        ax.errorbar(bars[cost].to_numpy(float), mean, yerr=[mean - low, high - mean], fmt="none",
                    ecolor=_FRONT, elinewidth=1.2, capsize=3, zorder=3)  # fmt: skip
    if is_base.any():
        ax.scatter(
            x[is_base], y[is_base], s=60, marker="s", color=_BASELINE, zorder=4, label="baselines"
        )
    knee = pts[pts["trial"] == knee_trial] if knee_trial is not None else pts.iloc[:0]
    if not knee.empty:
        ax.scatter(
            knee[cost].iloc[:1],
            knee["accuracy_mean"].iloc[:1],
            s=260,
            marker="*",
            color="gold",
            edgecolor="black",
            lw=0.8,
            zorder=5,
            label=f"knee (trial {knee_trial})",
        )
    unit = "ms" if cost == "latency_ms" else "count"
    span = list(x)
    if limit is not None:
        shown = f"{limit:g} ms" if unit == "ms" else short_count(limit)
        ax.axvline(limit, color=_BUDGET, ls="--", lw=1.4, label=f"budget {shown}")
        span.append(limit)
    _count_axis(ax, span, unit)
    if is_base.any():
        names = [str(n) for n in pts["baseline"][is_base]]
        others = np.column_stack([np.concatenate([x, fx]), np.concatenate([y, fy])])
        _label_points(ax, names, x[is_base], y[is_base], limit, others)
    ax.set_xlabel(cost_label, fontsize=12)
    ax.set_ylabel("proxy accuracy (mean over seeds)", fontsize=12)
    ax.set_title(f"Proxy accuracy vs {cost_label.split(' (')[0]}", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.grid(alpha=0.3)
    ax.grid(which="minor", axis="x", alpha=0.12)
    # outside the axes, so it never hides a point or the budget line
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def _label_points(
    ax: Axes,
    names: Sequence[str],
    xs: np.ndarray,
    ys: np.ndarray,
    limit: float | None,
    others: np.ndarray,
) -> None:
    """Name each point, on the side (above/below, left/right) with the fewest other points.

    A side on which the label would cross the budget line or leave the axes is not used.
    Positions are compared in axes fractions (through the axis scales), so this holds on a log
    axis too; a label is about 6.5 points per character wide.

    Args:
        others: ``(n, 2)`` data coordinates of every plotted point, to keep labels off them.
    """
    ax.get_xlim(), ax.get_ylim()  # settle autoscaling before transforming
    to_axes = ax.transScale + ax.transLimits
    width_pt, height_pt = WIDTH * 72 * 0.8, 6.0 * 72 * 0.8  # the axes, roughly
    edge = None if limit is None else to_axes.transform((limit, 1.0))[0]
    near = to_axes.transform(others) if len(others) else np.empty((0, 2))
    for name, px, py in zip(names, xs, ys):
        ax_, ay = to_axes.transform((px, py))
        wide, tall = (len(name) * 6.5 + 12) / width_pt, 16 / height_pt
        best: tuple[float, int, int] | None = None
        for sx, sy in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
            x0, x1 = sorted((ax_, ax_ + sx * wide))
            y0, y1 = sorted((ay, ay + sy * tall))
            crowd = float(np.sum((near[:, 0] > x0) & (near[:, 0] < x1)
                                 & (near[:, 1] > y0) & (near[:, 1] < y1)))  # fmt: skip
            if (edge is not None and x0 < edge < x1) or x0 < 0 or x1 > 1 or y0 < 0 or y1 > 1:
                crowd += 100
            if best is None or crowd < best[0]:
                best = (crowd, sx, sy)
        assert best is not None
        _, sx, sy = best
        ax.annotate(
            name,
            (px, py),
            xytext=(7 * sx, 5 if sy > 0 else -7),
            textcoords="offset points",
            ha="left" if sx > 0 else "right",
            va="bottom" if sy > 0 else "top",
            fontsize=10,
            color="#2d6a3e",
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.75},
            zorder=6,
        )


def hypervolume_plot(history: pd.Series, objectives: Sequence[str]) -> bytes | None:
    """Hypervolume of the feasible results after each trial.

    Returns:
        PNG bytes, or None when the history is empty.
    """
    if history.empty:
        return None
    fig = _figure(WIDTH, 4.4)
    ax = fig.add_subplot()
    ax.step(history.index, history.to_numpy(float), where="post", color=_POINTS, lw=2.0)
    ax.plot(history.index, history.to_numpy(float), "o", ms=4, color=_POINTS)
    ax.set_xlabel("trial", fontsize=12)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("hypervolume", fontsize=12)
    ax.set_title(f"Hypervolume of the feasible front ({', '.join(objectives)})", fontsize=13)
    ax.tick_params(labelsize=11)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    return _png(fig)


def family_groups(names: Sequence[str]) -> dict[str, str]:
    """The family each choice belongs to, ``""`` for choices shared by all families.

    In a space with several families (branches) a family's choices are named
    ``<family>.<choice>`` and the ``family`` choice picks one: ``hierarchical.stage2.dim``
    belongs to ``hierarchical``. ``families`` are recognised from a ``<name>.stageN.``,
    ``<name>.cb.`` or ``<name>.tokenizer.`` prefix; a one-family space has only shared choices.
    """
    families = {
        parts[0]
        for parts in (n.split(".") for n in names)
        if len(parts) >= 3 and _SECTION.fullmatch(parts[1]) and not _SECTION.fullmatch(parts[0])
    }
    return {n: (n.split(".", 1)[0] if n.split(".", 1)[0] in families else "") for n in names}


def _grouped(names: Sequence[str]) -> dict[str, list[str]]:
    """Choice names by family, shared choices (``""``) first, families in order of appearance."""
    out: dict[str, list[str]] = {"": []}
    for name, family in family_groups(names).items():
        out.setdefault(family, []).append(name)
    return {k: v for k, v in out.items() if v}


def dimensions_plot(dims: Sequence[Dimension], columns: int = 3) -> bytes | None:
    """The EDF of accuracy for each option of every design dimension, grouped by family.

    A curve further right means that option's designs reach higher accuracy (design-space
    analysis as in RegNet, with accuracy in place of error). Each family gets its own block of
    panels with an accuracy axis shared within the block, and panels are titled without the
    family prefix.

    Returns:
        PNG bytes, or None when there is no dimension.
    """
    if not dims:
        return None
    by_name = {d.name: d for d in dims}
    groups = _grouped(list(by_name))
    ncols = min(columns, max(len(v) for v in groups.values()))
    rows = [math.ceil(len(v) / ncols) for v in groups.values()]
    panel_h = 3.2
    fig = _figure(WIDTH, sum(panel_h * r + 0.6 for r in rows) + 0.5)
    subs = fig.subfigures(
        len(groups), 1, squeeze=False, height_ratios=[panel_h * r + 0.6 for r in rows]
    )
    for sub, (family, names) in zip(subs[:, 0], groups.items()):
        nrows = math.ceil(len(names) / ncols)
        axes = sub.subplots(nrows, ncols, squeeze=False, sharex=True)
        for ax, name in zip(axes.flat, names):
            title = name[len(family) + 1 :] if family else name
            _edf_panel(ax, by_name[name], title)
        for ax in axes[:, 0]:
            ax.set_ylabel("fraction of designs", fontsize=10)
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        for i, ax in enumerate(axes.flat[: len(names)]):
            if i + ncols >= len(names):  # the lowest panel of its column
                ax.set_xlabel("proxy accuracy", fontsize=10)
        n = max(sum(len(a) for _, a in by_name[k].options) for k in names)
        head = f"{family} family (up to {n} designs)" if family else "Shared choices"
        if len(groups) > 1:
            sub.suptitle(head, fontsize=12, fontweight="bold", x=0.01, ha="left")
    fig.suptitle("Accuracy EDF per option (curve further right = better)", fontsize=13)
    return _png(fig)


def _edf_panel(ax: Axes, dim: Dimension, title: str) -> None:
    for label, accs in dim.options:
        xs = np.concatenate([[accs[0]], accs])
        ys = np.concatenate([[0.0], np.arange(1, len(accs) + 1) / len(accs)])
        ax.step(
            xs, ys, where="post", lw=1.8, label=f"{label}  n={len(accs)}, med {np.median(accs):.3f}"
        )
    ax.set_title(title, fontsize=11)
    # headroom above 1 for the legend, so it never hides a curve (~8% of the axes per entry)
    room = min(0.6, 0.08 * len(dim.options) + 0.06)
    ax.set_ylim(0, 1.03 / (1 - room))
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper left", handlelength=1.2, borderaxespad=0.3)
    ax.tick_params(labelsize=9, labelbottom=True)
    ax.xaxis.set_major_locator(MaxNLocator(5))


def importance_plot(importances: dict[str, float]) -> bytes | None:
    """Horizontal bars of parameter importances, the most important on top, coloured by family.

    Choices at zero importance are left out (a family's choices score zero when the top
    designs come from another family) and counted in a note under the bars.

    Returns:
        PNG bytes, or None when there is nothing to show.
    """
    if not importances:
        return None
    shown = {k: v for k, v in importances.items() if v > 0}
    dropped = len(importances) - len(shown)
    if not shown:
        return None
    items = sorted(shown.items(), key=lambda kv: kv[1])
    families = family_groups([k for k, _ in items])
    order = list(_grouped([k for k, _ in items]))
    colour = {f: _GROUP_COLOURS[i % len(_GROUP_COLOURS)] for i, f in enumerate(order)}
    fig = _figure(WIDTH, 1.9 + 0.4 * len(items))
    ax = fig.add_subplot()
    ax.barh(
        [k for k, _ in items],
        [v for _, v in items],
        color=[colour[families[k]] for k, _ in items],
        height=0.6,
    )
    for i, (_, v) in enumerate(items):
        text = f"{v:.2f}" if v >= 0.005 else "<0.01"
        ax.annotate(
            text, (v, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=10
        )
    if len(order) > 1:
        for family in order:
            ax.barh([], [], color=colour[family], label=family or "shared")
        ax.legend(fontsize=10, loc="lower right")
    ax.set_xlabel("importance for top proxy accuracy (PED-ANOVA, sums to 1)", fontsize=12)
    ax.tick_params(axis="y", labelsize=11)
    ax.tick_params(axis="x", labelsize=10)
    ax.set_xlim(0, max(v for _, v in items) * 1.12)
    ax.set_ylim(-0.6, len(items) - 0.4)
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Parameter importances", fontsize=13)
    if dropped:
        fig.supxlabel(
            f"Not shown: {dropped} choice(s) at importance 0 (a family's choices score 0 when "
            "the top designs all come from another family).",
            fontsize=10, color="#555", x=0.01, ha="left",
        )  # fmt: skip
    return _png(fig)
