"""Tests for archsearch.pareto: sorting, crowding, hypervolume, knee and table helpers."""

from __future__ import annotations

import itertools
import time

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution

from archsearch.pareto import (
    Objective,
    crowding_distance,
    front,
    hypervolume,
    hypervolume_history,
    knee_point,
    non_dominated_sort,
    pareto_table,
    parse_objectives,
)

ACC_MACS = [Objective("proxy_accuracy", "maximize"), Objective("macs", "minimize")]


def _loss(values: np.ndarray, directions: list[str]) -> np.ndarray:
    return values * np.array([-1.0 if d == "maximize" else 1.0 for d in directions])


def _brute_ranks(values: np.ndarray, directions: list[str]) -> np.ndarray:
    """Peel fronts using the textbook dominance definition."""
    loss = _loss(values, directions)
    ranks = np.full(len(loss), -1)
    remaining = [i for i in range(len(loss)) if not np.isnan(loss[i]).any()]
    rank = 0
    while remaining:
        on_front = [
            i
            for i in remaining
            if not any(np.all(loss[j] <= loss[i]) and np.any(loss[j] < loss[i]) for j in remaining)
        ]
        ranks[on_front] = rank
        remaining = [i for i in remaining if i not in on_front]
        rank += 1
    return ranks


def _grid_volume(points: np.ndarray, ref: np.ndarray) -> float:
    """Exact dominated volume (minimisation): sum the compressed-grid cells that are dominated."""
    points = points[(points < ref).all(axis=1)]
    if len(points) == 0:
        return 0.0
    axes = [np.unique(np.append(points[:, k], ref[k])) for k in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        lower = np.array([axes[k][c] for k, c in enumerate(cell)])
        if (points <= lower).all(axis=1).any():
            total += float(np.prod([axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell)]))
    return total


@pytest.mark.parametrize("n_obj", [2, 3])
@pytest.mark.parametrize("n_rows", [1, 2, 9, 40, 120])
def test_non_dominated_sort_matches_brute_force(n_rows: int, n_obj: int) -> None:
    rng = np.random.default_rng(1000 * n_obj + n_rows)
    directions = ["maximize", "minimize", "minimize"][:n_obj]
    values = rng.integers(0, 6, size=(n_rows, n_obj)).astype(float)  # many ties
    if n_rows > 2:
        values[: n_rows // 4] = values[n_rows // 2 : n_rows // 2 + n_rows // 4]  # duplicate rows
        values[rng.integers(n_rows), rng.integers(n_obj)] = np.nan
    ranks = non_dominated_sort(values, directions)
    assert ranks.dtype.kind == "i"
    np.testing.assert_array_equal(ranks, _brute_ranks(values, directions))


def test_non_dominated_sort_edge_cases() -> None:
    assert non_dominated_sort(np.empty((0, 2)), ["minimize", "minimize"]).shape == (0,)
    all_nan = np.full((3, 2), np.nan)
    np.testing.assert_array_equal(non_dominated_sort(all_nan, ["minimize"] * 2), [-1, -1, -1])
    with pytest.raises(ValueError, match="shape"):
        non_dominated_sort(np.zeros((3, 2)), ["minimize"])
    with pytest.raises(ValueError, match="direction"):
        non_dominated_sort(np.zeros((3, 1)), ["smaller"])


def test_non_dominated_sort_is_fast_enough() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((3000, 3))
    start = time.perf_counter()
    ranks = non_dominated_sort(values, ["maximize", "minimize", "minimize"])
    assert time.perf_counter() - start < 5.0
    assert ranks.min() == 0


def test_crowding_distance() -> None:
    values = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0], [5.0, 5.0], [np.nan, 1]])
    directions = ["minimize", "minimize"]
    ranks = non_dominated_sort(values, directions)
    np.testing.assert_array_equal(ranks, [0, 0, 0, 0, 1, -1])
    dist = crowding_distance(values, directions, ranks)
    assert np.isinf(dist[[0, 3, 4]]).all()
    np.testing.assert_allclose(dist[1:3], [2 / 4 + 3 / 4, 3 / 4 + 2 / 4])
    assert np.isnan(dist[5])


@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_2d_matches_union_of_rectangles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 8, size=(int(rng.integers(1, 15)), 2)) / 7.0
    # Bounds (0, 1) for minimise and (1, 0) for maximise make normalisation explicit.
    directions = ["maximize", "minimize"]
    got = hypervolume(values, directions, bounds=[(1.0, 0.0), (0.0, 1.0)])
    normalised = np.column_stack([1.0 - values[:, 0], values[:, 1]])
    assert got == pytest.approx(_grid_volume(normalised, np.full(2, 1.1)), abs=1e-12)


@pytest.mark.parametrize(("n_obj", "seed"), [(3, s) for s in range(5)] + [(4, 0), (4, 1)])
def test_hypervolume_nd_matches_grid(n_obj: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_rows = 10 if n_obj == 3 else 7
    values = rng.integers(0, 5, size=(n_rows, n_obj)).astype(float)
    values[0] = values[1]  # duplicate row
    directions = ["minimize", "maximize", "minimize", "maximize"][:n_obj]
    loss = _loss(values, directions)
    span = loss.max(0) - loss.min(0)
    normalised = (loss - loss.min(0)) / np.where(span > 0, span, 1.0)
    expected = _grid_volume(normalised, np.full(n_obj, 1.1))
    assert hypervolume(values, directions) == pytest.approx(expected, rel=1e-12)


def test_hypervolume_known_values_and_reference() -> None:
    directions = ["minimize", "minimize"]
    assert hypervolume(np.array([[0.0, 0.0]]), directions) == pytest.approx(1.21)
    two = np.array([[0.0, 1.0], [1.0, 0.0], [np.nan, 0.5]])
    assert hypervolume(two, directions) == pytest.approx(0.21)
    assert hypervolume(two, directions, reference={0: 2.0, 1: 2.0}) == pytest.approx(3.0)
    assert hypervolume(np.empty((0, 2)), directions) == 0.0
    assert hypervolume(np.array([[5.0, 5.0]]), directions, bounds=[(0, 1), (0, 1)]) == 0.0


def test_hypervolume_large_front_is_fast() -> None:
    rng = np.random.default_rng(3)
    points = rng.random((200, 3))
    points /= np.linalg.norm(points, axis=1, keepdims=True)  # all on one (concave) front
    start = time.perf_counter()
    value = hypervolume(points, ["minimize"] * 3)
    assert time.perf_counter() - start < 3.0
    assert 0.0 < value < 1.1**3


def _optuna_frame(study: optuna.Study, feasible: list[bool]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "trial": [t.number for t in study.trials],
            "proxy_accuracy": [t.values[0] for t in study.trials],
            "macs": [t.values[1] for t in study.trials],
            "feasible": feasible,
            "state": [t.state.name for t in study.trials],
        }
    )


def _random_study(seed: int, constrained: bool) -> tuple[optuna.Study, list[bool]]:
    rng = np.random.default_rng(seed)
    study = optuna.create_study(directions=["maximize", "minimize"])
    feasible = []
    rows: list[tuple[float, float]] = []
    for i in range(40):
        if i % 7 == 6:
            acc, macs = rows[int(rng.integers(len(rows)))]  # exact duplicate of an earlier trial
        else:
            acc, macs = float(rng.integers(0, 20)) / 20, float(rng.integers(1, 30)) * 1e6
        rows.append((acc, macs))
        violation = float(rng.normal()) if constrained else -1.0
        system_attrs = {"constraints": [violation]} if constrained else None
        study.add_trial(
            optuna.trial.create_trial(
                params={"x": acc},
                distributions={"x": FloatDistribution(0.0, 1.0)},
                values=[acc, macs],
                system_attrs=system_attrs,
            )
        )
        feasible.append(violation <= 0.0)
    return study, feasible


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_front_matches_optuna_best_trials(seed: int, constrained: bool) -> None:
    study, feasible = _random_study(seed, constrained)
    assert (
        all(len(t.constraints) == 1 for t in study.trials)
        if constrained
        else all(not t.constraints for t in study.trials)
    )
    table = pareto_table(_optuna_frame(study, feasible), ACC_MACS)
    ours = set(table.loc[table["pareto_rank"] == 0, "trial"])
    assert ours == {t.number for t in study.best_trials}
    assert not table.loc[~table["feasible"], "pareto_rank"].ge(0).any()


def test_knee_point_on_convex_front() -> None:
    # Front (macs, error): knee at (0.2, 0.2); the last two rows are dominated.
    values = np.array(
        [[0.0, 1.0], [0.1, 0.6], [0.2, 0.2], [0.6, 0.1], [1.0, 0.0], [0.5, 0.5], [0.3, 0.3]]
    )
    assert knee_point(values, ["minimize", "minimize"]) == 2
    # Same front expressed as accuracy (maximise) and MACs (minimise), scaled.
    table = np.column_stack([1.0 - values[:, 1], values[:, 0] * 1e9])
    assert knee_point(table, ["maximize", "minimize"]) == 2


def test_knee_point_three_objectives_and_fallbacks() -> None:
    values = np.array(
        [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.2, 0.2, 0.2], [0.6, 0.5, 0.1]]
    )
    assert knee_point(values, ["minimize"] * 3) == 3
    line = np.array([[0.0, 1.0], [0.5, 0.5], [1.0, 0.0], [0.4, 0.8]])  # linear front
    assert knee_point(line, ["minimize", "minimize"]) == 1
    assert knee_point(np.array([[np.nan, 0.0], [3.0, 4.0]]), ["minimize"] * 2) == 1
    with pytest.raises(ValueError, match="NaN"):
        knee_point(np.array([[np.nan, 0.0]]), ["minimize"] * 2)


def _table_with_bad_rows() -> pd.DataFrame:
    rng = np.random.default_rng(7)
    n = 30
    df = pd.DataFrame(
        {
            "trial": np.arange(n)[::-1],  # deliberately out of order
            "proxy_accuracy": rng.random(n),
            "macs": rng.random(n) * 1e8,
            "feasible": np.array(rng.random(n) > 0.3, dtype=object),
            "state": ["COMPLETE"] * n,
        },
        index=[f"r{i}" for i in range(n)],
    )
    # Rows that would dominate everything if they were eligible.
    df.loc["r0", ["proxy_accuracy", "macs", "feasible"]] = [2.0, 0.0, False]
    df.loc["r1", ["proxy_accuracy", "macs", "feasible"]] = [2.0, np.nan, True]
    df.loc["r2", ["proxy_accuracy", "macs", "feasible", "state"]] = [2.0, 0.0, True, "FAIL"]
    df.loc["r3", ["proxy_accuracy", "macs", "feasible"]] = [2.0, 0.0, None]
    return df


def test_pareto_table_excludes_ineligible_rows() -> None:
    df = _table_with_bad_rows()
    table = pareto_table(df, ACC_MACS)
    assert list(table.index) == list(df.index)
    assert table.loc[["r0", "r1", "r2", "r3"], "pareto_rank"].eq(-1).all()
    assert table["crowding"].isna().eq(table["pareto_rank"] == -1).all()
    eligible = df["feasible"].fillna(False).astype(bool) & (df["state"] == "COMPLETE")
    assert (table["pareto_rank"] >= 0).eq(eligible & df["macs"].notna()).all()
    assert table["knee"].sum() == 1
    assert table.loc[table["knee"], "pareto_rank"].item() == 0
    assert "pareto_rank" not in df.columns

    on_front = front(df, ACC_MACS)
    assert set(on_front.index) == set(table.index[table["pareto_rank"] == 0])
    assert on_front["proxy_accuracy"].is_monotonic_decreasing


def test_pareto_table_empty_front_and_bad_input() -> None:
    df = pd.DataFrame({"proxy_accuracy": [0.5, 0.6], "macs": [1.0, 2.0], "feasible": False})
    table = pareto_table(df, ACC_MACS)
    assert table["pareto_rank"].eq(-1).all() and not table["knee"].any()
    assert pareto_table(df, ACC_MACS, feasible_col=None)["pareto_rank"].eq(0).all()
    with pytest.raises(ValueError, match="latency_ms"):
        pareto_table(df, ["proxy_accuracy", "latency"])
    with pytest.raises(ValueError, match="numeric"):
        pareto_table(df.assign(macs=["a", "b"]), ACC_MACS)


def test_hypervolume_history_is_monotone_and_matches_prefixes() -> None:
    df = _table_with_bad_rows()
    history = hypervolume_history(df, ACC_MACS)
    assert list(history.index) == sorted(df["trial"])
    assert (np.diff(history.to_numpy()) >= 0).all()
    usable = df[pareto_table(df, ACC_MACS)["pareto_rank"] >= 0]
    values = usable[["proxy_accuracy", "macs"]].to_numpy()
    bounds = [(values[:, 0].max(), values[:, 0].min()), (values[:, 1].min(), values[:, 1].max())]
    directions = ["maximize", "minimize"]
    for trial, value in history.items():
        prefix = usable.loc[usable["trial"] <= trial, ["proxy_accuracy", "macs"]].to_numpy()
        expected = hypervolume(prefix, directions, bounds=bounds) if len(prefix) else 0.0
        assert value == pytest.approx(expected, abs=1e-12)
    assert history.iloc[-1] == pytest.approx(hypervolume(values, directions))


def test_hypervolume_history_empty_and_missing_trial() -> None:
    df = pd.DataFrame({"trial": [1, 0], "proxy_accuracy": [0.5, 0.6], "macs": [1.0, 2.0]})
    assert hypervolume_history(df.assign(feasible=False), ACC_MACS).eq(0.0).all()
    with pytest.raises(ValueError, match="trial"):
        hypervolume_history(df.drop(columns="trial"), ACC_MACS, feasible_col=None)


def test_objectives() -> None:
    assert parse_objectives(["accuracy", "params", "macs", "latency"]) == [
        Objective("accuracy_mean", "maximize"),
        Objective("params", "minimize"),
        Objective("macs", "minimize"),
        Objective("latency_ms", "minimize"),
    ]
    assert parse_objectives(["proxy_accuracy"]) == [Objective("proxy_accuracy", "maximize")]
    with pytest.raises(ValueError, match="accuracy"):
        parse_objectives(["flops"])
    with pytest.raises(ValueError, match="direction"):
        Objective("macs", "lower")
