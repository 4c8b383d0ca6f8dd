"""Model weights as safetensors files, written atomically."""

from __future__ import annotations

import errno
from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..rundir import atomic_path

__all__ = ["save_weights", "load_weights"]


def save_weights(
    model: nn.Module, path: str | Path, *, metadata: dict[str, str] | None = None
) -> Path:
    """Write the model's state dict to a ``.safetensors`` file (shared tensors stored once).

    The file is written next to ``path`` and renamed into place; parent folders are created.
    """
    from safetensors.torch import save_model

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        try:
            save_model(getattr(model, "_orig_mod", model), str(tmp), metadata=metadata)
        except Exception as e:  # safetensors reports a failed write (a full disk) as its own type
            if type(e).__name__ != "SafetensorError":
                raise
            raise OSError(errno.EIO, " ".join(str(e).split()), str(p)) from None
    return p


def load_weights(model: nn.Module, path: str | Path, *, strict: bool = True) -> nn.Module:
    """Load weights written by :func:`save_weights` into ``model`` (onto its device).

    Raises:
        ConfigError: the file is missing or its tensors do not fit the model.
    """
    from safetensors.torch import load_model

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"weights: expected an existing .safetensors file, got {str(p)!r}")
    target = getattr(model, "_orig_mod", model)
    first = next(iter(target.parameters()), None)
    dev = str(first.device) if first is not None else "cpu"
    try:
        load_model(target, str(p), strict=strict, device=dev)
    except Exception as e:  # safetensors raises RuntimeError or its own SafetensorError
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"{p}: expected weights that fit the model, got {msg}") from None
    return model
