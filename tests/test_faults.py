"""benchmarks/faults.py: a real run killed at random points, its journal torn, its disk filled and
a stale lock and running trial left behind loses no finished trial, trains none twice and never
hangs (issue 12). A few faults by default; the full 20 kills with ``-m slow``."""

from __future__ import annotations

import errno
import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

FAULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "faults.py"
CLEAN = re.compile(r"lost 0, retrained 0, hangs 0; failed runs 0")


def _module() -> ModuleType:
    """benchmarks/faults.py as a module (registered first: its dataclasses look it up)."""
    name = "archsearch_benchmarks_faults"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FAULTS)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _faults(work: Path, *args: str, timeout: float) -> tuple[int, str]:
    """Run the script; on a timeout it is stopped with SIGTERM, so it kills its run and unmounts
    its tmpfs."""
    proc = subprocess.Popen(
        [sys.executable, str(FAULTS), "--work", str(work), *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        pytest.fail(f"faults.py still running after {timeout}s:\n{out}")
    return proc.returncode, out


def test_a_full_disk_cuts_a_write_short_then_refuses(tmp_path: Path) -> None:
    faults = _module()
    room = faults._Room(str(tmp_path), 10)
    with open(tmp_path / "f", "wb") as raw, faults._FullDiskFile(raw, room) as fh:
        assert fh.write(b"12345") == 5
        with pytest.raises(OSError) as info:
            fh.write(b"6789abc")
        assert info.value.errno == errno.ENOSPC
        with pytest.raises(OSError):
            fh.write(b"x")
    assert (tmp_path / "f").read_bytes() == b"123456789a"


def test_a_torn_journal_ends_in_part_of_its_last_line(tmp_path: Path) -> None:
    journal = tmp_path / "study.journal"
    journal.write_bytes(b'{"op_code": 0}\n{"op_code": 4, "trial_id": 1}\n')
    cut = _module().tear(journal, random.Random(0))
    text = journal.read_bytes()
    assert 0 < cut < len(b'{"op_code": 4, "trial_id": 1}')
    assert text.endswith(b"\n" + b'{"op_code": 4, "trial_id": 1}'[:cut])


def test_a_few_faults_lose_nothing(tmp_path: Path) -> None:
    """3 kills (one torn journal), a full disk (injected ENOSPC), a stale lock and trial."""
    args = ["--kills", "3", "--disk", "inject", "--ahead", "1", "--spread", "2", "--seed", "1"]
    code, out = _faults(tmp_path / "work", *args, timeout=540)
    assert code == 0, out
    assert CLEAN.search(out), out
    assert "3 kills" in out and "1 torn journal tails" in out
    assert "recovered yes" in out
    assert re.search(r"disk full \(inject, \d+ bytes free\): exit [1-9]", out), out


@pytest.fixture
def only_with_slow(request: pytest.FixtureRequest) -> None:
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("20 kills of a real run take minutes: run it with -m slow")


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_twenty_kills_lose_nothing(tmp_path: Path, only_with_slow: None) -> None:
    """The script at its full size (a tmpfs full disk where mounting works, else injected)."""
    code, out = _faults(tmp_path / "work", "--kills", "20", timeout=3000)
    assert code == 0, out
    assert CLEAN.search(out), out
    assert "20 kills" in out and "recovered yes" in out
