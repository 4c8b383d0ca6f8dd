"""The report as one self-contained HTML page (inline CSS, images as data URIs, no links)."""

from __future__ import annotations

import base64
import html
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cost.budget import format_count
from ..stats import compare
from .data import Dimension, RunData, designs, option_label, results

__all__ = ["render", "summary_sentences", "fmt"]

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;padding:0 1em;
color:#222;line-height:1.4}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{border:1px solid #ddd;padding:.2em .5em;text-align:left;white-space:nowrap}
th{background:#f3f3f3}tr.knee td{background:#fff6d5}
.scroll{overflow-x:auto}.note{color:#8a4b00}.small{color:#666;font-size:.85em}
figure{margin:1em 0}figcaption{color:#555;font-size:.85em}img{max-width:100%;height:auto}
"""

_LABELS = {
    "proxy_accuracy": "accuracy",
    "params": "params",
    "total_params": "params (with head)",
    "macs": "MACs",
    "latency_ms": "latency",
    "reused_from": "same as trial",
}


def _esc(value: Any) -> str:
    """Escaped text; ``://`` is written as an entity so the page holds no URL at all."""
    return html.escape(str(value)).replace("://", ":&#47;&#47;")


def fmt(column: str, value: Any) -> str:
    """A table cell as text: counts as ``3.41M``, accuracy to 3 decimals, blanks as ``-``."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "-"
    if column in ("params", "total_params", "macs"):
        return format_count(float(value))
    if column in ("proxy_accuracy", "accuracy_mean"):
        return f"{float(value):.3f}"
    if column == "latency_ms":
        return f"{float(value):.2f} ms"
    if column == "crowding":
        return "inf" if math.isinf(float(value)) else f"{float(value):.3f}"
    if column == "train_seconds":
        return f"{float(value):.1f} s"
    if column == "knee":
        return "knee" if bool(value) else ""
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    return option_label(value)


def _table(
    header: Sequence[str], rows: Iterable[Sequence[Any]], row_class: Sequence[str] = ()
) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_class[i]}"' if i < len(row_class) and row_class[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _costs(row: pd.Series, objectives: Sequence[str]) -> str:
    parts = [f"{fmt('params', row['params'])} params", f"{fmt('macs', row['macs'])} MACs"]
    if "latency" in objectives and pd.notna(row["latency_ms"]):
        parts.append(fmt("latency_ms", row["latency_ms"]))
    return ", ".join(parts)


def seed_noise(run_dir: Any) -> float | None:
    """The proxy's mean seed-to-seed standard deviation from the run's calibration, if any."""
    import json
    import math
    from pathlib import Path

    try:
        noise = json.loads((Path(run_dir) / "calibration.json").read_text())["noise"]
        value = float(noise["proxy_seed_std_mean"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return None if math.isnan(value) else value


def accuracy_interval(row: pd.Series, seed_sd: float | None) -> tuple[float, float, float]:
    """``(accuracy, lo, hi)``: the design's mean over its seeds with its 95% interval when it was
    trained with two or more seeds; for one seed, an interval from the validation standard
    error and, when the run is calibrated, the proxy's seed-to-seed spread."""
    seeds = row.get("seeds")
    if seeds is not None and not pd.isna(seeds) and int(seeds) >= 2:
        return float(row["accuracy_mean"]), float(row["accuracy_lo"]), float(row["accuracy_hi"])
    acc = float(row["proxy_accuracy"])
    se = row.get("accuracy_se")
    se = 0.0 if se is None or pd.isna(se) else float(se)
    half = 1.96 * (se**2 + (seed_sd or 0.0) ** 2) ** 0.5
    return acc, acc - half, acc + half


def _acc(row: pd.Series, seed_sd: float | None) -> str:
    acc, lo, hi = accuracy_interval(row, seed_sd)
    seeds = row.get("seeds")
    n = 1 if seeds is None or pd.isna(seeds) else int(seeds)
    return f"{acc:.3f} ± {(hi - lo) / 2:.3f}" + (f" ({n} seeds)" if n > 1 else "")


def summary_sentences(data: RunData) -> list[str]:
    """Best candidate against each baseline (a claim only where intervals separate), and the
    knee of the front."""
    table = data.table
    res = results(table)
    searched = res[res["baseline"] == ""].sort_values(
        ["accuracy_mean", "trial"], ascending=[False, True], kind="stable"
    )
    seed_sd = seed_noise(data.run_dir)
    seeded = res["seeds"].fillna(1).astype(int)
    out = [
        "Accuracies are given with a 95% interval: "
        + (
            f"validation noise and the proxy's seed-to-seed spread ({seed_sd:.3f}, measured "
            "by archsearch calibrate)"
            if seed_sd is not None
            else "validation noise only; the proxy's seed noise is not measured for this run "
            "(archsearch calibrate measures it), so true intervals are wider"
        )
        + (
            f"; designs retrained with several seeds ({int(seeded.max())} at most, "
            "--final-seeds) show their seed mean with a t interval that includes both."
            if (seeded > 1).any()
            else "."
        )
    ]
    best = searched.iloc[0] if not searched.empty else None
    if best is None:
        out.append("No search candidate has a result yet.")
    else:
        out.append(
            f"Best candidate: trial {best['trial']}, proxy accuracy "
            f"{_acc(best, seed_sd)} at {_costs(best, data.objectives)}."
        )
    planned = [str(b) for b in data.resolved.get("baselines") or []]
    seen = [b for b in table["baseline"].tolist() if b]
    for name in dict.fromkeys(planned + seen):
        rows = table[table["baseline"] == name]
        done = res[res["baseline"] == name]
        if not done.empty:
            ref = done.iloc[0]
            text = f"{name}: {_acc(ref, seed_sd)} at {_costs(ref, data.objectives)}"
            if best is not None:
                a = accuracy_interval(best, seed_sd)
                b = accuracy_interval(ref, seed_sd)
                verdict = compare(a[1:], b[1:])
                claim = {
                    "better": "more accurate than",
                    "worse": "less accurate than",
                    "tied": "tied with (intervals overlap)",
                }[verdict]
                text = f"Best candidate ({_acc(best, seed_sd)}) is {claim} {text}"
            out.append(text + ".")
        elif rows.empty:
            out.append(f"Baseline {name}: not run yet.")
        else:
            last = rows.iloc[-1]
            why = f": {last['error']}" if last["error"] else ""
            out.append(f"Baseline {name}: no result ({last['state']}{why}).")
    if not planned and not seen:
        out.append("No baseline reference design fits this budget, so none was trained.")
    knee = table[table["knee"].astype(bool)]
    if not knee.empty:
        k = knee.iloc[0]
        out.append(
            f"Knee of the Pareto front: trial {k['trial']}, {_acc(k, seed_sd)} at "
            f"{_costs(k, data.objectives)}."
        )
    return out


def _settings_rows(data: RunData) -> list[tuple[str, str]]:
    res, opts = data.resolved, data.settings.get("options") or {}
    proxy, sched = res.get("proxy_target") or {}, res.get("schedule") or {}
    cost = res.get("cost_target") or {}
    rows = [
        ("budget", str(res.get("budget", "-"))),
        ("space", f"{Path(str(res.get('space', '-'))).name} (sha1 {res.get('space_sha1', '-')})"),
        ("objectives", ", ".join(data.objectives)),
        ("sampler / seed", f"{opts.get('sampler', '-')} / {opts.get('seed', '-')}"),
        ("trials requested", f"{res.get('trials', '-')} (timeout {res.get('timeout_seconds')} s)"),
        (
            "proxy",
            f"{proxy.get('dataset', '-')} at {proxy.get('img_size', '-')} px, "
            f"{proxy.get('num_classes', '-')} classes, {proxy.get('train_images', '-')} train / "
            f"{proxy.get('val_images', '-')} val images; {sched.get('epochs', '-')} epochs on "
            f"{sched.get('subset') or 'all'} images, batch {sched.get('batch_size', '-')}",
        ),
        (
            "cost target",
            f"{cost.get('img_size', '-')} px, {cost.get('in_chans', '-')} channels, "
            f"{cost.get('num_classes', '-')} classes (params exclude the head)",
        ),
        ("device", str(res.get("device", "-"))),
        ("baselines", ", ".join(map(str, res.get("baselines") or [])) or "none fit the budget"),
        (
            "versions",
            ", ".join(f"{k} {v}" for k, v in (data.settings.get("versions") or {}).items()),
        ),
    ]
    return rows


def _status(table: pd.DataFrame) -> str:
    counts = table["state"].value_counts().to_dict()
    parts = [f"{n} {state.lower()}" for state, n in sorted(counts.items())]
    trained = len(results(table))
    return (
        f"{len(table)} trials ({', '.join(parts) or 'none'}); {trained} with a feasible result, "
        f"{len(designs(table))} distinct searched designs."
    )


def _image(png: bytes, alt: str, caption: str) -> str:
    src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="{src}" alt="{_esc(alt)}"><figcaption>{_esc(caption)}'
        "</figcaption></figure>"
    )


def _design(config: Any) -> str:
    from ..blocks import notation
    from ..config import ArchConfig
    from ..errors import ArchsearchError

    try:
        return notation(ArchConfig.from_json(str(config)))
    except (ArchsearchError, TypeError, ValueError):
        return "-"


def _front_table(front: pd.DataFrame, choices: Sequence[str], seed_sd: float | None) -> str:
    """Design notation and accuracy with its 95% interval first; the raw choices last."""
    used = [c for c in choices if front[c].notna().any()]
    cols = ["params", "macs"]
    if front["latency_ms"].notna().any():
        cols.append("latency_ms")
    cols += ["knee", "crowding", *used]
    header = ["trial", "baseline", "design", "accuracy (95% interval)"]
    header += [_LABELS.get(c, c) for c in cols]
    rows = [
        [fmt("trial", r["trial"]), fmt("baseline", r["baseline"]), _design(r["config"])]
        + [_acc(r, seed_sd)]
        + [fmt(c, r[c]) for c in cols]
        for _, r in front.iterrows()
    ]
    return _table(header, rows, ["knee" if bool(k) else "" for k in front["knee"]])


def _dimension_table(dims: Sequence[Dimension]) -> str:
    rows = []
    for d in dims:
        opts = "; ".join(
            f"{label}: median {float(pd.Series(a).median()):.3f} (n={len(a)})"
            for label, a in d.options
        )
        rows.append([d.name, d.best, f"{d.spread:.3f}", opts])
    return _table(["dimension", "best option (median)", "spread of medians", "options"], rows)


def _trials_table(table: pd.DataFrame) -> str:
    cols = ["trial", "state", "baseline", "feasible", "proxy_accuracy", "params", "macs"]
    cols += ["latency_ms", "reused_from", "error"]
    rows = []
    for _, r in table.sort_values("trial").iterrows():
        cells = [fmt(c, r[c]) if c != "error" else str(r[c] or "")[:160] for c in cols]
        rows.append(cells)
    return _table([_LABELS.get(c, c) for c in cols], rows)


def render(
    data: RunData,
    *,
    front: pd.DataFrame,
    dims: Sequence[Dimension],
    figures: Sequence[tuple[str, bytes, str]],
    notes: Sequence[str],
    sections: Sequence[str] = (),
) -> str:
    """The whole page.

    Args:
        data: The loaded run.
        front: The rows of ``pareto.csv``.
        dims: Design dimensions with 2+ options.
        figures: ``(title, png bytes, caption)`` in display order.
        notes: Sentences on what could not be shown.
        sections: Extra HTML sections (the calibration), shown after the front.
    """
    name = data.run_dir.resolve().name
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>archsearch report: {_esc(name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>archsearch report: {_esc(name)}</h1>",
        f"<p class='small'>Generated {_esc(time.strftime('%Y-%m-%d %H:%M:%S'))} from "
        f"{_esc(data.run_dir)}. {_esc(_status(data.table))}</p>",
        "<h2>Settings</h2>",
        _table(["setting", "value"], _settings_rows(data)),
        "<h2>Summary</h2><ul>",
        *(f"<li>{_esc(s)}</li>" for s in summary_sentences(data)),
        "</ul>",
    ]
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts.append(f"<h2>Pareto front ({len(front)} trials)</h2>")
    if front.empty:
        parts.append("<p class='note'>No feasible trial has a result yet: the front is empty.</p>")
    else:
        parts.append(
            f"<p class='small'>Objectives: {_esc(', '.join(data.objectives))}. "
            "The highlighted row is the knee.</p>"
        )
        parts.append(_front_table(front, data.choices, seed_noise(data.run_dir)))
    parts += [sec for sec in sections if sec]
    if figures:
        parts.append("<h2>Plots</h2>")
        parts += [_image(png, title, caption) for title, png, caption in figures]
    parts.append("<h2>Design dimensions</h2>")
    if dims:
        parts.append(
            "<p class='small'>Trained searched designs, each architecture once; "
            "with few designs per option, treat differences as hints.</p>"
        )
        parts.append(_dimension_table(dims))
    else:
        parts.append("<p class='note'>No design dimension has 2+ options among results.</p>")
    parts.append(
        f"<h2>All trials</h2><details><summary>{len(data.table)} trials (running ones are "
        f"listed but not plotted)</summary>{_trials_table(data.table)}</details>"
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)
