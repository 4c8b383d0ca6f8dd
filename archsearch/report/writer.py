"""``write_report``: regenerate a run directory's report files from its run.yaml and trials.csv."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .._logging import get_logger
from ..pareto import hypervolume_history
from ..rundir import PLOT_FILES, write_atomic
from . import plots
from .data import dimensions, load_run, param_importances, pareto_rows, results
from .page import render

__all__ = ["write_report", "PLOT_FILES"]

log = get_logger("report")


def write_report(run_dir: str | Path) -> dict[str, Any]:
    """Write ``pareto.csv``, the PNG plots and ``report.html`` into a run directory.

    Works at any time, also while the run is still going: running trials are listed in the
    page but not plotted, and a run with no feasible result yet gets a page saying so.

    Args:
        run_dir: A directory written by ``archsearch run``.

    Returns:
        ``{"html": Path, "pareto_csv": Path, "plots": [Path, ...]}`` (only plots written).

    Raises:
        ArchsearchError: ``run_dir`` is not a run directory (no ``run.yaml``), or its
            ``run.yaml`` or ``trials.csv`` is unreadable.
    """
    data = load_run(run_dir)
    out = data.run_dir
    notes = list(data.notes)
    table = data.table
    res = results(table)
    if res.empty:
        notes.append("No feasible trial has a result yet, so there is nothing to plot.")

    front = pareto_rows(data)
    pareto_csv = out / "pareto.csv"
    write_atomic(pareto_csv, front.to_csv(index=False).encode())

    knee = table.loc[table["knee"].astype(bool), "trial"]
    knee_trial = int(knee.iloc[0]) if not knee.empty else None
    budget = data.budget
    img = (data.resolved.get("cost_target") or {}).get("img_size")
    at = f" at {img} px" if img else ""
    figures: list[tuple[str, str, bytes | None, str]] = []
    for cost, label, limit in (
        ("macs", f"MACs (per image{at})", budget.macs if budget else None),
        ("params", "params (backbone, without head)", budget.params if budget else None),
        ("latency_ms", f"latency (ms{at})", budget.latency_ms if budget else None),
    ):
        if cost == "latency_ms" and res["latency_ms"].isna().all():
            continue
        png = plots.pareto_plot(res, cost, label, limit=limit, knee_trial=knee_trial)
        name = label.split(" (")[0]
        caption = (
            f"Feasible trained trials; the step line is the Pareto front of accuracy vs {name}"
            + (", the dashed line the budget" if limit is not None else "")
            + ", the star the knee of the run's front; baselines are labelled."
        )
        short = "latency" if cost == "latency_ms" else cost
        figures.append((f"pareto_{short}.png", f"Accuracy vs {name}", png, caption))

    history = hypervolume_history(table, data.objectives) if not res.empty else None
    figures.append(
        (
            "hypervolume.png",
            "Hypervolume",
            plots.hypervolume_plot(history, data.objectives) if history is not None else None,
            "Hypervolume of the feasible results after each trial, objectives normalised "
            "to the range of all feasible results (reference point 1.1).",
        )
    )

    dims = dimensions(data)
    if not dims and not res.empty:
        notes.append("No design dimension takes 2+ options among trained designs.")
    figures.append(
        (
            "dimensions.png",
            "Design dimensions",
            plots.dimensions_plot(dims),
            "Empirical distribution of proxy accuracy per option of every design dimension "
            "(trained searched designs, each architecture once); a curve further right is "
            "better. Panels ordered by the spread of option medians.",
        )
    )
    importances, imp_note = param_importances(data)
    figures.append(
        (
            "importance.png",
            "Parameter importances",
            plots.importance_plot(importances) if importances else None,
            imp_note,
        )
    )
    if not importances and not res.empty:
        notes.append(imp_note)

    written: list[Path] = []
    shown: list[tuple[str, bytes, str]] = []
    for filename, title, png, caption in figures:
        if png is None:
            continue
        path = out / filename
        write_atomic(path, png)
        written.append(path)
        shown.append((title, png, caption))
    for filename in PLOT_FILES:  # drop plots left by an earlier report that no longer apply
        if out / filename not in written:
            (out / filename).unlink(missing_ok=True)

    sections = []
    if (out / "calibration.csv").is_file():
        sections.append(_calibration_section(out, notes))
    sections.append(_insights_section(data, notes))
    page = render(data, front=front, dims=dims, figures=shown, notes=notes, sections=sections)
    html_path = out / "report.html"
    write_atomic(html_path, page.encode("utf-8"))
    log.info("report written to %s", html_path)
    return {"html": html_path, "pareto_csv": pareto_csv, "plots": written}


def _calibration_section(out: Path, notes: list[str]) -> str:
    """The calibration section from ``calibration.csv`` (see ``archsearch calibrate``)."""
    import base64

    import pandas as pd

    from ..errors import ArchsearchError
    from .calibration import analyse, html_section
    from .calibration_plot import scatter_png

    df = pd.read_csv(out / "calibration.csv")
    try:
        analysis = analyse(df)
    except ArchsearchError as e:
        notes.append(f"Calibration not shown yet: {e}")
        return ""
    src = "data:image/png;base64," + base64.b64encode(scatter_png(analysis)).decode()
    return html_section(analysis, src)


def _insights_section(data: Any, notes: list[str]) -> str:
    """The design-insights section; also writes ``insights.json`` (see ``archsearch insights``)."""
    from ..errors import ArchsearchError
    from ..insights import analyse, write_insights
    from .insights import html_section

    try:
        analysis = analyse(data)
        write_insights(data.run_dir, analysis)
    except ArchsearchError as e:
        notes.append(f"Design insights not shown: {e}")
        return ""
    return html_section(analysis)
