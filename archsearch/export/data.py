"""The data and weights of an export: the run's proxy target, proxy-trained or retrained weights."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .._logging import get_logger
from ..errors import ArchsearchError, ExportError
from .common import ARCHITECTURE, Pick, ProxyInfo

log = get_logger("export")


def _proxy_target(settings: dict[str, Any]) -> dict[str, Any]:
    target = settings.get("resolved", {}).get("proxy_target")
    if not isinstance(target, dict) or not all(
        k in target for k in ("dataset", "img_size", "in_chans", "num_classes")
    ):
        raise ExportError(
            "run.yaml: expected resolved.proxy_target with dataset, img_size, in_chans and "
            f"num_classes, got {target!r}"
        )
    return target


def proxy_from_settings(settings: dict[str, Any]) -> ProxyInfo | None:
    """The proxy target, if run.yaml also records the normalisation statistics."""
    t = _proxy_target(settings)
    mean, std = t.get("mean"), t.get("std")
    if not (isinstance(mean, list) and isinstance(std, list)):
        return None
    names = t.get("class_names") or t.get("label_names")
    return ProxyInfo(
        dataset=str(t["dataset"]),
        img_size=int(t["img_size"]),
        in_chans=int(t["in_chans"]),
        num_classes=int(t["num_classes"]),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        label_names=[str(n) for n in names] if isinstance(names, list) else None,
    )


def load_proxy_data(settings: dict[str, Any]) -> Any:
    """Load the run's dataset exactly as the run did (same name, folder and split seed)."""
    from ..train.data import load_dataset

    opts = settings.get("options") or {}
    target = _proxy_target(settings)
    name = opts.get("dataset") or target["dataset"]
    try:
        data = load_dataset(
            name, data_dir=opts.get("data_dir"), split_seed=int(opts.get("seed", 0))
        )
    except ArchsearchError as e:
        raise ExportError(
            f"dataset {name!r}: expected the run's proxy data (for its normalisation statistics"
            f" or retraining) to load, got: {e}"
        ) from None
    want = (target.get("in_chans"), target.get("num_classes"), target.get("train_images"))
    have = (data.in_chans, data.num_classes, len(data))
    if any(w is not None and w != h for w, h in zip(want, have)):
        raise ExportError(
            f"dataset {name!r}: expected the data the run used (channels, classes, train images "
            f"= {want}), got {have}"
        )
    return data


def proxy_from_data(settings: dict[str, Any], data: Any) -> ProxyInfo:
    t = _proxy_target(settings)
    return ProxyInfo(
        dataset=str(t["dataset"]),
        img_size=int(t["img_size"]),
        in_chans=int(data.in_chans),
        num_classes=int(data.num_classes),
        mean=[float(v) for v in data.mean],
        std=[float(v) for v in data.std],
        label_names=list(data.class_names) if data.class_names else None,
    )


@contextmanager
def own_rng() -> Iterator[None]:
    """Leave the caller's CPU RNG as it was (model construction draws initial weights)."""
    with torch.random.fork_rng(devices=[]):
        yield


def model_args(p: Pick, proxy: ProxyInfo) -> dict[str, Any]:
    return {
        "arch": p.config.to_dict(),
        "img_size": proxy.img_size,
        "in_chans": proxy.in_chans,
        "num_classes": proxy.num_classes,
    }


def timm_model(model_args: dict[str, Any], proxy: ProxyInfo | None = None) -> nn.Module:
    """The architecture through timm's registry; with ``proxy``, its pretrained config describes
    the proxy input (so timm keeps the ``pool_size`` archsearch computes for that input)."""
    import timm

    from .. import models  # noqa: F401  (registers archsearch_net)

    overlay = None
    if proxy is not None:
        size = (proxy.in_chans, proxy.img_size, proxy.img_size)
        overlay = {"input_size": size, "mean": tuple(proxy.mean), "std": tuple(proxy.std)}
    with own_rng():
        model = timm.create_model(
            ARCHITECTURE, pretrained=False, pretrained_cfg_overlay=overlay, **model_args
        )
    return model.eval()


def weights_for(
    p: Pick,
    proxy: ProxyInfo,
    settings: dict[str, Any],
    data: Any,
    epochs: int | None,
    dev: torch.device | None,
) -> tuple[dict[str, torch.Tensor], float | None]:
    """The state dict to export and, when retrained, the retrained validation accuracy."""
    from ..models import build_model
    from ..train.weights import load_weights

    accuracy: float | None = None
    if epochs is None:
        assert p.weights is not None
        with own_rng():
            model = build_model(
                p.config,
                num_classes=proxy.num_classes,
                in_chans=proxy.in_chans,
                img_size=proxy.img_size,
            )
        try:
            load_weights(model, p.weights)
        except ArchsearchError as e:
            raise ExportError(f"trial {p.trial}: expected loadable weights, got {e}") from None
    else:
        accuracy, model = _retrain(p, settings, data, epochs, dev)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    return state, accuracy


def _retrain(
    p: Pick, settings: dict[str, Any], data: Any, epochs: int, dev: torch.device | None
) -> tuple[float, nn.Module]:
    """Train the architecture from scratch like the run did, for ``epochs`` epochs."""
    from ..models import build_model
    from ..train.candidate import trial_seed
    from ..train.proxy import ProxySchedule, train_proxy

    raw = settings.get("resolved", {}).get("schedule") or {}
    try:
        schedule = ProxySchedule(**raw)
        schedule = dataclasses.replace(schedule, epochs=epochs)
    except (TypeError, ArchsearchError) as e:
        raise ExportError(f"run.yaml: expected a valid resolved.schedule, got {e}") from None
    seed = trial_seed(int((settings.get("options") or {}).get("seed", 0)), p.archid)
    with own_rng():
        torch.manual_seed(seed)  # the run's per-architecture initialisation
        model = build_model(
            p.config,
            num_classes=data.num_classes,
            in_chans=data.in_chans,
            img_size=schedule.img_size or data.img_size,
        )
    assert dev is not None
    log.info("trial %d (%s): retraining for %d epochs on %s", p.trial, p.archid, epochs, dev)
    try:
        result = train_proxy(model, data, schedule, device=dev, seed=seed)
    except ArchsearchError as e:
        raise ExportError(f"trial {p.trial}: expected retraining to succeed, got {e}") from None
    return result.accuracy, model.cpu()
