"""Fault injection on a real small ``archsearch run``: nothing finished is lost or trained twice.

One run folder of the tests' tiny search (``tests/_tiny.py``: the two-stage toy space, synthetic
data, one short epoch per candidate) goes through, in this order:

* ``--kills`` SIGKILLs at random points (the whole process group; most while trials train or the
  study, the tables or the report are written, some during start-up), each followed by a
  resume; after ``--tears`` of them (never the last) the journal's last line is torn (a cut-off
  copy of it appended);
* half-way, a full disk: a resume whose writes fail with ENOSPC, on a tmpfs shrunk to what the
  run uses plus up to ``--room`` bytes (``--disk tmpfs``; ``auto``: when root and mounting works)
  or through writes refused in the child process (``--disk inject``: Python file writes under
  the run folder, a short write then ENOSPC; the weights, written by safetensors' own code, are
  not refused); then the disk is freed;
* at the end a stale lock (a process holding the run's locks, killed; an Optuna lock file left
  behind) and a stale running trial owned by a live process id on a foreign host, its heartbeat
  long past; the last resume must start at once, recover the trial and finish on its own.

The study is read with archsearch's own code (``archsearch.search.study``). A trial is *finished*
when it trained a design (``records.trained``); one seen finished after any fault and missing
(or changed) later is *lost*; a design trained by two trials is *retrained*; a run that does not
finish within ``--hang-seconds``, or whose start stalls by ``--stall-seconds`` over the usual, is a
*hang*; a run that should have succeeded and exited non-zero is a *failed run*. The exit status
is 1 when any of these is not 0.

    python benchmarks/faults.py                          # 20 kills, about 3 minutes on 2 cores
    python benchmarks/faults.py --kills 3 --disk inject  # the quick version the tests run
"""

from __future__ import annotations

import argparse
import builtins
import errno
import io
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The tests' tiny search (tests/_tiny.py: TINY_RUN), as command-line options.
TINY = [
    "--budget", "100K-params", "--space", "tiny", "--dataset", "synthetic", "--epochs", "1",
    "--subset", "256", "--batch-size", "64", "--proxy-img-size", "32", "--no-baselines",
    "--final-seeds", "1", "--quiet",
]  # fmt: skip
FOREIGN_HOST = "faults-foreign-host"
JOURNAL = "study.journal"  # archsearch.search.study.JOURNAL (not imported here: torch is slow)
TMPFS_SIZE = "256m"


# ---------------------------------------------------------------------------- a full disk
class _Room:
    """Bytes the child may still write under ``root`` before its disk is full."""

    def __init__(self, root: str, room: int) -> None:
        self.root, self.room = root, room

    def take(self, wanted: int) -> int:
        given = max(0, min(wanted, self.room))
        self.room -= given
        return given


class _FullDiskFile:
    """A writable file whose writes draw on the room left: the write that does not fit is cut
    short and fails with ENOSPC, as on a full disk."""

    def __init__(self, raw: Any, room: _Room) -> None:
        self._raw, self._room = raw, room

    def write(self, data: Any) -> int:
        size = len(data.encode("utf-8")) if isinstance(data, str) else len(data)
        given = self._room.take(size)
        if given < size:
            if given:
                self._raw.write(data[:given])
                self._raw.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._raw.name))
        return int(self._raw.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._raw)

    def __enter__(self) -> _FullDiskFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._raw.close()


def _under(file: Any, root: str) -> bool:
    """Whether ``file`` (a path; not a file descriptor) lies under the folder ``root``."""
    if not isinstance(file, (str, os.PathLike)):
        return False
    return os.path.realpath(os.fspath(file)).startswith(root + os.sep)


def _fill_disk(root: str, room: int) -> None:
    """Make every Python file opened for writing under ``root`` fail once ``room`` bytes are
    written (in this process: the ``--disk inject`` child)."""
    real_open = builtins.open
    left = _Room(os.path.realpath(root), room)

    def full_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_open(file, mode, *args, **kwargs)
        if any(c in mode for c in "wax+") and _under(file, left.root):
            return _FullDiskFile(handle, left)
        return handle

    builtins.open = io.open = full_open  # type: ignore[assignment]


def _child(argv: list[str]) -> int:
    """``faults.py --child ROOT ROOM -- ARGS``: ``archsearch ARGS`` with a disk of ROOM bytes."""
    root, room, args = argv[0], int(argv[1]), argv[3:]
    _fill_disk(root, room)
    from archsearch.cli import main

    return main(args)


@dataclass
class Disk:
    """Where the run folder lives, and how its disk is filled."""

    mode: str  # "tmpfs" or "inject"
    mount: Path

    def fill(self, room: int) -> list[str]:
        """Shrink the tmpfs to what is used plus ``room`` bytes (tmpfs) or return the child
        command's prefix that refuses writes beyond ``room`` (inject)."""
        if self.mode == "inject":
            return [sys.executable, __file__, "--child", str(self.mount), str(room), "--"]
        st = os.statvfs(self.mount)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        _sh("mount", "-o", f"remount,size={used + room}", str(self.mount))
        return [sys.executable, "-m", "archsearch.cli"]

    def free(self) -> None:
        if self.mode == "tmpfs":
            _sh("mount", "-o", f"remount,size={TMPFS_SIZE}", str(self.mount))

    def close(self) -> None:
        """Unmount the tmpfs (lazily if still busy)."""
        if self.mode != "tmpfs" or not os.path.ismount(self.mount):
            return
        if subprocess.run(["umount", str(self.mount)], capture_output=True).returncode:
            subprocess.run(["umount", "-l", str(self.mount)], capture_output=True)


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def make_disk(mode: str, mount: Path) -> Disk:
    """A tmpfs at ``mount`` (``tmpfs``; ``auto`` when root and mounting works), else injection."""
    mount.mkdir(parents=True, exist_ok=True)
    if mode in ("auto", "tmpfs") and os.geteuid() == 0 and shutil.which("mount"):
        cmd = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "archsearch-faults", str(mount)]
        if subprocess.run(cmd, capture_output=True).returncode == 0:
            return Disk("tmpfs", mount)
    if mode == "tmpfs":
        raise SystemExit("faults: --disk tmpfs needs root and a working mount")
    return Disk("inject", mount)


# ---------------------------------------------------------------------------- the study
def finished(run: Path) -> dict[int, tuple[str, float]]:
    """Trials that trained a design: number -> (archid, accuracy), read by archsearch."""
    from archsearch.records import trained, trials_frame
    from archsearch.search import study as st

    study = st.load_study(run)
    table = trained(trials_frame([st.to_record(t) for t in study.get_trials(deepcopy=False)]))
    return {int(r.trial): (str(r.archid), float(r.proxy_accuracy)) for r in table.itertuples()}


def counted(run: Path) -> int:
    """Trials that count towards ``--trials`` (archsearch's own count)."""
    from archsearch.search import study as st

    return st.counted_trials(st.load_study(run))


def stale_trial(run: Path) -> int:
    """Open a trial as a dead worker on another host would have left it: RUNNING, owned by a
    live process id (this one) on a foreign host, its heartbeat long past."""
    from archsearch.search import study as st
    from archsearch.search.space import load_space

    st.repair_journal(run / JOURNAL)  # as archsearch does before it writes: a full disk may
    study = st.load_study(run)  # have torn the last line, and a line after it would garble it
    trial = study.ask()
    config = load_space("tiny").sample(lambda name, opts: trial.suggest_categorical(name, opts))
    trial.set_user_attr("owner", f"{FOREIGN_HOST}:{os.getpid()}")
    trial.set_user_attr("heartbeat", time.time() - 10 * st.GRACE_SECONDS)
    trial.set_user_attr("archid", config.archid)
    trial.set_user_attr("config", config.to_json())
    return int(trial.number)


def recovered(run: Path, number: int) -> bool:
    """Whether the stale trial was failed as interrupted and nothing is left running."""
    from optuna.trial import TrialState

    from archsearch.search import study as st

    trials = st.load_study(run).get_trials(deepcopy=False)
    stale = trials[number]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    return (
        stale.state == TrialState.FAIL and bool(stale.user_attrs.get("interrupted")) and not running
    )


def stale_lock(run: Path) -> None:
    """A process takes the study's and the run folder's locks (``flock``, as archsearch takes
    them) and is killed holding them; an Optuna lock file (what Optuna's own journal lock leaves
    behind) is left too."""
    from archsearch.search.study import FlockLock

    paths = [FlockLock(str(run / JOURNAL)).path, str(run / ".archsearch.lock")]
    code = (
        "import fcntl, os, sys, time\n"
        "for p in sys.argv[1:]: fcntl.flock(os.open(p, os.O_CREAT | os.O_RDWR), fcntl.LOCK_EX)\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, *paths], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    with suppress(FileExistsError):
        os.symlink(run / JOURNAL, run / f"{JOURNAL}.lock")


def tear(journal: Path, rng: random.Random) -> int:
    """Append a cut-off copy of the journal's last line (a write stopped part-way); returns the
    bytes appended."""
    lines = journal.read_bytes().rstrip(b"\n").split(b"\n")
    last = lines[-1] if lines and lines[-1] else b'{"op_code": 0}'
    piece = last[: rng.randint(1, max(1, len(last) - 1))]
    with journal.open("ab") as fh:
        fh.write(piece)
    return len(piece)


# ---------------------------------------------------------------------------- one launch
@dataclass
class Launch:
    """One child process of ``archsearch run``."""

    proc: subprocess.Popen[bytes]
    started: float
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace").strip()


def launch(prefix: list[str], args: list[str], log: Path) -> Launch:
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*prefix, "run", *args], stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, cwd=log.parent,
        )  # fmt: skip
    return Launch(proc, time.monotonic(), log)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def wait_for(cond: Callable[[], bool], run: Launch, seconds: float) -> bool:
    """Poll ``cond`` while the child lives, up to ``seconds``; whether it became true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        if not run.alive:
            return cond()
        time.sleep(0.05)
    return False


# ---------------------------------------------------------------------------- the campaign
@dataclass
class Tally:
    """What the campaign saw."""

    seen: dict[int, tuple[str, float]] = field(default_factory=dict)
    lost: set[int] = field(default_factory=set)
    hangs: int = 0
    failed: list[str] = field(default_factory=list)
    starts: list[float] = field(default_factory=list)
    kills: int = 0
    early: int = 0
    tears: int = 0
    notes: list[str] = field(default_factory=list)

    def check(self, run: Path) -> dict[int, tuple[str, float]]:
        """Read the study; every trial seen finished before must still be there, unchanged."""
        now = finished(run)
        self.lost |= {n for n, v in self.seen.items() if now.get(n) != v}
        self.seen.update(now)
        return now


class Campaign:
    """The faults, in order, on one run folder."""

    def __init__(self, opts: argparse.Namespace, disk: Disk, logs: Path) -> None:
        self.opts, self.disk, self.logs = opts, disk, logs
        self.run = disk.mount / "run"
        self.rng = random.Random(opts.seed)
        self.tally = Tally()
        self.n = 0
        self.child: Launch | None = None  # the live child, killed if the campaign stops

    def args(self) -> list[str]:
        """Resume options: the tiny search, asking for ``--ahead`` more trials than finished."""
        trials = str(len(self.tally.seen) + self.opts.ahead)
        return [*TINY, "--trials", trials, "--out", str(self.run)]

    def start(self, kind: str, prefix: list[str] | None = None) -> Launch:
        self.n += 1
        log = self.logs / f"{self.n:02d}-{kind}.err"
        self.child = launch(prefix or [sys.executable, "-m", "archsearch.cli"], self.args(), log)
        return self.child

    def close(self) -> None:
        if self.child is not None and self.child.alive:
            self.child.kill()

    def progressed(self, before: int) -> Callable[[], bool]:
        journal = self.run / JOURNAL
        return lambda: _size(journal) != before

    def usual_start(self) -> float:
        return statistics.median(self.tally.starts) if self.tally.starts else 10.0

    def kill_once(self) -> None:
        """Launch a resume and SIGKILL it at a random point (early: during start-up)."""
        before = _size(self.run / JOURNAL)
        child = self.start("kill")
        early = self.tally.kills > 0 and self.rng.random() < self.opts.early
        if early:
            time.sleep(self.rng.uniform(0, self.usual_start()))
        elif wait_for(self.progressed(before), child, self.opts.hang_seconds):
            self.tally.starts.append(time.monotonic() - child.started)
            time.sleep(self.rng.uniform(0, self.opts.spread))
        elif child.alive:
            self.tally.hangs += 1
            self.tally.notes.append(f"launch {self.n}: no progress in {self.opts.hang_seconds}s")
        if not child.alive and child.proc.returncode != 0:
            self.tally.failed.append(f"launch {self.n} exited {child.proc.returncode}")
        child.kill()
        self.tally.kills += 1
        self.tally.early += early
        self.tally.check(self.run)

    def finish(self, kind: str, prefix: list[str] | None = None) -> tuple[Launch, float | None]:
        """Launch a resume and let it end on its own (a hang past ``--hang-seconds``); returns
        it and the seconds it took to start work (None: it never did)."""
        before = _size(self.run / JOURNAL)
        child = self.start(kind, prefix)
        took = None
        if wait_for(self.progressed(before), child, self.opts.hang_seconds):
            took = time.monotonic() - child.started
            if took > self.usual_start() + self.opts.stall_seconds:
                self.tally.hangs += 1
                self.tally.notes.append(f"{kind}: start stalled {took:.0f}s")
            self.tally.starts.append(took)
        left = self.opts.hang_seconds - (time.monotonic() - child.started)
        try:
            child.proc.wait(timeout=max(1.0, left))
        except subprocess.TimeoutExpired:
            self.tally.hangs += 1
            self.tally.notes.append(f"{kind}: still running after {self.opts.hang_seconds}s")
            child.kill()
        return child, took

    def full_disk(self) -> None:
        """A resume on a full disk: it fails with one line and an exit code not 0 (a traceback
        counts as a failed run) and loses nothing; then the disk is freed."""
        room = self.rng.randint(0, self.opts.room)
        child, _ = self.finish("disk-full", self.disk.fill(room))
        self.disk.free()
        err = child.stderr().splitlines()
        code = child.proc.returncode
        shape = "a traceback" if any("Traceback" in x for x in err) else f"{len(err)} line(s)"
        self.tally.notes.append(
            f"disk full ({self.disk.mode}, {room} bytes free): exit {code}, {shape}"
            + (f": {err[-1][:160]}" if err else "")
        )
        if shape == "a traceback":
            self.tally.failed.append("disk full: a traceback instead of a one-line error")
        self.tally.check(self.run)

    def tear(self) -> None:
        tear(self.run / JOURNAL, self.rng)
        self.tally.tears += 1

    def last(self) -> None:
        """A stale lock and a stale running trial, then a resume that must start at once,
        recover the trial and end on its own with every trial it was asked for."""
        stale_lock(self.run)
        number = stale_trial(self.run)
        asked = len(self.tally.seen) + self.opts.ahead
        child, took = self.finish("last")
        if child.proc.returncode != 0:
            self.tally.failed.append(f"last resume exited {child.proc.returncode}")
        self.tally.check(self.run)
        ok = recovered(self.run, number)
        start = "never started work" if took is None else f"started work after {took:.1f}s"
        self.tally.notes.append(
            f"stale lock + running trial {number} of {FOREIGN_HOST}: recovered "
            f"{'yes' if ok else 'NO'}; the last resume {start} (usually {self.usual_start():.1f}s)"
        )
        if not ok:
            self.tally.failed.append(f"stale trial {number} not recovered")
        done = counted(self.run)
        if done < asked:
            self.tally.failed.append(f"last resume ended with {done} of {asked} trials")

    def play(self) -> None:
        """Kills (tearing after some but the last), the full disk half-way, then the stale
        state and the last resume."""
        kills = self.opts.kills
        torn = set(self.rng.sample(range(kills - 1), min(self.opts.tears, max(0, kills - 1))))
        middle = kills // 2
        for i in range(kills):
            if i == middle:
                self.full_disk()
            self.kill_once()
            if i in torn:
                self.tear()
        if kills == 0:
            self.full_disk()
        self.last()


def retrained(run: Path) -> int:
    """Trainings of a design beyond its first."""
    archids = [a for a, _ in finished(run).values()]
    return len(archids) - len(set(archids))


def report(campaign: Campaign) -> int:
    t, run = campaign.tally, campaign.run
    again = retrained(run)
    aside = sum(p.stat().st_size for p in run.glob("study.journal.torn-*"))
    print(
        f"faults: {t.kills} kills ({t.early} during start-up), {t.tears} torn journal tails "
        f"({aside} bytes set aside by the runs), a full disk, a stale lock and trial"
    )
    for note in t.notes:
        print(f"  {note}")
    for fail in t.failed:
        print(f"  FAILED: {fail}")
    print(
        f"trials finished {len(finished(run))}, lost {len(t.lost)}, retrained {again}, "
        f"hangs {t.hangs}; failed runs {len(t.failed)}"
    )
    return int(bool(t.lost or again or t.hangs or t.failed))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs at random points (20)")
    p.add_argument("--tears", type=int, help="kills followed by a torn journal (kills / 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the fault points")
    p.add_argument(
        "--disk", choices=["auto", "tmpfs", "inject"], default="auto",
        help="how the disk is filled (auto: a tmpfs when root and mounting works)",
    )  # fmt: skip
    p.add_argument("--spread", type=float, default=6.0, help="kill within this many s of work")
    p.add_argument("--early", type=float, default=0.2, help="share of kills during start-up")
    p.add_argument("--ahead", type=int, default=2, help="trials asked beyond those finished")
    p.add_argument("--room", type=int, default=16384, help="most bytes free on the full disk")
    p.add_argument("--hang-seconds", type=float, default=300.0, help="a hang after (300)")
    p.add_argument("--stall-seconds", type=float, default=20.0, help="a slower start stalls (20)")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return _child(argv[1:])
    opts = _parser().parse_args(argv)
    opts.tears = max(1, opts.kills // 5) if opts.tears is None else opts.tears
    work = (opts.work or Path(tempfile.mkdtemp(prefix="archsearch-faults-"))).resolve()
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"faults: --work {work}: expected a new or empty folder")
    (work / "logs").mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up (kill, unmount) first
    disk = make_disk(opts.disk, work / "disk")
    campaign = Campaign(opts, disk, work / "logs")
    try:
        campaign.play()
        status = report(campaign)
    finally:
        campaign.close()
        if disk.mode == "tmpfs":  # keep the run folder for a look after the tmpfs is gone
            with suppress(OSError):
                shutil.copytree(campaign.run, work / "run", symlinks=True, dirs_exist_ok=True)
        disk.close()
    print(
        f"logs: {work / 'logs'}" + (f", run folder: {work / 'run'}" if disk.mode == "tmpfs" else "")
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
