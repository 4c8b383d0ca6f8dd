"""archsearch run end to end on tiny spaces and synthetic data (seconds per candidate)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from archsearch.errors import ArchsearchError, TrainingError
from archsearch.records import TRIAL_COLUMNS
from archsearch.search import execute, prepare
from archsearch.search.study import load_study
from archsearch.settings import RunSettings

from ._tiny import TINY_RUN, two_member_space

FAST = TINY_RUN
CLI = [sys.executable, "-m", "archsearch.cli"]


def _opts(out: Path, **kw) -> RunSettings:
    return RunSettings(**{"budget": "100K-params", "trials": 3, "out": str(out), **FAST, **kw})


def _cli_args(out: Path, trials: int, *extra: str) -> list[str]:
    return [
        *CLI,
        "run",
        "--budget",
        "100K-params",
        "--space",
        "tiny",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--subset",
        "256",
        "--batch-size",
        "64",
        "--proxy-img-size",
        "32",
        "--no-baselines",
        "--final-seeds",
        "1",
        "--trials",
        str(trials),
        "--out",
        str(out),
        *extra,
    ]


def _trained(df: pd.DataFrame) -> pd.DataFrame:
    """Rows that actually trained (not reused, not infeasible)."""
    done = df[(df.state == "COMPLETE") & df.feasible.astype(bool)]
    return done[done.reused_from.isna()]


def test_run_writes_run_directory_and_respects_budget(tmp_path) -> None:
    out = tmp_path / "run"
    execute(prepare(_opts(out, budget="60K-params", trials=3)))
    df = pd.read_csv(out / "trials.csv")
    assert list(df.columns[:5]) == TRIAL_COLUMNS[:5]
    for col in TRIAL_COLUMNS:
        assert col in df.columns
    assert "stage1.mixer" in df.columns  # every sampled choice is a column
    trained = df[df.proxy_accuracy.notna()]
    assert len(_trained(df)) >= 3
    assert (trained.params <= 60_000).all()
    infeasible = df[~df.feasible.astype(bool)]
    assert infeasible.proxy_accuracy.isna().all() and (infeasible.epochs.fillna(0) == 0).all()
    study = load_study(out)
    assert len(study.trials) == len(df)
    assert study.metric_names == ["accuracy", "macs"]  # named objectives for optuna-dashboard
    raw = optuna.load_study(
        study_name="archsearch",
        storage=optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(out / "study.journal"))
        ),
    )
    assert len(raw.trials) == len(df)
    run_yaml = (out / "run.yaml").read_text()
    for key in ("budget", "seed", "versions", "torch", "device", "cost_target", "proxy_target"):
        assert key in run_yaml
    weights = list((out / "weights").glob("*.safetensors"))
    front = set(df[df.weights.notna()].trial)
    assert weights and len(weights) == len(front)  # only the Pareto front keeps weights


def test_same_seed_same_archids_and_accuracies(tmp_path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    execute(prepare(_opts(a, trials=3, seed=7)))
    execute(prepare(_opts(b, trials=3, seed=7)))
    da, db = pd.read_csv(a / "trials.csv"), pd.read_csv(b / "trials.csv")
    assert list(da.archid) == list(db.archid)
    pd.testing.assert_series_equal(da.proxy_accuracy, db.proxy_accuracy)


def test_duplicate_archid_is_never_trained_again(tmp_path) -> None:
    space = two_member_space(tmp_path)
    out = tmp_path / "run"
    execute(prepare(_opts(out, space=str(space), trials=4, sampler="random")))
    df = pd.read_csv(out / "trials.csv")
    trained = _trained(df)
    assert trained.archid.is_unique and len(trained) == 2  # the space has only two members
    reused = df[df.reused_from.notna()]
    assert len(reused) >= 25  # repeats do not use up --trials: the space runs dry instead
    assert not set(reused.trial) & set(df[df.weights.notna()].trial)  # repeats: not on front
    for _, r in reused.iterrows():
        orig = df[df.trial == r.reused_from].iloc[0]
        assert orig.archid == r.archid and orig.proxy_accuracy == r.proxy_accuracy


def test_failed_training_is_recorded_and_search_goes_on(tmp_path, monkeypatch) -> None:
    from archsearch.train import candidate

    real = candidate.Trainer.train
    calls = {"n": 0}

    def flaky(self, config, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise TrainingError("non-finite loss (nan) at epoch 1 step 2")
        return real(self, config, **kw)

    monkeypatch.setattr(candidate.Trainer, "train", flaky)
    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=3)))
    df = pd.read_csv(out / "trials.csv")
    failed = df[df.state == "FAIL"]
    assert len(failed) == 1 and "non-finite loss" in failed.error.iloc[0]
    assert (df.state == "COMPLETE").sum() >= 2 and len(_trained(df)) == 2


def test_different_configuration_refused_without_force(tmp_path) -> None:
    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=1)))
    with pytest.raises(ArchsearchError, match="different budget"):
        prepare(_opts(out, trials=1, budget="90K-params"))
    plan = prepare(_opts(out, trials=1, budget="90K-params", force=True))
    execute(plan)
    assert "90K-params" in (out / "run.yaml").read_text()
    # more trials for the same configuration is a resume, not a conflict
    assert prepare(_opts(out, trials=2, budget="90K-params")).resumed


def test_a_changed_default_proxy_names_the_options_that_resume(tmp_path) -> None:
    """A run made by a version with another default proxy (its run.yaml records the schedule it
    resolved) is not resumed with the new one: the error says which options give the old."""
    import yaml

    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=1, proxy_img_size=None)))
    record = yaml.safe_load((out / "run.yaml").read_text())
    record["resolved"]["schedule"]["img_size"] = 32  # as an older default would have resolved
    (out / "run.yaml").write_text(yaml.safe_dump(record))
    with pytest.raises(ArchsearchError, match="pass --proxy-img-size 32 to resume it"):
        prepare(_opts(out, trials=2, proxy_img_size=None))
    assert prepare(_opts(out, trials=2, proxy_img_size=32)).resumed


def test_sigkill_during_a_trial_then_resume(tmp_path) -> None:
    out = tmp_path / "run"
    args = _cli_args(out, 4, "--epochs", "3", "--subset", "512")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # kill once a design is in training after one finished
            csv = out / "trials.csv"
            if csv.is_file() and len(pd.read_csv(csv)) >= 1:
                study = load_study(out)
                running = optuna.trial.TrialState.RUNNING
                if any(t.state == running and "config" in t.user_attrs for t in study.trials):
                    break
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out / "trials.csv")
    interrupted = df[df.error == "interrupted"]
    assert len(interrupted) == 1
    counted = df[((df.state != "FAIL") | (df.error != "interrupted")) & df.reused_from.isna()]
    assert len(counted) == 4  # the requested trials, not counting the killed one or repeats
    assert _trained(df).archid.is_unique  # no finished trial trained twice
    retried = df[df.archid == interrupted.archid.iloc[0]]
    assert (retried.state == "COMPLETE").any()  # the interrupted candidate ran again


def test_two_workers_share_one_study(tmp_path) -> None:
    out = tmp_path / "run"
    res = subprocess.run(
        _cli_args(out, 8, "--workers", "2", "--epochs", "3", "--subset", "1024"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out / "trials.csv")
    assert not (df.state == "FAIL").any(), df.error.tolist()
    assert 8 <= df.reused_from.isna().sum() <= 9  # the stop check races by one per worker
    owners = {t.user_attrs["owner"] for t in load_study(out).trials}
    assert len(owners) == 2  # both processes did work
    assert _trained(df).archid.is_unique


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--budget", "lots"], "budget 'lots'"),
        (["--budget", "1K-params"], "cannot be met"),
        (["--budget", "1M-params", "--dataset", "mnist3d"], "mnist3d"),
        (["--budget", "1M-params", "--space", "nope"], "built-in space"),
        (["--budget", "1M-params", "--objectives", "macs"], "--objectives"),
        (
            ["--budget", "1M-params", "--dataset", "fashion-mnist", "--data-dir", "EMPTY"],
            "--data-dir",
        ),
    ],
)
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, extra, fragment) -> None:
    out = tmp_path / "run"
    (tmp_path / "EMPTY").mkdir()
    extra = [str(tmp_path / "EMPTY") if e == "EMPTY" else e for e in extra]
    res = subprocess.run(
        [*CLI, "run", "--space", "tiny", "--out", str(out), *extra]
        if "--space" not in extra
        else [*CLI, "run", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error:"), res.stderr
    assert fragment in lines[0]
    assert not out.exists()


def test_out_of_memory_candidate_is_infeasible_and_search_goes_on(tmp_path, monkeypatch) -> None:
    from archsearch.train import candidate
    from archsearch.train.proxy import CandidateOOMError

    real = candidate.train_proxy
    calls = {"n": 0}

    def oom_once(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise CandidateOOMError("out of memory: expected the candidate to fit, got OOM")
        return real(*args, **kw)

    monkeypatch.setattr(candidate, "train_proxy", oom_once)
    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=2)))
    df = pd.read_csv(out / "trials.csv")
    first = df.iloc[0]
    assert first.state == "COMPLETE" and not first.feasible
    assert "out of memory" in first.violations and "out of memory" in first.error
    assert df.feasible.astype(bool).sum() == 2  # the OOM candidate did not count


def test_ctrl_c_leaves_a_resumable_study(tmp_path) -> None:
    out = tmp_path / "run"
    args = _cli_args(out, 3, "--epochs", "3", "--subset", "512")
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (out / "study.journal").is_file() and any(
            t.state == optuna.trial.TrialState.RUNNING for t in load_study(out).trials
        ):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "run the same command again to resume" in err
    res = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out / "trials.csv")
    assert (df.error == "interrupted").sum() == 1
    assert len(_trained(df)) == 3


def test_pruner_single_objective(tmp_path) -> None:
    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=5, epochs=2, objectives="accuracy", pruner=True)))
    df = pd.read_csv(out / "trials.csv")
    assert set(df.state) <= {"COMPLETE", "PRUNED"}
    assert len(df[df.state != "FAIL"]) == 5
    with pytest.raises(ArchsearchError, match="--pruner"):
        prepare(_opts(tmp_path / "other", pruner=True))


def test_torn_journal_tail_is_set_aside_and_nothing_is_lost(tmp_path) -> None:
    out = tmp_path / "run"
    execute(prepare(_opts(out, trials=2)))
    before = pd.read_csv(out / "trials.csv")
    torn = b'{"op_code": 6, "worker_id": "w", "trial_id": 1, "user_attr": {"err'
    with (out / "study.journal").open("ab") as fh:
        fh.write(torn)  # a write cut off by a kill or a full disk
    execute(prepare(_opts(out, trials=3)))
    aside = list(out.glob("study.journal.torn-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == torn
    after = pd.read_csv(out / "trials.csv")
    same = ["trial", "archid", "proxy_accuracy"]
    pd.testing.assert_frame_equal(after[same].head(len(before)), before[same])
    assert len(_trained(after)) == 3 and _trained(after).archid.is_unique


def test_a_killed_lock_holder_never_stalls_the_next_start(tmp_path) -> None:
    from archsearch.search.study import FlockLock

    journal = str(tmp_path / "study.journal")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from archsearch.search.study import FlockLock;"
         f" FlockLock({journal!r}).acquire(); print('held', flush=True); time.sleep(600)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    t0 = time.monotonic()
    lock = FlockLock(journal)
    assert lock.acquire()
    lock.release()
    assert time.monotonic() - t0 < 5  # at once, not after a grace period
