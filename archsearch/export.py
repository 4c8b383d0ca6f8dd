"""``archsearch export``: turn searched architectures into timm-loadable model folders.

Each exported architecture becomes ``OUT/<run>-trial<N>-<archid>/`` (``-e<E>`` appended when
retrained for ``E`` epochs) holding:

* ``config.json``: timm's hub format (``architecture``, ``num_classes``, ``model_args``,
  ``pretrained_cfg``) plus an ``archsearch`` section with the trial's metadata,
* ``model.safetensors``: the full state dict (the proxy-trained weights kept in the run's
  ``weights/``, or weights retrained from scratch with the run's proxy schedule),
* ``README.md``: how to load it.

After ``import archsearch`` (which registers ``archsearch_net`` in timm),
``timm.create_model("local-dir:FOLDER", pretrained=True)`` rebuilds the model with its weights,
and ``timm.create_model("archsearch_net", **config["model_args"])`` the same architecture
without them. The weights were trained on the run's *proxy* dataset, so ``num_classes``,
``in_chans``, the input size and the normalisation (``mean``/``std``: per-channel statistics of
the proxy training split) are the proxy dataset's, not the cost target's.

Folders are written to a temporary folder next to the target and renamed into place when
complete, and every folder is loaded back through timm and checked before it is published.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn

from ._logging import get_logger
from .config import ArchConfig
from .errors import ArchsearchError, ExportError

__all__ = ["ARCHITECTURE", "CONFIG_NAME", "WEIGHTS_NAME", "export", "folder_name"]

log = get_logger("export")

#: timm registry name every export is built with.
ARCHITECTURE = "archsearch_net"
#: File names timm's ``local-dir:`` loader looks for.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
README_NAME = "README.md"


@dataclass
class _Pick:
    """One trial chosen for export."""

    trial: int
    archid: str
    config: ArchConfig
    row: dict[str, Any]
    weights: Path | None  # proxy-trained weights, when they still exist


@dataclass
class _ProxyInfo:
    """What the weights were trained on (from run.yaml, completed by loading the dataset)."""

    dataset: str
    img_size: int
    in_chans: int
    num_classes: int
    mean: list[float]
    std: list[float]
    label_names: list[str] | None


# --------------------------------------------------------------------------- public API
def export(
    run_dir: str | Path,
    *,
    trial: int | None = None,
    top: int | None = None,
    knee: bool = False,
    out: str | Path,
    epochs: int | None = None,
    device: str = "auto",
) -> list[Path]:
    """Export architectures of a run as timm model folders.

    Exactly one of ``trial``, ``top`` and ``knee`` selects what to export. Architectures are
    deduplicated by archid (a reused trial shares its original's weights).

    Args:
        run_dir: the run directory (``run.yaml``, ``study.journal``, ``weights/``).
        trial: export this trial number.
        top: export the ``top`` most accurate distinct architectures on the Pareto front.
        knee: export the knee of the Pareto front.
        out: parent directory of the exported folders (created if missing).
        epochs: retrain each architecture from scratch for this many epochs with the run's proxy
            schedule, data and seed instead of exporting its proxy-trained weights.
        device: training device for ``epochs`` (``auto``, ``cpu``, ``cuda[:N]``, ``mps``).

    Returns:
        The exported folders, in selection order (most accurate first for ``top``).

    Raises:
        ExportError: the request is invalid, the trial is missing, unfinished or infeasible,
            its weights are gone (retrain with ``epochs``), or a target folder holds something
            else.
    """
    _check_request(trial, top, knee, epochs)
    run = Path(run_dir)
    settings = _read_settings(run)
    df = _trials(run)
    objectives = settings.get("resolved", {}).get("objectives") or ["accuracy"]
    if trial is not None:
        picks = [_pick_trial(df, trial, run)]
    else:
        picks = _pick_front(df, objectives, top if top is not None else 1, knee, run)
    if epochs is None:
        for p in picks:
            _require_weights(p, run)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out: expected a directory, got the file {str(out_dir)!r}")
    run_name = _safe_name(run.resolve().name)
    targets = [out_dir / folder_name(run_name, p.trial, p.archid, epochs) for p in picks]
    for p, target in zip(picks, targets):
        _check_target(target, p.archid)

    dev = None
    if epochs is not None:
        from .train.device import select_device

        try:
            dev = select_device(device)
        except ArchsearchError as e:
            raise ExportError(str(e)) from None
    data = None
    proxy = _proxy_from_settings(settings)
    if epochs is not None or proxy is None:
        data = _load_proxy_data(settings)
        proxy = _proxy_from_data(settings, data)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p, target in zip(picks, targets):
        state, retrained_acc = _weights_for(p, proxy, settings, data, epochs, dev)
        written.append(_write_folder(target, p, proxy, settings, run, state, epochs, retrained_acc))
    return written


def folder_name(run_name: str, trial: int, archid: str, epochs: int | None = None) -> str:
    """The (stable) name of an exported folder."""
    name = f"{run_name}-trial{trial}-{archid}"
    return name if epochs is None else f"{name}-e{epochs}"


# --------------------------------------------------------------------------- selection
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_request(trial: Any, top: Any, knee: Any, epochs: Any) -> None:
    given = [n for n, v in (("--trial", trial), ("--top", top)) if v is not None]
    if knee:
        given.append("--knee")
    if len(given) != 1:
        got = ", ".join(given) if given else "none"
        raise ExportError(f"export: expected exactly one of --trial, --top, --knee, got {got}")
    if trial is not None and not _is_int(trial):
        raise ExportError(f"--trial: expected a trial number, got {trial!r}")
    if top is not None and (not _is_int(top) or top < 1):
        raise ExportError(f"--top: expected an integer >= 1, got {top!r}")
    if epochs is not None and (not _is_int(epochs) or epochs < 1):
        raise ExportError(f"--epochs: expected an integer >= 1, got {epochs!r}")


def _read_settings(run: Path) -> dict[str, Any]:
    path = run / "run.yaml"
    if not path.is_file():
        raise ExportError(f"run directory {str(run)!r}: expected run.yaml in it, found none")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        msg = " ".join(str(e).split())
        raise ExportError(f"{path}: expected readable YAML, got {msg}") from None
    if not isinstance(data, dict) or not isinstance(data.get("resolved"), dict):
        raise ExportError(f"{path}: expected an archsearch run.yaml, got no 'resolved' section")
    return data


def _trials(run: Path) -> pd.DataFrame:
    from .search.results import trials_frame
    from .search.study import JOURNAL, load_study, trial_rows

    if not (run / JOURNAL).is_file():
        raise ExportError(f"run directory {str(run)!r}: expected {JOURNAL} in it, found none")
    rows = trial_rows(load_study(run))
    df = trials_frame(rows, run_dir=run)
    df["weights_recorded"] = [r.get("weights") for r in rows]  # before the existence filter
    return df


def _plain(value: Any) -> Any:
    """A table cell as a JSON-friendly Python value (NaN/NA -> None)."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _one_line(text: Any, limit: int = 160) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _make_pick(row: pd.Series, run: Path) -> _Pick:
    n = int(row["trial"])
    archid = str(row["archid"])
    text = row.get("config")
    if not isinstance(text, str):
        raise ExportError(f"trial {n}: expected a stored architecture config, found none")
    try:
        config = ArchConfig.from_json(text)
    except ArchsearchError as e:
        raise ExportError(f"trial {n}: expected a valid stored config, got {e}") from None
    if config.archid != archid:
        raise ExportError(
            f"trial {n}: expected its stored config to have archid {archid}, got "
            f"{config.archid} (the config format changed since the run)"
        )
    w = row.get("weights")
    weights = run / w if isinstance(w, str) else None
    plain = {k: _plain(v) for k, v in row.items() if not isinstance(v, (list, dict))}
    return _Pick(n, archid, config, plain, weights)


def _pick_trial(df: pd.DataFrame, trial: int, run: Path) -> _Pick:
    hits = df[df["trial"] == trial]
    if hits.empty:
        last = int(df["trial"].max()) if len(df) else -1
        have = f"trials 0..{last}" if last >= 0 else "no trials"
        raise ExportError(
            f"--trial: expected a trial of the study in {str(run)!r} ({have}), got {trial}"
        )
    row = hits.iloc[0]
    state = str(row["state"])
    if state != "COMPLETE":
        why = {
            "RUNNING": "it is still being trained",
            "WAITING": "it has not started",
        }.get(state, _one_line(row.get("error")) or "no error recorded")
        raise ExportError(f"trial {trial}: expected a COMPLETE trial, got {state} ({why})")
    if not bool(row["feasible"]):
        why = _one_line(row.get("error")) or "over budget"
        raise ExportError(
            f"trial {trial}: expected a feasible trial (within the run's budget), "
            f"got an infeasible one ({why})"
        )
    return _make_pick(row, run)


def _pick_front(
    df: pd.DataFrame, objectives: list[str], top: int, knee: bool, run: Path
) -> list[_Pick]:
    from .pareto import pareto_table

    table = pareto_table(df, objectives, feasible_col="feasible") if len(df) else df
    front = table[table["pareto_rank"] == 0] if len(df) else df
    if front.empty:
        raise ExportError(
            f"run {str(run)!r}: expected a feasible COMPLETE trial on the Pareto front, found none"
        )
    if knee:
        return [_make_pick(front[front["knee"]].iloc[0], run)]
    acc = pd.to_numeric(front["proxy_accuracy"], errors="coerce")
    ordered = front.assign(_acc=acc).sort_values(
        ["_acc", "trial"], ascending=[False, True], kind="stable"
    )
    picks: list[_Pick] = []
    seen: set[str] = set()
    for _, row in ordered.iterrows():
        if row["archid"] in seen:
            continue
        seen.add(str(row["archid"]))
        picks.append(_make_pick(row, run))
        if len(picks) == top:
            break
    if len(picks) < top:
        log.info("--top %d: the front holds %d distinct architectures", top, len(picks))
    return picks


def _require_weights(p: _Pick, run: Path) -> None:
    if p.weights is not None and p.weights.is_file():
        return
    recorded = p.row.get("weights_recorded")
    if recorded:
        why = (
            f"{recorded} was deleted when the trial left the Pareto front; "
            "only front members keep weights"
        )
    else:
        why = "the run saved none for it"
    raise ExportError(
        f"trial {p.trial}: expected proxy-trained weights in {str(run)!r}, found none ({why}); "
        "pass --epochs E to retrain it from scratch"
    )


# --------------------------------------------------------------------------- proxy data
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


def _proxy_from_settings(settings: dict[str, Any]) -> _ProxyInfo | None:
    """The proxy target, if run.yaml also records the normalisation statistics."""
    t = _proxy_target(settings)
    mean, std = t.get("mean"), t.get("std")
    if not (isinstance(mean, list) and isinstance(std, list)):
        return None
    names = t.get("class_names") or t.get("label_names")
    return _ProxyInfo(
        dataset=str(t["dataset"]),
        img_size=int(t["img_size"]),
        in_chans=int(t["in_chans"]),
        num_classes=int(t["num_classes"]),
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        label_names=[str(n) for n in names] if isinstance(names, list) else None,
    )


def _load_proxy_data(settings: dict[str, Any]) -> Any:
    """Load the run's dataset exactly as the run did (same name, folder and split seed)."""
    from .train.data import load_dataset

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


def _proxy_from_data(settings: dict[str, Any], data: Any) -> _ProxyInfo:
    t = _proxy_target(settings)
    return _ProxyInfo(
        dataset=str(t["dataset"]),
        img_size=int(t["img_size"]),
        in_chans=int(data.in_chans),
        num_classes=int(data.num_classes),
        mean=[float(v) for v in data.mean],
        std=[float(v) for v in data.std],
        label_names=list(data.class_names) if data.class_names else None,
    )


# --------------------------------------------------------------------------- weights
@contextmanager
def _own_rng() -> Iterator[None]:
    """Leave the caller's CPU RNG as it was (model construction draws initial weights)."""
    with torch.random.fork_rng(devices=[]):
        yield


def _model_args(p: _Pick, proxy: _ProxyInfo) -> dict[str, Any]:
    return {
        "arch": p.config.to_dict(),
        "img_size": proxy.img_size,
        "in_chans": proxy.in_chans,
        "num_classes": proxy.num_classes,
    }


def _timm_model(model_args: dict[str, Any]) -> nn.Module:
    import timm

    from . import models  # noqa: F401  (registers archsearch_net)

    with _own_rng():
        model = timm.create_model(ARCHITECTURE, pretrained=False, **model_args)
    return model.eval()


def _weights_for(
    p: _Pick,
    proxy: _ProxyInfo,
    settings: dict[str, Any],
    data: Any,
    epochs: int | None,
    dev: torch.device | None,
) -> tuple[dict[str, torch.Tensor], float | None]:
    """The state dict to export and, when retrained, the retrained validation accuracy."""
    from .models import build_model
    from .train.proxy import load_weights

    accuracy: float | None = None
    if epochs is None:
        assert p.weights is not None
        with _own_rng():
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
    p: _Pick, settings: dict[str, Any], data: Any, epochs: int, dev: torch.device | None
) -> tuple[float, nn.Module]:
    """Train the architecture from scratch like the run did, for ``epochs`` epochs."""
    from .models import build_model
    from .search.evaluate import trial_seed
    from .train.proxy import ProxySchedule, train_proxy

    raw = settings.get("resolved", {}).get("schedule") or {}
    try:
        schedule = ProxySchedule(**raw)
        schedule = dataclasses.replace(schedule, epochs=epochs)
    except (TypeError, ArchsearchError) as e:
        raise ExportError(f"run.yaml: expected a valid resolved.schedule, got {e}") from None
    seed = trial_seed(int((settings.get("options") or {}).get("seed", 0)), p.archid)
    with _own_rng():
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


# --------------------------------------------------------------------------- folder content
def _first_conv(model: nn.Module, proxy: _ProxyInfo) -> str | None:
    """Name of the convolution that reads the image (for timm's in_chans adaptation), if any."""
    order: list[tuple[str, nn.Module]] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, args, name=name: order.append((name, mod)))
        for name, m in model.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    try:
        x = torch.zeros(1, proxy.in_chans, proxy.img_size, proxy.img_size)
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        return None
    name, mod = order[0]
    if isinstance(mod, nn.Conv2d) and mod.in_channels == proxy.in_chans and mod.groups == 1:
        return name
    return None


def _classifier(model: nn.Module) -> str | list[str]:
    """Name(s) of the Linear layer(s) timm drops when loading with another num_classes."""
    get = getattr(model, "get_classifier", None)
    head = get() if callable(get) else None
    names = {id(m): n for n, m in model.named_modules()}
    prefix = names.get(id(head), "head") if head is not None else "head"
    found = [
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and (n == prefix or n.startswith(prefix + "."))
    ]
    return found[0] if len(found) == 1 else (found or prefix)


def _config_json(
    p: _Pick,
    proxy: _ProxyInfo,
    settings: dict[str, Any],
    run: Path,
    model: nn.Module,
    epochs: int | None,
    retrained_acc: float | None,
) -> dict[str, Any]:
    from . import __version__

    model_args = _model_args(p, proxy)
    row = p.row
    opts = settings.get("options") or {}
    resolved = settings.get("resolved") or {}
    pretrained_cfg: dict[str, Any] = {
        "custom_load": False,
        "input_size": [proxy.in_chans, proxy.img_size, proxy.img_size],
        "fixed_input_size": False,
        # the proxy pipeline resizes whole images bilinearly (no crop) before normalising
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": proxy.mean,
        "std": proxy.std,
        "num_classes": proxy.num_classes,
        "pool_size": None,
        "first_conv": _first_conv(model, proxy),
        "classifier": _classifier(model),
        "description": (
            f"archsearch architecture {p.archid} (trial {p.trial}), "
            + (f"retrained {epochs} epochs" if epochs else "proxy-trained")
            + f" on {proxy.dataset} at {proxy.img_size}x{proxy.img_size}"
        ),
    }
    meta: dict[str, Any] = {
        "archid": p.archid,
        "trial": p.trial,
        "baseline": row.get("baseline") or None,
        "reused_from": row.get("reused_from"),
        "proxy_accuracy": row.get("proxy_accuracy"),
        "params": row.get("params"),
        "total_params": row.get("total_params"),
        "macs": row.get("macs"),
        "latency_ms": row.get("latency_ms"),
        "cost_target": resolved.get("cost_target"),
        "budget": resolved.get("budget"),
        "objectives": resolved.get("objectives"),
        "run_dir": str(run.resolve()),
        "dataset": proxy.dataset,
        "data_dir": opts.get("data_dir"),
        "seed": opts.get("seed"),
        "proxy_epochs": row.get("epochs"),
        "epochs_retrained": epochs,
        "retrained_accuracy": retrained_acc,
        "weights": None if epochs else row.get("weights"),
        "archsearch_version": __version__,
    }
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURE,
        "num_classes": proxy.num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": str(getattr(model, "global_pool", "")) or None,
        "model_args": model_args,
        "pretrained_cfg": pretrained_cfg,
    }
    if proxy.label_names:
        cfg["label_names"] = proxy.label_names
    cfg["archsearch"] = meta
    return cfg


def _readme(target: Path, cfg: dict[str, Any]) -> str:
    meta = cfg["archsearch"]
    c, h, w = cfg["pretrained_cfg"]["input_size"]
    how = (
        f"retrained from scratch for {meta['epochs_retrained']} epochs"
        if meta["epochs_retrained"]
        else "proxy-trained during the search"
    )
    acc = meta["retrained_accuracy"] if meta["epochs_retrained"] else meta["proxy_accuracy"]
    acc_text = f"{acc:.4f}" if isinstance(acc, float) else "n/a"
    gray = (
        '\nImages have 1 channel: open them with `PIL.Image.open(path).convert("L")`.\n'
        if c == 1
        else ""
    )
    return (
        f"# {target.name}\n\n"
        f"archsearch architecture `{meta['archid']}` (trial {meta['trial']} of "
        f"`{meta['run_dir']}`), {how} on `{meta['dataset']}` at {h}x{w} "
        f"({c} channel(s), {cfg['num_classes']} classes); validation top-1 {acc_text}.\n\n"
        "```python\n"
        "import archsearch, timm  # importing archsearch registers archsearch_net in timm\n"
        f'model = timm.create_model("local-dir:{target.resolve()}", pretrained=True).eval()\n'
        "transform = timm.data.create_transform(**timm.data.resolve_data_config({}, model=model))\n"
        "```\n"
        f"{gray}\n"
        'The architecture alone: `timm.create_model("archsearch_net", **model_args)` with '
        "`model_args` from `config.json`.\n"
    )


def _write_folder(
    target: Path,
    p: _Pick,
    proxy: _ProxyInfo,
    settings: dict[str, Any],
    run: Path,
    state: dict[str, torch.Tensor],
    epochs: int | None,
    retrained_acc: float | None,
) -> Path:
    """Stage the folder next to ``target``, check it loads through timm, then publish it."""
    from safetensors.torch import save_file

    model = _timm_model(_model_args(p, proxy))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = _one_line(e, 300)
        raise ExportError(
            f"trial {p.trial}: expected weights matching {ARCHITECTURE}, got {msg}"
        ) from None
    cfg = _config_json(p, proxy, settings, run, model, epochs, retrained_acc)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")
        save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        (tmp / README_NAME).write_text(_readme(target, cfg))
        _verify(tmp, model, proxy, p.trial)
        _set_modes(tmp)
        changed = _publish(tmp, target, p.archid)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if changed:
        log.info("trial %d (%s) exported to %s", p.trial, p.archid, target)
    else:
        log.info("trial %d (%s): %s already holds this export", p.trial, p.archid, target)
    return target


def _verify(folder: Path, reference: nn.Module, proxy: _ProxyInfo, trial: int) -> None:
    """Load ``folder`` as timm would and require outputs identical to ``reference``'s."""
    import timm

    with _own_rng():
        loaded = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()
        x = torch.randn(
            2,
            proxy.in_chans,
            proxy.img_size,
            proxy.img_size,
            generator=torch.Generator().manual_seed(0),
        )
    with torch.no_grad():
        same = torch.equal(loaded(x), reference(x))
    if not same:
        raise ExportError(
            f"trial {trial}: expected the exported folder to reproduce the model through "
            "timm's local-dir loader, got different outputs"
        )


# --------------------------------------------------------------------------- target folders
def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def _existing_archid(target: Path) -> str | None:
    try:
        cfg = json.loads((target / CONFIG_NAME).read_text())
        archid = cfg["archsearch"]["archid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return archid if isinstance(archid, str) else None


def _check_target(target: Path, archid: str) -> None:
    """Refuse a target that exists, is non-empty and is not an export of the same archid.

    Identical content always carries the same archid (config.json records it), so an earlier
    export of the same architecture is the only non-empty folder that may be replaced.
    """
    if not target.exists():
        return
    if not target.is_dir():
        raise ExportError(f"{target}: expected a folder to export into, got an existing file")
    if not any(target.iterdir()):
        return
    other = _existing_archid(target)
    if other != archid:
        found = f"an export of {other}" if other else "other files"
        raise ExportError(
            f"{target}: expected an empty folder or an earlier export of {archid}, found {found};"
            " choose another --out"
        )


def _files(folder: Path) -> dict[str, bytes]:
    return {
        str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()
    }


def _set_modes(folder: Path) -> None:
    """Give the staged folder ordinary permissions (mkdtemp and safetensors create 0700/0600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for f in folder.iterdir():
        f.chmod(0o666 & ~umask)


def _publish(tmp: Path, target: Path, archid: str) -> bool:
    """Move the staged folder into place; False if an identical export was already there."""
    _check_target(target, archid)  # again: the folder may have changed while we trained
    if target.is_dir() and any(target.iterdir()):
        if _files(target) == _files(tmp):
            shutil.rmtree(tmp)
            return False
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.rename(target, old)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return True
    if target.is_dir():
        target.rmdir()
    os.rename(tmp, target)
    return True
