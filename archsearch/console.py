"""Terminal output of the command line: tables, counts and the live progress of a run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .progress import (
    TICK_SECONDS,
    LiveDisplay,
    NullDisplay,
    PlainDisplay,
    Progress,
    Status,
    Tally,
    close_live,
    terminal_width,
)

__all__ = ["ConsoleProgress"]


def _out(text: str = "") -> None:
    close_live()
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
    close_live()  # a message ends the live status (it stays above the message)
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    for r in rows:
        lines.append(
            "  ".join(
                str(x).rjust(w) if i else str(x).ljust(w) for i, (x, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(lines)


def _m(n: float | None, scale: float = 1e6, digits: int = 2) -> str:
    return "-" if n is None else f"{n / scale:.{digits}f}"


def _outcome(row: dict[str, Any]) -> str:
    """What became of a trial: its accuracy, or why it has none."""
    if row["state"] != "COMPLETE":
        return f"{row['state'].lower()}: {row['error']}"
    if not row["feasible"]:
        return f"infeasible ({row['violations'] or row['error']})"
    if row.get("reused_from") is not None:
        return f"acc {row['proxy_accuracy']:.4f} (reused trial {row['reused_from']})"
    return f"acc {row['proxy_accuracy']:.4f} in {row['train_seconds']:.0f}s"


class ConsoleProgress(Progress):
    """Live progress on stderr: a status bar sized to the terminal with the trials' results
    printed above it; whole lines when stderr is no terminal; nothing with ``quiet``.

    ``stream``, ``tty``, ``clock`` and ``tick`` (seconds between redraws) are for tests."""

    def __init__(
        self,
        quiet: bool = False,
        *,
        stream: TextIO | None = None,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        tick: float = TICK_SECONDS,
    ) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.clock, self.tick = clock, tick
        self.tally = Tally(started=clock())
        self.head = ""  # the running job, as its result line will start
        self.doing = ""  # the running job, as the status bar shows it
        self.training = ""  # its last epoch
        self._display: NullDisplay | None = None

    # ------------------------------------------------------------------ state
    @property
    def total(self) -> int:
        return self.tally.total

    @total.setter
    def total(self, value: int) -> None:
        self.tally.total = value

    @property
    def finalists(self) -> bool:
        return self.tally.finalists

    def _status(self) -> str:
        return self.tally.status(self.clock())

    def _render(self) -> Status:
        text = self._status()
        if self.tally.current is not None:
            text += f" | {self.doing}" + (f" | {self.training}" if self.training else "")
        return Status(self.tally.position(), self.tally.done, self.tally.total, text)

    def _show(self) -> NullDisplay:
        """The display, opened on first use."""
        if self._display is None:
            if self.quiet:
                self._display = NullDisplay()
            elif self.tty:
                self._display = LiveDisplay(self.stream, self._render, self.tick)
            else:
                self._display = PlainDisplay(self.stream, terminal_width(self.stream))
        return self._display

    def close(self) -> None:
        """End the live status (also done by :meth:`finish`)."""
        if self._display is not None:
            self._display.close()

    # ------------------------------------------------------------------ events
    def start(self, plan: Any, done: int) -> None:
        self.tally.begin(self.clock(), plan.trials, plan.timeout, done)
        self.tally.scored = plan.title != "calibrate"
        if self._display is None and not self.quiet:  # whole lines, before the live status
            before: NullDisplay = PlainDisplay(
                self.stream, terminal_width(self.stream) - (1 if self.tty else 0)
            )
        else:
            before = self._show()
        for line in _header(plan, done):
            before.line(line)
        self._show().update()

    def trial_start(
        self,
        index: int,
        total: int,
        number: int,
        desc: str,
        kind: str,
        work: tuple[float, float] | None = None,
    ) -> None:
        job = self.tally.job_started(number, index, total, kind, self.clock(), work)
        job.head = self.head = f"{_label(job.kind, kind, index, total, number)}: {desc}"
        self.doing = f"#{number} {desc}" if kind == "trial" else f"{kind}: {desc}"
        self.training = ""
        self._show().update()

    def epoch(self, epoch: int, epochs: int, accuracy: float) -> None:
        self.training = f"epoch {epoch}/{epochs} acc {accuracy:.4f}"
        self._show().update()

    def trial_end(self, row: dict[str, Any], best: float | None, front: int) -> None:
        job = self.tally.job_ended(row.get("trial"), row, best, front, self.clock())
        head = job.head if job is not None else _unstarted(row)
        cost = f"{_m(row['params'])}M params, {_m(row['macs'], 1e9, 3)} GMACs"
        line = f"{head} -> {_outcome(row)}; {cost}"
        display = self._show()
        display.line(line if display.live else f"{line} | {self._status()}")
        display.update()

    def finish(self, plan: Any, front: Any) -> None:
        import pandas as pd

        self.tally.over = True
        self.close()
        if self.quiet or plan.title != "run":  # calibrate prints its own summary
            return
        _err("")
        if front is None or len(front) == 0:
            _out("No feasible trained candidate yet; nothing on the Pareto front.")
            return
        rows = []
        for _, r in front.sort_values("accuracy_mean", ascending=False).iterrows():
            half = (r["accuracy_hi"] - r["accuracy_lo"]) / 2
            rows.append(
                [
                    str(r["trial"]),
                    str(r["archid"]),
                    f"{r['accuracy_mean']:.3f}"
                    + ("" if pd.isna(half) else f" ±{half:.3f}")
                    + ("" if pd.isna(r["seeds"]) or r["seeds"] < 2 else f" ({r['seeds']} seeds)"),
                    _m(r["params"]),
                    _m(r["macs"], 1e9, 3),
                    "-" if pd.isna(r.get("latency_ms")) else f"{r['latency_ms']:.1f}",
                    r["baseline"] or "",
                    "*" if r.get("knee") else "",
                ]
            )
        _out(
            f"Pareto front ({len(rows)} of the run's designs; * = knee; accuracy: mean over "
            "seeds ± 95% interval (one seed: validation noise alone, seed noise not included)):"
        )
        _out(
            _table(
                rows,
                [
                    "trial",
                    "archid",
                    "accuracy",
                    "params(M)",
                    "GMACs",
                    "lat(ms)",
                    "baseline",
                    "knee",
                ],
            )
        )
        _out(f"Results in {plan.run_dir} (trials.csv, run.yaml, study.journal, weights/).")


def _unstarted(row: dict[str, Any]) -> str:
    """How the line of a trial that never started starts (a grid scored by another training)."""
    with_ = row.get("trained_with")
    return f"trial {row.get('trial')}" + ("" if with_ is None else f" (scored by trial {with_})")


def _label(job: str, kind: str, index: int, total: int, number: int) -> str:
    """How a job's lines start: ``[3/12] trial 17``, ``[5/36] proxy seed 1`` (a calibration
    job), or the driver's own words (``baseline lvt``, ``seed 1 (from trial 4)``)."""
    if kind == "trial":
        return f"[{index}/{total}] trial {number}"
    return f"[{index}/{total}] {kind}" if job == "trial" else kind


def _header(plan: Any, done: int) -> list[str]:
    """What a run (or a calibration) is about to do, before its first trial."""
    res = plan.record["resolved"]
    proxy, tgt = res["proxy_target"], res["cost_target"]
    what = "trainings" if plan.title == "calibrate" else "trained candidates"
    lines = [
        f"archsearch {plan.title} -> {plan.run_dir}" + (" (resuming)" if plan.resumed else ""),
        f"  space {plan.space.name}, budget {plan.budget}, objectives "
        f"{','.join(plan.objectives)}, sampler {plan.settings.sampler}, seed {plan.settings.seed}",
        f"  costs at {tgt['in_chans']}x{tgt['img_size']}x{tgt['img_size']}, "
        f"{tgt['num_classes']} classes; proxy: {proxy['dataset']} "
        f"{proxy['in_chans']}x{proxy['img_size']}x{proxy['img_size']}, "
        f"{plan.schedule.epochs} epochs on {plan.schedule.subset or proxy['train_images']} "
        f"images, device {plan.device}",
        f"  {plan.trials} {what}"
        + (f" or {plan.timeout:.0f}s" if plan.timeout else "")
        + (f", {done} already done" if done else "")
        + (f"; baselines: {', '.join(plan.baselines)}" if plan.baselines else ""),
    ]
    seeds = getattr(plan.settings, "final_seeds", 1)
    if plan.title == "run" and seeds > 1:
        lines.append(f"  then the front and the baselines retrained to {seeds} seeds each")
    return lines
