"""Live progress on a terminal: what a run's status says, and how it is shown.

:class:`Tally` turns the run's events into the figures of the status (trial i of N, elapsed, the
time left, best accuracy, front size); it is pure, times are passed in. A display shows them:
:class:`LiveDisplay` on a terminal (a tqdm status bar sized to the terminal, redrawn every
second so the clock ticks between events, finished lines printed above it), :class:`PlainDisplay`
elsewhere (whole lines, wrapped to the width, no carriage returns), :class:`NullDisplay` with
``--quiet``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import textwrap
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO, TypeVar

from tqdm import tqdm

if TYPE_CHECKING:
    from .search.plan import Plan

__all__ = [
    "DEFAULT_WIDTH",
    "Job",
    "LiveDisplay",
    "NullDisplay",
    "PlainDisplay",
    "Progress",
    "Status",
    "Tally",
    "close_live",
    "fmt_seconds",
    "job_kind",
    "steps",
    "terminal_width",
    "wrap",
]

#: Columns assumed when the output is no terminal and ``COLUMNS`` is not set.
DEFAULT_WIDTH = 100
#: Seconds between redraws of the live status (the elapsed time ticks at this pace).
TICK_SECONDS = 1.0

T = TypeVar("T")


# ---------------------------------------------------------------------------- text
def fmt_seconds(s: float | None) -> str:
    """``75`` -> ``1m15s``, ``42`` -> ``42s``; ``-`` for None or NaN."""
    if s is None or s != s:
        return "-"
    n = int(s)
    return f"{n // 60}m{n % 60:02d}s" if n >= 60 else f"{n}s"


def terminal_width(stream: TextIO, fallback: int = DEFAULT_WIDTH) -> int:
    """Columns of the terminal ``stream`` writes to; else ``COLUMNS``; else ``fallback``."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        columns = 0
    if columns <= 0:
        env = os.environ.get("COLUMNS", "")
        columns = int(env) if env.isdigit() else 0
    return columns if columns > 0 else fallback


def wrap(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` characters, continuations indented."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        lines.extend(
            textwrap.wrap(
                paragraph,
                width=max(8, width),
                subsequent_indent="    ",
                break_on_hyphens=False,
            )
            or [""]
        )
    return lines


class Progress:
    """Receives a run's events; the CLI renders them. All methods are no-ops here."""

    def start(self, plan: Plan, done: int) -> None: ...
    def trial_start(
        self,
        index: int,
        total: int,
        number: int,
        desc: str,
        kind: str,
        work: tuple[float, float] | None = None,  # see Tally.job_started
    ) -> None: ...
    def epoch(self, epoch: int, epochs: int, accuracy: float) -> None: ...
    def trial_end(self, row: dict[str, Any], best: float | None, front: int) -> None: ...
    def finish(self, plan: Plan, front: Any) -> None: ...


# ---------------------------------------------------------------------------- figures
def job_kind(kind: str) -> str:
    """What the driver's ``kind`` of a job is: ``trial`` (one of the N, also a calibration
    job), ``baseline``, ``finalist`` (a seed repeat of a front design) or ``promotion``."""
    if kind.startswith("baseline "):
        return "baseline"
    if "(from trial" in kind:
        return "finalist" if kind.startswith("seed ") or " seed " in kind else "promotion"
    return "trial"


@dataclass
class Job:
    """One job in flight: its class (see :func:`job_kind`), place and start time."""

    kind: str
    index: int
    total: int
    since: float
    head: str = ""
    work: float = 1.0  # its size relative to the others (a calibration's reference is larger)


def counts(row: dict[str, Any]) -> bool:
    """Whether a finished trial counts towards ``--trials`` (as the driver counts them): an
    over-budget candidate or a repeat of an evaluated design does not."""
    if row.get("state") != "COMPLETE":
        return True
    return bool(row.get("feasible")) and row.get("reused_from") is None


@dataclass
class Tally:
    """The figures of the status line, kept from the run's events."""

    total: int = 0  # trials to train (--trials), or calibration jobs
    done: int = 0  # of those, finished
    timeout: float | None = None
    started: float = 0.0
    scored: bool = True  # a search (best, front) rather than a calibration
    baselines_left: int = 0  # not finished yet, the running one included
    finalists: bool = False  # retraining the front with more seeds: no time left to give
    over: bool = False  # the run has finished: no time left to give
    best: float | None = None
    front: int = 0
    durations: list[float] = field(default_factory=list)
    sizes: list[float] = field(default_factory=list)  # the work of each of ``durations``
    work_left: float | None = None  # jobs of unequal size: the work not finished, this one's too
    running: dict[int, Job] = field(default_factory=dict)
    current: Job | None = None

    def begin(self, now: float, total: int, timeout: float | None, done: int) -> None:
        """The run starts (or resumes with ``done`` trials finished)."""
        self.started, self.total, self.timeout, self.done = now, total, timeout, done

    def job_started(
        self,
        number: int,
        index: int,
        total: int,
        kind: str,
        now: float,
        work: tuple[float, float] | None = None,
    ) -> Job:
        """A job starts; ``index`` of ``total`` counts the running one (as the driver does).
        ``work``: jobs of unequal size give (this job's size, the size of every job not yet
        finished, this one's included), in any unit; the time left is then timed per unit."""
        job = Job(job_kind(kind), index, total, now, work=work[0] if work else 1.0)
        if work is not None:
            self.work_left = work[1]
        if job.kind == "trial":
            self.total, self.done = total, max(0, index - 1)
        elif job.kind == "baseline":
            self.baselines_left = max(0, total - index + 1)
        else:  # a promotion or a finalist: index is the number of trials finished
            self.done = max(0, index)
        self.finalists = self.finalists or job.kind == "finalist"
        self.running[number] = self.current = job
        return job

    def job_ended(
        self, number: int | None, row: dict[str, Any], best: float | None, front: int, now: float
    ) -> Job | None:
        """A job ends with its ``trials.csv`` row; ``best`` and ``front`` describe the front.
        Returns the job, None for a row no job was started for (e.g. a grid scored by another
        trial's training); ``number`` None stands for the job started last."""
        job = self.current if number is None else self.running.pop(number, None)
        self.best, self.front = best, front
        if job is None:
            return None
        if row.get("epochs"):
            self.durations.append(max(0.0, now - job.since))
            self.sizes.append(job.work)
        if self.work_left is not None:
            self.work_left = max(0.0, self.work_left - job.work)
        if job.kind == "trial":
            self.done = job.index if counts(row) else max(0, job.index - 1)
        elif job.kind == "baseline":
            self.baselines_left = max(0, job.total - job.index)
        if job is self.current:
            self.current = None
        return job

    def elapsed(self, now: float) -> float:
        return max(0.0, now - self.started)

    def left(self, now: float) -> float | None:
        """Seconds still to go: the mean training time times the trainings left (the trials
        not yet finished and the baselines; for jobs of unequal size, the time per unit of work
        times the work left), less what the running one has done; capped by the timeout. None when
        unknown (nothing trained yet) or while the finalists run."""
        if self.over or self.finalists or not self.durations:
            return None
        rate = sum(self.durations) / max(1e-9, sum(self.sizes))  # seconds per unit of work
        jobs = max(0, self.total - self.done) + self.baselines_left
        left = rate * (jobs if self.work_left is None else self.work_left)
        job = self.current
        if left and job is not None and job.kind in ("trial", "baseline"):
            left -= min(rate * job.work, max(0.0, now - job.since))
        if self.timeout:
            left = min(left, max(0.0, self.timeout - self.elapsed(now)))
        return max(0.0, left)

    def clock(self, now: float) -> str:
        """``2m05s elapsed, ~5m40s left`` (``~? left`` before a training finished)."""
        el = fmt_seconds(self.elapsed(now))
        if self.over:
            return f"{el} elapsed"
        if self.finalists:
            return f"{el} elapsed, finalists: more seeds for the front"
        left = self.left(now)
        return f"{el} elapsed, ~{'?' if left is None else fmt_seconds(left)} left"

    def status(self, now: float) -> str:
        """``best 0.7123 | front 4 | 2m05s elapsed, ~5m40s left`` (a calibration: the clock)."""
        if not self.scored:
            return self.clock(now)
        best = "-" if self.best is None else f"{self.best:.4f}"
        return f"best {best} | front {self.front} | {self.clock(now)}"

    def position(self) -> str:
        """Where the run is: ``trial 3/12``, ``baseline 1/2``, ``finalists``."""
        job = self.current
        if self.finalists:
            return "finalists"
        if job is not None and job.kind == "baseline":
            return f"baseline {job.index}/{job.total}"
        shown = self.done + (1 if job is not None and job.kind == "trial" else 0)
        return f"trial {min(shown, self.total) if self.total else shown}/{self.total}"


# ---------------------------------------------------------------------------- displays
@dataclass
class Status:
    """What the live bar shows: a position, progress ``n`` of ``total``, then the rest."""

    position: str
    n: int
    total: int
    text: str


class NullDisplay:
    """Shows nothing (``--quiet``)."""

    live = False

    def line(self, text: str) -> None:
        """A finished line (shown as is by the other displays)."""

    def update(self) -> None:
        """The status changed (redrawn by :class:`LiveDisplay` only)."""

    def close(self) -> None:
        """No more progress."""


class PlainDisplay(NullDisplay):
    """Whole lines, wrapped to the width: for logs, pipes and CI."""

    def __init__(self, stream: TextIO, width: int) -> None:
        self.stream, self.width = stream, width

    def line(self, text: str) -> None:
        self.stream.write("".join(f"{s}\n" for s in wrap(text, self.width)))
        self.stream.flush()


class _Bar(tqdm):  # type: ignore[type-arg]
    """tqdm with a ``{status}`` field (tqdm's ``{postfix}`` comes with a leading comma), without
    its monitor thread (:class:`LiveDisplay` redraws the bar itself)."""

    monitor_interval = 0

    def __init__(self, *args: Any, status: str = "", **kwargs: Any) -> None:
        self.status = status
        # tqdm hides bars below the screen's height, and took a terminal that reports none
        # (rows 0: a pty without a window size) as height -1, hiding every bar; ours is alone.
        kwargs.setdefault("nrows", 24)
        super().__init__(*args, **kwargs)

    @property
    def format_dict(self) -> dict[str, Any]:
        return {**super().format_dict, "status": self.status}


_LIVE: set[LiveDisplay] = set()


class LiveDisplay(NullDisplay):
    """A status bar on a terminal, sized to it, redrawn every ``tick`` seconds; finished
    lines (and log records) are printed above it."""

    live = True

    def __init__(
        self, stream: TextIO, render: Callable[[], Status], tick: float = TICK_SECONDS
    ) -> None:
        self.stream, self.render = stream, render
        self.width = self._width()
        self._lock = threading.RLock()
        self._closed = threading.Event()
        self._redirect = contextlib.ExitStack()
        status = render()
        self.bar = _Bar(
            total=max(1, status.total), desc=status.position, status=status.text,
            file=stream, ncols=self.width, bar_format=self._format(), leave=True, mininterval=0,
        )  # fmt: skip
        self._redirect.enter_context(_logging_above(self.bar))
        _LIVE.add(self)
        self.update()
        self._ticker = threading.Thread(target=self._tick, args=(tick,), daemon=True)
        self._ticker.start()

    def _width(self) -> int:
        return max(20, terminal_width(self.stream) - 1)  # the last column would wrap on some

    def _format(self) -> str:
        bar = max(4, min(25, self.width // 8))
        return "{desc} |{bar:" + str(bar) + "}| {status}"

    def _tick(self, seconds: float) -> None:
        while not self._closed.wait(seconds):
            self.update()

    def update(self) -> None:
        """Redraw the bar with the current status, at the terminal's current width."""
        with self._lock:
            if self._closed.is_set():
                return
            width = self._width()
            if width < self.width:  # narrower: erase the old line, and pad no longer than now
                self.bar.fp.write("\r\x1b[K")
                self.bar.sp = self.bar.status_printer(self.bar.fp)
            self.width = self.bar.ncols = width
            self.bar.bar_format = self._format()
            status = self.render()
            self.bar.total = max(1, status.total)
            self.bar.n = min(status.n, self.bar.total)
            self.bar.desc, self.bar.status = status.position, status.text
            self.bar.refresh()

    def line(self, text: str) -> None:
        with self._lock:
            if self._closed.is_set():
                PlainDisplay(self.stream, self._width()).line(text)
                return
            _Bar.write("\n".join(wrap(text, self._width())), file=self.stream)

    def close(self) -> None:
        """Stop the clock and leave the last status on its own line."""
        with self._lock:
            if self._closed.is_set():
                return
            self.update()
            self._closed.set()
            self._redirect.close()
            self.bar.close()
            _LIVE.discard(self)
        if self._ticker is not threading.current_thread():
            self._ticker.join(timeout=5)


def _logging_above(bar: tqdm) -> contextlib.AbstractContextManager[Any]:  # type: ignore[type-arg]
    """Log records to the console go through tqdm (above the bar) while it is shown."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    return logging_redirect_tqdm(tqdm_class=type(bar))


def close_live() -> None:
    """End every live display (before an error message, at exit): its last status stays."""
    for display in list(_LIVE):
        display.close()


atexit.register(close_live)


# ---------------------------------------------------------------------------- loops
def steps(items: Iterable[T], label: Callable[[T], str], stream: TextIO) -> Iterator[T]:
    """``items``, with a transient bar on ``stream`` when it is a terminal (nothing else)."""
    listed = list(items)
    if not stream.isatty():
        yield from listed
        return
    width = max(20, terminal_width(stream) - 1)
    with _Bar(
        total=len(listed), desc=label(listed[0]) if listed else "", file=stream, ncols=width,
        leave=False, mininterval=0,
        bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt} {elapsed}",
    ) as bar:  # fmt: skip
        for item in listed:
            bar.set_description_str(label(item))
            yield item
            bar.update()
