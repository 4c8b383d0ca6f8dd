"""Write one exported model folder: timm config plus safetensors, checked, then published."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._logging import get_logger
from ..errors import ExportError
from .common import ARCHITECTURE, CONFIG_NAME, README_NAME, Pick, ProxyInfo
from .data import model_args, own_rng, timm_model
from .select import one_line

log = get_logger("export")


def _timm_fields(model: nn.Module) -> dict[str, Any]:
    """The architecture's own ``first_conv``, ``classifier`` and ``pool_size`` (at the proxy
    input), set in the model's pretrained config by archsearch's timm entry point."""
    pc = getattr(model, "pretrained_cfg", None) or {}
    classifier = pc.get("classifier", "head")
    pool = pc.get("pool_size")
    return {
        "pool_size": list(pool) if pool is not None else None,
        "first_conv": pc.get("first_conv"),
        "classifier": list(classifier) if isinstance(classifier, (list, tuple)) else classifier,
    }


def _config_json(
    p: Pick,
    proxy: ProxyInfo,
    settings: dict[str, Any],
    run: Path,
    model: nn.Module,
    epochs: int | None,
    retrained_acc: float | None,
) -> dict[str, Any]:
    from .. import __version__

    args = model_args(p, proxy)
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
        **_timm_fields(model),
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
        "trained_with": row.get("trained_with"),
    }
    stage = p.config.stages[0]
    if stage.mixer == "lookup":  # the compressed grid it runs at; the others it was trained at
        meta["lookup_grid"] = stage.lookup_grid
        meta["lookup_grids"] = list(stage.lookup_multires or [stage.lookup_grid])
    cfg: dict[str, Any] = {
        "architecture": ARCHITECTURE,
        "num_classes": proxy.num_classes,
        "num_features": int(getattr(model, "num_features", 0)),
        "global_pool": str(getattr(model, "global_pool", "")) or None,
        "model_args": args,
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
        f"{gray}{_grid_note(meta)}\n"
        'The architecture alone: `timm.create_model("archsearch_net", **model_args)` with '
        "`model_args` from `config.json`.\n"
    )


def _grid_note(meta: dict[str, Any]) -> str:
    grids = meta.get("lookup_grids") or []
    if len(grids) < 2:
        return ""
    g = meta["lookup_grid"]
    return (
        f"\nLookupViT trained at compressed grids {', '.join(f'{x}x{x}' for x in grids)}; it runs "
        f"at {g}x{g} (the grid of these figures). `model.set_compressed_grid(n)` runs the same "
        "weights at another grid of the set (that grid's own accuracy and MACs are in the "
        "run's trials.csv).\n"
    )


def write_folder(
    target: Path,
    p: Pick,
    proxy: ProxyInfo,
    settings: dict[str, Any],
    run: Path,
    state: dict[str, torch.Tensor],
    epochs: int | None,
    retrained_acc: float | None,
) -> Path:
    """Stage the folder next to ``target`` (timm's own ``save_for_hf`` layout: config.json plus
    model.safetensors), check it loads through timm, then publish it."""
    import timm.models

    model = timm_model(model_args(p, proxy), proxy)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        msg = one_line(e, 300)
        raise ExportError(
            f"trial {p.trial}: expected weights matching {ARCHITECTURE}, got {msg}"
        ) from None
    cfg = _config_json(p, proxy, settings, run, model, epochs, retrained_acc)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        overrides = {k: v for k, v in cfg.items() if k not in ("architecture", "model_args")}
        pc = cfg["pretrained_cfg"]
        data_cfg = {k: pc[k] for k in ("input_size", "mean", "std", "crop_pct", "interpolation")}
        timm.models.save_for_hf(
            model, str(tmp), model_config=overrides, model_args=cfg["model_args"],
            safe_serialization=True, data_config=data_cfg,
        )  # fmt: skip
        cfg = json.loads((tmp / CONFIG_NAME).read_text())
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


def _verify(folder: Path, reference: nn.Module, proxy: ProxyInfo, trial: int) -> None:
    """Load ``folder`` as timm would and require outputs identical to ``reference``'s."""
    import timm

    with own_rng():
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


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "run"


def _existing_archid(target: Path) -> str | None:
    try:
        cfg = json.loads((target / CONFIG_NAME).read_text())
        archid = cfg["archsearch"]["archid"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return archid if isinstance(archid, str) else None


def check_target(target: Path, archid: str) -> None:
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
    check_target(target, archid)  # again: the folder may have changed while we trained
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
