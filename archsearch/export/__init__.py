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

from pathlib import Path

from ..errors import ArchsearchError, ExportError
from .common import ARCHITECTURE, CONFIG_NAME, WEIGHTS_NAME
from .data import load_proxy_data, proxy_from_data, proxy_from_settings, weights_for
from .folder import check_target, safe_name, write_folder
from .select import (
    check_request,
    pick_front,
    pick_trial,
    read_settings,
    read_table,
    require_weights,
)

__all__ = ["ARCHITECTURE", "CONFIG_NAME", "WEIGHTS_NAME", "export", "folder_name"]


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
        run_dir: the run directory (``run.yaml``, ``trials.csv``, ``weights/``).
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
    check_request(trial, top, knee, epochs)
    run = Path(run_dir)
    settings = read_settings(run)
    df = read_table(run)
    objectives = settings.get("resolved", {}).get("objectives") or ["accuracy"]
    if trial is not None:
        picks = [pick_trial(df, trial, run)]
    else:
        picks = pick_front(df, objectives, top if top is not None else 1, knee, run)
    if epochs is None:
        for p in picks:
            require_weights(p, run)
    out_dir = Path(out)
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"--out: expected a directory, got the file {str(out_dir)!r}")
    run_name = safe_name(run.resolve().name)
    targets = [out_dir / folder_name(run_name, p.trial, p.archid, epochs) for p in picks]
    for p, target in zip(picks, targets):
        check_target(target, p.archid)

    dev = None
    if epochs is not None:
        from ..train.device import select_device

        try:
            dev = select_device(device)
        except ArchsearchError as e:
            raise ExportError(str(e)) from None
    data = None
    proxy = proxy_from_settings(settings)
    if epochs is not None or proxy is None:
        data = load_proxy_data(settings)
        proxy = proxy_from_data(settings, data)

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for p, target in zip(picks, targets):
        state, retrained_acc = weights_for(p, proxy, settings, data, epochs, dev)
        written.append(write_folder(target, p, proxy, settings, run, state, epochs, retrained_acc))
    return written


def folder_name(run_name: str, trial: int, archid: str, epochs: int | None = None) -> str:
    """The (stable) name of an exported folder."""
    name = f"{run_name}-trial{trial}-{archid}"
    return name if epochs is None else f"{name}-e{epochs}"
