"""The live progress of a run, as a user sees it: on a terminal and in a log (issue 13)."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from archsearch import console
from archsearch.console import ConsoleProgress
from archsearch.progress import DEFAULT_WIDTH, steps, wrap

from ._tiny import tiny_options

LONG = " ".join(["S1:csa(d64,h2,r3)x2+cbs@mlp_end"] * 8)  # a design notation wider than any line


class FakeTTY(io.StringIO):
    """What a terminal receives."""

    def isatty(self) -> bool:
        return True


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _plan(trials: int = 4, timeout: float | None = None, title: str = "run") -> Any:
    return SimpleNamespace(
        trials=trials, timeout=timeout, title=title, run_dir="results/x", resumed=False,
        record={"resolved": {
            "proxy_target": {"dataset": "synthetic", "in_chans": 1, "img_size": 32,
                             "train_images": 256},
            "cost_target": {"in_chans": 3, "img_size": 224, "num_classes": 1000},
        }},
        space=SimpleNamespace(name="tiny"), budget="100K-params", objectives=["accuracy", "macs"],
        settings=SimpleNamespace(sampler="tpe", seed=0, final_seeds=1),
        schedule=SimpleNamespace(epochs=2, subset=256), device="cpu", baselines=["lvt"],
    )  # fmt: skip


def _row(trial: int, **changes: Any) -> dict[str, Any]:
    row = {
        "trial": trial, "state": "COMPLETE", "feasible": True, "reused_from": None,
        "proxy_accuracy": 0.61, "train_seconds": 9.0, "params": 1.2e6, "macs": 3.4e8,
        "epochs": 2, "error": "", "violations": "",
    }  # fmt: skip
    row.update(changes)
    return row


def _over_budget(trial: int) -> dict[str, Any]:
    return _row(trial, feasible=False, epochs=None, violations="params 1.2M > 0.1M")


def _train(p: ConsoleProgress, clock: Clock, index: int, number: int, seconds: float,
           best: float, front: int, kind: str = "trial", total: int = 4) -> None:  # fmt: skip
    p.trial_start(index, total, number, LONG, kind)
    clock.advance(seconds)
    p.epoch(1, 2, 0.5)
    p.trial_end(_row(number), best, front)


def _left(p: ConsoleProgress) -> str:
    found = re.search(r"~(\S+) left", p._status())
    assert found, p._status()
    return found.group(1)


# --------------------------------------------------------------------------- the figures
def test_time_left_counts_the_trials_not_the_baseline() -> None:
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=4), 0)
    assert _left(p) == "?"  # nothing trained yet
    p.trial_start(1, 1, 0, LONG, "baseline lvt")
    clock.advance(10)
    p.trial_end(_row(0), 0.6, 1)
    assert _left(p) == "40s"  # 4 trials of 10 s to go: the baseline is none of them
    p.trial_start(1, 4, 1, LONG, "trial")
    clock.advance(4)
    assert _left(p) == "36s"  # ticks down while a trial trains
    clock.advance(16)
    p.trial_end(_row(1), 0.62, 2)
    assert _left(p) == "45s"  # mean 15 s, 3 trials to go
    assert "best 0.6200 | front 2" in p._status()


def test_over_budget_and_repeated_designs_are_not_trials() -> None:
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=4), 0)
    _train(p, clock, 1, 0, 12, 0.6, 1)
    p.trial_start(2, 4, 1, LONG, "trial")
    p.trial_end(_over_budget(1), 0.6, 1)
    p.trial_start(2, 4, 2, LONG, "trial")
    p.trial_end(_row(2, reused_from=0, epochs=None), 0.6, 1)
    assert p.tally.done == 1 and _left(p) == "36s"  # still 3 trials of 12 s
    assert p.tally.position() == "trial 1/4"
    _train(p, clock, 2, 3, 12, 0.64, 2)
    assert p.tally.done == 2 and _left(p) == "24s"
    assert "best 0.6400 | front 2" in p._status()


def test_resumed_run_and_timeout() -> None:
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=4, timeout=50), 2)  # two trials done before the resume
    _train(p, clock, 3, 7, 10, 0.6, 1)
    assert _left(p) == "10s"  # one trial left
    clock.advance(45)
    assert _left(p) == "0s"  # the timeout (50 s) is nearer than the last trial


def test_finalists_replace_the_time_left() -> None:
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=1), 0)
    _train(p, clock, 1, 0, 10, 0.6, 1)
    p.trial_start(1, 1, 1, LONG, "seed 1 (from trial 0)")
    assert p.finalists and "finalists" in p._status() and "left" not in p._status()
    assert p.tally.position() == "finalists"


def test_calibration_jobs_each_count() -> None:
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=3, title="calibrate"), 0)
    p.trial_start(1, 3, 0, "lvt", "proxy seed 0")
    clock.advance(10)
    p.trial_end({k: v for k, v in _row(0).items() if k != "trial"}, None, 0)
    assert not p.finalists and _left(p) == "20s" and "front" not in p._status()


# --------------------------------------------------------------------------- plain lines
def _plain_run(stream: io.StringIO, clock: Clock) -> None:
    p = ConsoleProgress(stream=stream, clock=clock)
    p.start(_plan(trials=4), 0)
    _train(p, clock, 1, 0, 75, 0.6, 1, kind="baseline lvt", total=1)
    _train(p, clock, 1, 1, 75, 0.62, 2)
    p.trial_start(2, 4, 2, LONG, "trial")
    p.trial_end(_over_budget(2), 0.62, 2)
    p.finish(_plan(trials=4), None)


@pytest.mark.parametrize("columns", [None, "60"])
def test_log_lines_have_no_carriage_return_and_fit_the_width(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], columns: str | None
) -> None:
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    width = int(columns or DEFAULT_WIDTH)
    stream = io.StringIO()
    _plain_run(stream, Clock())
    text = stream.getvalue()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    joined = " ".join(line.strip() for line in lines)
    assert "[1/4] trial 1:" in joined and "acc 0.6100 in 9s" in joined
    assert "infeasible (params 1.2M > 0.1M)" in joined
    assert "best 0.6200 | front 2 | 2m30s elapsed, ~3m45s left" in joined
    assert "No feasible trained candidate yet" in capsys.readouterr().out


def test_quiet_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    stream = FakeTTY()
    p = ConsoleProgress(quiet=True, stream=stream)
    p.start(_plan(), 0)
    p.trial_start(1, 4, 0, LONG, "trial")
    p.trial_end(_row(0), 0.6, 1)
    p.finish(_plan(), None)
    assert stream.getvalue() == "" and capsys.readouterr() == ("", "")


# --------------------------------------------------------------------------- on a terminal
def _wait_for(stream: io.StringIO, needle: str, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if needle in stream.getvalue():
            return True
        time.sleep(0.02)
    return False


def _screen_lines(text: str) -> list[str]:
    """Every stretch of text the terminal shows on one line (between \\r and \\n)."""
    return [part for line in text.split("\n") for part in line.split("\r")]


def test_terminal_clock_ticks_between_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "70")
    clock, stream = Clock(), FakeTTY()
    p = ConsoleProgress(stream=stream, clock=clock, tick=0.02)
    try:
        p.start(_plan(trials=4), 0)
        _train(p, clock, 1, 0, 10, 0.6, 1)
        p.trial_start(2, 4, 1, LONG, "trial")
        clock.advance(75)  # no event for 75 s: the bar still moves on
        assert _wait_for(stream, "1m25s elapsed, ~20s left")
        assert "trial 2/4 |" in stream.getvalue()
    finally:
        p.finish(_plan(trials=4), None)
    shown = _screen_lines(stream.getvalue())
    assert max(len(s) for s in shown) < 70  # sized to the terminal: nothing wraps
    assert any(s.startswith("[1/4] trial 0: ") for s in shown)  # results above the bar
    after = stream.getvalue()
    clock.advance(60)
    time.sleep(0.1)
    assert stream.getvalue() == after  # finished: the clock stopped


def test_a_narrower_terminal_gets_a_narrower_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "120")
    clock, stream = Clock(), FakeTTY()
    p = ConsoleProgress(stream=stream, clock=clock, tick=0.02)
    try:
        p.start(_plan(trials=4), 0)
        p.trial_start(1, 4, 0, LONG, "trial")
        assert max(len(s) for s in _screen_lines(stream.getvalue())) > 60
        before = len(stream.getvalue())
        monkeypatch.setenv("COLUMNS", "60")
        clock.advance(5)
        assert _wait_for(stream, "5s elapsed")
    finally:
        p.close()
    after = stream.getvalue()[before:]
    assert "\x1b[K" in after  # the old, wider line is erased
    assert max(len(s) for s in _screen_lines(after.replace("\x1b[K", ""))) < 60


def test_an_error_message_ends_the_live_status(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, stream = Clock(), FakeTTY()
    monkeypatch.setattr(sys, "stderr", stream)
    p = ConsoleProgress(clock=clock, tick=0.02)
    p.start(_plan(trials=4), 0)
    p.trial_start(1, 4, 0, LONG, "trial")
    console._err("archsearch: interrupted; run the same command again to resume results/x")
    after = stream.getvalue()
    clock.advance(60)
    time.sleep(0.1)
    assert stream.getvalue() == after and after.endswith("resume results/x\n")
    last_bar = after.rsplit("\n", 2)[-3].rsplit("\r", 1)[-1]
    assert last_bar.startswith("trial 1/4 |")  # the last status stays, above the message


# --------------------------------------------------------------------------- helpers
def test_wrap_and_steps() -> None:
    assert all(len(line) <= 30 for line in wrap(LONG, 30))
    assert "".join(wrap("x" * 100, 30)).replace(" ", "") == "x" * 100
    stream = io.StringIO()
    assert list(steps([1, 2, 3], str, stream)) == [1, 2, 3] and stream.getvalue() == ""
    tty = FakeTTY()
    assert list(steps([1, 2], lambda n: f"counting {n}", tty)) == [1, 2]
    assert "counting 2" in tty.getvalue() and tty.getvalue().endswith("\r")  # cleared at the end


# --------------------------------------------------------------------------- a real run
def test_a_real_run_reports_its_trials_and_front(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.pareto import front
    from archsearch.records import read_trials
    from archsearch.search import execute, prepare

    monkeypatch.setenv("COLUMNS", "1000")  # whole lines, to read the figures
    stream = io.StringIO()
    plan = prepare(tiny_options(tmp_path / "run", trials=2, quiet=False))
    execute(plan, ConsoleProgress(stream=stream))
    text = stream.getvalue()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if " -> " in line]
    trained = [line for line in lines if re.match(r"\[\d/2\] trial \d+: ", line)]
    assert len(trained) >= 2 and all("| best " in line for line in trained)
    expected = len(front(read_trials(tmp_path / "run" / "trials.csv"), ["accuracy", "macs"]))
    assert f"| front {expected} |" in lines[-1]


# --------------------------------------------------------------------------- version
def test_console_script_version() -> None:
    from archsearch import __version__

    script = Path(sys.executable).parent / "archsearch"
    if not script.is_file():
        pytest.skip("the archsearch console script is not installed next to this Python")
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == f"archsearch {__version__}"


def test_version_is_the_one_in_pyproject() -> None:
    import tomllib

    import archsearch

    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]
    assert archsearch.__version__ == project["version"]


def test_calibration_time_left_weighs_each_job_by_its_work() -> None:
    """A reference training is 5x a proxy's work: after one proxy job of 10 s, a proxy and a
    reference left take ~60 s (not 20 s, as counting jobs would say)."""
    clock = Clock()
    p = ConsoleProgress(quiet=True, clock=clock)
    p.start(_plan(trials=3, title="calibrate"), 0)
    p.trial_start(1, 3, 0, "lvt", "proxy seed 0", work=(1.0, 7.0))
    clock.advance(10)
    p.trial_end({k: v for k, v in _row(0).items() if k != "trial"}, None, 0)
    assert _left(p) == "1m00s"
    p.trial_start(2, 3, 1, "lvt", "proxy seed 1", work=(1.0, 6.0))
    clock.advance(4)  # the running job's own share is taken off as it goes
    assert _left(p) == "56s"
    clock.advance(6)
    p.trial_end({k: v for k, v in _row(1).items() if k != "trial"}, None, 0)
    p.trial_start(3, 3, 2, "lvt", "reference seed 0", work=(5.0, 5.0))
    clock.advance(20)
    assert _left(p) == "30s"
