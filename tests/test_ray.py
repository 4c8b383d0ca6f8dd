"""``archsearch run --backend ray`` on a local 2-CPU Ray instance bound to 127.0.0.1.

Tiny space, synthetic data, one proxy epoch: each run takes seconds. One Ray session serves the
whole module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from archsearch.errors import ConfigError  # noqa: E402
from archsearch.records import HEAD_COLUMNS, TAIL_COLUMNS, read_trials  # noqa: E402
from archsearch.search import execute, prepare  # noqa: E402
from archsearch.search.space import load_space  # noqa: E402
from archsearch.search.study import load_study  # noqa: E402
from archsearch.settings import RunSettings  # noqa: E402

from ._tiny import TINY_RUN, two_member_space  # noqa: E402

FAST = dict(
    **TINY_RUN,
    backend="ray",
    cpus_per_trial=1,
    max_concurrent=2,
)


def _opts(out: Path, **kw) -> RunSettings:
    return RunSettings(**{"budget": "100K-params", "trials": 4, "out": str(out), **FAST, **kw})


@pytest.fixture(scope="module")
def local_ray():
    """A 2-CPU Ray instance listening on 127.0.0.1 only (run_ray uses it and leaves it up)."""
    import ray._private.ray_constants as constants

    mp = pytest.MonkeyPatch()
    mp.setattr(constants, "ENABLE_RAY_CLUSTER", False)  # node address = loopback
    mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        yield
    finally:
        ray.shutdown()
        mp.undo()


def _ray_specs(out: Path) -> list[dict]:
    """The config of every trial that Ray Tune ran (from its trial directories)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("ray/*/trial*/params.json"))]


def _dead_owner() -> str:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True)  # fmt: skip
    return f"{socket.gethostname()}:{proc.stdout.strip()}"


def test_ray_run_has_local_layout_and_resumes(tmp_path, local_ray) -> None:
    out = tmp_path / "run"
    front = execute(prepare(_opts(out)))
    for name in ("run.yaml", "study.journal", "trials.csv", "weights"):
        assert (out / name).exists(), name
    assert "backend: ray" in (out / "run.yaml").read_text()
    df = pd.read_csv(out / "trials.csv")
    cols = list(df.columns)
    dims = {name for name, _ in load_space("tiny").dimensions()}
    assert cols[: len(HEAD_COLUMNS)] == HEAD_COLUMNS and cols[-len(TAIL_COLUMNS) :] == TAIL_COLUMNS
    assert set(cols[len(HEAD_COLUMNS) : -len(TAIL_COLUMNS)]) <= dims
    assert len(df) == 4 and (df.state == "COMPLETE").all() and df.feasible.all()
    assert df.archid.is_unique and df.proxy_accuracy.notna().all() and (df.epochs == 1).all()
    study = load_study(out)
    ray_ids = {t.user_attrs.get("ray_trial") for t in study.trials}
    assert None not in ray_ids and len(ray_ids) == 4  # each trained as its own Ray trial
    assert sorted(s["number"] for s in _ray_specs(out)) == [0, 1, 2, 3]
    kept = {p.name for p in (out / "weights").glob("*.safetensors")}
    assert kept and kept == {Path(w).name for w in df.weights.dropna()}
    assert set(front.trial) == set(df[df.weights.notna()].trial)  # the front keeps its weights

    from archsearch.report import write_report

    assert write_report(out)["html"].is_file()

    # A trial left RUNNING by a killed driver, then the same command with more trials.
    study = load_study(out)
    lost = study.ask()
    cfg = load_space("tiny").sample(lambda n, opts: lost.suggest_categorical(n, opts))
    for k, v in (("owner", _dead_owner()), ("archid", cfg.archid), ("config", cfg.to_json())):
        lost.set_user_attr(k, v)
    execute(prepare(_opts(out, trials=6)))
    df2 = pd.read_csv(out / "trials.csv")
    same = ["trial", "archid", "proxy_accuracy", "train_seconds"]
    pd.testing.assert_frame_equal(df2[same].head(4), df[same])  # finished trials are kept
    assert df2.loc[4, "state"] == "FAIL" and df2.loc[4, "error"] == "interrupted"
    counted = df2[(df2.error.fillna("") != "interrupted") & df2.reused_from.isna()]
    assert len(counted) == 6 and (counted.state == "COMPLETE").all()  # repeats do not count
    retry = [t for t in load_study(out).trials if t.user_attrs.get("retry_of") == 4]
    assert len(retry) == 1 and retry[0].user_attrs["archid"] == cfg.archid
    assert df2[df2.reused_from.isna() & df2.epochs.eq(1)].archid.is_unique  # none trained twice


def test_over_budget_candidates_never_reach_ray(tmp_path, local_ray) -> None:
    out = tmp_path / "run"
    execute(prepare(_opts(out, budget="45K-params", trials=6, epochs=2, scheduler="asha")))
    df = pd.read_csv(out / "trials.csv")
    infeasible = df[(df.state == "COMPLETE") & ~df.feasible]
    assert len(infeasible) >= 1
    counted = df[df.reused_from.isna()]
    assert len(counted) - len(infeasible) == 6  # over budget and repeats do not count as trials
    assert (infeasible.params > 45_000).all()
    assert infeasible.violations.str.contains("budget").all()
    assert infeasible.proxy_accuracy.isna().all() and (infeasible.epochs == 0).all()
    assert (infeasible.train_seconds == 0).all() and infeasible.weights.isna().all()
    specs = _ray_specs(out)
    ran = {s["archid"] for s in specs}
    assert ran and not ran & set(infeasible.archid)  # no Ray trial for an over-budget candidate
    study = load_study(out)
    launched = [t for t in study.trials if "ray_trial" in t.user_attrs]
    sent = counted[~counted.index.isin(infeasible.index)]  # trained or pruned
    assert len(launched) == len(specs) == len(sent)
    assert all(s["costs"]["params"] <= 45_000 for s in specs)
    trained = df[df.epochs.fillna(0) > 0]
    assert (trained.params <= 45_000).all()
    pruned = df[df.state == "PRUNED"]  # ASHA may stop weak trials after their first epoch
    assert pruned.error.str.match(r"stopped by ASHA after epoch [12] at accuracy").all()
    assert set(df.state) <= {"COMPLETE", "PRUNED"}


def test_repeated_architectures_are_trained_once(tmp_path, local_ray) -> None:
    space = two_member_space(tmp_path)
    out = tmp_path / "run"
    execute(prepare(_opts(out, space=str(space), trials=5, sampler="random")))
    df = pd.read_csv(out / "trials.csv")
    assert (df.state == "COMPLETE").all() and df.archid.nunique() == 2  # the space has two
    specs = _ray_specs(out)
    assert sorted(s["archid"] for s in specs) == sorted(set(df.archid))  # one Ray trial each
    reused = df[df.reused_from.notna()]
    assert len(reused) == len(df) - len(specs) >= 25  # the space ran dry; repeats never count
    assert df[df.weights.notna()].reused_from.isna().all()  # a repeat is no point of the front
    for _, r in reused.iterrows():
        orig = df[df.trial == r.reused_from].iloc[0]
        assert orig.archid == r.archid and orig.proxy_accuracy == r.proxy_accuracy


@pytest.mark.parametrize(
    "option, value",
    [("cpus_per_trial", 0), ("gpus_per_trial", -1.0), ("max_concurrent", 0)],
)
def test_bad_ray_options_fail_before_anything_is_written(tmp_path, option, value) -> None:
    out = tmp_path / "run"
    flag = "--" + option.replace("_", "-")
    with pytest.raises(ConfigError, match=flag):
        execute(prepare(_opts(out, **{option: value})))
    assert not out.exists()


def test_local_and_ray_write_the_same_table_layout(tmp_path, local_ray) -> None:
    from archsearch.records import read_trials

    a, b = tmp_path / "local", tmp_path / "ray"
    same = dict(trials=3, sampler="random", seed=3)
    execute(prepare(RunSettings(**{"budget": "100K-params", "out": str(a), **TINY_RUN, **same})))
    execute(prepare(_opts(b, max_concurrent=1, **same)))
    da, db = read_trials(a / "trials.csv"), read_trials(b / "trials.csv")
    assert list(da.columns) == list(db.columns)
    assert da.dtypes.to_dict() == db.dtypes.to_dict()
    assert list(da.archid) == list(db.archid)
    assert da.proxy_accuracy.tolist() == db.proxy_accuracy.tolist()  # same seed, same training


def test_ray_runs_successive_halving_and_finalists(tmp_path, local_ray) -> None:
    """Rungs and finalist seeds go through the same driver on Ray: 4 designs at the low rung,
    4 // 2 promoted to the top, then the front's designs retrained with a second seed."""
    out = tmp_path / "sh"
    opts = _opts(out, fidelity="sh", rungs=2, eta=2, final_seeds=2, subset=128, sampler="random")
    execute(prepare(opts))
    df = read_trials(out / "trials.csv")
    done = df[(df.state == "COMPLETE") & df.reused_from.isna()]
    first = done[done.repeat_of.isna()]
    assert first.groupby("rung").archid.nunique().to_dict() == {1: 4, 0: 2}
    front = df[df.accuracy_mean.notna()]
    assert (front.rung == 0).all() and (front.seeds == 2).all()
    assert sorted(done[done.repeat_of.notna()].repeat_of) == sorted(front.trial)
    specs = _ray_specs(out)
    assert {s["schedule"]["subset"] for s in specs if s["schedule"]} == {64}
