"""Bad input files give a one-line error and exit code 2, never a traceback (issue 12)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "archsearch.cli"]
RUN = Path(__file__).resolve().parents[1] / "results" / "default-3.5M-params"

KINDS = ["binary", "empty", "garbage", "mode000"]


def _write(path: Path, kind: str) -> None:
    if kind == "binary":
        path.write_bytes(bytes(range(256)))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "garbage":
        path.write_text("{[: ]} :: not: [valid\n\t- {\n")
    else:
        path.write_text("name: x\n")
        path.chmod(0)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def _assert_one_line_error(res: subprocess.CompletedProcess) -> None:
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("archsearch: error:"), res.stderr


def _bad_file(path: Path, kind: str) -> Path:
    if kind == "mode000" and os.geteuid() == 0:
        pytest.skip("root ignores file permissions, so a mode-000 file stays readable")
    _write(path, kind)
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_bad_space_file(tmp_path: Path, kind: str) -> None:
    space = _bad_file(tmp_path / "space.yaml", kind)
    out = tmp_path / "out"
    res = _run(
        "run", "--space", str(space), "--budget", "3.5M-params", "--out", str(out), cwd=tmp_path
    )
    _assert_one_line_error(res)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_count_config(tmp_path: Path, kind: str, suffix: str) -> None:
    config = _bad_file(tmp_path / f"config{suffix}", kind)
    res = _run("count", str(config), cwd=tmp_path)
    _assert_one_line_error(res)
    assert sorted(p.name for p in tmp_path.iterdir()) == [config.name]


TRIALS = {"empty": b"", "garbage": bytes(range(256)) * 4}


def _run_dir(tmp_path: Path, trials: bytes) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(RUN / "run.yaml", run / "run.yaml")
    (run / "trials.csv").write_bytes(trials)
    return run


@pytest.mark.parametrize("kind", sorted(TRIALS))
def test_report_bad_trials(tmp_path: Path, kind: str) -> None:
    run = _run_dir(tmp_path, TRIALS[kind])
    res = _run("report", str(run), cwd=tmp_path)
    _assert_one_line_error(res)
    assert sorted(p.name for p in run.iterdir()) == ["run.yaml", "trials.csv"]


def test_report_binary_run_yaml(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, (RUN / "trials.csv").read_bytes())
    (run / "run.yaml").write_bytes(bytes(range(256)) * 4)
    res = _run("report", str(run), cwd=tmp_path)
    _assert_one_line_error(res)
    assert sorted(p.name for p in run.iterdir()) == ["run.yaml", "trials.csv"]


@pytest.mark.parametrize("kind", sorted(TRIALS))
def test_export_bad_trials(tmp_path: Path, kind: str) -> None:
    run = _run_dir(tmp_path, TRIALS[kind])
    out = tmp_path / "export"
    res = _run("export", str(run), "--top", "1", "--out", str(out), cwd=tmp_path)
    _assert_one_line_error(res)
    assert sorted(p.name for p in run.iterdir()) == ["run.yaml", "trials.csv"]
    assert not out.exists()


def test_unreadable_file_is_a_one_line_error_even_as_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mode-000 code path, exercised in-process so it runs as root too."""
    from archsearch.config import load_config
    from archsearch.errors import ArchsearchError
    from archsearch.search.space import load_space

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        raise PermissionError(13, "Permission denied", str(self))

    for name in ("space.yaml", "config.json"):
        (tmp_path / name).write_text("{}")
    monkeypatch.setattr(Path, "read_text", denied)
    for load, name in ((load_space, "space.yaml"), (load_config, "config.json")):
        with pytest.raises(ArchsearchError, match="Permission denied") as info:
            load(tmp_path / name)
        assert "\n" not in str(info.value)


def test_data_dir_with_a_generated_dataset_is_refused(tmp_path: Path) -> None:
    res = _run(
        "run", "--budget", "100K-params", "--space", "tiny", "--dataset", "synthetic",
        "--data-dir", str(tmp_path), "--out", "run", cwd=tmp_path,
    )  # fmt: skip
    _assert_one_line_error(res)
    assert "--data-dir" in res.stderr and not (tmp_path / "run").exists()
