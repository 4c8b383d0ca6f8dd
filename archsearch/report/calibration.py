"""Proxy calibration: how well does the proxy's ranking of designs predict a longer training's?

``archsearch calibrate`` trains a few designs at the *proxy* tier (the search's short schedule)
with several seeds and once at a longer *reference* tier: one row per run in ``calibration.csv``
(:data:`COLUMNS`). :func:`analyse` turns the runs into a noise floor, rank agreement (Kendall's
tau-b, Spearman's rho, top-k overlap, each with a bootstrap interval over designs), the same for
the trivial predictors params and MACs (taken as given: a positive tau means larger models rank
higher) and a verdict; :func:`html_section`, :func:`write_calibration` and
:func:`archsearch.report.calibration_plot.scatter_png` present it. The proxy beats a trivial
predictor only when the bootstrap interval of the paired difference of their taus lies above 0
(:func:`archsearch.stats.compare` against ``(0, 0)``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import stats
from ..errors import ArchsearchError
from ..rundir import write_atomic
from .calibration_html import PROXY, REFERENCE, _ci, _num, html_section

__all__ = ["COLUMNS", "OPTIONAL", "analyse", "html_section", "write_calibration"]

#: The columns of ``calibration.csv``, one row per training run.
COLUMNS = (
    *("design", "label", "tier", "seed", "accuracy", "val_images"),
    *("params", "macs", "train_seconds", "images_x_epochs"),
)
#: Optional columns: ``family`` (a design's macro, hierarchical or columnar; tables written
#: before it existed lack it, and then no family breakdown is given).
OPTIONAL = ("family",)
LEVEL, N_BOOT, TOP_K = 0.95, 2000, 5
_PREDICTORS = {
    "proxy_mean": "proxy, mean of the seeds",
    "params": "params (larger ranks higher)",
    "macs": "MACs (larger ranks higher)",
}


# ------------------------------------------------------------------------------------ analysis
def _check_frame(df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ArchsearchError(
            f"calibration.csv: expected columns {', '.join(COLUMNS)}; missing {', '.join(missing)}"
        )
    frame = df.loc[:, list(COLUMNS)].copy()
    frame["family"] = df["family"].astype(str) if "family" in df.columns else ""
    frame["design"] = frame["design"].astype(str)
    frame["label"] = frame["label"].fillna("").astype(str)
    frame["tier"] = frame["tier"].astype(str).str.strip().str.lower()
    for col in COLUMNS[3:]:
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    bad = frame["accuracy"].notna() & ~frame["accuracy"].between(0.0, 1.0)
    if bad.any():
        value = frame.loc[bad, "accuracy"].iloc[0]
        raise ArchsearchError(f"calibration.csv: expected accuracies in [0, 1], got {value!r}")
    return frame


def _design_row(p: pd.DataFrame, r: pd.DataFrame, level: float) -> dict[str, Any]:
    """One design's proxy runs ``p`` (by seed) and reference runs ``r``, summarised."""
    accs, r_accs = p["accuracy"].to_numpy(float), r["accuracy"].to_numpy(float)
    p_mean, r_acc = float(accs.mean()), float(r_accs.mean())
    p_se = float(stats.accuracy_se(p_mean, float(p["val_images"].mean())))
    r_se = float(stats.accuracy_se(r_acc, float(r["val_images"].sum())))
    p_ci = stats.mean_interval(accs, level, se=p_se)
    r_ci = stats.mean_interval(r_accs, level, se=r_se)  # one run: the validation interval
    both = pd.concat([p, r])
    family = [f for f in both["family"] if f and f != "nan"]
    return {
        "design": str(p["design"].iloc[0]),
        "label": str(both["label"].iloc[0]),
        "family": family[0] if family else "",
        "proxy_mean": p_mean,
        "proxy_ci": [float(v) for v in np.clip(p_ci, 0.0, 1.0)],
        "proxy_seeds": len(accs),
        "proxy_std": float(accs.std(ddof=1)) if len(accs) > 1 else math.nan,
        "proxy_accuracies": [float(v) for v in accs],  # by seed
        "reference": r_acc,
        "reference_ci": [float(v) for v in np.clip(r_ci, 0.0, 1.0)],
        "reference_runs": len(r_accs),
        "params": _median_int(both["params"]),
        "macs": _median_int(both["macs"]),
    }


def _rank_stats(pred: np.ndarray, ref: np.ndarray, k: int, boot: dict[str, Any]) -> dict:
    return {
        "tau": stats.kendall_tau_b(pred, ref),
        "tau_ci": list(stats.bootstrap_ci(stats.kendall_tau_b, pred, ref, **boot)),
        "rho": stats.spearman_rho(pred, ref),
        "rho_ci": list(stats.bootstrap_ci(stats.spearman_rho, pred, ref, **boot)),
        "top_k": stats.top_k_overlap(pred, ref, k),
    }


def _one_seed(mat: np.ndarray, ref: np.ndarray, k: int, boot: dict[str, Any]) -> dict:
    """What one proxy run per design gives (a search trains each design once): each statistic
    of each seed's column of ``mat`` (designs x seeds) against ``ref``, averaged over the seeds
    (the expected value, not the luck of one seed); intervals by the bootstrap over designs."""

    def mean_over_seeds(fn: Any) -> Any:
        return lambda m, r: float(np.mean([fn(m[:, i], r) for i in range(m.shape[1])]))

    tau, rho = mean_over_seeds(stats.kendall_tau_b), mean_over_seeds(stats.spearman_rho)
    overlap = [stats.top_k_overlap(mat[:, i], ref, k) for i in range(mat.shape[1])]
    return {
        "tau": tau(mat, ref),
        "tau_ci": list(stats.bootstrap_ci(tau, mat, ref, **boot)),
        "rho": rho(mat, ref),
        "rho_ci": list(stats.bootstrap_ci(rho, mat, ref, **boot)),
        "top_k": float(np.mean(overlap)),
    }


def _by_family(rows: Sequence[dict[str, Any]], level: float, boot: dict[str, Any]) -> dict:
    """Per family with 2+ designs: what longer training adds over the proxy's mean (``gain``:
    reference minus proxy, mean and t interval over the family's designs; a family the proxy
    underrates gains more) and the proxy's tau within the family (3+ designs)."""
    out = {}
    for fam in sorted({r["family"] for r in rows if r["family"]}):
        mine = [r for r in rows if r["family"] == fam]
        if len(mine) < 2:
            continue
        pm = np.array([r["proxy_mean"] for r in mine])
        rr = np.array([r["reference"] for r in mine])
        gain = rr - pm
        out[fam] = {
            "designs": len(mine),
            "gain": float(gain.mean()),
            "gain_ci": list(stats.mean_interval(gain, level)),
            "tau": math.nan,
            "tau_ci": [math.nan, math.nan],
        }
        if len(mine) >= 3:
            out[fam]["tau"] = stats.kendall_tau_b(pm, rr)
            out[fam]["tau_ci"] = list(stats.bootstrap_ci(stats.kendall_tau_b, pm, rr, **boot))
    return out


def _mean_pair_tau(acc: np.ndarray) -> float:
    """Mean Kendall tau-b over all pairs of columns (seeds) of a designs x seeds matrix."""
    n = acc.shape[1]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    return float(np.mean([stats.kendall_tau_b(acc[:, i], acc[:, j]) for i, j in pairs]))


def _tau_difference(pred: np.ndarray, other: np.ndarray, ref: np.ndarray) -> float:
    return stats.kendall_tau_b(pred, ref) - stats.kendall_tau_b(other, ref)


def _reference_noise(
    ref: np.ndarray, runs: Sequence[pd.DataFrame], boot: dict[str, Any]
) -> dict[str, Any]:
    """The reference's own reproducibility, when its designs were trained with several seeds.

    ``seed_std`` pools the seed variance over designs; ``tau`` is the seed-to-seed tau of the
    reference (over the seeds every design has); ``ceiling`` the tau a perfect predictor can
    expect against the reference's mean (:func:`archsearch.stats.rank_ceiling`, the noise of a
    mean of ``n`` runs being the pooled seed std over ``sqrt(n)``). All ``nan`` with one run.
    """
    out: dict[str, Any] = {"seed_std": math.nan, "tau": math.nan, "tau_ci": [math.nan] * 2}
    out["ceiling"] = math.nan
    by_seed = [r.groupby("seed")["accuracy"].mean() for r in runs]
    common = sorted(set.intersection(*(set(g.index) for g in by_seed)))
    out["seeds"] = [int(v) for v in common]
    var = [float(g.var(ddof=1)) for g in by_seed if len(g) > 1]
    if not var:
        return out
    pooled = math.sqrt(float(np.mean(var)))
    n_runs = np.array([len(g) for g in by_seed], dtype=float)
    out["seed_std"] = pooled
    out["ceiling"] = stats.rank_ceiling(ref, pooled / np.sqrt(n_runs), seed=boot["seed"])
    if len(common) >= 2:
        mat = np.array([g.loc[common].to_numpy(float) for g in by_seed])
        out["tau"] = _mean_pair_tau(mat)
        out["tau_ci"] = list(stats.bootstrap_ci(_mean_pair_tau, mat, **boot))
    return out


def _val_se(rows: pd.DataFrame) -> float:
    rows = rows[rows["val_images"] > 0]
    acc = rows["accuracy"].to_numpy(float)
    return float(np.mean(stats.accuracy_se(acc, rows["val_images"]))) if len(acc) else math.nan


def _median_int(values: pd.Series) -> int | None:
    v = values.dropna()
    return int(v.median()) if not v.empty else None


def analyse(
    df: pd.DataFrame, *, n_boot: int = N_BOOT, level: float = LEVEL, seed: int = 0
) -> dict[str, Any]:
    """Noise floor, rank agreement and a verdict from a ``calibration.csv`` frame.

    Only designs with at least one proxy run and one reference run (with an accuracy) are
    compared; runs without an accuracy (failed) are ignored. Intervals are bootstrap intervals
    over designs (rank statistics), t intervals over seeds (a design's proxy mean, clipped to
    ``[0, 1]``) or binomial validation intervals (a design's single reference run).

    Args:
        df: the runs, with the :data:`COLUMNS`.
        n_boot: bootstrap resamples for every rank interval.
        level: coverage of every interval.
        seed: seed of the bootstrap (the same seed gives the same intervals).

    Returns:
        A JSON-ready dict (``nan`` where a statistic is undefined) with ``counts``, ``noise``,
        ``rank`` (per predictor: ``tau``, ``tau_ci``, ``rho``, ``rho_ci``, ``top_k``),
        ``seed_to_seed``, ``top_k``, ``versus`` (the proxy against each trivial predictor),
        ``verdict`` and ``per_design`` (best reference accuracy first).

    Raises:
        ArchsearchError: a column is missing, an accuracy is outside ``[0, 1]``, or fewer than
            3 designs have both tiers.
    """
    frame = _check_frame(df)
    runs = frame[frame["accuracy"].notna() & frame["tier"].isin([PROXY, REFERENCE])]
    proxy, ref = runs[runs["tier"] == PROXY], runs[runs["tier"] == REFERENCE]
    have_both = set(proxy["design"]) & set(ref["design"])
    both = [d for d in pd.unique(runs["design"]) if d in have_both]
    if len(both) < 3:
        raise ArchsearchError(
            "calibration: expected at least 3 designs with both proxy and reference runs, "
            f"got {len(both)}"
        )
    by_proxy = {d: g.sort_values("seed") for d, g in proxy.groupby("design", sort=False)}
    by_ref = dict(tuple(ref.groupby("design", sort=False)))
    per_design = [_design_row(by_proxy[d], by_ref[d], level) for d in both]
    col = {key: np.array([x[key] for x in per_design], dtype=float) for key in _PREDICTORS}
    pm, rr = col["proxy_mean"], np.array([x["reference"] for x in per_design])
    for x, pr, rk in zip(per_design, stats.rankdata(-pm), stats.rankdata(-rr)):
        x["proxy_rank"], x["reference_rank"] = float(pr), float(rk)
    n, k = len(per_design), min(TOP_K, len(per_design))
    boot: dict[str, Any] = {"n_boot": n_boot, "level": level, "seed": seed}
    rank = {
        key: {"label": label, **_rank_stats(col[key], rr, k, boot)}
        for key, label in _PREDICTORS.items()
    }
    # The seeds every compared design has, as a designs x seeds matrix (else the first seed).
    common = sorted(set.intersection(*(set(by_proxy[d]["seed"]) for d in both)))
    by_seed = [by_proxy[d].groupby("seed")["accuracy"].mean() for d in both]
    mat = np.array([(g.loc[common] if common else g.iloc[:1]).to_numpy(float) for g in by_seed])
    label = "proxy, one seed (mean over the seeds)" if mat.shape[1] > 1 else "proxy, one seed"
    one = {"label": label, **_one_seed(mat, rr, k, boot)}
    rank = {"proxy_mean": rank.pop("proxy_mean"), "proxy_one_seed": one, **rank}
    s2s: dict[str, Any] = {"tau": math.nan, "tau_ci": [math.nan, math.nan]}
    if len(common) >= 2:
        ci = stats.bootstrap_ci(_mean_pair_tau, mat, **boot)
        s2s = {"tau": _mean_pair_tau(mat), "tau_ci": list(ci)}
    s2s |= {"seeds": [int(v) for v in common], "pairs": len(common) * (len(common) - 1) // 2}
    reference_noise = _reference_noise(rr, [by_ref[d] for d in both], boot)
    versus = {}
    for key in ("params", "macs"):
        ci = stats.bootstrap_ci(_tau_difference, pm, col[key], rr, **boot)
        diff = _tau_difference(pm, col[key], rr)
        versus[key] = {"tau_difference": diff, "ci": list(ci), "result": stats.compare(ci, (0, 0))}
    cp, cr = proxy[proxy["design"].isin(both)], ref[ref["design"].isin(both)]
    seed_std = [x["proxy_std"] for x in per_design if x["proxy_seeds"] > 1]
    seeds = [x["proxy_seeds"] for x in per_design]
    counts: dict[str, Any] = {"designs": n, "seeds": max(seeds), "seeds_min": min(seeds)}
    counts["designs_incomplete"] = int(pd.unique(runs["design"]).size - n)
    counts["failed_runs"] = int(frame["accuracy"].isna().sum())
    for tier, rows, every in ((PROXY, cp, proxy), (REFERENCE, cr, ref)):
        counts[f"{tier}_runs"] = len(rows)
        counts[f"{tier}_images_x_epochs"] = _median_int(rows["images_x_epochs"])
        counts[f"{tier}_val_images"] = _median_int(rows["val_images"])
        counts[f"{tier}_cpu_seconds"] = float(every["train_seconds"].sum())
    noise = {
        "proxy_seed_std_mean": float(np.mean(seed_std)) if seed_std else math.nan,
        "proxy_seed_std_max": float(np.max(seed_std)) if seed_std else math.nan,
        "proxy_val_se": _val_se(cp),
        "reference_val_se": _val_se(cr),
        "reference_seed_std": reference_noise.pop("seed_std"),
    }
    analysis: dict[str, Any] = {
        "level": level,
        "n_boot": n_boot,
        "counts": counts,
        "noise": noise,
        "rank": rank,
        "seed_to_seed": s2s,
        "reference": reference_noise,
        "top_k": {"k": k, "overlap": rank["proxy_mean"]["top_k"]},
        "versus": versus,
        "families": _by_family(per_design, level, boot),
        "per_design": sorted(per_design, key=lambda x: (x["reference_rank"], x["design"])),
    }
    analysis["verdict"] = _verdict(analysis)
    return analysis


def _verdict(a: dict[str, Any]) -> str:
    c, r = a["counts"], a["rank"]["proxy_mean"]
    pct = round(100 * a["level"])
    seeds = f"mean of {c['seeds']} seeds" if c["seeds"] > 1 else "one seed"
    text = (
        f"Over {c['designs']} designs, the proxy ({seeds}) ranks designs like the reference "
        f"with Kendall tau-b {_num(r['tau'])} ({pct}% interval {_ci(r['tau_ci'])})"
    )
    if not math.isfinite(r["tau"]):
        return text + "; the statistic is undefined (constant accuracies)."
    if r["tau_ci"][0] <= 0 <= r["tau_ci"][1]:
        text += ", not distinguishable from no agreement at this number of designs"
    parts = []
    for name, shown in (("params", "params"), ("macs", "MACs")):
        v = a["versus"][name]
        tau = a["rank"][name]["tau"]
        word = {"better": "beats", "worse": "is beaten by", "tied": "ties with"}[v["result"]]
        parts.append(
            f"it {word} ranking by {shown} (tau {_num(tau)}; paired difference "
            f"{_num(v['tau_difference'], sign=True)}, {_ci(v['ci'], sign=True)})"
        )
    text += "; " + " and ".join(parts) + "."
    s = a["seed_to_seed"]
    if math.isfinite(s["tau"]):
        text += (
            f" Two proxy seeds agree with each other to tau {_num(s['tau'])} {_ci(s['tau_ci'])}."
        )
    text += _family_sentence(a.get("families") or {})
    ref = a.get("reference") or {}
    if ref.get("ceiling") is not None and math.isfinite(ref["ceiling"]):
        text += (
            f" The reference is noisy too (seed std {_num(a['noise']['reference_seed_std'], 4)}):"
            f" a perfect predictor would reach about tau {_num(ref['ceiling'])} against it."
        )
    else:
        text += " The reference was trained once per design, so its own noise is not measured."
    return text


def _family_sentence(fams: dict[str, Any]) -> str:
    """Whether the proxy favours a family: their gains from longer training, compared by their
    intervals; the proxy's tau within each family."""
    if len(fams) < 2:
        return ""
    (a, fa), (b, fb) = sorted(fams.items(), key=lambda kv: -kv[1]["gain"])[:2]
    gains = " and ".join(
        f"{_num(f['gain'], 3, sign=True)} {_ci(f['gain_ci'], 3, sign=True)} for {n} designs"
        for n, f in ((a, fa), (b, fb))
    )
    if stats.compare(fa["gain_ci"], fb["gain_ci"]) == "better":
        text = f" The proxy underrates {a} designs against {b} ones: longer training adds {gains}"
        text += ", so compare across families with care"
    else:
        text = f" Longer training adds {gains} (no family is favoured at this number of designs)"
    within = [f"{n} {_num(f['tau'])} {_ci(f['tau_ci'])}" for n, f in fams.items()]
    within = [w for w, f in zip(within, fams.values()) if math.isfinite(f["tau"])]
    return text + (f"; within a family the proxy's tau is {', '.join(within)}." if within else ".")


# ------------------------------------------------------------------------------------ files
def _jsonable(value: Any) -> Any:
    """``nan``/``inf`` become ``None``; numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_calibration(run_dir: Path, df: pd.DataFrame, page: str | None = None) -> dict[str, Path]:
    """Analyse ``df``; write ``calibration.json`` and ``calibration.png`` into ``run_dir``, and
    with ``page`` (what was calibrated) ``calibration.html``, for a calibration of sampled
    designs, which no run report holds.

    Returns ``{"json": Path, "png": Path}`` (and ``"html"``); raises :class:`ArchsearchError` as
    :func:`analyse`.
    """
    out = Path(run_dir)
    analysis = analyse(df)
    text = json.dumps(_jsonable(analysis), indent=1, allow_nan=False) + "\n"
    paths = {"json": out / "calibration.json", "png": out / "calibration.png"}
    from .calibration_plot import scatter_png

    write_atomic(paths["png"], scatter_png(analysis))
    write_atomic(paths["json"], text.encode())
    if page is not None:
        from .calibration_html import html_page

        paths["html"] = out / "calibration.html"
        html = html_page(analysis, out.resolve().name, paths["png"].name, page)
        write_atomic(paths["html"], html.encode("utf-8"))
    return paths
