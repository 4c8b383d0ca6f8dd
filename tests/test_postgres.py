"""``--storage``: several ``archsearch run`` processes share one study in a real PostgreSQL server.

A private cluster is made with ``initdb``/``pg_ctl`` in a temporary folder (as ``nobody`` when
the tests run as root: ``initdb`` refuses root) and listens on a free loopback port.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from archsearch import cli
from archsearch.errors import ArchsearchError, ConfigError
from archsearch.search import prepare
from archsearch.search import study as st
from archsearch.search.identity import RUN_ATTR
from archsearch.search.local import open_run_study, start_run
from archsearch.search.plan import resolve
from archsearch.search.study import load_study

from ._tiny import tiny_options
from .test_search import _cli_args

psycopg2 = pytest.importorskip(
    "psycopg2", reason="psycopg2 is not installed: pip install 'archsearch[postgres]'"
)

#: Trials the two processes share (each trains about half).
TRIALS = 6


def _pg_bin(name: str) -> str | None:
    """A PostgreSQL program on PATH or in Debian's versioned folder (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def postgres() -> Iterator[Callable[[str], str]]:
    """A private PostgreSQL server; call it with a database name to get that database's URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL's initdb/pg_ctl not found (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to nobody
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    root = Path(tempfile.mkdtemp(prefix="archsearch-pg-", dir="/tmp"))
    if as_user:
        shutil.chown(root, "nobody")
    data, port = root / "data", _free_port()
    run = dict(capture_output=True, text=True, timeout=120, cwd=root)
    try:
        res = subprocess.run(
            [*as_user, initdb, "-D", str(data), "-U", "archsearch", "--auth=trust", "--no-sync"],
            **run,  # type: ignore[call-overload]
        )
        assert res.returncode == 0, res.stderr
        opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        start = [*as_user, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-o", opts]
        res = subprocess.run([*start, "start"], **run)  # type: ignore[call-overload]
        assert res.returncode == 0, res.stdout + res.stderr + (root / "log").read_text()

        def database(name: str) -> str:
            conn = psycopg2.connect(
                host="127.0.0.1", port=port, user="archsearch", dbname="postgres"
            )
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{name}"')
            conn.close()
            return f"postgresql+psycopg2://archsearch@127.0.0.1:{port}/{name}"

        yield database
    finally:
        if (data / "postmaster.pid").exists():
            stop = [*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(stop, **run)  # type: ignore[call-overload]
        shutil.rmtree(root, ignore_errors=True)


def test_two_processes_share_one_study(postgres, tmp_path: Path) -> None:
    url = postgres("shared_search")
    # Two machines' run folders, one run name: the study's name in the shared storage.
    outs = [tmp_path / "machine-a" / "fmnist", tmp_path / "machine-b" / "fmnist"]
    began = time.monotonic()
    procs = [
        subprocess.Popen(
            # trainings long enough (seconds each) that the second process starts (imports
            # take seconds) before the first has trained every trial alone
            _cli_args(out, TRIALS, "--storage", url, "--quiet", "--epochs", "15"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for out in outs
    ]
    try:
        errs = [p.communicate(timeout=540)[1] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    seconds = time.monotonic() - began
    assert [p.returncode for p in procs] == [0, 0], errs
    study = load_study(outs[1])  # through the URL run.yaml records
    trials = study.trials
    assert [t.number for t in load_study(outs[0]).trials] == [t.number for t in trials]
    assert [t.number for t in trials] == list(range(len(trials)))
    assert all(t.state == TrialState.COMPLETE for t in trials), [t.user_attrs for t in trials]
    assert len({t.user_attrs["owner"] for t in trials}) == 2, "both processes trained"
    fresh = [t for t in trials if t.user_attrs.get("reused_from") is None]
    trained = [t.user_attrs["archid"] for t in fresh if t.user_attrs.get("feasible")]
    assert len(trained) == len(set(trained)), "a design was trained twice"
    counted = st.counted_trials(study)
    assert TRIALS <= counted <= TRIALS + 1, counted  # the stop check races by one per process
    tables = [pd.read_csv(out / "trials.csv") for out in outs]
    for table in tables:
        assert table.trial.is_unique
    # the process that finished last wrote every trial, all finished, to its trials.csv
    full = [
        i for i, t in enumerate(tables) if len(t) == len(trials) and (t.state == "COMPLETE").all()
    ]
    assert full, [t[["trial", "state"]] for t in tables]
    table, where = tables[full[0]], outs[full[0]]
    assert sorted(table.archid[table.reused_from.isna() & table.feasible]) == sorted(trained)
    assert cli.main(["report", str(where)]) == 0
    assert (where / "report.html").is_file()
    print(f"two processes, {len(trials)} trials, {seconds:.1f} s")


def test_password_is_not_recorded_and_a_bad_url_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = resolve(tiny_options(tmp_path / "run", storage="postgresql://me:s3cret@db:5432/nas"))
    # the password is used (a bare postgresql:// takes the installed driver), not recorded
    assert plan.settings.storage.startswith("postgresql")
    assert plan.settings.storage.endswith("://me:s3cret@db:5432/nas")
    assert "s3cret" not in yaml.safe_dump(plan.record)
    recorded = plan.record["resolved"]["study"]
    assert recorded["storage"].endswith("://me@db:5432/nas") and recorded["name"] == "run"
    sqlite = resolve(tiny_options(tmp_path / "run", storage="sqlite:///rel/s.db")).settings.storage
    assert sqlite == f"sqlite:///{Path('rel/s.db').resolve()}"  # any process can find it
    for bad, fragment in [
        ("nonsense", "expected an Optuna RDB URL"),
        ("postgres://x@h/db", "unknown database 'postgres'"),
        ("sqlite://", "in-memory"),
        ("postgresql://me:s3cret@h:5432", "no database name"),
    ]:
        with pytest.raises(ConfigError, match="--storage") as info:
            resolve(tiny_options(tmp_path / "run", storage=bad))
        assert fragment in str(info.value) and "s3cret" not in str(info.value)
    out = tmp_path / "unreachable"
    url = f"postgresql+psycopg2://me:s3cret@127.0.0.1:{_free_port()}/nas"
    argv = _cli_args(out, 1, "--storage", url)[3:]  # the arguments after "python -m archsearch.cli"
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected a database to connect to" in err[0], err
    assert "s3cret" not in err[0] and not out.exists()


def test_a_different_run_of_the_same_name_is_refused(postgres, tmp_path: Path) -> None:
    url = postgres("names")
    first = prepare(tiny_options(tmp_path / "a" / "run", storage=url, trials=2))
    start_run(first)
    open_run_study(first)
    joining = prepare(tiny_options(tmp_path / "b" / "run", storage=url, trials=2))
    assert joining.resumed and not joining.replace_study  # the same run: joined
    other = tiny_options(tmp_path / "c" / "run", storage=url, budget="60K-params")
    with pytest.raises(ArchsearchError, match="study 'run' in .* different budget"):
        prepare(other)
    forced = prepare(other.replace(force=True))
    assert forced.replace_study
    start_run(forced)
    study = open_run_study(forced)
    assert '"budget": "60K' in study.user_attrs[RUN_ATTR]  # stamped with the new run
    with pytest.raises(ArchsearchError, match="different budget"):
        prepare(tiny_options(tmp_path / "a" / "run", storage=url, trials=2))


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_dead_trial_is_found_by_the_database_clock(
    postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st, "GRACE_SECONDS", 3.0)  # Optuna's grace period: 3 s
    sampler = st.make_sampler("random", seed=0, n_objectives=1)
    study = st.open_study(tmp_path, ["maximize"], sampler, url=postgres("beats"), name="beats")
    trial = study.ask({"x": CategoricalDistribution([1, 2])})
    trial.set_user_attr("owner", "elsewhere:1")  # a process on another machine
    st.Heartbeat(study, lambda: [trial]).beat()  # both heartbeats, once
    trial.set_user_attr("heartbeat", time.time() + 3600)  # its own looks fresh: a skewed clock
    assert st.recover_interrupted(study) == []
    time.sleep(4.5)
    assert st.recover_interrupted(study) == [trial.number]  # Optuna's heartbeat went stale
    assert study.trials[trial.number].user_attrs["interrupted"] is True
    assert [t.user_attrs.get("retry_of") for t in study.trials[1:]] == [trial.number]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
def test_a_trial_just_asked_elsewhere_is_not_taken_for_dead(
    postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(st, "CLAIM_SECONDS", 1.0)
    sampler = st.make_sampler("random", seed=0, n_objectives=1)
    study = st.open_study(tmp_path, ["maximize"], sampler, url=postgres("claims"), name="claims")
    x = {"x": CategoricalDistribution([1, 2])}
    claimed, orphan = study.ask(x), study.ask(x)  # no owner yet: just asked, or its process died
    threading.Timer(0.2, claimed.set_user_attr, ("owner", "elsewhere:2")).start()
    assert st.recover_interrupted(study) == [orphan.number]
    assert study.trials[claimed.number].state == TrialState.RUNNING
