"""The calibration as HTML: the section of report.html (:func:`html_section`) and the number
formats the verdict shares with it."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

from .plots import short_count

__all__ = ["PROXY", "REFERENCE", "html_page", "html_section"]

#: The two tiers of a calibration (the ``tier`` column of calibration.csv).
PROXY, REFERENCE = "proxy", "reference"


def _num(value: float | None, digits: int = 2, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ci(ci: Sequence[float | None], digits: int = 2, sign: bool = False) -> str:
    return f"[{_num(ci[0], digits, sign)}, {_num(ci[1], digits, sign)}]"


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table><tr>{head}</tr>{body}</table></div>'


def _count(value: Any) -> str:
    return "-" if value is None else short_count(float(value))


def _intro(pct: int, k: int) -> str:
    return (
        "The search ranks designs by a short proxy training. To check that ranking, designs "
        "were trained at the proxy tier with several seeds and once at a longer reference tier. "
        "Rank agreement is Kendall's tau-b and Spearman's rho between two orderings of the same "
        f"designs (1: identical, 0: unrelated, -1: reversed), with {pct}% bootstrap intervals "
        f"over designs; top-{k} counts the reference's best {k} designs among the proxy's best "
        f"{k}. Params and MACs are trivial predictors that need no training (positive tau: "
        "larger models rank higher); the proxy beats one only when the interval of the paired "
        "difference of their taus lies above 0. A design's proxy interval is a t interval over "
        "its seeds; its reference interval comes from the validation standard error (one "
        "reference run) or is a t interval over the reference seeds. With two or more reference "
        "seeds the reference's own noise is measured, and with it the tau a perfect predictor "
        "could expect against it: the ceiling a proxy is judged against."
    )


def html_section(analysis: dict[str, Any], img_src: str) -> str:
    """The calibration as an HTML fragment, ``<section id="calibration">...</section>``.

    Args:
        analysis: the result of :func:`analyse` (or its JSON, ``nan`` stored as ``null``).
        img_src: ``src`` of the scatter image (a file name or a ``data:`` URI).
    """
    a = analysis
    c, noise, pct, k = a["counts"], a["noise"], round(100 * a["level"]), a["top_k"]["k"]

    def est(v: Any, lohi: Sequence[Any], digits: int = 2, sign: bool = False) -> str:
        return f"{_num(v, digits, sign)} {_ci(lohi, digits, sign)}"

    rank_rows = []
    for name, st in a["rank"].items():
        label = st["label"]
        if name == "proxy_mean" and c["seeds"] > 1:
            label = f"proxy, mean of {c['seeds']} seeds"
        tau, rho = est(st["tau"], st["tau_ci"]), est(st["rho"], st["rho_ci"])
        if name == "proxy_one_seed" and c["seeds"] > 1:
            label = f"proxy, one seed (mean over {c['seeds']} seeds)"
        top = st["top_k"]
        top = f"{top:.0f}" if float(top).is_integer() else f"{top:.1f}"
        rank_rows.append((label, tau, rho, f"{top}/{k}"))
    s = a["seed_to_seed"]
    if s.get("pairs"):
        pairs = f"{s['pairs']} pair{'s' if s['pairs'] > 1 else ''}"
        rank_rows.append((f"proxy seed vs seed ({pairs})", est(s["tau"], s["tau_ci"]), "-", "-"))
    ref = a.get("reference") or {}
    if len(ref.get("seeds") or []) >= 2:
        row = est(ref["tau"], ref["tau_ci"])
        rank_rows.append((f"reference seed vs seed ({len(ref['seeds'])} seeds)", row, "-", "-"))
    if ref.get("ceiling") is not None and math.isfinite(ref["ceiling"]):
        rank_rows.append(("a perfect predictor (expected, given the reference's noise)",
                          _num(ref["ceiling"]), "-", "-"))  # fmt: skip
    seeds = f"{c['seeds_min']}-{c['seeds']}" if c["seeds_min"] != c["seeds"] else c["seeds"]
    std = f"{_num(noise['proxy_seed_std_mean'], 4)} / {_num(noise['proxy_seed_std_max'], 4)}"
    se = [
        f"{_num(noise[f'{t}_val_se'], 4)} ({_count(c[f'{t}_val_images'])} images)"
        for t in (PROXY, REFERENCE)
    ]
    ixe = [_count(c[f"{t}_images_x_epochs"]) for t in (PROXY, REFERENCE)]
    minutes = [f"{c[f'{t}_cpu_seconds'] / 60:.1f}" for t in (PROXY, REFERENCE)]
    facts = [
        ("designs compared", c["designs"]),
        ("proxy seeds per design", seeds),
        ("proxy seed-to-seed std (mean / max over designs)", std),
        ("validation standard error, proxy / reference", " / ".join(se)),
        ("reference seed-to-seed std (pooled)", _num(noise.get("reference_seed_std"), 4)),
        ("images x epochs per run, proxy / reference", " / ".join(ixe)),
        ("training minutes (sum of train_seconds), proxy / reference", " / ".join(minutes)),
    ]
    for name, shown in (("params", "params"), ("macs", "MACs")):
        v = a["versus"][name]
        diff = est(v["tau_difference"], v["ci"], sign=True)
        facts.append((f"proxy tau minus {shown} tau (paired)", f"{diff}: {v['result']}"))
    design_rows = []
    for r in a["per_design"]:
        proxy = (est(r["proxy_mean"], r["proxy_ci"], 3), r["proxy_seeds"], f"{r['proxy_rank']:g}")
        ref, sizes = (
            est(r["reference"], r["reference_ci"], 3),
            (_count(r["params"]), _count(r["macs"])),
        )
        rank = f"{r['reference_rank']:g}"
        design_rows.append((rank, r["design"], r["label"], *proxy, ref, *sizes))
    fam_rows = [
        (name, f["designs"], est(f["gain"], f["gain_ci"], 3, sign=True), est(f["tau"], f["tau_ci"]))
        for name, f in (a.get("families") or {}).items()
    ]
    fam_head = ["family", "designs", f"reference minus proxy [{pct}%]", f"tau within [{pct}%]"]
    fam = f"<h3>By family</h3>{_table(fam_head, fam_rows)}" if len(fam_rows) > 1 else ""
    rank_head = ["ranking by", f"Kendall tau-b [{pct}%]", f"Spearman rho [{pct}%]", f"top-{k}"]
    design_head = ["#", "design", "label", f"proxy accuracy [{pct}%]", "seeds", "proxy rank"]
    design_head += [f"reference accuracy [{pct}%]", "params", "MACs"]
    return (
        '<section id="calibration"><h2>Proxy calibration</h2>'
        f"<p>{_esc(_intro(pct, k))}</p><p><strong>{_esc(a['verdict'])}</strong></p>"
        f"{_table(rank_head, rank_rows)}{_table(('quantity', 'value'), facts)}{fam}"
        f"<h3>Designs (best reference accuracy first)</h3>{_table(design_head, design_rows)}"
        f'<figure><img src="{html.escape(img_src, quote=True)}" alt="proxy accuracy against '
        'reference accuracy, one point per design"><figcaption>Proxy (mean over seeds) against '
        f"reference accuracy; bars are {pct}% intervals, grey dots single seeds, numbers "
        "reference ranks.</figcaption></figure></section>"
    )


def html_page(analysis: dict[str, Any], name: str, img_src: str, about: str = "") -> str:
    """A calibration of sampled designs (no run, so no report.html) as a page of its own;
    ``about`` says what was calibrated (space, budget, proxy)."""
    import time

    from .page import _CSS

    title = html.escape(f"archsearch calibration: {name}")
    when = html.escape(time.strftime("%Y-%m-%d %H:%M:%S"))
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{_CSS}</style></head><body><h1>{title}</h1>"
        f"<p>{_esc(about)}</p><p class='small'>Generated {when}.</p>"
        f"{html_section(analysis, img_src)}</body></html>\n"
    )
