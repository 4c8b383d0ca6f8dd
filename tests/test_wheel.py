"""A non-editable wheel install runs ``archsearch run`` from any directory."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_runs_a_search_from_another_directory(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(REPO)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    wheel = next(wheels.glob("archsearch-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    py = env_dir / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies (torch, timm, optuna, ...) come from this interpreter's environment;
    # archsearch itself only from the wheel (the editable install's finder is not loaded).
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", site, str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run(
        [str(py), "-c", "import archsearch; print(archsearch.__file__)"],
        cwd=work, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(site), where  # the installed copy, not the source tree
    version = subprocess.run(
        [str(py), "-m", "archsearch", "--version"], cwd=work, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("archsearch "), version
    res = subprocess.run(
        [str(py), "-m", "archsearch.cli", "run", "--budget", "100K-params", "--space", "tiny",
         "--dataset", "synthetic", "--epochs", "1", "--subset", "128", "--batch-size", "64",
         "--proxy-img-size", "32", "--no-baselines", "--final-seeds", "1", "--trials", "2",
         "--quiet",
         "--out", "run"],
        cwd=work, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (work / "run" / "trials.csv").is_file() and (work / "run" / "report.html").is_file()
