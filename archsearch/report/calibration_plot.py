"""The calibration's figure: proxy accuracy against reference accuracy, one point per design
(coloured by family when the table records it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .calibration_html import PROXY, REFERENCE, _ci, _num
from .plots import _figure, _png, short_count

__all__ = ["scatter_png"]

_COLOURS, _SEEDS = ("#4c72b0", "#dd8452", "#55a868", "#c44e52"), "#8c8c8c"


def scatter_png(analysis: dict[str, Any]) -> bytes:
    """Proxy seed-mean accuracy (x) against reference accuracy (y), one point per design.

    Horizontal bars are the proxy's t interval over seeds, vertical bars the reference's
    validation interval; grey dots are the single proxy seeds; numbers are reference ranks (as
    in :func:`html_section`'s table). The axes frame the points, so the wide t interval of two
    or three seeds may run off the frame. 1210 x 770 px.
    """
    rows, c = analysis["per_design"], analysis["counts"]
    x = np.array([r["proxy_mean"] for r in rows])
    y = np.array([r["reference"] for r in rows])

    def err(center: np.ndarray, key: str) -> np.ndarray:
        lo, hi = np.array([r[key] for r in rows], dtype=float).T
        return np.nan_to_num(np.vstack([center - lo, hi - center]), nan=0.0).clip(min=0.0)

    fig = _figure(11.0, 7.0)
    ax = fig.add_subplot()
    sx = np.array([a for r in rows for a in r.get("proxy_accuracies", [r["proxy_mean"]])])
    sy = np.array([r["reference"] for r in rows for _ in r.get("proxy_accuracies", [0])])
    ax.scatter(sx, sy, s=12, color=_SEEDS, alpha=0.6, zorder=2, label="single proxy seeds")
    xerr, yerr = err(x, "proxy_ci"), err(y, "reference_ci")
    fams = np.array([r.get("family") or "" for r in rows])
    for i, fam in enumerate(sorted(set(fams))):  # one colour per family (when recorded)
        m, color = fams == fam, _COLOURS[i % len(_COLOURS)]
        style: dict[str, Any] = {"fmt": "o", "ms": 6, "color": color, "capsize": 2}
        label = f"{fam} designs" if fam else "designs"
        style |= {"ecolor": color + "80", "label": f"{label} (proxy: mean of seeds)"}
        ax.errorbar(x[m], y[m], xerr=xerr[:, m], yerr=yerr[:, m], **style)
    offset: dict[str, Any] = {"xytext": (4, 4), "textcoords": "offset points", "fontsize": 8}
    for r, px, py in zip(rows, x, y):
        ax.annotate(f"{r['reference_rank']:g}", (px, py), **offset)
    seeds_txt = f"mean of {c['seeds']} seeds" if c["seeds"] > 1 else "1 seed"
    ixe = [c[f"{t}_images_x_epochs"] for t in (PROXY, REFERENCE)]
    ixe_txt = [f", {short_count(v)} images x epochs" if v else "" for v in ixe]
    pct = round(100 * analysis["level"])
    ax.set_xlabel(f"proxy accuracy ({seeds_txt}{ixe_txt[0]}; bars: {pct}% t interval over seeds)")
    ax.set_ylabel(f"reference accuracy ({ixe_txt[1][2:]}; bars: {pct}% validation interval)")
    tau = analysis["rank"]["proxy_mean"]
    ax.set_title(
        f"Proxy vs reference, {c['designs']} designs: Kendall tau-b {_num(tau['tau'])} "
        f"{_ci(tau['tau_ci'])}, Spearman rho {_num(tau['rho'])} (numbers: reference rank)",
        fontsize=10,
    )
    # Frame the points (means and single seeds); a few-seed t interval may run off the frame.
    for lim, v in ((ax.set_xlim, [x, sx]), (ax.set_ylim, [y - yerr[0], y + yerr[1]])):
        lo, hi = float(np.nanmin(np.concatenate(v))), float(np.nanmax(np.concatenate(v)))
        pad = max(0.08 * (hi - lo), 0.005)
        lim(lo - pad, hi + pad)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _png(fig)
