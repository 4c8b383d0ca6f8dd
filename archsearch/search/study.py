"""The only module that talks to Optuna: storage, samplers, and one trial's life cycle.

The study lives in a journal file (``study.journal``, append-only, safe across crashes and
shared by several worker processes on one machine), or, with ``--storage URL``, in an Optuna RDB
storage (PostgreSQL: shared by processes on several machines) as the study named after the run
folder; ``load_study(RUN_DIR)`` opens either, as ``run.yaml`` records it. Open a journal with::

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
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages._heartbeat import is_heartbeat_enabled
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from .._logging import get_logger
from ..errors import ArchsearchError
from ..records import TrialRecord, accuracy_se
from .storage import redact

__all__ = [
    "STUDY_NAME",
    "JOURNAL",
    "open_study",
    "load_study",
    "study_record",
    "delete_study",
    "make_sampler",
    "make_pruner",
    "recover_interrupted",
    "requeue_cut_off",
    "queue_retry",
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
# Optuna's heartbeat is recorded by :class:`Heartbeat` here, not by ``Study.optimize``.
warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)


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


def _storage(run_dir: Path, journal: str = JOURNAL, url: str | None = None) -> BaseStorage:
    if url:
        return _rdb(url)
    path = str(run_dir / journal)
    return JournalStorage(JournalFileBackend(path, lock_obj=FlockLock(path)))  # type: ignore[arg-type]


def _rdb(url: str) -> RDBStorage:
    """The RDB storage of ``url``, with Optuna's heartbeat (recorded by :class:`Heartbeat`, read
    on the database's clock by :func:`recover_interrupted`). Its stale-trial callback is not used:
    Optuna fails a stale trial before the callback runs, when it can no longer be marked
    ``interrupted`` (so that it does not count towards ``--trials``) and re-queued here."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError, SQLAlchemyError

    sqlite = url.startswith("sqlite")
    kwargs: dict[str, Any] = {"connect_args": {"timeout": 60}} if sqlite else {}
    kwargs.update(pool_pre_ping=not sqlite)
    attempt = 0
    try:
        while True:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return RDBStorage(
                        url,
                        engine_kwargs=kwargs,
                        heartbeat_interval=int(HEARTBEAT_SECONDS),
                        grace_period=int(GRACE_SECONDS),
                    )
            except (IntegrityError, ProgrammingError):  # another process made the tables meanwhile
                attempt += 1
                if attempt == 5:
                    raise
                time.sleep(0.2 * attempt)
    except SQLAlchemyError as e:
        why = str(getattr(e, "orig", None) or e).strip().splitlines()
        raise ArchsearchError(
            f"--storage {redact(url)}: expected a database to connect to, got "
            f"{type(e).__name__}: {why[0] if why else '?'}"
        ) from None


def study_record(url: str, name: str) -> tuple[dict[str, Any], int] | None:
    """The user attributes and the number of trials of study ``name`` in ``url`` (None: none)."""
    storage = _rdb(url)
    try:
        sid = storage.get_study_id_from_name(name)
    except KeyError:
        return None
    return storage.get_study_user_attrs(sid), storage.get_n_trials(sid)


def delete_study(url: str, name: str) -> None:
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=_rdb(url))


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
    url: str | None = None,
    name: str = STUDY_NAME,
    reseed_if_joined: bool = False,
) -> optuna.Study:
    """Create or join the run's study: in ``run_dir/journal``, or as ``name`` in ``url``.

    ``reseed_if_joined``: a process joining a study that exists already (a ``--workers`` worker,
    another machine) reseeds its sampler from the OS, so that it does not draw the same designs
    in lockstep with the processes already in it (the creator keeps ``--seed``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    storage = _storage(run_dir, journal, url)
    kinds = [optuna.study.StudyDirection[d.upper()] for d in directions]
    try:
        return optuna.create_study(
            study_name=name, storage=storage, directions=kinds, sampler=sampler, pruner=pruner
        )
    except optuna.exceptions.DuplicatedStudyError:
        if reseed_if_joined:
            sampler.reseed_rng()
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


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


def recorded_storage(run_dir: Path) -> tuple[str | None, str]:
    """The storage URL (None: the journal) and study name ``run.yaml`` records for a run."""
    import yaml

    try:
        record = yaml.safe_load((run_dir / "run.yaml").read_text())
        study = record["resolved"]["study"]
        return study.get("storage"), str(study.get("name") or STUDY_NAME)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None, STUDY_NAME


def load_study(run_dir: str | Path) -> optuna.Study:
    """Open an existing run's study (read or resume), where ``run.yaml`` says it is: the run
    folder's journal, or an RDB storage (its URL is recorded without the password: PostgreSQL
    then takes it from ``PGPASSWORD`` or ``~/.pgpass``)."""
    path = Path(run_dir)
    url, name = recorded_storage(path)
    if url is not None:
        try:
            return optuna.load_study(study_name=name, storage=_rdb(url))
        except KeyError:
            raise ArchsearchError(
                f"run directory {str(path)!r}: expected its study {name!r} in {url}, found none"
            ) from None
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
#: A trial of a shared study still without an owner this long after it was seen is dead.
CLAIM_SECONDS = 5.0


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
        storage = self.study._storage
        optuna_beat = is_heartbeat_enabled(storage)  # an RDB storage: Optuna's heartbeat too
        for trial in list(self.trials()):
            with contextlib.suppress(RuntimeError, ValueError):  # it finished meanwhile
                storage.set_trial_user_attr(trial._trial_id, "heartbeat", time.time())
                if optuna_beat:
                    storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]

    def _run(self) -> None:
        while not self.stop.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception as e:  # a database hiccup: beat again next time
                log.warning("heartbeat not recorded: %s", (str(e).splitlines() or [repr(e)])[0])

    def __enter__(self) -> Heartbeat:
        self.beat()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def recover_interrupted(study: optuna.Study, *, requeue: bool = True) -> list[int]:
    """Fail trials left RUNNING by a dead worker (no heartbeat for :data:`GRACE_SECONDS`, by
    the trial's own ``heartbeat`` attribute or, in an RDB storage, by Optuna's heartbeat on the
    database's clock) and (``requeue``) queue their parameters to run again. Several processes
    may recover at once: each dead trial is failed, and re-queued, by one of them."""
    recovered = []
    storage = study._storage
    shared = is_heartbeat_enabled(storage)  # an RDB storage: other machines may be asking
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    unclaimed = {t.number for t in running if t.user_attrs.get("owner") is None}
    if shared and unclaimed:  # a trial just asked elsewhere gets its owner within moments
        time.sleep(CLAIM_SECONDS)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    stale = set()
    if shared:
        stale = set(storage._get_stale_trial_ids(study._study_id))  # type: ignore[attr-defined]
    now = time.time()
    for t in running:
        if t.user_attrs.get("owner") is None and t.number not in unclaimed:
            continue  # asked by another process since the first look
        if is_live(t, now) and t._trial_id not in stale:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", "interrupted")
            storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study.tell(t.number, state=TrialState.FAIL)
        except (RuntimeError, ValueError):  # another process recovered it first
            continue
        if requeue:
            queue_retry(study, t)
        recovered.append(t.number)
    return recovered


def requeue_cut_off(study: optuna.Study) -> list[int]:
    """Queue again the sampled trials an earlier process cut off at ``--timeout`` (once each:
    a trial already queued or run as their ``retry_of`` is not queued twice)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    cut = [t for t in trials if t.state == TrialState.FAIL and t.user_attrs.get("cut_off")]
    return [t.number for t in cut if t.number not in retried and queue_retry(study, t)]


def queue_retry(study: optuna.Study, t: FrozenTrial) -> bool:
    """Queue a sampled trial's parameters to run again (``retry_of`` = its number). Baselines
    are re-run by name, promotions and seed repeats planned again from the study: not queued."""
    if t.user_attrs.get("baseline") or planned(t.user_attrs):
        return False
    study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
    return True


def planned(attrs: dict[str, Any]) -> bool:
    """A promotion or a seed repeat: planned from the study (again after a crash), not sampled."""
    return attrs.get("promoted_from") is not None or attrs.get("repeat_of") is not None


def counted_trials(study: optuna.Study, *, include_running: bool = False) -> int:
    """Search trials that count towards ``--trials``: new candidates within budget that finished
    (trained, pruned or failed) and, optionally, running ones; over-budget candidates, repeats
    of an architecture already evaluated, baselines, promotions to a higher rung, seed repeats,
    the other grids of a LookupViT multi-resolution training and trials interrupted by a crash
    or Ctrl-C do not count."""
    states = [TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL]
    if include_running:
        states.append(TrialState.RUNNING)
    n = 0
    for t in study.get_trials(deepcopy=False, states=tuple(states)):
        a = t.user_attrs
        if a.get("baseline") or a.get("interrupted") or a.get("reused_from") is not None:
            continue
        if planned(a) or a.get("trained_with") is not None:  # not a training of its own
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
        trained_with=a.get("trained_with"),
        weights=a.get("weights"),
        config=a.get("config"),
    )
