"""The tiny search the end-to-end tests share: seconds per candidate on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from archsearch.search import execute, prepare
from archsearch.settings import RunSettings

#: A two-stage toy space on synthetic data, one short epoch per candidate, no baselines, no
#: finalist seeds.
TINY_RUN: dict[str, Any] = dict(
    space="tiny",
    dataset="synthetic",
    epochs=1,
    subset=256,
    batch_size=64,
    proxy_img_size=32,
    baselines=False,
    quiet=True,
    final_seeds=1,
)


def tiny_options(out: Path, **overrides: Any) -> RunSettings:
    return RunSettings(**{"budget": "100K-params", "out": str(out), **TINY_RUN, **overrides})


def tiny_run(out: Path, **overrides: Any) -> Path:
    """Run the tiny search into ``out`` and return it."""
    execute(prepare(tiny_options(out, **overrides)))
    return out


def two_member_space(folder: Path) -> Path:
    """A space with exactly two architectures (conv or CSA in one block): forces repeats."""
    path = folder / "two.yaml"
    path.write_text(
        "macro: hierarchical\ntokenizer: {kind: overlap_patch, patch_size: 4}\n"
        "stages:\n  - {depth: 1, dim: 16, heads: 1, mixer: [conv, csa]}\n"
    )
    return path
