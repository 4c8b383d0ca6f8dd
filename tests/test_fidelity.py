"""Multi-fidelity search: rung schedules, non-dominated promotion, finalists and resume.

The end-to-end tests replace training with a synthetic evaluator (a known accuracy per design
and rung), so they check the search's decisions, not the proxy."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from archsearch.records import read_trials
from archsearch.search import execute, prepare
from archsearch.search.fidelity import Result, Rungs, bracket_of, promotion, rank
from archsearch.train.candidate import Trainer, TrainOutcome
from archsearch.train.proxy import ProxySchedule

from ._tiny import tiny_options

DIRS = ["maximize", "minimize"]


def test_rung_schedules_shrink_by_eta() -> None:
    top = ProxySchedule(epochs=2, subset=5000, batch_size=128)
    rungs = Rungs(top, 60000, levels=3, eta=3, mode="sh")
    assert rungs.schedule(0) == top
    assert [rungs.fidelity(r) for r in range(3)] == [10000, 3333, 1111]
    one, two = rungs.schedule(1), rungs.schedule(2)
    assert (one.epochs, one.subset) == (1, 3333) and (two.epochs, two.subset) == (1, 1111)
    assert rungs.start(0) == 2  # successive halving starts every design at the lowest rung


def test_hyperband_brackets_follow_hyperband() -> None:
    rungs = Rungs(ProxySchedule(), 60000, levels=3, eta=3, mode="hyperband")
    cycle = rungs.brackets
    assert [cycle.count(b) for b in range(3)] == [9, 5, 3]
    first = [bracket_of(rungs, i) for i in range(len(cycle))]
    assert sorted(first) == sorted(cycle) and set(first[:3]) == {0, 1, 2}
    assert [rungs.start(b) for b in range(3)] == [2, 1, 0]


def _results(points: list[tuple[float, float]], rung: int = 2) -> list[Result]:
    return [Result(i, f"a{i}", 0, rung, p) for i, p in enumerate(points)]


def test_promotion_takes_non_dominated_designs_first_and_follows_eta() -> None:
    # a0..a2 are non-dominated (accuracy up, MACs up); a3..a8 are each dominated by one of them.
    points = [(0.9, 30.0), (0.8, 20.0), (0.7, 10.0)] + [(0.6 - 0.01 * i, 40.0) for i in range(6)]
    results = _results(points)
    moved: set[str] = set()
    order = []
    while (up := promotion(results, moved, 3, DIRS)) is not None:
        order.append(up.archid)
        moved.add(f"{up.archid}@{up.rung}")
    assert len(order) == len(points) // 3
    assert set(order) == {"a0", "a1", "a2"}
    assert order[:2] == ["a0", "a2"]  # boundary designs of the front first (crowding)
    assert promotion(results[:2], set(), 3, DIRS) is None  # fewer than eta: nothing yet


def test_promotion_visits_the_highest_rung_first() -> None:
    low = _results([(0.5 + 0.01 * i, 10.0 + i) for i in range(3)], rung=2)
    high = [Result(10 + i, f"b{i}", 0, 1, (0.6 + 0.01 * i, 5.0)) for i in range(3)]
    up = promotion(low + high, set(), 3, DIRS)
    assert up is not None and up.rung == 1


class _Killed(BaseException):
    pass


def _synthetic(monkeypatch: pytest.MonkeyPatch, calls: list[tuple[str, int, int]], kill_at=None):
    """Replace training: accuracy is a fixed function of the design plus a rung bonus."""

    def train(self: Trainer, config: Any, *, weights=None, on_epoch=None, seed_offset=0,
              schedule=None, deadline=None) -> TrainOutcome:  # fmt: skip
        sched = schedule or self.schedule
        fidelity = sched.epochs * (sched.subset or 0)
        calls.append((config.archid, fidelity, seed_offset))
        if kill_at is not None and len(calls) == kill_at:
            raise _Killed
        base = int(hashlib.sha1(config.archid.encode()).hexdigest()[:6], 16) / 0xFFFFFF
        acc = 0.3 + 0.5 * base + 0.0001 * fidelity + 0.003 * seed_offset
        return TrainOutcome(acc, 1000, sched.epochs, 0.01, [acc], None)

    monkeypatch.setattr(Trainer, "train", train)


def _check_promotions(table: pd.DataFrame, eta: int) -> None:
    """Every promotion took a design ranked within the top floor(n / eta) of its rung among the
    results finished before it (a serial run finishes trials in number order)."""
    done = table[(table.state == "COMPLETE") & table.feasible.astype(bool)]
    done = done[done.reused_from.isna()]
    promoted = table[table.promoted_from.notna() & (table.state == "COMPLETE")]
    for _, p in promoted.iterrows():
        src = int(p.promoted_from)
        rung = int(table.loc[table.trial == src, "rung"].item())
        pool = done[(done.rung == rung) & (done.trial < p.trial)]
        pool = pool[pool.repeat_of.isna()]
        results = [
            Result(int(r.trial), str(r.archid), 0, rung, (float(r.proxy_accuracy), float(r.macs)))
            for r in pool.itertuples()
        ]
        top = [r.trial for r in rank(results, DIRS)[: len(results) // eta]]
        assert src in top, f"trial {p.trial} promoted {src}, not in the top {top}"


def _counts(table: pd.DataFrame) -> dict[int, int]:
    done = table[(table.state == "COMPLETE") & table.reused_from.isna() & table.repeat_of.isna()]
    return done.groupby("rung")["archid"].nunique().to_dict()


def test_successive_halving_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, int, int]] = []
    _synthetic(monkeypatch, calls)
    out = tmp_path / "sh"
    opts = tiny_options(out, trials=9, sampler="random", fidelity="sh", rungs=3, eta=3)
    execute(prepare(opts.replace(epochs=3, subset=270, final_seeds=2)))
    table = read_trials(out / "trials.csv")
    assert _counts(table) == {2: 9, 1: 3, 0: 1}
    assert len(calls) == len(set(calls))  # nothing trained twice
    _check_promotions(table, 3)
    front = table[table.accuracy_mean.notna()]
    assert (front.rung == 0).all() and len(front) == 1
    assert int(front.seeds.iloc[0]) == 2  # the finalist got its second seed
    repeat = table[table.repeat_of.notna()]
    assert list(repeat.seed) == [1] and (repeat.rung == 0).all()
    assert (table[table.promoted_from.isna() & table.repeat_of.isna()].rung == 2).all()
    assert {c[1] for c in calls} == {810, 270, 90}  # images x epochs of rungs 0, 1, 2


def test_killed_promotion_resumes_without_retraining(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    opts = tiny_options(tmp_path / "r", trials=9, sampler="random", fidelity="sh", rungs=3, eta=3)
    opts = opts.replace(epochs=3, subset=270, final_seeds=2)
    _synthetic(monkeypatch, calls, kill_at=10)  # the 10th training is a promotion
    with pytest.raises(_Killed):
        execute(prepare(opts))
    first = list(calls)
    killed = first[-1]
    assert killed[1] > 30  # it was a promotion, not a rung-2 sample
    calls.clear()
    _synthetic(monkeypatch, calls)
    execute(prepare(opts))
    table = read_trials(tmp_path / "r" / "trials.csv")
    finished = first[:-1]
    assert not set(finished) & set(calls), "a finished training ran again"
    assert killed in calls  # the interrupted promotion was planned again
    assert _counts(table) == {2: 9, 1: 3, 0: 1}
    _check_promotions(table[table.error != "interrupted"], 3)


def test_finalists_retrain_the_front_with_seeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    _synthetic(monkeypatch, calls)
    out = tmp_path / "f"
    execute(prepare(tiny_options(out, trials=4, sampler="random", final_seeds=3)))
    table = read_trials(out / "trials.csv")
    front = table[table.accuracy_mean.notna()]
    assert len(front) >= 1
    onfront = front.sort_values("accuracy_mean").iloc[-1]
    assert int(onfront.seeds) == 3
    reps = table[table.repeat_of == onfront.trial]
    assert sorted(reps.seed) == [1, 2]
    mean = (onfront.proxy_accuracy + reps.proxy_accuracy.sum()) / 3
    assert onfront.accuracy_mean == pytest.approx(mean)
    assert onfront.accuracy_lo < mean < onfront.accuracy_hi
    # seed repeats are no points of their own and do not count towards --trials
    counted = table[table.repeat_of.isna() & table.reused_from.isna() & (table.state == "COMPLETE")]
    assert counted.archid.nunique() == 4


def test_progress_says_finalists_instead_of_an_eta() -> None:
    from archsearch.console import ConsoleProgress

    progress = ConsoleProgress(quiet=True)
    progress.total = 4
    progress.trial_start(1, 4, 3, "design", "trial")
    progress.trial_start(1, 4, 5, "design", "baseline lvt")
    assert "left" in progress._status() and not progress.finalists
    progress.trial_start(4, 4, 9, "design", "lvt seed 1 (from trial 0)")
    assert "finalists" in progress._status() and "left" not in progress._status()
