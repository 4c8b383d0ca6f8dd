"""Multi-fidelity search: rung schedules, Hyperband brackets and non-dominated promotion.

A rung is a training budget in images x epochs. Rungs are numbered from the top: rung 0 is the
run's own proxy schedule (``--epochs`` x ``--subset``), rung ``k`` has ``eta ** k`` times fewer
images x epochs. Only rung-0 results are points of the front.

Promotion is asynchronous successive halving (a worker never waits for a rung to fill) with
several objectives: within one bracket and rung, the finished designs are ranked by
non-dominated sorting over (accuracy at that rung, the cost objectives), ties broken by crowding
distance (boundary designs first) and then by trial number; while fewer than
``floor(n / eta)`` of the rung's ``n`` designs have been promoted, the best-ranked design not yet
promoted among the top ``floor(n / eta)`` moves up one rung. Everything is derived from the study
itself, so a resumed run continues the same rungs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from optuna.trial import FrozenTrial, TrialState

from ..pareto import crowding_distance, non_dominated_sort
from ..train.proxy import ProxySchedule

__all__ = [
    "MODES",
    "Rungs",
    "Result",
    "promotion",
    "bracket_of",
    "next_promotion",
    "next_seed",
]

MODES = ("single", "sh", "hyperband")


@dataclass(frozen=True)
class Rungs:
    """The rung schedules of a run: ``levels`` rungs, ``eta`` apart, ``top`` at rung 0."""

    top: ProxySchedule
    train_images: int  # the training split's size (what ``subset=None`` means)
    levels: int = 1
    eta: int = 3
    mode: str = "single"

    @property
    def top_fidelity(self) -> int:
        return self.top.epochs * min(self.top.subset or self.train_images, self.train_images)

    def fidelity(self, rung: int) -> int:
        """Images x epochs of ``rung``."""
        return max(1, round(self.top_fidelity / self.eta**rung))

    def schedule(self, rung: int) -> ProxySchedule:
        """The proxy schedule of ``rung``: fewer epochs first (at least one), then fewer images."""
        if rung == 0:
            return self.top
        epochs = max(1, math.ceil(self.top.epochs / self.eta**rung))
        images = max(self.top.batch_size, round(self.fidelity(rung) / epochs))
        images = min(images, self.top.subset or self.train_images)
        warmup = min(self.top.warmup_epochs, epochs / 4)
        return dataclasses.replace(self.top, epochs=epochs, subset=images, warmup_epochs=warmup)

    def start(self, bracket: int) -> int:
        """The rung a new design of ``bracket`` starts at (bracket 0: the lowest rung)."""
        return self.levels - 1 - bracket

    @property
    def brackets(self) -> list[int]:
        """Bracket of each new design in one Hyperband cycle (one bracket unless hyperband):
        bracket ``b`` gets ``ceil(levels / (levels - b) * eta ** (levels - 1 - b))`` designs, as
        in Hyperband (Li et al., 2018), so every bracket spends about the same budget."""
        if self.mode != "hyperband":
            return [0]
        out: list[int] = []
        for b in range(self.levels):
            n = math.ceil(self.levels / (self.levels - b) * self.eta ** (self.levels - 1 - b))
            out += [b] * n
        return out


def bracket_of(rungs: Rungs, index: int) -> int:
    """The bracket of the ``index``-th new design (0-based), cycling through :attr:`brackets`;
    the cycle is interleaved so that every bracket is visited early."""
    cycle = rungs.brackets
    order = sorted(range(len(cycle)), key=lambda i: (cycle[:i].count(cycle[i]), cycle[i]))
    return cycle[order[index % len(cycle)]]


@dataclass(frozen=True)
class Result:
    """One finished design at one rung, as promotion sees it."""

    trial: int
    archid: str
    bracket: int
    rung: int
    values: tuple[float, ...]  # objective values, accuracy first


def rank(results: Sequence[Result], directions: Sequence[str]) -> list[Result]:
    """Results best first: non-dominated sorting, then crowding distance, then trial number."""
    if not results:
        return []
    values = np.array([r.values for r in results], dtype=float)
    fronts = non_dominated_sort(values, directions)
    crowd = crowding_distance(values, directions, fronts)
    order = sorted(range(len(results)), key=lambda i: (fronts[i], -crowd[i], results[i].trial))
    return [results[i] for i in order]


def promotion(
    results: Sequence[Result], moved_up: set[str], eta: int, directions: Sequence[str]
) -> Result | None:
    """The next design to move up one rung, or None.

    Args:
        results: finished designs below the top rung (any bracket and rung).
        moved_up: ``f"{archid}@{rung}"`` of every design already at a higher rung than a result
            (promoted, running or queued there).
        eta: the reduction factor.
        directions: ``maximize``/``minimize`` per objective value.

    Pools are visited from the highest rung down, so designs near the top finish first.
    """
    pools: dict[tuple[int, int], list[Result]] = {}
    for r in results:
        if r.rung > 0:
            pools.setdefault((r.rung, r.bracket), []).append(r)
    for key in sorted(pools):
        pool = pools[key]
        k = len(pool) // eta
        ranked = rank(pool, directions)[:k]
        done = sum(f"{r.archid}@{r.rung}" in moved_up for r in pool)
        if done >= k:
            continue
        for r in ranked:
            if f"{r.archid}@{r.rung}" not in moved_up:
                return r
    return None


def _interrupted(t: FrozenTrial) -> bool:
    return t.state == TrialState.FAIL and bool(t.user_attrs.get("interrupted"))


def next_promotion(
    trials: Sequence[FrozenTrial], rungs: Rungs, directions: Sequence[str]
) -> tuple[FrozenTrial, dict[str, int]] | None:
    """The study's next promotion: the source trial and the attributes of its trial one rung
    up, or None. A design counts as moved up once any trial of it at the higher rung exists
    (queued, running or finished), except one interrupted by a crash: that one is planned again.
    """
    if rungs.levels < 2:
        return None
    results, moved_up = [], set()
    for t in trials:
        a = t.user_attrs
        if a.get("repeat_of") is not None or a.get("reused_from") is not None or _interrupted(t):
            continue
        rung = int(a.get("rung", 0))
        moved_up.add(f"{a.get('archid')}@{rung + 1}")
        if t.state == TrialState.COMPLETE and a.get("feasible") and rung > 0 and t.values:
            bracket = int(a.get("bracket", 0))
            results.append(Result(t.number, a["archid"], bracket, rung, tuple(t.values)))
    up = promotion(results, moved_up, rungs.eta, directions)
    if up is None:
        return None
    attrs = {"promoted_from": up.trial, "rung": up.rung - 1, "bracket": up.bracket, "seed": 0}
    return trials[up.trial], attrs


def repeats_done(trials: Sequence[FrozenTrial]) -> dict[int, set[int]]:
    """Per trial number, the seeds its repeats (``repeat_of``) have, interrupted ones aside."""
    have: dict[int, set[int]] = {}
    for t in trials:
        a = t.user_attrs
        if a.get("repeat_of") is not None and not _interrupted(t):
            have.setdefault(int(a["repeat_of"]), set()).add(int(a.get("seed", 0)))
    return have


def next_seed(
    trials: Sequence[FrozenTrial], pool: Sequence[int], seeds: int
) -> tuple[FrozenTrial, dict[str, int]] | None:
    """The next seed repeat a design of ``pool`` (trial numbers) lacks to have ``seeds`` seeds
    in all: the source trial and the attributes of the repeat, or None."""
    have = repeats_done(trials)
    for number in sorted(pool):
        missing = [k for k in range(1, seeds) if k not in have.get(number, set())]
        if missing:
            return trials[number], {
                "repeat_of": number,
                "rung": 0,
                "bracket": 0,
                "seed": missing[0],
            }
    return None
