"""Parameter and MAC counting for candidates, before any training.

MACs follow fvcore's convention (one multiply-accumulate = one MAC) and are counted by tracing a
batch-1 forward pass with ``torch.jit`` through :class:`fvcore.nn.FlopCountAnalysis`, using the
handles of :mod:`archsearch.cost.handles`. An operator with neither a handle nor a place in
:data:`~archsearch.cost.ignored.IGNORED_OPS` is an error, never a silent under-count.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._logging import get_logger
from ..config import ArchConfig, load_config
from ..errors import CountError
from .handles import MAC_HANDLES
from .ignored import IGNORED_OPS

with warnings.catch_warnings():  # fvcore.nn scripts a loss at import: torch.jit deprecation noise
    warnings.simplefilter("ignore")
    from fvcore.nn import FlopCountAnalysis

__all__ = [
    "CostReport",
    "count",
    "count_params",
    "count_params_from_config",
    "resolve_target",
    "mac_analysis",
]

_log = get_logger("cost")

#: Key of :attr:`CostReport.by_module` for operators run by the model's own ``forward``.
ROOT = "(root)"

_CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class CostReport:
    """What a candidate costs at one input size.

    Attributes:
        params: all parameters, trainable or not (``sum(p.numel() for p in model.parameters())``).
        backbone_params: ``params`` minus those of ``model.get_classifier()`` (timm convention);
            equal to ``params`` for models without ``get_classifier``.
        macs: multiply-accumulates of one forward pass on one image.
        by_module: MACs per module, cut at ``by_module_depth`` name components (``"patch_embed"``,
            ``"stages.0"``, ``"head"``); ops run by a shallower module's own forward are filed
            under that module's name (:data:`ROOT` for the model itself). Values sum to ``macs``;
            modules with no MACs are left out.
        by_operator: MACs per operator (``"linear"``, ``"conv"``, ``"scaled_dot_product_attention"``
            ...).
        uncounted_ops: operators that were traced but not counted (only non-empty with
            ``allow_uncounted=True``).
        seconds: wall time the count took, model construction included.
        img_size: input side counted at.
        in_chans: input channels.
        num_classes: classifier outputs.
    """

    params: int
    backbone_params: int
    macs: int
    by_module: dict[str, int] = field(default_factory=dict)
    by_operator: dict[str, int] = field(default_factory=dict)
    uncounted_ops: list[str] = field(default_factory=list)
    seconds: float = 0.0
    img_size: int = 224
    in_chans: int = 3
    num_classes: int = 1000

    @property
    def gmacs(self) -> float:
        """MACs in units of 1e9."""
        return self.macs / 1e9

    @property
    def mparams(self) -> float:
        """Parameters in units of 1e6."""
        return self.params / 1e6

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python form (JSON-serialisable)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, then restore each one's own training flag."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in flags:
            m.training = training


def _first_param(model: nn.Module) -> torch.Tensor | None:
    """The first parameter (else buffer) of a model: where and in what dtype it computes."""
    for param in model.parameters():
        return param
    for buffer in model.buffers():
        return buffer
    return None


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise CountError(f"{name}: expected an integer >= {lo}, got {value!r}")


def _build(
    obj: Any, *, num_classes: int, in_chans: int, img_size: int | None, meta: bool = False
) -> nn.Module:
    """Turn a module, an :class:`ArchConfig` or a ``build(num_classes, in_chans)`` object into a
    model (on the meta device when ``meta``)."""
    if isinstance(obj, nn.Module):
        return obj
    if isinstance(obj, ArchConfig):
        from ..models import build_model  # lazy: the model zoo imports timm and the layers

        kwargs: dict[str, Any] = {"num_classes": num_classes, "in_chans": in_chans}
        if img_size is not None:
            kwargs["img_size"] = img_size
        if meta:
            kwargs["device"] = "meta"
        return build_model(obj, **kwargs)
    builder = getattr(obj, "build", None)
    if callable(builder):
        with torch.device("meta") if meta else nullcontext():
            model = builder(num_classes=num_classes, in_chans=in_chans)
        if not isinstance(model, nn.Module):
            raise CountError(
                f"build(): expected it to return an nn.Module, got {type(model).__name__}"
            )
        return model
    raise CountError(
        "model: expected an nn.Module, an ArchConfig or an object with "
        f"build(num_classes=..., in_chans=...), got {type(obj).__name__}"
    )


def count_params(model: nn.Module) -> tuple[int, int]:
    """``(params, backbone_params)`` of a model; works on the meta device.

    ``backbone_params`` excludes the parameters of ``model.get_classifier()`` (timm convention).
    """
    params = sum(p.numel() for p in model.parameters())
    get_classifier = getattr(model, "get_classifier", None)
    head = 0
    if callable(get_classifier):
        classifier = get_classifier()
        if isinstance(classifier, nn.Module):
            head = sum(p.numel() for p in classifier.parameters())
        elif isinstance(classifier, nn.Parameter):
            head = classifier.numel()
    return int(params), int(params - head)


def count_params_from_config(
    config: ArchConfig | Any, *, num_classes: int = 1000, in_chans: int = 3
) -> tuple[int, int]:
    """``(params, backbone_params)`` of the model a config describes, allocating no weights.

    The model is built on the meta device, so this is cheap enough to reject over-budget
    candidates before anything else happens.

    Args:
        config: an :class:`ArchConfig`, or an object with ``build(num_classes=..., in_chans=...)``
            (called under ``torch.device("meta")``).
        num_classes: classifier outputs.
        in_chans: input channels.
    """
    model = _build(config, num_classes=num_classes, in_chans=in_chans, img_size=None, meta=True)
    return count_params(model)


def mac_analysis(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> FlopCountAnalysis:
    """An fvcore analysis with archsearch's handles and ignore list, its own warnings off."""
    analysis = FlopCountAnalysis(model, inputs)
    analysis.set_op_handle(**MAC_HANDLES)
    analysis.set_op_handle(**dict.fromkeys(IGNORED_OPS))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    analysis.tracer_warnings("none")
    return analysis


def _own(cumulative: Mapping[str, float]) -> dict[str, float]:
    """Per module, the part of its cumulative count not inside any of its submodules.

    fvcore files an operator under the module that ran it and every ancestor by name, so a
    module's own share is its count minus its direct children's.
    """
    children: dict[str, float] = {}
    for name, value in cumulative.items():
        if name:
            parent = name.rpartition(".")[0]
            children[parent] = children.get(parent, 0.0) + value
    return {name: value - children.get(name, 0.0) for name, value in cumulative.items()}


def _owners(per_module: Mapping[str, float]) -> list[str]:
    """Modules that run an operator themselves, deepest first, from its per-module counts."""
    owners = [n for n, c in _own(per_module).items() if c > 0]
    return sorted(owners, key=lambda s: (-s.count("."), s))


def _unsupported(analysis: FlopCountAnalysis, names: list[str]) -> dict[str, list[str]]:
    """Operator -> modules that run it, for operators with neither a handle nor an ignore."""
    result: dict[str, list[str]] = {}
    for op in sorted(analysis.unsupported_ops("")):
        result[op] = _owners({n: float(analysis.unsupported_ops(n)[op]) for n in names})
    return result


def _by_module(cumulative: Mapping[str, float], depth: int) -> dict[str, int]:
    """Partition the MACs over the modules at most ``depth`` name components deep.

    A module exactly ``depth`` deep gets its cumulative count, a shallower one only what its own
    forward runs outside its submodules; so the values sum to the total.
    """
    own = _own(cumulative)
    out: dict[str, int] = {}
    for name, macs in cumulative.items():
        level = name.count(".") + 1 if name else 0
        if level <= depth:
            value = round(macs if level == depth else own[name])
            if value:
                out[name or ROOT] = value
    return dict(sorted(out.items(), key=lambda kv: _natural_key(kv[0])))


def _natural_key(name: str) -> list[tuple[int, Any]]:
    return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


# --------------------------------------------------------------------------- counting


def count(
    model_or_config: nn.Module | ArchConfig | Any,
    *,
    img_size: int = 224,
    in_chans: int = 3,
    num_classes: int = 1000,
    by_module_depth: int = 2,
    allow_uncounted: bool = False,
) -> CostReport:
    """Count the parameters and MACs of one forward pass on one ``img_size`` image.

    The model is traced in eval mode, batch 1, under ``torch.no_grad``, on a real tensor on the
    model's device (CPU for a fresh model), with one intra-op CPU thread (robust to busy cores);
    each submodule's training flag and the process's thread count are restored afterwards. The
    count does not depend on whether timm's fused attention is on.

    Args:
        model_or_config: an ``nn.Module``; an :class:`ArchConfig` (built with
            ``archsearch.models.build_model``); or any object with a
            ``build(num_classes=..., in_chans=...) -> nn.Module`` method.
        img_size: input side.
        in_chans: input channels.
        num_classes: classifier outputs when a model is built here (a given module's own
            ``num_classes`` attribute, if any, is reported instead).
        by_module_depth: how many name components :attr:`CostReport.by_module` keeps.
        allow_uncounted: list operators with no MAC handle in
            :attr:`CostReport.uncounted_ops` (and log a warning) instead of raising.

    Raises:
        CountError: an operator has no handle and is not in ``IGNORED_OPS``, the model cannot be
            traced, or an argument is invalid.
    """
    start = time.perf_counter()
    _check_int("img_size", img_size, 1)
    _check_int("in_chans", in_chans, 1)
    _check_int("num_classes", num_classes, 0)
    _check_int("by_module_depth", by_module_depth, 0)
    model = _build(model_or_config, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    reference = _first_param(model)
    device = reference.device if reference is not None else torch.device("cpu")
    dtype = reference.dtype if reference is not None and reference.is_floating_point() else None
    if device.type == "meta":
        raise CountError("model: expected weights on a real device (cpu/cuda), got meta")
    x = torch.randn(
        1,
        in_chans,
        img_size,
        img_size,
        generator=torch.Generator().manual_seed(0),
        dtype=dtype or torch.float32,
    ).to(device)

    fv_logger = logging.getLogger("fvcore")
    fv_level = fv_logger.level
    threads = torch.get_num_threads()
    with _eval_mode(model), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fv_logger.setLevel(logging.ERROR)
        # One intra-op thread: a batch-1 trace gains nothing from more, and with the cores busy
        # (other candidates training) multi-threaded kernels made counts 10-30x slower.
        torch.set_num_threads(1)
        try:
            analysis = mac_analysis(model, (x,))
            cumulative = {k: float(v) for k, v in analysis.by_module().items()}
            by_operator = {k: round(v) for k, v in analysis.by_operator().items() if v}
        except CountError:
            raise
        except Exception as exc:
            raise CountError(
                f"tracing {type(model).__name__} on a {tuple(x.shape)} input: expected a "
                f"traceable forward, got {_one_line(exc)}"
            ) from exc
        finally:
            fv_logger.setLevel(fv_level)
            torch.set_num_threads(threads)
        unsupported = _unsupported(analysis, list(cumulative))

    if unsupported and not allow_uncounted:
        op, owners = next(iter(unsupported.items()))
        where = f"module {owners[0]!r}" if owners and owners[0] else "the model's own forward"
        if len(owners) > 1:
            where += f" and {len(owners) - 1} more"
        others = [o for o in unsupported if o != op]
        also = f" (also unhandled: {', '.join(others)})" if others else ""
        raise CountError(
            f"no MAC handle for operator {op} (used by {where}); "
            f"add a handle or list it in IGNORED_OPS{also}"
        )
    if unsupported:
        _log.warning("MACs exclude operators with no handle: %s", ", ".join(unsupported))

    params, backbone = count_params(model)
    report = CostReport(
        params=params,
        backbone_params=backbone,
        macs=round(cumulative.get("", 0.0)),
        by_module=_by_module(cumulative, by_module_depth),
        by_operator=dict(sorted(by_operator.items(), key=lambda kv: -kv[1])),
        uncounted_ops=list(unsupported),
        seconds=time.perf_counter() - start,
        img_size=img_size,
        in_chans=in_chans,
        num_classes=int(getattr(model, "num_classes", num_classes)),
    )
    _log.debug(
        "counted %s: %.3fM params, %.3f GMACs in %.2fs",
        type(model).__name__,
        report.mparams,
        report.gmacs,
        report.seconds,
    )
    return report


# --------------------------------------------------------------------------- targets


def resolve_target(target: str, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    """Build the model a command-line TARGET names.

    Args:
        target: ``timm:<model name>`` (random weights), a path to a ``.json``/``.yaml``/``.yml``
            :class:`ArchConfig` file, or the name of an archsearch reference design.
        num_classes: classifier outputs.
        in_chans: input channels.
        img_size: input side (passed to the builder where the model takes one).

    Raises:
        CountError: the target names nothing known.
    """
    text = target.strip()
    if text.lower().startswith("timm:"):
        return _timm_model(
            text[5:].strip(), num_classes=num_classes, in_chans=in_chans, img_size=img_size
        )
    if text.lower().endswith(_CONFIG_SUFFIXES) or Path(text).is_file():
        from ..models import build_model

        if not Path(text).is_file():
            raise CountError(f"config file: expected an existing file, got {text!r}")
        config = load_config(text)
        return build_model(config, num_classes=num_classes, in_chans=in_chans, img_size=img_size)

    try:
        from ..models import create_reference, reference_names

        names = list(reference_names())
    except ImportError:  # pragma: no cover - the model zoo is part of the package
        names = []
    if text in names:
        return create_reference(text, num_classes=num_classes, in_chans=in_chans, img_size=img_size)
    shown = ", ".join(names[:2] + ["..."]) if len(names) > 2 else ", ".join(names) or "lvt, ..."
    raise CountError(
        f"unknown target {target!r}: expected a reference design ({shown}), "
        "a config file (.json/.yaml) or timm:<model name>"
    )


def _timm_model(name: str, *, num_classes: int, in_chans: int, img_size: int) -> nn.Module:
    import timm

    if not name or not timm.is_model(name):
        raise CountError(
            f"unknown timm model {name!r}: expected a name from timm.list_models(), "
            "e.g. timm.list_models('*deit*')"
        )
    kwargs: dict[str, Any] = {"pretrained": False, "num_classes": num_classes, "in_chans": in_chans}
    try:
        # ViT-style models size their position embedding for img_size; convnets take no img_size.
        return timm.create_model(name, img_size=img_size, **kwargs)
    except TypeError:
        return timm.create_model(name, **kwargs)
