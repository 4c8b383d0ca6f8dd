"""The report's design-insights section: the papers' claims and every dimension, with intervals.

The numbers come from :func:`archsearch.insights.analyse` (also written to ``insights.json``);
this module only lays them out, with the rows the command line prints
(:mod:`archsearch.insights.text`).
"""

from __future__ import annotations

from typing import Any

from ..insights.text import (
    CLAIM_HEADER,
    DIMENSION_HEADER,
    claim_rows,
    dimension_rows,
    headline,
    reasons,
)
from .calibration_html import _esc, _table

__all__ = ["html_section"]


def _intro(pct: int) -> str:
    return (
        "What this run says about the papers' claims, and about every option of every design "
        "dimension. An effect is estimated from matched pairs (designs differing only in the "
        "choice in question) where the run has them, otherwise by a regression of accuracy on "
        f"every choice with a {pct}% bootstrap interval over designs; no interval is narrower "
        "than the designs' own noise (validation error and seed-to-seed spread) allows. With too "
        "few designs for either, the effect is shown as a hint (compared at equal parameter "
        "count, but not adjusted for the other choices) and gives no verdict. A claim is "
        "supported when every part of it is, contradicted when any part is, and otherwise the "
        "run cannot tell. Cost parts are exact, from the closed-form cost model. "
        "Method: docs/insights.md."
    )


def html_section(analysis: dict[str, Any]) -> str:
    """The insights as an HTML fragment, ``<section id="insights">...</section>``.

    Args:
        analysis: the result of :func:`archsearch.insights.analyse` (or its JSON).
    """
    pct = round(100 * analysis["level"])
    claims = "".join(
        f"<li><strong>{_esc(c['id'])}: {_esc(c['verdict'])}</strong> ({_esc(c['paper'])}): "
        f"{_esc(c['claim'])}</li>"
        for c in analysis["claims"]
    )
    why = reasons(analysis) + list(analysis.get("notes") or [])
    why_html = (
        "<ul class='small'>" + "".join(f"<li>{_esc(w)}</li>" for w in why) + "</ul>" if why else ""
    )
    dims = analysis["dimensions"]
    decided = sum(d["verdict"] != "cannot tell" for d in dims)
    return (
        '<section id="insights"><h2>Design insights</h2>'
        f"<p>{_esc(_intro(pct))}</p><p class='small'>{_esc(headline(analysis))}</p>"
        f"<ul>{claims}</ul>{_table(CLAIM_HEADER, claim_rows(analysis))}{why_html}"
        f"<h3>Every dimension ({len(dims)} options against their dimension's reference; "
        f"{decided} decided)</h3>"
        "<p class='small'>Reference: the smallest value of a numeric choice, the most frequent "
        "option otherwise. n: designs with the option + designs with the reference. MACs: "
        "relative change, same method.</p>"
        f"<details><summary>{len(dims)} comparisons</summary>"
        f"{_table(DIMENSION_HEADER, dimension_rows(analysis))}</details></section>"
    )
