"""archsearch calibrate: proxy seeds and a reference tier through the run's own driver."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from archsearch.calibrate import CALIBRATION_COLUMNS, REFERENCE_SEED_OFFSET, calibrate
from archsearch.errors import ConfigError
from archsearch.records import read_trials
from archsearch.train import candidate

from ._tiny import TINY_RUN, tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("calibrate") / "run", trials=4)


def test_calibration_of_a_run_folder_and_its_resume(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    real = candidate.Trainer.train
    calls: list[tuple[str, int]] = []

    def counted(self, config, **kw):
        calls.append((config.archid, kw.get("seed_offset", 0)))
        if len(calls) == 4:
            raise KeyboardInterrupt  # a kill in the middle of the calibration
        return real(self, config, **kw)

    monkeypatch.setattr(candidate.Trainer, "train", counted)
    with pytest.raises(KeyboardInterrupt):
        calibrate(str(copy), designs=3, seeds=2, reference_factor=2.0, quiet=True)
    done_before = pd.read_csv(copy / "calibration.csv")
    assert len(done_before) == 3 + 3  # proxy seed 0 of each design is the run's own training
    result = calibrate(str(copy), designs=3, seeds=2, reference_factor=2.0, quiet=True)
    df = pd.read_csv(result["csv"])
    assert list(df.columns) == CALIBRATION_COLUMNS
    assert len(df) == 3 * 2 + 3 and df.design.nunique() == 3
    assert sorted(df.tier.unique()) == ["proxy", "reference"]
    assert len(calls) == 3 + 1 + 3  # three done, one interrupted, then the three left
    proxy = df[df.tier == "proxy"]
    ref = df[df.tier == "reference"]
    assert (ref.images_x_epochs >= 2 * proxy.images_x_epochs.max()).all()
    # proxy seed 0 is the run's own training (deterministic on CPU), taken from trials.csv
    trials = read_trials(copy / "trials.csv").dropna(subset=["proxy_accuracy"])
    by_id = dict(zip(trials.archid, trials.proxy_accuracy))
    for _, r in proxy[proxy.seed == 0].iterrows():
        assert r.accuracy == pytest.approx(by_id[r.design])
    assert not [c for c in calls if c[1] == 0]  # no proxy seed 0 trained again
    # reference seed 0 trains with its own seed (offset 1000): no init shared with a proxy seed
    assert {c[0] for c in calls if c[1] == REFERENCE_SEED_OFFSET} == set(ref.design)
    analysis = json.loads((copy / "calibration.json").read_text())
    assert analysis and (copy / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    assert 'id="calibration"' in (copy / "report.html").read_text()
    trainings = len(calls)
    calibrate(str(copy), designs=3, seeds=2, reference_factor=2.0, quiet=True)
    assert len(calls) == trainings  # finished: nothing is trained again
    # a second reference seed is added to the finished calibration, in a copy that kept its
    # calibration.csv but not its journal (as a clone does): only those 3 trainings
    (copy / "calibration.journal").unlink()
    result = calibrate(
        str(copy), designs=3, seeds=2, reference_factor=2.0, reference_seeds=2, quiet=True
    )
    assert len(calls) == trainings + 3 and {c[1] for c in calls[trainings:]} == {
        REFERENCE_SEED_OFFSET + 1
    }
    df = pd.read_csv(result["csv"])
    assert sorted(df[df.tier == "reference"].seed) == [0, 0, 0, 1, 1, 1]
    ref = result["analysis"]["reference"]
    assert ref["seeds"] == [0, 1] and ref["ceiling"] is not None


def test_space_calibration_samples_feasible_designs(tmp_path: Path) -> None:
    opts = {k: v for k, v in TINY_RUN.items() if k not in ("space", "baselines", "quiet")}
    result = calibrate(
        space="tiny", budget="100K-params", out=str(tmp_path / "cal"), designs=3, seeds=2,
        reference_factor=2.0, quiet=True, **opts,
    )  # fmt: skip
    df = pd.read_csv(result["csv"])
    assert len(df) == 9 and (df.params <= 100_000).all()
    assert set(df.family) <= {"hierarchical", "columnar"}
    # no run, so no report.html: the calibration is a page of its own, its plot beside it
    page = result["html"].read_text()
    assert result["html"] == tmp_path / "cal" / "calibration.html"
    assert "Kendall" in page and "src='calibration.png'" in page.replace('"', "'")
    assert "space tiny, budget 100K-params" in page
    assert (tmp_path / "cal" / "calibration.png").is_file()


def test_bad_calibration_requests_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--seeds: expected an integer >= 2, got 1"):
        calibrate(space="tiny", budget="100K-params", seeds=1)
    with pytest.raises(ConfigError, match="--reference-seeds: expected an integer >= 1, got 0"):
        calibrate(space="tiny", budget="100K-params", reference_seeds=0)
    res = subprocess.run(
        [sys.executable, "-m", "archsearch.cli", "calibrate", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "expected an archsearch run.yaml" in res.stderr
    res = subprocess.run(
        [sys.executable, "-m", "archsearch.cli", "calibrate", "--space", "tiny", "--budget",
         "100K-params", "--out", str(tmp_path / "cal"), "--reference-seeds", "0"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 2 and not (tmp_path / "cal").exists()
    assert (
        res.stderr.count("\n") == 1
        and "--reference-seeds: expected an integer >= 1, got 0" in res.stderr
    )


def test_a_run_is_calibrated_with_its_own_proxy(run: Path, tmp_path: Path) -> None:
    """The proxy a run resolved (recorded in run.yaml) is the one calibrated, even when the
    default it came from has changed since."""
    import shutil

    import yaml

    from archsearch.calibrate import _plan

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    record = yaml.safe_load((copy / "run.yaml").read_text())
    record["options"]["proxy_img_size"] = None  # it came from a default ...
    record["resolved"]["schedule"]["img_size"] = 24  # ... that resolved to 24 then
    (copy / "run.yaml").write_text(yaml.safe_dump(record))
    plan, root = _plan(str(copy), None, None, None)
    assert plan.schedule.img_size == 24 and root == copy
