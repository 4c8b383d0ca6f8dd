"""Stale running trials are recovered by their heartbeat, whatever their process id or host."""

from __future__ import annotations

import time

import optuna
import pytest

from archsearch.search import study as st


def _study(tmp_path) -> optuna.Study:
    sampler = st.make_sampler("random", seed=0, n_objectives=1)
    return st.open_study(tmp_path, ["maximize"], sampler)


def _running(study: optuna.Study, **attrs) -> optuna.Trial:
    trial = study.ask({"x": optuna.distributions.CategoricalDistribution([1, 2])})
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return trial


def test_stale_heartbeat_is_recovered_even_with_a_live_pid(tmp_path) -> None:
    study = _study(tmp_path)
    # This very process as owner (a reused PID after a container restart), heartbeat long gone.
    stale = _running(study, owner=st.owner(), heartbeat=time.time() - 10 * st.GRACE_SECONDS)
    # An owner on another host (its process cannot be checked from here), beating: still live.
    fresh = _running(study, owner="elsewhere:1", heartbeat=time.time())
    assert st.recover_interrupted(study) == [stale.number]
    trials = study.get_trials(deepcopy=False)
    assert trials[stale.number].state == optuna.trial.TrialState.FAIL
    assert trials[stale.number].user_attrs["interrupted"] is True
    assert trials[fresh.number].state == optuna.trial.TrialState.RUNNING
    queued = [t for t in trials if t.state == optuna.trial.TrialState.WAITING]
    assert [t.user_attrs["retry_of"] for t in queued] == [stale.number]


def test_heartbeat_thread_keeps_a_trial_alive(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(st, "HEARTBEAT_SECONDS", 0.05)
    study = _study(tmp_path)
    trial = _running(study, owner="gone:1", heartbeat=time.time() - 10 * st.GRACE_SECONDS)
    assert not st.is_live(study.get_trials(deepcopy=False)[trial.number])
    with st.Heartbeat(study, lambda: [trial]):
        time.sleep(0.2)
        assert st.is_live(study.get_trials(deepcopy=False)[trial.number])
        assert st.recover_interrupted(study) == []
    study.tell(trial, 1.0)
    st.Heartbeat(study, lambda: [trial]).beat()  # a finished trial is left alone, no error
