"""``--timeout`` bounds the whole search, a training already running included."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from archsearch.errors import TrainingCutOff
from archsearch.records import read_trials
from archsearch.train import ProxySchedule, load_dataset, train_proxy
from tests._tiny import tiny_run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_training_stops_at_the_first_batch_after_its_deadline() -> None:
    data = load_dataset("synthetic")
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(32 * 32, 10))
    sched = ProxySchedule.for_device("cpu", epochs=50, img_size=32, subset=256, batch_size=32)
    batches: list[int] = []
    net.register_forward_pre_hook(lambda m, a: batches.append(1) if m.training else None)
    deadline = time.time() + 0.3
    with pytest.raises(TrainingCutOff, match=r"cut off by --timeout in epoch \d+ of 50, batch"):
        train_proxy(net, data, sched, device="cpu", seed=0, deadline=deadline)
    assert time.time() - deadline < 5  # stopped within a batch or an evaluation, not at the end
    assert 0 < len(batches) < 50 * 8
    with pytest.raises(TrainingCutOff, match="epoch 1 of 50, batch 1 of 8"):
        train_proxy(net, data, sched, device="cpu", seed=0, deadline=time.time() - 1)


def test_a_run_cut_off_by_timeout_records_no_result_and_a_resume_trains_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "run"
    schedule = dict(epochs=4, subset=1792)  # seconds of training: longer than the timeout
    tiny_run(out, trials=1, timeout=0.5, **schedule)
    t = read_trials(out / "trials.csv")
    cut = t[t["error"].str.contains("cut off by --timeout", na=False)]
    assert len(cut) == 1, t[["trial", "state", "error"]]
    row = cut.iloc[0]
    assert row["state"] == "FAIL" and pd.isna(row["proxy_accuracy"]) and pd.isna(row["weights"])
    assert not (t["state"] == "COMPLETE").any()  # nothing recorded as finished
    assert not list((out / "weights").glob("*")) if (out / "weights").exists() else True
    # not queued again in the run whose time is up (finalists would wait behind it, and it would
    # be cut off again at its first batch): nothing is left waiting in the study
    assert not (t["state"] == "WAITING").any()

    # a resume with time to spare trains the cut-off design first (its retry was queued)
    tiny_run(out, trials=1, timeout=600, **schedule)
    t2 = read_trials(out / "trials.csv")
    done = t2[t2["state"] == "COMPLETE"]
    assert list(done["archid"]) == [row["archid"]]
    assert done.iloc[0]["proxy_accuracy"] > 0
