"""A run folder: where each file lives, the one atomic write, and the one table writer.

Every file archsearch writes goes through :func:`write_atomic` (a unique temporary file in the
same directory, then ``os.replace``), so a reader sees the old file or the new one, never half of
one, and concurrent writers never share a temporary name. Writers of the run's tables hold
:meth:`RunDir.lock` (an ``flock`` released by the kernel when its holder dies, so a killed process
never leaves a stale lock behind).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RunDir", "atomic_path", "write_atomic", "MARKER", "PLOT_FILES"]

#: Every plot a report may write.
PLOT_FILES = (
    "pareto_macs.png",
    "pareto_params.png",
    "pareto_latency.png",
    "hypervolume.png",
    "dimensions.png",
    "importance.png",
)
#: Everything archsearch may create in a run folder (the only names ``clear`` removes).
OWN_FILES = (
    "run.yaml",
    "trials.csv",
    "study.journal",
    "pareto.csv",
    "report.html",
    "calibration.csv",
    "calibration.journal",
    "study.journal.flock",
    "calibration.journal.flock",
    "calibration.json",
    "calibration.png",
    "insights.json",
    ".archsearch.lock",
    *PLOT_FILES,
)
OWN_DIRS = ("weights", "ray")

#: Key of run.yaml that marks a folder as an archsearch run folder (value: format version).
MARKER = "archsearch_run"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A unique temporary path next to ``path``; renamed onto ``path`` (with the user's umask
    applied to 0o666) when the block succeeds, removed when it fails."""
    path = Path(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`)."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        fh.write(raw)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder."""

    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "run.yaml"

    @property
    def trials(self) -> Path:
        return self.root / "trials.csv"

    @property
    def journal(self) -> Path:
        return self.root / "study.journal"

    @property
    def weights(self) -> Path:
        return self.root / "weights"

    @property
    def pareto(self) -> Path:
        return self.root / "pareto.csv"

    @property
    def report(self) -> Path:
        return self.root / "report.html"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.csv"

    def weights_file(self, tag: str, archid: str) -> Path:
        return self.weights / f"{tag}-{archid}.safetensors"

    def relative(self, path: Path) -> str:
        """``path`` relative to the run folder (as stored in the tables)."""
        return path.relative_to(self.root).as_posix()

    def clear(self) -> None:
        """Remove what archsearch wrote here (to start over); anything else is left alone."""
        for name in OWN_FILES:
            (self.root / name).unlink(missing_ok=True)
        for torn in self.root.glob("*.journal.torn-*"):
            torn.unlink()
        for name in OWN_DIRS:
            if (self.root / name).is_dir():
                shutil.rmtree(self.root / name)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive lock for writing the run's tables (held briefly, per write)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".archsearch.lock", os.O_CREAT | os.O_RDWR, 0o666 & ~_umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
