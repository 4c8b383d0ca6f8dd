"""``analyse`` a run folder into the insights, and write them to ``insights.json``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ArchsearchError
from ..report.calibration import _jsonable
from ..report.data import RunData, load_run
from ..rundir import write_atomic
from .acmix import acmix_part
from .claims import CLAIMS, MARGIN, PARTS, claim_verdict, data_part
from .designs import Designs, from_run, table_configs
from .dimensions import dimension_effects
from .exact import csa_macs, lookup_macs, rasa_macs
from .multires import multires_part

__all__ = ["analyse", "analyse_designs", "to_json", "write_insights", "FILENAME", "LEVEL", "N_BOOT"]

FILENAME = "insights.json"
LEVEL, N_BOOT = 0.95, 2000


def analyse_designs(
    designs: Designs,
    *,
    run_dir: Path,
    configs: list[Any] | None = None,
    table: Any = None,
    level: float = LEVEL,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> dict[str, Any]:
    """The claims and the dimensions from a table of designs (see :func:`analyse`).

    Args:
        designs: the trained designs.
        run_dir: the run folder (for the ACmix weights).
        configs: every architecture of the run, trained or not, for the exact cost parts
            (default: the trained designs').
        table: the run's trials table, for the LookupViT grids of one multi-resolution
            training (see :mod:`archsearch.insights.multires`).
    """
    boot: dict[str, Any] = {"level": level, "n_boot": n_boot, "seed": seed}
    configs = list(designs.frame["config"]) if configs is None else configs
    target = designs.cost_target or {"img_size": 224, "in_chans": 3, "num_classes": 1000}
    parts: dict[str, list[dict[str, Any]]] = {k: [] for k in CLAIMS}
    for part in PARTS:
        parts[part.claim].append(data_part(part, designs, **boot))
    parts["rasa"].append(rasa_macs(configs, target))
    parts["lookup"].insert(0, lookup_macs(configs, target))
    paired = multires_part(table, level=level) if table is not None else None
    if paired is not None:
        parts["lookup"].insert(1, paired)
    parts["acmix"].append(acmix_part(designs, run_dir, level=level))
    parts["csa"][0]["macs"] = csa_macs(configs, target)
    claims = [
        {"id": cid, **text, "verdict": claim_verdict([p["verdict"] for p in parts[cid]]),
         "parts": parts[cid]}
        for cid, text in CLAIMS.items()
    ]  # fmt: skip
    return {
        "level": level,
        "n_boot": n_boot,
        "margin": MARGIN,
        "designs": designs.summary(),
        "claims": claims,
        "dimensions": dimension_effects(designs, **boot),
        "notes": list(designs.notes),
    }


def analyse(
    run: str | Path | RunData, *, level: float = LEVEL, n_boot: int = N_BOOT, seed: int = 0
) -> dict[str, Any]:
    """What a run says about the papers' claims and about every dimension of its space.

    Args:
        run: a run folder (or one loaded by :func:`archsearch.report.data.load_run`).
        level: coverage of every interval.
        n_boot: bootstrap resamples of every regression interval.
        seed: seed of the bootstrap (the same seed gives the same intervals).

    Returns:
        A JSON-ready dict: ``run``, ``level``, ``n_boot``, ``margin``, ``designs`` (counts and
        the seed noise used), ``claims`` (per claim: ``id``, ``paper``, ``claim``, ``verdict``
        and its ``parts``, each an effect with ``ci``, ``method``, ``n`` and ``verdict``),
        ``dimensions`` (every option against its dimension's reference) and ``notes``.

    Raises:
        ArchsearchError: ``run`` is not a readable run folder.
    """
    data = run if isinstance(run, RunData) else load_run(run)
    designs = from_run(data)
    out = analyse_designs(
        designs,
        run_dir=data.run_dir,
        configs=table_configs(data.table),
        table=data.table,
        level=level,
        n_boot=n_boot,
        seed=seed,
    )
    return {"run": str(data.run_dir), **out}


def to_json(analysis: dict[str, Any]) -> str:
    """The analysis as JSON text (``nan`` written as ``null``)."""
    return json.dumps(_jsonable(analysis), indent=1, allow_nan=False) + "\n"


def write_insights(run_dir: str | Path, analysis: dict[str, Any] | None = None) -> Path:
    """Write ``insights.json`` into the run folder atomically (analysing it unless given).

    Raises:
        ArchsearchError: the run folder is unreadable, or ``insights.json`` cannot be written.
    """
    found = analysis if analysis is not None else analyse(run_dir)
    path = Path(run_dir) / FILENAME
    try:
        return write_atomic(path, to_json(found).encode())
    except OSError as e:
        raise ArchsearchError(
            f"{path}: expected a writable run folder, got {e.strerror or e}"
        ) from None
