"""The papers' six claims, as effects a run over this space can estimate.

Each claim is split into parts, each part one effect with a verdict (see
:func:`archsearch.insights.estimate.verdict`); a claim is *supported* when every part is,
*contradicted* when any part is, and otherwise the run *cannot tell*.

The accuracy parts read the designs' configs, not the choice columns, so a baseline that is a
member of the space (LVT) counts like a searched design and both families' columns (the CB
choice exists in each) count as one. For each part a design gives a focal value (``None``: the
part does not apply to it) and a matching key: its canonical architecture with the focal fields
set to a fixed value, so two designs with equal keys differ only in what the part is about.
The cost parts (RASA's MACs per recursion, LookupViT's MACs per grid step, CSA's cost against a
conv stage) are exact, from the closed-form cost model (:mod:`.exact`); ACmix's mixing weights are
read from the saved weights (:mod:`.acmix`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..blocks import canonical
from ..config import ArchConfig, CBConfig
from .designs import Designs
from .dimensions import relative
from .estimate import estimate, verdict

__all__ = ["Part", "CLAIMS", "PARTS", "data_part", "claim_verdict", "MARGIN"]

#: "At least as good" / "at equal accuracy" means: not worse by more than this much accuracy.
MARGIN = 0.01
#: Two designs pair for an "equal parameters" part only within this log2 ratio (about +-15%).
PARAMS_TOLERANCE = 0.2

CLAIMS: dict[str, dict[str, str]] = {
    "cb": {
        "paper": "Context Broadcasting (ICCV 2023)",
        "claim": "Context Broadcasting helps, most when placed at the end of the MLP; "
        "CBS is at least as good as CB.",
    },
    "deep_narrow": {
        "paper": "T2T-ViT (ICCV 2021)",
        "claim": "Deep-narrow beats shallow-wide at equal parameters (columnar family).",
    },
    "rasa": {
        "paper": "LVT (CVPR 2022)",
        "claim": "RASA: accuracy rises with recursion depth while MACs rise by a fixed step "
        "per recursion.",
    },
    "acmix": {
        "paper": "ACmix (CVPR 2022)",
        "claim": "ACmix's learned mixing weights favour convolution in early stages and "
        "attention in late ones.",
    },
    "lookup": {
        "paper": "LookupViT (ECCV 2024)",
        "claim": "LookupViT: fewer MACs at equal accuracy as the compressed grid shrinks.",
    },
    "csa": {
        "paper": "LVT (CVPR 2022)",
        "claim": "CSA in stage 1 beats a plain convolutional stage 1 at equal cost.",
    },
}


@dataclass(frozen=True)
class Part:
    """One effect of a claim estimated from the trained designs' accuracies.

    Attributes:
        claim: the claim's id (a key of :data:`CLAIMS`).
        id: the part's id.
        name: what is compared, in words.
        unit: unit of the effect.
        rule: what the claim expects (``greater``, ``less``, ``not_less``).
        focal: a design's focal value (``None``: the part does not apply to it).
        normalise: the design with the focal fields set to a fixed value (for matching).
        columns: endings of the choice columns the part is about (left out of the covariates).
        binary: the focal value is yes (1) / no (0).
        equal_params: read the effect at equal parameter count, also in the regression on
            every choice, and pair only designs within :data:`PARAMS_TOLERANCE`.
        macs: also estimate the effect on MACs from the designs.
    """

    claim: str
    id: str
    name: str
    unit: str
    rule: str
    focal: Callable[[ArchConfig], float | None]
    normalise: Callable[[ArchConfig], ArchConfig]
    columns: tuple[str, ...]
    binary: bool = True
    equal_params: bool = False
    macs: bool = True


def _stage0(cfg: ArchConfig, **changes: Any) -> ArchConfig:
    first = dataclasses.replace(cfg.stages[0], **changes)
    return cfg.replace(stages=(first, *cfg.stages[1:]))


def _lookup_key(cfg: ArchConfig) -> ArchConfig:
    """The design with its grid set aside (a multi-resolution design keeps its set, so it pairs
    only with designs trained the same way)."""
    return _stage0(cfg, lookup_grid=min(cfg.stages[0].lookup_multires or (3,)))


def _cb(cfg: ArchConfig, **changes: Any) -> ArchConfig:
    return cfg.replace(cb=dataclasses.replace(cfg.cb, **changes))


def _cb_on(cfg: ArchConfig) -> bool:
    return cfg.cb.kind != "none"


def _rasa_mean(cfg: ArchConfig) -> float | None:
    r = [s.recursion for s in cfg.stages if s.mixer == "rasa"]
    return float(np.mean(r)) if cfg.macro == "hierarchical" and r else None


def _no_recursion(cfg: ArchConfig) -> ArchConfig:
    return cfg.replace(stages=tuple(dataclasses.replace(s, recursion=1) for s in cfg.stages))


def _stage1_csa(cfg: ArchConfig) -> float | None:
    mixer = cfg.stages[0].mixer
    if cfg.macro != "hierarchical" or mixer not in ("csa", "conv"):
        return None
    return 1.0 if mixer == "csa" else 0.0


def _columnar_lookup(cfg: ArchConfig) -> bool:
    return cfg.macro == "columnar" and cfg.stages[0].mixer == "lookup"


PARTS: tuple[Part, ...] = (
    Part(
        "cb", "cb_on", "CB or CBS on vs off", "accuracy", "greater",
        lambda c: float(_cb_on(c)), lambda c: c.replace(cb=CBConfig()),
        ("cb.kind", "cb.position", "cb.layers"),
    ),
    Part(
        "cb", "cb_mlp_end", "CB at the MLP end vs elsewhere (CB on)", "accuracy", "greater",
        lambda c: float(c.cb.position == "mlp_end") if _cb_on(c) else None,
        lambda c: _cb(c, position="mlp_end"), ("cb.position",),
    ),
    Part(
        "cb", "cbs_vs_cb", "CBS vs CB (CB on)", "accuracy", "not_less",
        lambda c: float(c.cb.kind == "cbs") if _cb_on(c) else None,
        lambda c: _cb(c, kind="cb"), ("cb.kind",),
    ),
    Part(
        "deep_narrow", "depth_at_equal_params",
        "depth x2 at equal params (columnar)", "accuracy per doubling of depth",
        "greater",
        lambda c: math.log2(c.stages[0].depth) if c.macro == "columnar" else None,
        lambda c: _stage0(c, depth=1, dim=c.stages[0].dim // c.stages[0].heads, heads=1),
        ("columnar.stage1.depth", "columnar.stage1.dim"), binary=False, equal_params=True,
    ),
    Part(
        "rasa", "rasa_accuracy", "recursion +1 (RASA stages): accuracy",
        "accuracy per recursion step", "greater", _rasa_mean, _no_recursion, ("recursion",),
        binary=False, macs=False,
    ),
    Part(
        "lookup", "lookup_accuracy", "grid one step smaller: accuracy",
        "accuracy per grid step smaller", "not_less",
        lambda c: -c.stages[0].lookup_grid / 2.0 if _columnar_lookup(c) else None,
        _lookup_key, ("lookup_grid",), binary=False, macs=False,
    ),
    Part(
        "csa", "csa_vs_conv", "CSA vs conv stage 1, equal params",
        "accuracy", "greater", _stage1_csa, lambda c: _stage0(c, mixer="conv"),
        ("hierarchical.stage1.mixer",), equal_params=True, macs=False,
    ),
)  # fmt: skip


def _key(cfg: ArchConfig) -> str:
    d = canonical(cfg)
    d["drop_path_rate"] = cfg.drop_path_rate  # a baseline trained otherwise is not matched
    return json.dumps(d, sort_keys=True)


def data_part(
    part: Part, designs: Designs, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """One part estimated from the trained designs: the estimate, its verdict and MACs."""
    f = designs.frame
    configs: list[ArchConfig] = list(f["config"])
    focal = [part.focal(c) for c in configs]
    x = np.array([math.nan if v is None else v for v in focal], dtype=float)
    keys = [_key(part.normalise(c)) if v is not None else "" for c, v in zip(configs, focal)]
    others = [c for c in designs.choices if not c.endswith(part.columns)]
    size = np.log2(f["params"].to_numpy(float))
    family = np.array([c.macro == "hierarchical" for c in configs], dtype=float)

    def close(i: int, j: int) -> bool:
        return abs(size[i] - size[j]) <= PARAMS_TOLERANCE

    common: dict[str, Any] = {
        "binary": part.binary,
        "others": f[others],
        "size": size,
        "family": family,
        "keep_size": part.equal_params,
        "pair_ok": close if part.equal_params else None,
        "level": level,
        "n_boot": n_boot,
        "seed": seed,
    }
    y, var = f["accuracy"].to_numpy(float), f["var"].to_numpy(float)
    est = estimate(y, var, x, keys, **common)
    out: dict[str, Any] = {
        **_head(part),
        **est.as_dict(),
        "verdict": verdict(est, part.rule, MARGIN),
    }
    if part.binary:
        out["n_with"], out["n_without"] = int(np.sum(x == 1)), int(np.sum(x == 0))
    if part.macs:
        zeros = np.zeros(len(f))
        out["macs"] = relative(
            estimate(np.log(f["macs"].to_numpy(float)), zeros, x, keys, **common)
        )
    return out


def _head(part: Part) -> dict[str, Any]:
    return {"part": part.id, "name": part.name, "unit": part.unit, "rule": part.rule}


def claim_verdict(verdicts: list[str]) -> str:
    """Supported when every part is, contradicted when any part is, else cannot tell."""
    if verdicts and all(v == "supported" for v in verdicts):
        return "supported"
    if "contradicted" in verdicts:
        return "contradicted"
    return "cannot tell"
