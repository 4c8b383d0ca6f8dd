"""The ``archsearch`` command line. Owns all terminal output; the library only logs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from .errors import ArchsearchError
from .search.runner import Progress as _ProgressBase

__all__ = ["main"]

MAC_NOTE = "MACs: multiply-accumulates (fvcore convention; what most papers call FLOPs)"


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


def _dev(value: float, published: float | None) -> str:
    return "-" if not published else f"{100 * (value / published - 1):+.1f}%"


# ---------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from .cost import count
    from .models import PUBLISHED, create_reference, reference_names

    records: list[dict[str, Any]] = []
    for name in reference_names():
        rep = count(create_reference(name, num_classes=1000), img_size=224)
        pub = PUBLISHED[name]
        records.append(
            {
                "name": name,
                "params": rep.params,
                "backbone_params": rep.backbone_params,
                "macs": rep.macs,
                "published_params": None if pub.params is None else round(pub.params * 1e6),
                "published_macs": None if pub.macs is None else round(pub.macs * 1e9),
                "published_scope": pub.scope,
                "source": pub.source,
            }
        )
    if args.format == "json":
        _out(json.dumps(records, indent=2))
        return 0
    rows = []
    for r in records:
        compared = r["backbone_params"] if r["published_scope"] == "backbone" else r["params"]
        rows.append(
            [
                r["name"],
                _m(r["params"]),
                _m(r["backbone_params"]),
                _m(r["macs"], 1e9, 3),
                _m(r["published_params"]) + ("*" if r["published_scope"] == "backbone" else ""),
                _m(r["published_macs"], 1e9, 2),
                _dev(compared, r["published_params"]),
                _dev(r["macs"], r["published_macs"]),
            ]
        )
    header = [
        "model",
        "params(M)",
        "backbone(M)",
        "GMACs@224",
        "published(M)",
        "pub GMACs",
        "d params",
        "d MACs",
    ]
    _out(_table(rows, header))
    _out("* published figure is backbone-only (no classifier); compared with backbone(M).")
    _out(f"params include a 1000-class head; {MAC_NOTE}.")
    return 0


# ---------------------------------------------------------------------------- count
def cmd_count(args: argparse.Namespace) -> int:
    from .cost import count, resolve_target

    model = resolve_target(
        args.target, num_classes=args.num_classes, in_chans=args.in_chans, img_size=args.img_size
    )
    rep = count(model, img_size=args.img_size, in_chans=args.in_chans, num_classes=args.num_classes)
    if args.format == "json":
        d = rep.to_dict()
        d["target"] = args.target
        _out(json.dumps(d, indent=2))
        return 0
    _out(
        f"{args.target} at {args.in_chans}x{args.img_size}x{args.img_size}, "
        f"{args.num_classes} classes"
    )
    _out(
        f"params {rep.params:,} ({_m(rep.params)}M), backbone {rep.backbone_params:,}; "
        f"MACs {rep.macs:,} ({_m(rep.macs, 1e9, 3)}G); counted in {rep.seconds:.2f}s"
    )
    total = max(rep.macs, 1)
    rows = [
        [k, f"{v:,}", f"{100 * v / total:.1f}%"]
        for k, v in sorted(rep.by_module.items(), key=lambda kv: -kv[1])
    ]
    _out(_table(rows, ["module", "MACs", "share"]))
    rows = [
        [k, f"{v:,}", f"{100 * v / total:.1f}%"]
        for k, v in sorted(rep.by_operator.items(), key=lambda kv: -kv[1])
    ]
    _out(_table(rows, ["operator", "MACs", "share"]))
    _out("uncounted operators: " + (", ".join(rep.uncounted_ops) or "none"))
    _out(MAC_NOTE + ".")
    return 0


# ---------------------------------------------------------------------------- run
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

    def _elapsed(self) -> str:
        from .search.runner import fmt_seconds

        el = time.monotonic() - self.t0
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
        if self.tty:
            sys.stderr.write("\r\x1b[2K" + text[:200] + ("\n" if final else ""))
            sys.stderr.flush()
        elif final:
            _err(text)

    def start(self, plan: Any, done: int) -> None:
        self.total, self.timeout = plan.trials, plan.timeout
        if self.quiet:
            return
        res = plan.settings["resolved"]
        proxy = res["proxy_target"]
        tgt = res["cost_target"]
        _err(f"archsearch run -> {plan.run_dir}" + (" (resuming)" if plan.resumed else ""))
        _err(
            f"  space {plan.space.name}, budget {plan.budget}, objectives "
            f"{','.join(plan.objectives)}, sampler {plan.options.sampler}, seed "
            f"{plan.options.seed}"
        )
        _err(
            f"  costs at {tgt['in_chans']}x{tgt['img_size']}x{tgt['img_size']}, "
            f"{tgt['num_classes']} classes; proxy: {proxy['dataset']} "
            f"{proxy['in_chans']}x{proxy['img_size']}x{proxy['img_size']}, "
            f"{plan.schedule.epochs} epochs on {plan.schedule.subset or proxy['train_images']} "
            f"images, device {plan.device}"
        )
        _err(
            f"  {plan.trials} trained candidates"
            + (f" or {plan.timeout:.0f}s" if plan.timeout else "")
            + (f", {done} already done" if done else "")
            + (f"; baselines: {', '.join(plan.baselines)}" if plan.baselines else "")
        )

    def trial_start(self, index: int, total: int, number: int, desc: str, kind: str) -> None:
        self.trial_t0 = time.monotonic()
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
            what = f"infeasible ({row['error']})"
        elif row.get("reused_from") is not None:
            what = f"acc {row['proxy_accuracy']:.4f} (reused trial {row['reused_from']})"
        else:
            what = f"acc {row['proxy_accuracy']:.4f} in {row['train_seconds']:.0f}s"
        cost = f"{_m(row['params'])}M params, {_m(row['macs'], 1e9, 3)} GMACs"
        self._emit(f"{self.head} -> {what}; {cost} | {self._status()}", final=True)

    def finish(self, plan: Any, front: Any) -> None:
        if self.quiet:
            return
        _err("")
        if front is None or len(front) == 0:
            _out("No feasible trained candidate yet; nothing on the Pareto front.")
            return
        rows = []
        for _, r in front.sort_values("proxy_accuracy", ascending=False).iterrows():
            rows.append(
                [
                    str(r["trial"]),
                    str(r["archid"]),
                    f"{r['proxy_accuracy']:.4f}",
                    _m(r["params"]),
                    _m(r["macs"], 1e9, 3),
                    "-"
                    if r.get("latency_ms") is None or r.get("latency_ms") != r.get("latency_ms")
                    else f"{r['latency_ms']:.1f}",
                    r["baseline"] or "",
                    "*" if r.get("knee") else "",
                ]
            )
        _out(f"Pareto front ({len(rows)} of the run's trials; * = knee):")
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


def cmd_run(args: argparse.Namespace) -> int:
    from .search.runner import RunOptions, execute, prepare

    fields = RunOptions.__dataclass_fields__
    opts = RunOptions(**{k: getattr(args, k) for k in fields if hasattr(args, k)})
    plan = prepare(opts)
    progress = ConsoleProgress(quiet=opts.quiet)
    try:
        execute(plan, progress)
    except KeyboardInterrupt:
        _err(f"\narchsearch: interrupted; run the same command again to resume {plan.run_dir}")
        return 130
    _write_report(plan.run_dir, quiet=opts.quiet)
    return 0


def _write_report(run_dir: Any, quiet: bool) -> None:
    from .report import write_report

    paths = write_report(run_dir)
    if not quiet:
        _err(f"report: {paths['html']}")


# ---------------------------------------------------------------------------- report, export
def cmd_report(args: argparse.Namespace) -> int:
    from .report import write_report

    paths = write_report(args.run_dir)
    for key, value in paths.items():
        for p in value if isinstance(value, list) else [value]:
            _out(f"{key}: {p}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .export import export

    written = export(
        args.run_dir,
        trial=args.trial,
        top=args.top,
        knee=args.knee,
        out=args.out,
        epochs=args.epochs,
        device=args.device,
    )
    for path in written:
        _out(str(path))
    return 0


# ---------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="archsearch",
        description="Block-level architecture search for lightweight vision transformers.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    m = sub.add_parser("models", help="list the reference designs with their costs")
    m.add_argument("--format", choices=["table", "json"], default="table")
    m.set_defaults(func=cmd_models)

    c = sub.add_parser(
        "count",
        help="count params and MACs of a design, config file or timm model",
        description=f"Count parameters and MACs. {MAC_NOTE}.",
    )
    c.add_argument(
        "target",
        metavar="TARGET",
        help="reference design name, config file (.json/.yaml) or timm:<model name>",
    )
    c.add_argument("--img-size", type=int, default=224)
    c.add_argument("--in-chans", type=int, default=3)
    c.add_argument("--num-classes", type=int, default=1000)
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=cmd_count)

    r = sub.add_parser(
        "run",
        help="search a design space under a budget",
        description="Sample a design space with Optuna, reject over-budget candidates before "
        "training, train survivors by a short proxy schedule and rank them. "
        f"{MAC_NOTE}; a params budget counts the backbone (no classifier).",
    )
    r.add_argument(
        "--budget",
        required=True,
        help="e.g. 3.5M-params, 0.9G-macs (flops = MACs), 5ms-latency, or several joined by commas",
    )
    r.add_argument(
        "--space",
        default="default",
        help="built-in space name (default, hierarchical, columnar, tiny) or YAML file",
    )
    r.add_argument("--trials", type=int, help="trained candidates to evaluate (CPU: 30)")
    r.add_argument(
        "--timeout", type=float, help="stop starting trials after this many seconds (CPU: 780)"
    )
    r.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="fashion-mnist, cifar10, cifar100, imagefolder:PATH or synthetic",
    )
    r.add_argument("--data-dir", help="where the dataset files are")
    r.add_argument("--download", action="store_true", help="download cifar10/cifar100 if missing")
    r.add_argument("--epochs", type=int, help="proxy epochs")
    r.add_argument("--subset", type=int, help="training images per proxy run")
    r.add_argument("--batch-size", type=int)
    r.add_argument("--proxy-img-size", type=int, help="image side for proxy training")
    r.add_argument("--img-size", type=int, default=224, help="cost target input side")
    r.add_argument("--in-chans", type=int, default=3, help="cost target input channels")
    r.add_argument("--num-classes", type=int, default=1000, help="cost target classes")
    r.add_argument("--sampler", choices=["tpe", "nsga2", "random"], default="tpe")
    r.add_argument(
        "--objectives",
        default="accuracy,macs",
        help="accuracy followed by costs among params, macs, latency",
    )
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N")
    r.add_argument("--name", help="run name: results/NAME")
    r.add_argument("--out", help="run directory (instead of results/NAME)")
    r.add_argument("--workers", type=int, default=1, help="worker processes sharing the study")
    r.add_argument(
        "--force",
        action="store_true",
        help="start over in a run directory that holds a different run",
    )
    r.add_argument("--quiet", action="store_true", help="no progress display")
    r.add_argument(
        "--pruner",
        action="store_true",
        help="median pruning of weak trials (single-objective runs)",
    )
    r.add_argument(
        "--baselines",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also train the reference designs that fit the budget, under the same proxy "
        "(default: on; --no-baselines to skip)",
    )
    r.add_argument("--compile", action="store_true", help="torch.compile candidates (GPU)")
    g = r.add_argument_group("distributed search on Ray Tune (pip install 'archsearch[ray]')")
    g.add_argument("--backend", choices=["local", "ray"], default="local")
    g.add_argument(
        "--ray-address", help="auto, or HOST:PORT of a running cluster (default: start Ray locally)"
    )
    g.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial (default: 1 if the cluster has GPUs, else 0)",
    )
    g.add_argument("--cpus-per-trial", type=float, help="CPUs per trial (default: 1)")
    g.add_argument("--max-concurrent", type=int, help="trials running at once")
    g.add_argument(
        "--scheduler",
        choices=["none", "asha"],
        default="none",
        help="asha: early-stop weak trials on proxy accuracy",
    )
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report",
        help="write pareto.csv, plots and report.html for a run",
        description="Regenerate the report of a run from its stored study "
        "(also while the run is still going).",
    )
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.set_defaults(func=cmd_report)

    ex = sub.add_parser(
        "export",
        help="export winning architectures as timm models",
        description="Write timm-style folders (config.json, model.safetensors) "
        "loadable with timm.create_model('local-dir:DIR').",
    )
    ex.add_argument("run_dir", metavar="RUN_DIR")
    which = ex.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="export this trial")
    which.add_argument("--top", type=int, metavar="K", help="the K most accurate front members")
    which.add_argument("--knee", action="store_true", help="the knee of the Pareto front")
    ex.add_argument("--out", required=True, help="output directory")
    ex.add_argument("--epochs", type=int, help="retrain for E epochs instead of proxy weights")
    ex.add_argument("--device", default="auto")
    ex.set_defaults(func=cmd_export)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ArchsearchError as e:
        _err(f"archsearch: error: {e}")
        return 2
    except KeyboardInterrupt:
        _err("archsearch: interrupted")
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
