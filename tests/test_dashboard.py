"""optuna-dashboard on a finished run: a real server (``archsearch dashboard``) read over HTTP."""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from archsearch.cli import main
from archsearch.config import ArchConfig
from archsearch.search.driver import describe
from archsearch.search.study import load_study

from ._tiny import tiny_run

HAS_DASHBOARD = importlib.util.find_spec("optuna_dashboard") is not None
#: The tiny space's first samples (seed 0) straddle this budget: some are over it, some within.
BUDGET = "42K-params"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("dash") / "run", budget=BUDGET, trials=2)


@pytest.fixture(scope="module")
def server(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``archsearch dashboard RUN_DIR`` in a subprocess; yields its base URL."""
    if not HAS_DASHBOARD:
        pytest.skip("optuna-dashboard is not installed (pip install '.[dashboard]')")
    port = _free_port()
    log = tmp_path_factory.mktemp("dashlog") / "stderr.txt"
    cmd = [sys.executable, "-m", "archsearch.cli", "dashboard", str(run), "--port", str(port)]
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"archsearch dashboard exited {proc.returncode}: {log.read_text()}")
            try:
                _get(f"{base}/api/meta")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"archsearch dashboard did not answer: {log.read_text()}")
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _attrs(trial: dict[str, Any]) -> dict[str, str]:
    return {a["key"]: a["value"] for a in trial["user_attrs"]}


def test_dashboard_sees_constraints_names_and_designs(server: str, run: Path) -> None:
    (summary,) = _get(f"{server}/api/studies")["study_summaries"]
    assert summary["study_name"] == "archsearch"
    detail = _get(f"{server}/api/studies/{summary['study_id']}")
    assert detail["objective_names"] == ["accuracy", "macs"]
    assert detail["directions"] == ["maximize", "minimize"]

    configs = [t.user_attrs["config"] for t in load_study(run).trials]
    over, trained = [], []
    for t in detail["trials"]:
        a = _attrs(t)
        assert t["state"] == "Complete", t
        assert t["constraints"], f"trial {t['number']}: no constraints for the dashboard"
        assert a["notation"] == describe(ArchConfig.from_json(configs[t["number"]]))
        assert int(a["params"]) > 0 and int(a["macs"]) > 0
        if a["feasible"] == "False":
            over.append(t["number"])
            assert any(c > 0 for c in t["constraints"]), t  # the dashboard's "infeasible"
            assert "budget" in a["violations"] and "proxy_accuracy" not in a
        else:
            trained.append(t["number"])
            assert all(c <= 0 for c in t["constraints"]), t
            assert float(a["proxy_accuracy"]) == t["values"][0]
    assert over and trained, f"expected over-budget and trained trials, got {over}, {trained}"

    # Optuna itself reads the same constraints: its front holds trained designs only.
    assert {t.number for t in load_study(run).best_trials} <= set(trained)


def test_dashboard_command_errors(tmp_path: Path, monkeypatch, capsys) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2  # not a run folder
    err = capsys.readouterr().err.strip()
    assert err.startswith("archsearch: error:") and "study.journal" in err and "\n" not in err

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # the extra is not installed
    assert main(["dashboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install 'archsearch[dashboard]'" in err and "\n" not in err
