"""Terminal output of the command line: tables, counts and the live progress of a run."""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

from .search.driver import Progress as _ProgressBase

__all__ = ["ConsoleProgress"]


def _out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def _err(text: str) -> None:
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


def fmt_seconds(s: float | None) -> str:
    if s is None or s != s:
        return "-"
    s = int(s)
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ConsoleProgress(_ProgressBase):
    """Live progress on stderr: one updating line on a terminal, plain lines otherwise."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.monotonic()
        self.durations: list[float] = []
        self.head = ""
        self.best: float | None = None
        self.front = 0
        self.total = 0
        self.timeout: float | None = None
        self.trial_t0 = self.t0
        self.finalists = False  # retraining the front with more seeds: no ETA to give

    def _elapsed(self) -> str:
        el = time.monotonic() - self.t0
        if self.finalists:
            return f"{fmt_seconds(el)} elapsed, finalists: more seeds for the front"
        left = None
        if self.durations and self.total:
            left = (sum(self.durations) / len(self.durations)) * max(
                0, self.total - len(self.durations)
            )
            if self.timeout:
                left = min(left, max(0.0, self.timeout - el))
        return f"{fmt_seconds(el)} elapsed, ~{fmt_seconds(left)} left"

    def _status(self) -> str:
        best = "-" if self.best is None else f"{self.best:.4f}"
        return f"best {best} | front {self.front} | {self._elapsed()}"

    def _emit(self, text: str, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:  # one line, cut to the terminal's width so it never wraps
            width = max(20, shutil.get_terminal_size((120, 24)).columns - 1)
            shown = text if final else text[:width]
            sys.stderr.write("\r\x1b[2K" + shown + ("\n" if final else ""))
            sys.stderr.flush()
        elif final:
            _err(text)

    def start(self, plan: Any, done: int) -> None:
        self.total, self.timeout = plan.trials, plan.timeout
        if self.quiet:
            return
        res = plan.record["resolved"]
        proxy = res["proxy_target"]
        tgt = res["cost_target"]
        _err(f"archsearch {plan.title} -> {plan.run_dir}" + (" (resuming)" if plan.resumed else ""))
        _err(
            f"  space {plan.space.name}, budget {plan.budget}, objectives "
            f"{','.join(plan.objectives)}, sampler {plan.settings.sampler}, seed "
            f"{plan.settings.seed}"
        )
        _err(
            f"  costs at {tgt['in_chans']}x{tgt['img_size']}x{tgt['img_size']}, "
            f"{tgt['num_classes']} classes; proxy: {proxy['dataset']} "
            f"{proxy['in_chans']}x{proxy['img_size']}x{proxy['img_size']}, "
            f"{plan.schedule.epochs} epochs on {plan.schedule.subset or proxy['train_images']} "
            f"images, device {plan.device}"
        )
        what = "trainings" if plan.title == "calibrate" else "trained candidates"
        _err(
            f"  {plan.trials} {what}"
            + (f" or {plan.timeout:.0f}s" if plan.timeout else "")
            + (f", {done} already done" if done else "")
            + (f"; baselines: {', '.join(plan.baselines)}" if plan.baselines else "")
        )
        seeds = getattr(plan.settings, "final_seeds", 1)
        if plan.title == "run" and seeds > 1:
            _err(f"  then the front and the baselines retrained to {seeds} seeds each")

    def trial_start(self, index: int, total: int, number: int, desc: str, kind: str) -> None:
        self.trial_t0 = time.monotonic()
        self.finalists = self.finalists or kind.startswith("seed ") or " seed " in kind
        label = kind if kind != "trial" else f"[{index}/{total}] trial {number}"
        self.head = f"{label}: {desc}"
        self._emit(f"{self.head} | {self._status()}")

    def epoch(self, epoch: int, epochs: int, accuracy: float) -> None:
        self._emit(f"{self.head} | epoch {epoch}/{epochs} acc {accuracy:.4f} | {self._status()}")

    def trial_end(self, row: dict[str, Any], best: float | None, front: int) -> None:
        self.best, self.front = best, front
        if row.get("epochs"):
            self.durations.append(time.monotonic() - self.trial_t0)
        if row["state"] != "COMPLETE":
            what = f"{row['state'].lower()}: {row['error']}"
        elif not row["feasible"]:
            what = f"infeasible ({row['violations'] or row['error']})"
        elif row.get("reused_from") is not None:
            what = f"acc {row['proxy_accuracy']:.4f} (reused trial {row['reused_from']})"
        else:
            what = f"acc {row['proxy_accuracy']:.4f} in {row['train_seconds']:.0f}s"
        cost = f"{_m(row['params'])}M params, {_m(row['macs'], 1e9, 3)} GMACs"
        self._emit(f"{self.head} -> {what}; {cost} | {self._status()}", final=True)

    def finish(self, plan: Any, front: Any) -> None:
        import pandas as pd

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
