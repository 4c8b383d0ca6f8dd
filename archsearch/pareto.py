"""Pareto analysis of search results held in plain pandas tables (one row per trial).

Objectives are columns with a direction ("maximize" or "minimize"). Array functions take an
``(n_rows, n_objectives)`` array plus one direction per column; rows containing NaN are never
on a front. Table functions treat a row as a candidate only when it is feasible, its ``state``
(if that column exists) is ``"COMPLETE"`` and all its objective values are present.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = [
    "Objective",
    "parse_objectives",
    "non_dominated_sort",
    "crowding_distance",
    "hypervolume",
    "hypervolume_history",
    "knee_point",
    "pareto_table",
    "front",
]

_DIRECTIONS = ("maximize", "minimize")
_SHORT_NAMES = {
    "accuracy": "accuracy_mean",
    "params": "params",
    "macs": "macs",
    "latency": "latency_ms",
}
_REFERENCE = 1.1


@dataclass(frozen=True)
class Objective:
    """One objective: a table column and whether larger or smaller values are better."""

    column: str
    direction: str

    def __post_init__(self) -> None:
        if self.direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {self.direction!r}")


def parse_objectives(columns: list[str]) -> list[Objective]:
    """Turn short objective names into objectives.

    ``accuracy`` maps to the ``accuracy_mean`` column (maximised: a design's proxy accuracy,
    averaged over its seeds, see :func:`archsearch.records.aggregate_seeds`); ``params``,
    ``macs`` and ``latency`` (column ``latency_ms``) are minimised. Full column names are
    accepted too.

    Args:
        columns: Short names or column names, in the order the objectives should have.

    Returns:
        One objective per name.

    Raises:
        ValueError: A name is not known.
    """
    lookup = {**_SHORT_NAMES, **{col: col for col in [*_SHORT_NAMES.values(), "proxy_accuracy"]}}
    out = []
    for name in columns:
        if name not in lookup:
            raise ValueError(f"objective name must be one of {sorted(lookup)}, got {name!r}")
        column = lookup[name]
        maximize = column in ("accuracy_mean", "proxy_accuracy")
        out.append(Objective(column, "maximize" if maximize else "minimize"))
    return out


def _as_loss(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Validate shapes and directions; return a float copy where smaller is always better."""
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != len(directions):
        raise ValueError(
            f"values must have shape (n_rows, {len(directions)}) to match the directions, "
            f"got shape {arr.shape}"
        )
    for direction in directions:
        if direction not in _DIRECTIONS:
            raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return arr * sign


def non_dominated_sort(values: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Rank rows by Pareto front.

    A row's rank is the length of the longest chain of rows dominating it, which equals the
    index of its front when fronts are peeled off one after another. Rows are visited in
    lexicographic order of their losses, so every dominator of a row is visited before it;
    the cost is O(n^2 * m) comparisons in the worst case, vectorised per row.

    Args:
        values: Objective values, one row per trial and one column per objective.
        directions: "maximize" or "minimize" for each column.

    Returns:
        Integer ranks: 0 for the Pareto front, 1 for the front after removing it, and so on;
        -1 for rows containing NaN.
    """
    loss = _as_loss(values, directions)
    ranks = np.full(len(loss), -1, dtype=int)
    valid = np.flatnonzero(~np.isnan(loss).any(axis=1))
    if valid.size == 0:
        return ranks
    pts = loss[valid]
    order = np.lexsort(pts.T[::-1])
    pts = pts[order]
    sorted_ranks = np.zeros(len(pts), dtype=int)
    for i in range(1, len(pts)):
        before = pts[:i]
        dominated_by = (before <= pts[i]).all(axis=1) & (before < pts[i]).any(axis=1)
        if dominated_by.any():
            sorted_ranks[i] = sorted_ranks[:i][dominated_by].max() + 1
    ranks[valid[order]] = sorted_ranks
    return ranks


def crowding_distance(
    values: np.ndarray, directions: Sequence[str], ranks: np.ndarray
) -> np.ndarray:
    """NSGA-II crowding distance of every row within its own front.

    For each objective, a front's rows are sorted and each interior row gets the gap between
    its neighbours divided by the front's range in that objective; the sum over objectives is
    the distance. The rows at either end of any objective get ``inf``.

    Args:
        values: Objective values, one row per trial and one column per objective.
        directions: "maximize" or "minimize" for each column.
        ranks: Front ranks as returned by :func:`non_dominated_sort`.

    Returns:
        Crowding distance per row; NaN for rows with a negative rank.
    """
    loss = _as_loss(values, directions)
    ranks = np.asarray(ranks)
    if ranks.shape != (len(loss),):
        raise ValueError(f"ranks must have shape ({len(loss)},), got shape {ranks.shape}")
    dist = np.full(len(loss), np.nan)
    for rank in np.unique(ranks[ranks >= 0]):
        members = np.flatnonzero(ranks == rank)
        total = np.zeros(len(members))
        for col in loss[members].T:
            order = np.argsort(col, kind="stable")
            span = col[order[-1]] - col[order[0]]
            total[order[[0, -1]]] = np.inf
            if len(members) > 2 and span > 0:
                total[order[1:-1]] += (col[order[2:]] - col[order[:-2]]) / span
        dist[members] = total
    return dist


def _normalise(
    values: np.ndarray, directions: Sequence[str], bounds: Sequence[tuple[float, float]] | None
) -> np.ndarray:
    """Map each objective to 0 (best bound) .. 1 (worst bound); NaN rows are dropped."""
    arr = np.asarray(values, dtype=float)
    _as_loss(arr, directions)
    arr = arr[~np.isnan(arr).any(axis=1)]
    if len(arr) == 0:
        return arr
    if bounds is None:
        best = np.where(np.array(directions) == "maximize", arr.max(0), arr.min(0))
        worst = np.where(np.array(directions) == "maximize", arr.min(0), arr.max(0))
    else:
        if len(bounds) != len(directions):
            raise ValueError(
                f"bounds must have {len(directions)} (best, worst) pairs, got {bounds}"
            )
        best, worst = np.asarray(bounds, dtype=float).T
    span = np.where(worst == best, 1.0, worst - best)
    return (arr - best) / span


def _hv_min(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact volume dominated by ``points`` (minimisation) and bounded by ``ref``.

    Two objectives use a sweep over the first coordinate; more objectives are cut into slabs
    along the last coordinate (HSO slicing), each slab's cross-section being the hypervolume
    of the points seen so far in one dimension fewer.
    """
    if len(points) == 0:
        return 0.0
    if points.shape[1] == 1:
        return float(ref[0] - points[:, 0].min())
    if points.shape[1] == 2:
        pts = points[np.lexsort((points[:, 1], points[:, 0]))]
        widths = np.diff(np.append(pts[:, 0], ref[0]))
        return float(np.sum(widths * (ref[1] - np.minimum.accumulate(pts[:, 1]))))
    pts = points[np.argsort(points[:, -1], kind="stable")]
    depths = np.diff(np.append(pts[:, -1], ref[-1]))
    total = 0.0
    for i in np.flatnonzero(depths > 0):
        head = pts[: i + 1, :-1]
        if head.shape[1] > 2:  # the 2-D sweep copes with dominated points itself
            head = head[non_dominated_sort(head, ["minimize"] * head.shape[1]) == 0]
        total += _hv_min(head, ref[:-1]) * depths[i]
    return total


def hypervolume(
    values: np.ndarray,
    directions: Sequence[str],
    reference: Mapping[int, float] | None = None,
    bounds: Sequence[tuple[float, float]] | None = None,
) -> float:
    """Exact hypervolume dominated by the rows, in normalised objective space.

    Every objective is normalised so that the best observed value is 0 and the worst is 1;
    reference point 1.1 in every dimension. Rows with NaN and rows not strictly better than the
    reference in every objective contribute nothing.

    Args:
        values: Objective values, one row per trial and one column per objective.
        directions: "maximize" or "minimize" for each column.
        reference: Optional normalised reference coordinates by objective index, replacing 1.1
            for those objectives.
        bounds: Optional (best, worst) raw values per objective used for the normalisation
            instead of the observed extremes, e.g. to compare several sets on one scale.

    Returns:
        The hypervolume; 0.0 when no row qualifies.
    """
    norm = _normalise(values, directions, bounds)
    ref = np.full(len(directions), _REFERENCE)
    for index, coord in (reference or {}).items():
        if not 0 <= index < len(ref):
            raise ValueError(f"reference keys must be objective indices < {len(ref)}, got {index}")
        ref[index] = coord
    norm = norm[(norm < ref).all(axis=1)]
    if len(norm) == 0:
        return 0.0
    norm = np.unique(norm[non_dominated_sort(norm, ["minimize"] * len(ref)) == 0], axis=0)
    return _hv_min(norm, ref)


def knee_point(values: np.ndarray, directions: Sequence[str]) -> int:
    """Index of the knee of the Pareto front.

    The front (rank 0) is normalised so its best value per objective is 0 and its worst is 1.
    The hyperplane through the extreme points (the best point in each objective) is built, and
    the knee is the front point furthest from it on the side of the ideal point (the origin).
    If the hyperplane is undefined or no point lies strictly on the ideal side (e.g. a front of
    one or two points, or a linear front), the knee is the front point closest to the ideal
    point in Euclidean distance. Ties go to the earliest row.

    Args:
        values: Objective values, one row per trial and one column per objective.
        directions: "maximize" or "minimize" for each column.

    Returns:
        Row index of the knee in ``values``.

    Raises:
        ValueError: No row is free of NaN, so there is no front.
    """
    ranks = non_dominated_sort(values, directions)
    members = np.flatnonzero(ranks == 0)
    if members.size == 0:
        raise ValueError("knee_point needs at least one row without NaN, got none")
    loss = _as_loss(values, directions)[members]
    span = loss.max(0) - loss.min(0)
    norm = (loss - loss.min(0)) / np.where(span > 0, span, 1.0)
    extremes = norm[[np.lexsort((norm.sum(1), norm[:, k]))[0] for k in range(norm.shape[1])]]
    if np.linalg.matrix_rank(extremes) == norm.shape[1]:
        normal = np.linalg.solve(extremes, np.ones(norm.shape[1]))
        signed = (1.0 - norm @ normal) / np.linalg.norm(normal)
        if signed.max() > 1e-12:
            return int(members[np.argmax(signed)])
    return int(members[np.argmin(np.linalg.norm(norm, axis=1))])


def _resolve(objectives: Sequence[Objective | str]) -> list[Objective]:
    if not objectives:
        raise ValueError("at least one objective is required, got none")
    return [o if isinstance(o, Objective) else parse_objectives([o])[0] for o in objectives]


def _candidates(
    df: pd.DataFrame, objectives: list[Objective], feasible_col: str | None
) -> np.ndarray:
    """Objective values as floats, with NaN in every row that may not be on a front."""
    cols = [o.column for o in objectives]
    missing = [c for c in [*cols, feasible_col] if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"table must have columns {missing} (pass feasible_col=None to skip)")
    try:
        values = df[cols].to_numpy(dtype=float, na_value=np.nan, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"objective columns {cols} must be numeric, got: {exc}") from None
    ok = np.ones(len(df), dtype=bool)
    if feasible_col is not None:
        ok &= np.array([bool(v) and not pd.isna(v) for v in df[feasible_col]], dtype=bool)
    if "state" in df.columns:
        ok &= np.array([getattr(s, "name", s) == "COMPLETE" for s in df["state"]], dtype=bool)
    if "reused_from" in df.columns:  # a repeat of an evaluated architecture is no second point
        ok &= df["reused_from"].isna().to_numpy(dtype=bool)
    values[~ok] = np.nan
    return values


def pareto_table(
    df: pd.DataFrame, objectives: Sequence[Objective | str], feasible_col: str | None = "feasible"
) -> pd.DataFrame:
    """Annotate a results table with Pareto rank, crowding distance and the knee.

    Args:
        df: One row per trial.
        objectives: Objectives, or short names understood by :func:`parse_objectives`.
        feasible_col: Boolean column marking feasible rows, or None if every row is feasible.

    Returns:
        A copy of ``df`` with ``pareto_rank`` (-1 for infeasible rows, rows whose ``state`` is
        not "COMPLETE" and rows with missing objective values), ``crowding`` (NaN where the rank
        is -1) and ``knee`` (True on exactly one front row when the front is non-empty).
    """
    objs = _resolve(objectives)
    directions = [o.direction for o in objs]
    values = _candidates(df, objs, feasible_col)
    ranks = non_dominated_sort(values, directions)
    out = df.copy()
    out["pareto_rank"] = ranks
    out["crowding"] = crowding_distance(values, directions, ranks)
    knee = np.zeros(len(df), dtype=bool)
    if (ranks == 0).any():
        knee[knee_point(values, directions)] = True
    out["knee"] = knee
    return out


def front(
    df: pd.DataFrame, objectives: Sequence[Objective | str], feasible_col: str | None = "feasible"
) -> pd.DataFrame:
    """Rows on the Pareto front, best first in the first objective.

    Args:
        df: One row per trial.
        objectives: Objectives, or short names understood by :func:`parse_objectives`.
        feasible_col: Boolean column marking feasible rows, or None if every row is feasible.

    Returns:
        The rank-0 rows of :func:`pareto_table`, with its added columns.
    """
    first = _resolve(objectives)[0]
    table = pareto_table(df, objectives, feasible_col)
    table = table[table["pareto_rank"] == 0]
    return table.sort_values(first.column, ascending=first.direction == "minimize", kind="stable")


def hypervolume_history(
    df: pd.DataFrame, objectives: Sequence[Objective | str], feasible_col: str | None = "feasible"
) -> pd.Series:
    """Hypervolume reached after each trial, in trial order.

    Normalisation bounds are fixed from all feasible rows (see :func:`hypervolume`), so the
    curve is monotone non-decreasing and its last value is the hypervolume of the whole table.

    Args:
        df: One row per trial, with a ``trial`` column giving the order.
        objectives: Objectives, or short names understood by :func:`parse_objectives`.
        feasible_col: Boolean column marking feasible rows, or None if every row is feasible.

    Returns:
        Hypervolume of the feasible rows among the first i trials, indexed by trial number.
    """
    if "trial" not in df.columns:
        raise ValueError(f"table must have a 'trial' column, got columns {list(df.columns)}")
    objs = _resolve(objectives)
    directions = [o.direction for o in objs]
    ordered = df.sort_values("trial", kind="mergesort")
    values = _candidates(ordered, objs, feasible_col)
    usable = ~np.isnan(values).any(axis=1)
    history = np.zeros(len(ordered))
    if usable.any():
        sign = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
        loss = values[usable] * sign
        bounds = list(zip(loss.min(0) * sign, loss.max(0) * sign))
        kept = values[:0]  # the running front
        for i in np.flatnonzero(usable):
            kept = np.unique(np.vstack([kept, values[i]]), axis=0)
            kept = kept[non_dominated_sort(kept, directions) == 0]
            history[i] = hypervolume(kept, directions, bounds=bounds)
    # Rows that add nothing keep the previous value; this also absorbs rounding differences.
    history = np.maximum.accumulate(history)
    return pd.Series(history, index=ordered["trial"].to_numpy(), name="hypervolume")
