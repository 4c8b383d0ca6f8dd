"""archsearch export: timm local-dir folders from a real tiny run (seconds in total)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch
from safetensors.torch import load_file

import archsearch  # noqa: F401  (registers archsearch_net in timm)
from archsearch import export as export_mod
from archsearch.config import ArchConfig
from archsearch.errors import ExportError
from archsearch.export import export
from archsearch.models import build_model
from archsearch.pareto import pareto_table
from archsearch.records import read_trials, trials_frame
from archsearch.search.study import load_study, to_record
from archsearch.train.data import load_dataset
from archsearch.train.weights import load_weights

from ._tiny import tiny_run

FILES = {"config.json", "model.safetensors", "README.md"}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("export") / "run", trials=4)


def _table(run: Path) -> pd.DataFrame:
    df = read_trials(run / "trials.csv")
    return pareto_table(df, ["accuracy", "macs"], feasible_col="feasible")


def _front(run: Path) -> pd.DataFrame:
    table = _table(run)
    return table[table["pareto_rank"] == 0]


def _row(run: Path, trial: int) -> pd.Series:
    df = _table(run)
    return df[df["trial"] == trial].iloc[0]


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _reference_model(run: Path, trial: int) -> torch.nn.Module:
    """The trial's model built directly and loaded with the run's own safetensors weights."""
    row = _row(run, trial)
    model = build_model(
        ArchConfig.from_json(row["config"]), num_classes=10, in_chans=1, img_size=32
    )
    load_weights(model, run / row["weights"])
    return model.eval()


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest)
    return dest


# --------------------------------------------------------------------------- folder content
def test_knee_export_writes_a_timm_folder(run: Path, tmp_path: Path) -> None:
    (folder,) = export(run, knee=True, out=tmp_path / "out")
    knee = _front(run)
    knee_row = knee[knee["knee"]].iloc[0]
    trial, archid = int(knee_row["trial"]), knee_row["archid"]
    assert folder == tmp_path / "out" / f"run-trial{trial}-{archid}"
    assert {p.name for p in folder.iterdir()} == FILES
    assert [p.name for p in (tmp_path / "out").iterdir()] == [folder.name]  # no temp leftovers

    cfg = _config(folder)
    data = load_dataset("synthetic", split_seed=0)
    assert cfg["architecture"] == "archsearch_net"
    assert cfg["num_classes"] == 10
    assert cfg["model_args"]["arch"] == ArchConfig.from_json(knee_row["config"]).to_dict()
    assert {k: cfg["model_args"][k] for k in ("img_size", "in_chans", "num_classes")} == {
        "img_size": 32,
        "in_chans": 1,
        "num_classes": 10,
    }
    pc = cfg["pretrained_cfg"]
    assert pc["input_size"] == [1, 32, 32]
    assert pc["num_classes"] == 10
    assert pc["mean"] == list(data.mean) and pc["std"] == list(data.std)
    assert pc["crop_pct"] == 1.0
    assert pc["first_conv"] == "stages.0.embed.proj" and pc["classifier"] == "head"
    meta = cfg["archsearch"]
    assert meta["archid"] == archid and meta["trial"] == trial
    assert meta["proxy_accuracy"] == pytest.approx(float(knee_row["proxy_accuracy"]))
    assert meta["params"] == int(knee_row["params"]) and meta["macs"] == int(knee_row["macs"])
    assert meta["dataset"] == "synthetic" and meta["epochs_retrained"] is None
    assert meta["run_dir"] == str(run.resolve())
    readme = (folder / "README.md").read_text()
    assert f'timm.create_model("local-dir:{folder.resolve()}", pretrained=True)' in readme

    # the weights are the run's proxy-trained ones, tensor for tensor
    ours = load_file(str(folder / "model.safetensors"))
    theirs = load_file(str(run / knee_row["weights"]))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    # timm's data pipeline picks up the proxy preprocessing
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    data_cfg = timm.data.resolve_data_config({}, model=model)
    assert data_cfg["input_size"] == (1, 32, 32)
    assert list(data_cfg["mean"]) == list(data.mean)


def test_round_trip_in_a_fresh_process_gives_identical_logits(run: Path, tmp_path: Path) -> None:
    (folder,) = export(run, knee=True, out=tmp_path / "out")
    trial = _config(folder)["archsearch"]["trial"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x = torch.randn(4, 1, 32, 32, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            expected = _reference_model(run, trial)(x)
    finally:
        torch.set_num_threads(threads)
    torch.save({"x": x, "logits": expected}, tmp_path / "expected.pt")
    code = textwrap.dedent(
        f"""
        import archsearch, timm, torch
        torch.set_num_threads(1)
        ref = torch.load({str(tmp_path / "expected.pt")!r})
        m = timm.create_model({"local-dir:" + str(folder)!r}, pretrained=True).eval()
        with torch.no_grad():
            out = m(ref["x"])
        assert out.shape == ref["logits"].shape, out.shape
        assert torch.equal(out, ref["logits"]), (out - ref["logits"]).abs().max()
        print("identical")
        """
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().endswith("identical")


def test_exported_model_passes_timm_model_checks(run: Path, tmp_path: Path) -> None:
    (folder,) = export(run, knee=True, out=tmp_path / "out")
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    x = torch.randn(2, 1, 32, 32)
    model.train()
    out = model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"parameters without a gradient: {no_grad}"

    model.eval()
    feats = model.forward_features(x)
    assert feats.shape[0] == 2
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, model.head_hidden_size)
    assert model.forward_head(feats).shape == (2, 10)

    model.reset_classifier(0)
    assert model(x).shape == (2, model.head_hidden_size)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)

    # timm adapts the classifier and the stem on request
    other = timm.create_model(f"local-dir:{folder}", pretrained=True, num_classes=3, in_chans=3)
    assert other(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_model_args_build_the_same_architecture(run: Path, tmp_path: Path) -> None:
    (folder,) = export(run, knee=True, out=tmp_path / "out")
    bare = timm.create_model("archsearch_net", **_config(folder)["model_args"])
    loaded = timm.create_model(f"local-dir:{folder}", pretrained=True)
    a, b = bare.state_dict(), loaded.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)


# --------------------------------------------------------------------------- selection
def test_top_exports_the_most_accurate_distinct_front_members(run: Path, tmp_path: Path) -> None:
    front = _front(run).sort_values(["proxy_accuracy", "trial"], ascending=[False, True])
    expected = list(dict.fromkeys(front["archid"]))[:2]
    folders = export(run, top=2, out=tmp_path / "out")
    assert [_config(f)["archsearch"]["archid"] for f in folders] == expected
    accs = [_config(f)["archsearch"]["proxy_accuracy"] for f in folders]
    assert accs == sorted(accs, reverse=True)
    # more than the front holds: every distinct member, once
    everything = export(run, top=50, out=tmp_path / "out")
    assert len(everything) == len(set(front["archid"]))
    assert everything[: len(folders)] == folders


def test_reexport_is_idempotent_and_foreign_folders_are_refused(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (folder,) = export(run, knee=True, out=out)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert export(run, knee=True, out=out) == [folder]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before

    config = json.loads((folder / "config.json").read_text())
    config["archsearch"]["archid"] = "0123456789ab"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="earlier export of") as err:
        export(run, knee=True, out=out)
    assert "\n" not in str(err.value)
    assert json.loads((folder / "config.json").read_text()) == config  # left alone
    assert sorted(p.name for p in out.iterdir()) == [folder.name]


def test_a_failed_export_leaves_nothing_behind(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise ExportError("boom")

    monkeypatch.setattr(export_mod.folder, "_verify", broken)
    with pytest.raises(ExportError, match="boom"):
        export(run, knee=True, out=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------- retraining
def test_epochs_retrains_and_reproduces_the_run(run: Path, tmp_path: Path) -> None:
    knee = _front(run)
    row = knee[knee["knee"]].iloc[0]
    trial = int(row["trial"])
    (folder,) = export(run, trial=trial, out=tmp_path / "out", epochs=1, device="cpu")
    assert folder.name.endswith("-e1")
    meta = _config(folder)["archsearch"]
    assert meta["epochs_retrained"] == 1 and 0.0 <= meta["retrained_accuracy"] <= 1.0
    # one epoch is the run's own schedule: same seed derivation, so the same weights
    ours = load_file(str(folder / "model.safetensors"))
    theirs = load_file(str(run / row["weights"]))
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_epochs_exports_a_trial_whose_weights_are_gone(run: Path, tmp_path: Path) -> None:
    copy = _copy_run(run, tmp_path / "run")
    front = _front(copy)
    row = front.iloc[0]
    (copy / row["weights"]).unlink()
    with pytest.raises(ExportError, match="--epochs"):
        export(copy, trial=int(row["trial"]), out=tmp_path / "out")
    (folder,) = export(copy, trial=int(row["trial"]), out=tmp_path / "out", epochs=1)
    assert {p.name for p in folder.iterdir()} == FILES


# --------------------------------------------------------------------------- errors
def test_missing_weights_say_why_and_suggest_retraining(run: Path, tmp_path: Path) -> None:
    copy = _copy_run(run, tmp_path / "run")
    row = _front(copy).iloc[0]
    (copy / row["weights"]).unlink()
    with pytest.raises(ExportError) as err:
        export(copy, trial=int(row["trial"]), out=tmp_path / "out")
    msg = str(err.value)
    assert "left the Pareto front" in msg and "--epochs E" in msg and "\n" not in msg
    with pytest.raises(ExportError, match="--epochs"):  # the front member is now weightless
        export(copy, top=len(_front(copy)), out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unfinished_unknown_and_bad_requests_are_refused(run: Path, tmp_path: Path) -> None:
    copy = _copy_run(run, tmp_path / "run")
    study = load_study(copy)
    running = study.ask()  # a trial still being trained
    trials_frame([to_record(t) for t in study.trials]).to_csv(copy / "trials.csv", index=False)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=rf"trial {running.number}: .*got RUNNING"):
        export(copy, trial=running.number, out=out)
    with pytest.raises(ExportError, match="got 99"):
        export(copy, trial=99, out=out)
    with pytest.raises(ExportError, match="--top: expected an integer >= 1, got 0"):
        export(copy, top=0, out=out)
    with pytest.raises(ExportError, match="exactly one of"):
        export(copy, out=out)
    with pytest.raises(ExportError, match="exactly one of"):
        export(copy, trial=0, knee=True, out=out)
    with pytest.raises(ExportError, match="--epochs"):
        export(copy, knee=True, out=out, epochs=0)
    with pytest.raises(ExportError, match="run.yaml"):
        export(tmp_path, knee=True, out=out)
    assert not out.exists()


def test_infeasible_trials_and_empty_fronts_are_refused(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = int(_table(run)["trial"].min())
    real = export_mod.read_table

    def infeasible(path: Path) -> pd.DataFrame:
        df = real(path)
        df["feasible"] = False
        df["error"] = "params 120K > 100K"
        return df

    monkeypatch.setattr(export_mod, "read_table", infeasible)
    with pytest.raises(ExportError, match=r"infeasible one \(params 120K > 100K\)"):
        export(run, trial=first, out=tmp_path / "out")
    with pytest.raises(ExportError, match="Pareto front, found none"):
        export(run, knee=True, out=tmp_path / "out")


def test_report_and_export_need_no_journal(run: Path, tmp_path: Path) -> None:
    from archsearch.report import write_report

    with_journal = _copy_run(run, tmp_path / "with" / "run")
    without = _copy_run(run, tmp_path / "without" / "run")
    (without / "study.journal").unlink()
    fronts = [pd.read_csv(write_report(r)["pareto_csv"]) for r in (with_journal, without)]
    pd.testing.assert_frame_equal(fronts[0], fronts[1])
    a = export(with_journal, knee=True, out=tmp_path / "a")[0]
    b = export(without, knee=True, out=tmp_path / "b")[0]
    assert a.name == b.name
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    ca, cb = _config(a), _config(b)
    for cfg in (ca, cb):
        cfg["archsearch"].pop("run_dir")
        cfg["pretrained_cfg"].pop("description", None)
    assert ca == cb
