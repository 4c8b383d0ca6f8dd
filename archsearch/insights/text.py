"""The insights as table rows, shared by the command line and the report's HTML section."""

from __future__ import annotations

import math
from typing import Any

from ..cost.budget import format_count

__all__ = [
    "effect_text",
    "method_text",
    "claim_rows",
    "dimension_rows",
    "reasons",
    "headline",
    "table",
    "CLAIM_HEADER",
    "DIMENSION_HEADER",
]

CLAIM_HEADER = ["claim", "part", "effect [95% interval]", "MACs", "n", "method", "verdict"]
DIMENSION_HEADER = ["dimension", "option vs reference", "accuracy [95% interval]", "MACs"]
DIMENSION_HEADER += ["n", "method", "verdict"]


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _one(v: float, unit: str) -> str:
    if unit.startswith("relative"):
        return f"{100 * v:+.1f}%"
    if unit.startswith("MACs"):
        return ("+" if v >= 0 else "-") + format_count(abs(v))
    return f"{v:+.3f}"


def effect_text(d: dict[str, Any] | None) -> str:
    """``+0.012 [-0.004, +0.028]``; ``n/a`` without an estimate; a missing interval said so."""
    if not d or not _finite(d.get("effect")):
        return "n/a"
    unit = str(d.get("unit", "accuracy"))
    lo, hi = (d.get("ci") or [None, None])[:2]
    text = _one(float(d["effect"]), unit)
    if _finite(lo) and _finite(hi):
        return f"{text} [{_one(float(lo), unit)}, {_one(float(hi), unit)}]"
    return f"{text} (no interval)"


def method_text(d: dict[str, Any]) -> str:
    """The method in a word or two: ``3 pairs``, ``regression``, ``hint``, ``exact``..."""
    if not _finite(d.get("effect")):
        return "-"
    method = str(d.get("method") or "")
    if method.startswith("matched pairs"):
        k = int(d.get("pairs") or 0)
        return f"{k} pair{'s' if k != 1 else ''}"
    for prefix, short in (
        ("regression on every choice", "regression"),
        ("hint", "hint (equal params)"),
        ("exact", "exact (cost model)"),
        ("saved weights", "saved weights"),
    ):
        if method.startswith(prefix):
            return short
    return method.split(" (")[0]


def claim_rows(analysis: dict[str, Any]) -> list[list[str]]:
    """One row per part of every claim; the claim's own verdict next to its id."""
    rows = []
    for c in analysis["claims"]:
        for k, p in enumerate(c["parts"]):
            rows.append(
                [
                    f"{c['id']}: {c['verdict']}" if k == 0 else "",
                    p["name"],
                    effect_text(p),
                    effect_text(p.get("macs")) if p.get("macs") else "-",
                    str(p.get("n", 0)),
                    method_text(p),
                    p["verdict"],
                ]
            )
    return rows


def dimension_rows(analysis: dict[str, Any]) -> list[list[str]]:
    """One row per option of every dimension, against the dimension's reference option."""
    rows = []
    for d in analysis["dimensions"]:
        acc = d["accuracy"]
        method = method_text(acc)
        rows.append(
            [
                d["dimension"],
                f"{d['option']} vs {d['reference']}",
                effect_text({**acc, "unit": "accuracy"}),
                effect_text(d["macs"]),
                f"{d['n_option']}+{d['n_reference']}",
                method if method != "-" else str(acc.get("reason", "")),
                d["verdict"],
            ]
        )
    return rows


def reasons(analysis: dict[str, Any]) -> list[str]:
    """``claim / part: why`` for every part without an interval or without a verdict."""
    out = []
    for c in analysis["claims"]:
        for p in c["parts"]:
            if p.get("reason"):
                out.append(f"{c['id']} / {p['name']}: {p['reason']}")
    return out


def headline(analysis: dict[str, Any]) -> str:
    """One sentence: designs, seeds and the noise the intervals count."""
    d = analysis["designs"]
    pct = round(100 * analysis["level"])
    repeats = d["with_seed_repeats"]
    seeds = f", {repeats} with up to {d['seeds_max']} seeds" if repeats else ""
    noise = (
        f"seed-to-seed std {d['seed_std']:.4f} from {d['seed_std_source']}"
        if _finite(d.get("seed_std"))
        else "seed-to-seed noise unknown"
    )
    val = f"{d['val_se_mean']:.4f}" if _finite(d.get("val_se_mean")) else "n/a"
    return (
        f"{d['designs']} trained designs ({d['searched']} searched{seeds}); {pct}% intervals; "
        f"{noise}; validation standard error {val} on average; 'at least as good' allows "
        f"{analysis['margin']:.3f} accuracy."
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain-text table, every column left-aligned."""
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
