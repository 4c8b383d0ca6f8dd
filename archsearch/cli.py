"""The ``archsearch`` command line. Owns all terminal output; the library only logs."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .console import ConsoleProgress, _err, _m, _out, _table
from .errors import ArchsearchError
from .settings import add_arguments

__all__ = ["main"]

MAC_NOTE = "MACs: multiply-accumulates (fvcore convention; what most papers call FLOPs)"


def _dev(value: float, published: float | None) -> str:
    return "-" if not published else f"{100 * (value / published - 1):+.1f}%"


# ---------------------------------------------------------------------------- models
def cmd_models(args: argparse.Namespace) -> int:
    from .counting import reference_records

    records = reference_records(sys.stderr)
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
    from .counting import count_target, find_export

    exported = find_export(args.target)
    given = {"img_size": args.img_size, "in_chans": args.in_chans, "num_classes": args.num_classes}
    size = count_target(given, exported)
    model = exported.build(**size) if exported else resolve_target(args.target, **size)
    rep = count(
        model, img_size=size["img_size"], in_chans=size["in_chans"], num_classes=size["num_classes"]
    )
    if args.format == "json":
        d = rep.to_dict()
        d["target"] = args.target
        _out(json.dumps(d, indent=2))
        return 0
    _out(
        f"{args.target} at {size['in_chans']}x{size['img_size']}x{size['img_size']}, "
        f"{size['num_classes']} classes"
        + ("" if exported is None else f" (trained at {exported.trained_at()})")
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
def cmd_run(args: argparse.Namespace) -> int:
    from .search import execute, prepare
    from .settings import from_namespace

    opts = from_namespace(args)
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


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate

    common = {"backend": args.backend, "device": args.device, "quiet": args.quiet}
    if args.seed is not None:
        common["seed"] = args.seed
    progress = ConsoleProgress(quiet=args.quiet)
    try:
        result = calibrate(
            args.run_dir, space=args.space, budget=args.budget, out=args.out,
            designs=args.designs, seeds=args.seeds, reference_factor=args.reference_factor,
            reference_seeds=args.reference_seeds,
            progress=progress, **common,
        )  # fmt: skip
    except KeyboardInterrupt:
        _err("\narchsearch: interrupted; run the same command again to resume the calibration")
        return 130
    _out(result["analysis"].get("verdict", ""))
    for key in ("csv", "json", "png", "html"):
        if result.get(key):
            _out(f"{key}: {result[key]}")
    return 0


def cmd_insights(args: argparse.Namespace) -> int:
    from .insights import analyse, to_json, write_insights
    from .insights import text as t

    analysis = analyse(args.run_dir)
    path = write_insights(args.run_dir, analysis)
    if args.format == "json":
        _out(to_json(analysis).rstrip())
        return 0
    _out(t.headline(analysis))
    _out(t.table(t.claim_rows(analysis), t.CLAIM_HEADER))
    for line in t.reasons(analysis) + analysis["notes"]:
        _out(f"  - {line}")
    _out("")
    _out(t.table(t.dimension_rows(analysis), t.DIMENSION_HEADER))
    _out(f"insights: {path}")
    return 0


# ---------------------------------------------------------------------------- dashboard
def cmd_dashboard(args: argparse.Namespace) -> int:
    try:
        import optuna_dashboard
    except ImportError:
        raise ArchsearchError(
            "dashboard: optuna-dashboard is not installed; pip install 'archsearch[dashboard]'"
        ) from None
    from optuna.storages._cached_storage import _CachedStorage

    from .search.study import load_study

    storage = load_study(args.run_dir)._storage  # the run's journal (its lock) or RDB storage
    if isinstance(storage, _CachedStorage):  # an RDB storage as optuna-dashboard opens it
        storage = storage._backend
    _err(f"optuna-dashboard on run {args.run_dir}: http://{args.host}:{args.port}/")
    try:
        optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    except OSError as e:
        raise ArchsearchError(f"dashboard: cannot serve on {args.host}:{args.port}: {e}") from None
    return 0


# ---------------------------------------------------------------------------- parser
def _version() -> str:
    from . import __version__

    return __version__


class _Parser(argparse.ArgumentParser):
    """A usage error on one line like every other error, without the usage text (subcommand
    parsers are made of this class too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"archsearch: error: {' '.join(message.split())}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="archsearch",
        description="Block-level architecture search for lightweight vision transformers.",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    p.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
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
        help="reference design name, config file (.json/.yaml), timm:<model name>, or an "
        "exported model folder (archsearch export) or its config.json",
    )
    export = "an exported folder: its run's cost target"
    c.add_argument("--img-size", type=int, help=f"input side (default 224; {export})")
    c.add_argument("--in-chans", type=int, help=f"input channels (default 3; {export})")
    c.add_argument("--num-classes", type=int, help=f"classes (default 1000; {export})")
    c.add_argument("--format", choices=["table", "json"], default="table")
    c.set_defaults(func=cmd_count)

    r = sub.add_parser(
        "run",
        help="search a design space under a budget",
        description="Sample a design space with Optuna, reject over-budget candidates before "
        "training, train survivors by a short proxy schedule and rank them. "
        f"{MAC_NOTE}; a params budget counts the backbone (no classifier).",
    )
    add_arguments(r)
    r.set_defaults(func=cmd_run)

    cal = sub.add_parser(
        "calibrate",
        help="measure how well the proxy ranks designs (seeds, longer reference training)",
        description="Train K designs at the proxy tier with S seeds and R times at a reference "
        "tier (10x the proxy's images x epochs, full validation split) and report the noise "
        "floor and rank correlations with 95% intervals. Give a run folder (its trained "
        "designs; results go into it) or --budget (and --space) to sample designs.",
    )
    cal.add_argument("run_dir", metavar="RUN_DIR", nargs="?", help="a run folder to calibrate")
    cal.add_argument("--space", help="space to sample designs from (with --budget)")
    cal.add_argument("--budget", help="budget sampled designs must meet")
    cal.add_argument("--out", help="folder of a space calibration")
    cal.add_argument("--designs", type=int, default=12, help="designs K (default 12)")
    cal.add_argument("--seeds", type=int, default=3, help="proxy seeds S per design (default 3)")
    cal.add_argument(
        "--reference-factor",
        type=float,
        default=10.0,
        help="reference images x epochs over the proxy's (default 10)",
    )
    cal.add_argument(
        "--reference-seeds",
        type=int,
        default=1,
        help="reference trainings per design (default 1; 2+ measure the reference's own noise "
        "and the tau ceiling it sets)",
    )
    cal.add_argument("--seed", type=int, help="run seed (space calibration; default 0)")
    cal.add_argument("--backend", choices=["local", "ray"], default="local")
    cal.add_argument("--device", default="auto")
    cal.add_argument("--quiet", action="store_true")
    cal.set_defaults(func=cmd_calibrate)

    rep = sub.add_parser(
        "report",
        help="write pareto.csv, plots and report.html for a run",
        description="Regenerate the report of a run from its stored study "
        "(also while the run is still going).",
    )
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.set_defaults(func=cmd_report)

    ins = sub.add_parser(
        "insights",
        help="what the run says about the papers' claims and every design dimension",
        description="Estimate each paper claim's effect and every option's effect on accuracy "
        "(and MACs) with 95% intervals: matched pairs where the run has them, otherwise a "
        "regression on every choice with a bootstrap over designs; seed noise included. "
        "Writes insights.json into the run folder.",
    )
    ins.add_argument("run_dir", metavar="RUN_DIR")
    ins.add_argument("--format", choices=["table", "json"], default="table")
    ins.set_defaults(func=cmd_insights)

    dash = sub.add_parser(
        "dashboard",
        help="browse a run's study in optuna-dashboard",
        description="Serve the run's Optuna study (RUN_DIR/study.journal) with optuna-dashboard: "
        "objectives by name, over-budget trials marked infeasible, each design's notation and "
        "counts as user attributes. Needs the [dashboard] extra.",
    )
    dash.add_argument("run_dir", metavar="RUN_DIR")
    dash.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dash.set_defaults(func=cmd_dashboard)

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


def _one_line(text: str) -> str:
    """``text`` with line breaks (and any other unprintable character) escaped: an error quoting
    what the user wrote (a key of a space file) stays on one line."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except ArchsearchError as e:
        _err(f"archsearch: error: {_one_line(str(e))}")
        return 2
    except KeyboardInterrupt:
        _err("archsearch: interrupted")
        return 130
    except OSError as e:  # a full disk, a folder that became unwritable: what was written stays
        where = f"to write {e.filename}" if e.filename else "a working disk"
        _err(
            f"archsearch: error: expected {where}, got {_one_line(e.strerror or str(e))}; "
            "finished trials are kept: free the space and run the same command to resume"
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
