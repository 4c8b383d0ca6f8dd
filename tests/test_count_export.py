"""``archsearch count`` on an exported model folder or its config.json (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from archsearch.cli import main
from archsearch.config import ArchConfig
from archsearch.cost import count
from archsearch.export import export

from ._tiny import tiny_run

CLI = [sys.executable, "-m", "archsearch"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("count") / "run", trials=1)


@pytest.fixture(scope="module")
def folder(run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    (out,) = export(run, knee=True, out=tmp_path_factory.mktemp("exported"))
    return out


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _count_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["count", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def _one_line_error(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["count", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error:"), captured.err
    assert captured.out == ""
    return lines[0]


@pytest.mark.parametrize("which", ["folder", "config.json"])
def test_counts_an_export_as_its_run_did(
    folder: Path, capsys: pytest.CaptureFixture[str], which: str
) -> None:
    target = folder if which == "folder" else folder / "config.json"
    d = _count_json(capsys, str(target))
    meta = _config(folder)["archsearch"]
    assert meta["cost_target"]["img_size"] == 224  # the run's cost target, where budgets apply
    assert d["backbone_params"] == meta["params"] and d["macs"] == meta["macs"]
    assert d["params"] == meta["total_params"] and d["uncounted_ops"] == []


def test_options_count_an_export_at_another_input(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = _config(folder)
    args = cfg["model_args"]
    d = _count_json(
        capsys, str(folder), "--img-size", str(args["img_size"]),
        "--in-chans", str(args["in_chans"]), "--num-classes", str(args["num_classes"]),
    )  # fmt: skip
    arch = ArchConfig.from_dict(args["arch"])
    rep = count(
        arch,
        img_size=args["img_size"],
        in_chans=args["in_chans"],
        num_classes=args["num_classes"],
    )
    assert (d["params"], d["macs"]) == (rep.params, rep.macs)
    assert d["macs"] < cfg["archsearch"]["macs"]  # a smaller input than the cost target


def test_the_table_says_what_the_export_was_trained_at(folder: Path) -> None:
    res = subprocess.run([*CLI, "count", str(folder)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    args = _config(folder)["model_args"]
    size = f"{args['in_chans']}x{args['img_size']}x{args['img_size']}"
    first = res.stdout.splitlines()[0]
    assert "at 3x224x224, 1000 classes" in first and f"trained at {size}" in first


# --------------------------------------------------------------------------- bad paths
def _copy_with_config(folder: Path, dest: Path, text: str | bytes) -> Path:
    dest.mkdir()
    cfg = dest / "config.json"
    if isinstance(text, bytes):
        cfg.write_bytes(text)
    else:
        cfg.write_text(text)
    return dest


def test_a_run_folder_says_to_export_first(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "export a design first" in _one_line_error(capsys, str(run))


def test_missing_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "without one" in _one_line_error(capsys, str(tmp_path))
    assert "no such file or folder" in _one_line_error(capsys, str(tmp_path / "gone"))
    missing = tmp_path / "gone" / "config.json"
    assert "no such file or folder" in _one_line_error(capsys, str(missing))


BAD_CONFIGS = {
    "empty": b"",
    "binary": bytes(range(256)),
    "garbage": "{[: not json",
    "another model": json.dumps({"architecture": "resnet18", "model_args": {}}),
    "no arch": json.dumps({"architecture": "archsearch_net", "model_args": {"img_size": 32}}),
    "bad arch": json.dumps(
        {"architecture": "archsearch_net", "model_args": {"arch": {"macro": "pyramid"}}}
    ),
    "other json": json.dumps([1, 2, 3]),
}


@pytest.mark.parametrize("kind", sorted(BAD_CONFIGS))
def test_bad_config_in_a_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    bad = _copy_with_config(Path(tmp_path), tmp_path / "model", BAD_CONFIGS[kind])
    _one_line_error(capsys, str(bad))
    _one_line_error(capsys, str(bad / "config.json"))


def test_unreadable_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    bad = _copy_with_config(tmp_path, tmp_path / "model", "{}")
    (bad / "config.json").chmod(0)
    _one_line_error(capsys, str(bad))


def test_bad_size(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "--img-size" in _one_line_error(capsys, str(folder), "--img-size", "0")


def test_bad_path_at_the_real_command_line(tmp_path: Path) -> None:
    res = subprocess.run(
        [*CLI, "count", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and res.stderr.startswith("archsearch: error:")
