"""A latency budget no design of the space can meet is refused before anything runs (issue 12,
item 10), from a lower bound of latency that never refuses a feasible budget."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from archsearch.cost.analytic import estimate
from archsearch.cost.budget import parse_budget
from archsearch.cost.candidate import CostTarget, check_latency_reachable, latency_floor
from archsearch.cost.latency import FLOOR_MARGIN, latency_floor_ms, max_threads, measure_latency
from archsearch.errors import BudgetError, CountError
from archsearch.models import build_model
from archsearch.search import prepare
from archsearch.search.space import SearchSpace, load_space

from ._tiny import tiny_options

CLI = [sys.executable, "-m", "archsearch.cli"]
TARGET = CostTarget()


def _fewest_macs(space: SearchSpace) -> list:
    """The member with the fewest MACs of each family (what the run's check times)."""

    def macs(cfg) -> float:
        return float(estimate(cfg, img_size=224, in_chans=3, num_classes=1000).macs)

    return [SearchSpace(n, {n: b}).cheapest(macs)[0] for n, b in space.branches.items()]


def _model(cfg) -> torch.nn.Module:
    return build_model(cfg, num_classes=1000, in_chans=3, img_size=224)


def _cli_run(out: Path, budget: str) -> subprocess.CompletedProcess:
    args = ["run", "--budget", budget, "--space", "tiny", "--dataset", "synthetic"]
    args += ["--no-baselines", "--out", str(out)]
    # Were the budget not refused, the run would stop soon: one short trial, 30 seconds at most.
    args += ["--trials", "1", "--timeout", "30", "--epochs", "1", "--subset", "64"]
    args += ["--proxy-img-size", "32", "--final-seeds", "1"]
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)


def test_floor_is_below_every_sampled_latency_of_the_tiny_space() -> None:
    """The bound holds for the cheapest member and for random ones, timed as a run times them
    (the current thread count) and on one thread."""
    space = load_space("tiny")
    floor = latency_floor(_fewest_macs(space), TARGET)
    assert floor > 0
    rng = random.Random(0)
    designs = _fewest_macs(space) + [space.sample(lambda _n, c: rng.choice(c)) for _ in range(4)]
    for cfg in designs:
        model = _model(cfg)
        for threads in (None, 1):
            timed = measure_latency(model, img_size=224, warmup=2, repeats=5, threads=threads)
            assert floor < timed.p10_ms, (cfg.archid, threads)


def test_floor_splits_one_thread_work_over_every_thread_with_a_margin() -> None:
    before = torch.get_num_threads()
    model = _model(_fewest_macs(load_space("tiny"))[0]).train()
    work = latency_floor_ms(model, img_size=224, threads=1, margin=1.0)
    assert torch.get_num_threads() == before  # restored
    assert all(m.training for m in model.modules())  # training flags restored
    split = latency_floor_ms(model, img_size=224)
    # Measured twice: the two single-thread times agree within a factor of 2 on a busy box.
    assert split < 2 * work / (max_threads() * FLOOR_MARGIN)
    assert max_threads() >= torch.get_num_threads()


@pytest.mark.parametrize(
    "kwargs, fragment",
    [({"img_size": 0}, "img_size"), ({"img_size": 32, "margin": 0.5}, "margin")],
)
def test_floor_arguments_are_checked(kwargs: dict, fragment: str) -> None:
    with pytest.raises(CountError, match=fragment):
        latency_floor_ms(torch.nn.Identity(), **kwargs)


def test_meta_model_is_refused() -> None:
    with torch.device("meta"):
        model = torch.nn.Linear(4, 4)
    with pytest.raises(CountError, match="on the CPU"):
        latency_floor_ms(model, img_size=8)


def test_check_refuses_an_impossible_budget_and_accepts_a_generous_one() -> None:
    designs = _fewest_macs(load_space("tiny"))
    with pytest.raises(BudgetError, match="cannot be met") as info:
        check_latency_reachable("tiny", designs, parse_budget("0.001ms-latency"), TARGET)
    assert "\n" not in str(info.value) and "tiny" in str(info.value)
    check_latency_reachable("tiny", designs, parse_budget("10s-latency"), TARGET)


def test_check_times_nothing_without_a_latency_limit_or_on_a_gpu() -> None:
    broken = [object()]  # would fail if it were built
    check_latency_reachable("x", broken, parse_budget("1K-params"), TARGET)  # type: ignore[arg-type]
    gpu = CostTarget(latency_device="cuda")
    check_latency_reachable("x", broken, parse_budget("0.001ms-latency"), gpu)  # type: ignore[arg-type]
    assert latency_floor([], TARGET) == 0.0


@pytest.mark.parametrize("budget", ["0.001ms-latency", "1us-latency,1M-params"])
def test_cli_refuses_an_impossible_latency_budget(tmp_path: Path, budget: str) -> None:
    out = tmp_path / "run"
    res = _cli_run(out, budget)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error:"), res.stderr
    assert "cannot be met" in lines[0] and budget in lines[0]
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_feasible_latency_budget_is_accepted(tmp_path: Path) -> None:
    plan = prepare(tiny_options(tmp_path / "run", budget="10s-latency"))
    assert plan.budget.latency_ms == 10_000
    assert not (tmp_path / "run").exists()  # prepare writes nothing
