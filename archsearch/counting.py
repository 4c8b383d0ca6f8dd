"""What ``archsearch models`` and ``archsearch count`` count, beyond :mod:`archsearch.cost`: the
reference designs against their published figures, and exported model folders."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .errors import ArchsearchError, ConfigError, CountError
from .export.common import ARCHITECTURE, CONFIG_NAME
from .progress import steps

__all__ = ["DEFAULT_TARGET", "Exported", "count_target", "find_export", "reference_records"]

#: The papers' deployment target, counted when neither the options nor an export name one.
DEFAULT_TARGET = {"img_size": 224, "in_chans": 3, "num_classes": 1000}


# ---------------------------------------------------------------------------- models
@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """Torch on one intra-op thread: building a model is mostly weight initialisation, which on
    busy cores ran 10x slower multi-threaded (as counting did, see ``cost.count``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _reference_record(name: str) -> dict[str, Any]:
    """One reference design, built and counted at 224x224 with 1000 classes."""
    from .cost import count
    from .models import PUBLISHED, create_reference

    with _one_thread():
        rep = count(create_reference(name, num_classes=1000), img_size=224)
    pub = PUBLISHED[name]
    return {
        "name": name,
        "params": rep.params,
        "backbone_params": rep.backbone_params,
        "macs": rep.macs,
        "published_params": None if pub.params is None else round(pub.params * 1e6),
        "published_macs": None if pub.macs is None else round(pub.macs * 1e9),
        "published_scope": pub.scope,
        "source": pub.source,
    }


def reference_records(stream: TextIO) -> list[dict[str, Any]]:
    """Every reference design counted, with its published figures; a bar on ``stream`` while
    counting when it is a terminal."""
    from .models import reference_names

    names = steps(reference_names(), lambda n: f"counting {n}", stream)
    return [_reference_record(name) for name in names]


# ---------------------------------------------------------------------------- exports
@dataclass
class Exported:
    """An exported model folder (``archsearch export``) named on the command line."""

    config_path: Path
    model_args: dict[str, Any]
    meta: dict[str, Any]

    def trained_at(self) -> str:
        """``1x32x32, 10 classes``: what the weights were trained on."""
        a = self.model_args
        side = a.get("img_size")
        return f"{a.get('in_chans')}x{side}x{side}, {a.get('num_classes')} classes"

    def build(self, *, img_size: int, in_chans: int, num_classes: int) -> Any:
        """The architecture through timm, as ``local-dir:`` loads it, without its weights."""
        import timm

        from . import models  # noqa: F401  (registers archsearch_net in timm)

        args = {**self.model_args, "img_size": img_size, "in_chans": in_chans}
        args["num_classes"] = num_classes
        try:
            with _one_thread():
                return timm.create_model(ARCHITECTURE, pretrained=False, **args)
        except ArchsearchError:
            raise
        except (TypeError, ValueError, RuntimeError) as e:
            msg = " ".join(str(e).split()) or type(e).__name__
            raise CountError(f"{str(self.config_path)!r}: cannot build its model: {msg}") from None


def count_target(given: dict[str, int | None], exported: Exported | None) -> dict[str, int]:
    """The input and classes to count at: each option given, else an export's run cost target
    (where its budget was counted, so the figures match the run's ``trials.csv``), else the
    papers' 224x224 RGB with 1000 classes.

    Raises:
        CountError: a size below 1 (or fewer than 0 classes).
    """
    run = (exported.meta.get("cost_target") if exported is not None else None) or {}
    size: dict[str, int] = {}
    for key, value in given.items():
        size[key] = int(value if value is not None else run.get(key, DEFAULT_TARGET[key]))
        if size[key] < (0 if key == "num_classes" else 1):
            flag = "--" + key.replace("_", "-")
            raise CountError(f"{flag}: expected a positive integer, got {size[key]}")
    return size


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as e:  # ValueError: JSON
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CountError(f"{str(path)!r}: expected readable JSON, got {msg}") from None


def _exported(path: Path, data: Any) -> Exported:
    """The export a parsed ``config.json`` describes."""
    if data.get("architecture") != ARCHITECTURE:
        name = data.get("architecture")
        raise CountError(
            f"{str(path)!r}: expected an archsearch export (architecture {ARCHITECTURE!r}), got "
            f"{name!r}" + (f"; count a timm model as timm:{name}" if isinstance(name, str) else "")
        )
    args = data.get("model_args")
    if not isinstance(args, dict) or not isinstance(args.get("arch"), dict):
        raise CountError(f"{str(path)!r}: expected model_args with an arch config, got {args!r}")
    from .config import ArchConfig

    try:
        ArchConfig.from_dict(args["arch"])
    except ConfigError as e:
        raise CountError(f"{str(path)!r}: model_args.arch: {e}") from None
    meta = data.get("archsearch")
    return Exported(path, args, meta if isinstance(meta, dict) else {})


def _folder_config(folder: Path) -> Path:
    """The ``config.json`` of an exported folder, or why the folder is not one."""
    path = folder / CONFIG_NAME
    if path.is_file():
        return path
    if (folder / "run.yaml").is_file():
        raise CountError(
            f"{str(folder)!r} is a run folder: expected an exported model folder; export a "
            f"design first (archsearch export {folder} --knee --out DIR) and count DIR/<name>"
        )
    raise CountError(
        f"{str(folder)!r}: expected an exported model folder with a {CONFIG_NAME}, got a "
        "folder without one"
    )


def find_export(target: str) -> Exported | None:
    """The exported model a count TARGET names (its folder, or the folder's ``config.json``);
    None when TARGET is something else (a reference design, timm model or config file).

    Raises:
        CountError: a folder that is no exported model, or an export's unreadable config.
    """
    path = Path(target)
    if not path.exists() and "/" in target and not target.lower().startswith("timm:"):
        raise CountError(
            f"{target!r}: no such file or folder; expected an exported model folder, its "
            "config.json, a config file (.json/.yaml), a reference design or timm:<model name>"
        )
    folder = path.is_dir()
    if folder:
        path = _folder_config(path)
    elif not (path.is_file() and path.suffix.lower() == ".json"):
        return None
    try:
        data = _read_json(path)
    except CountError:
        if folder:
            raise
        return None  # cost.resolve_target says what is wrong with a config file
    if isinstance(data, dict) and "architecture" in data:
        return _exported(path, data)
    if folder:
        raise CountError(
            f"{str(path)!r}: expected the config.json of an exported model (with "
            f"architecture {ARCHITECTURE!r}), got another JSON document"
        )
    return None  # an architecture config file: cost.resolve_target reads it
