"""The only module that talks to Optuna: storage, samplers, and one trial's life cycle.

The study lives in a journal file (``study.journal``, append-only, safe across crashes and
shared by several worker processes). Open it with::

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    study = optuna.load_study(study_name="archsearch",
                              storage=JournalStorage(JournalFileBackend("DIR/study.journal")))

or ``optuna-dashboard DIR/study.journal``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .._logging import get_logger
from ..errors import ArchsearchError
from ..records import TrialRecord, accuracy_se

__all__ = [
    "STUDY_NAME",
    "JOURNAL",
    "open_study",
    "load_study",
    "make_sampler",
    "make_pruner",
    "recover_interrupted",
    "Heartbeat",
    "is_live",
    "repair_journal",
    "counted_trials",
    "owner",
    "alive",
    "to_record",
]

log = get_logger("study")

STUDY_NAME = "archsearch"
JOURNAL = "study.journal"
HOST = socket.gethostname()

optuna.logging.set_verbosity(optuna.logging.WARNING)


class FlockLock:
    """The journal's lock, held with ``flock`` on a side file: the kernel releases it when its
    holder dies, so a killed process never leaves a stale lock behind (Optuna's file-creation
    locks make the next start wait out a 30-second grace period). Local filesystems only; on
    NFS use an RDB storage."""

    def __init__(self, journal: str) -> None:
        self.path = journal + ".flock"
        self.fd: int | None = None

    def acquire(self) -> bool:
        fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o666)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _storage(run_dir: Path, journal: str = JOURNAL) -> JournalStorage:
    path = str(run_dir / journal)
    return JournalStorage(JournalFileBackend(path, lock_obj=FlockLock(path)))  # type: ignore[arg-type]


def make_sampler(name: str, *, seed: int, n_objectives: int) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, grouped: suits conditional spaces), ``nsga2`` or ``random``."""
    if name == "tpe":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(
                seed=seed, multivariate=True, group=True, n_startup_trials=6, constant_liar=True
            )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=8)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ArchsearchError(f"sampler: expected tpe, nsga2 or random, got {name!r}")


def make_pruner(enabled: bool, n_objectives: int) -> optuna.pruners.BasePruner:
    if enabled and n_objectives == 1:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def open_study(
    run_dir: Path,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner | None = None,
    *,
    journal: str = JOURNAL,
) -> optuna.Study:
    run_dir.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(
        study_name=STUDY_NAME,
        storage=_storage(run_dir, journal),
        directions=[optuna.study.StudyDirection[d.upper()] for d in directions],
        sampler=sampler,
        pruner=pruner,
        load_if_exists=True,
    )


def repair_journal(path: Path) -> int:
    """Set aside a torn last line of a journal (a write cut by a kill, power loss or a full
    disk): the bytes after the last complete JSON line are copied next to the journal and cut
    off, so no finished trial is lost. Returns the number of bytes set aside (0: intact)."""
    import json

    if not path.is_file():
        return 0
    size = path.stat().st_size
    with path.open("rb") as fh:
        fh.seek(max(0, size - (1 << 20)))
        tail = fh.read()
    lines = tail.split(b"\n")
    keep_from = len(tail) - len(lines[-1])  # bytes after the last newline are torn
    if len(lines) >= 2 and lines[-2].strip():
        try:
            json.loads(lines[-2])
        except ValueError:  # a complete but garbled last line
            keep_from -= len(lines[-2]) + 1
    cut = len(tail) - keep_from
    if cut <= 0:
        return 0
    good = size - cut
    aside = path.with_name(f"{path.name}.torn-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}")
    aside.write_bytes(tail[keep_from:])
    with path.open("r+b") as fh:
        fh.truncate(good)
    log.warning("%s: set aside %d bytes of a torn last line in %s", path, cut, aside.name)
    return cut


def load_study(run_dir: str | Path) -> optuna.Study:
    """Open an existing run's study (read or resume)."""
    path = Path(run_dir)
    if not (path / JOURNAL).is_file():
        raise ArchsearchError(f"run directory {str(path)!r}: expected {JOURNAL} in it, found none")
    return optuna.load_study(study_name=STUDY_NAME, storage=_storage(path))


def owner() -> str:
    return f"{HOST}:{os.getpid()}"


def alive(owner: str | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != HOST:
        return True  # cannot tell for another machine: assume it is still working
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


#: A running trial's worker records a heartbeat this often (seconds) ...
HEARTBEAT_SECONDS = 15.0
#: ... and a trial whose last heartbeat is older than this is taken for dead.
GRACE_SECONDS = 120.0


def is_live(t: FrozenTrial, now: float | None = None) -> bool:
    """Whether a RUNNING trial is still being worked on: its owner process is not known to be
    gone (it is on another host, or its process id on this host exists) and its heartbeat is
    recent. The heartbeat catches what the process id cannot: a reused process id, or a new
    host name after a container restart. A trial without a heartbeat (a run of an older
    version) goes by its owner process alone."""
    if not alive(t.user_attrs.get("owner")):
        return False
    beat = t.user_attrs.get("heartbeat")
    return beat is None or (time.time() if now is None else now) - float(beat) < GRACE_SECONDS


class Heartbeat:
    """Records ``heartbeat`` (wall-clock seconds) on the trials ``trials()`` names, every
    :data:`HEARTBEAT_SECONDS`, from a daemon thread, for as long as the ``with`` block runs."""

    def __init__(self, study: optuna.Study, trials: Callable[[], Iterable[optuna.Trial]]) -> None:
        self.study, self.trials = study, trials
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="archsearch-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial in list(self.trials()):
            with contextlib.suppress(RuntimeError, ValueError):  # it finished meanwhile
                self.study._storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            self.beat()

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def recover_interrupted(study: optuna.Study, *, requeue: bool = True) -> list[int]:
    """Fail trials left RUNNING by a dead worker (no heartbeat for :data:`GRACE_SECONDS`) and
    (``requeue``) queue their parameters to run again."""
    recovered = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_live(t, now):
            continue
        study._storage.set_trial_user_attr(t._trial_id, "error", "interrupted")
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study.tell(t.number, state=TrialState.FAIL)
        baseline = t.user_attrs.get("baseline")
        if requeue and not baseline and not planned(t.user_attrs):
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
        recovered.append(t.number)
    return recovered


def planned(attrs: dict[str, Any]) -> bool:
    """A promotion or a seed repeat: planned from the study (again after a crash), not sampled."""
    return attrs.get("promoted_from") is not None or attrs.get("repeat_of") is not None


def counted_trials(study: optuna.Study, *, include_running: bool = False) -> int:
    """Search trials that count towards ``--trials``: new candidates within budget that finished
    (trained, pruned or failed) and, optionally, running ones; over-budget candidates, repeats
    of an architecture already evaluated, baselines, promotions to a higher rung, seed repeats
    and trials interrupted by a crash or Ctrl-C do not count."""
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    if include_running:
        states.append(TrialState.RUNNING)
    n = 0
    for t in study.get_trials(deepcopy=False, states=tuple(states)):
        a = t.user_attrs
        if a.get("baseline") or a.get("interrupted") or a.get("reused_from") is not None:
            continue
        if planned(a):
            continue
        if t.state == TrialState.COMPLETE and not t.user_attrs.get("feasible"):
            continue
        n += 1
    return n


def to_record(t: FrozenTrial) -> TrialRecord:
    """The ``trials.csv`` row of one trial (the only reader of trial attributes)."""
    a = t.user_attrs
    acc = a.get("proxy_accuracy")
    return TrialRecord(
        trial=t.number,
        state=t.state.name,
        archid=a.get("archid"),
        feasible=bool(a.get("feasible")) if t.state == TrialState.COMPLETE else False,
        baseline=a.get("baseline") or "",
        choices=dict(t.params),
        params=a.get("params"),
        macs=a.get("macs"),
        latency_ms=a.get("latency_ms"),
        proxy_accuracy=acc,
        accuracy_se=accuracy_se(acc, a.get("val_images")),
        val_images=a.get("val_images"),
        epochs=a.get("epochs"),
        train_seconds=a.get("train_seconds"),
        violations=a.get("violations") or "",
        error=a.get("error") or "",
        total_params=a.get("total_params"),
        reused_from=a.get("reused_from"),
        rung=int(a.get("rung", 0)),
        fidelity=a.get("fidelity"),
        seed=int(a.get("seed", 0)),
        repeat_of=a.get("repeat_of"),
        promoted_from=a.get("promoted_from"),
        weights=a.get("weights"),
        config=a.get("config"),
    )
