"""Batches of the proxy trainer, made on the device: per-epoch permutations, resizing, random
crop and flip on whole batches, normalisation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F

from .device import to_device

__all__ = ["epoch_batches", "resize_u8", "affine", "normalise", "draw_augment", "crop_flip"]


def epoch_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    affine: tuple[torch.Tensor, torch.Tensor],
    bs: int,
    pad: int,
    s: Any,  # the ProxySchedule (augment, hflip)
    gen: torch.Generator,
    channels_last: bool,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of normalised, augmented ``(images, labels)`` batches; the last partial
    batch is dropped. Randomness comes from ``gen`` on the CPU, drawn once per epoch."""
    n, dev = int(x.shape[0]), x.device
    perm = to_device(torch.randperm(n, generator=gen), dev)
    offsets, flips = draw_augment(n, pad, s.augment, s.augment and s.hflip, gen, dev)
    for i in range(n // bs):
        sl = slice(i * bs, (i + 1) * bs)
        idx = perm[sl]
        xb = x[idx]
        if offsets is not None:
            xb = crop_flip(xb, offsets[sl], None if flips is None else flips[sl], pad)
        yield normalise(xb, *affine, channels_last), y[idx]


def resize_u8(x: torch.Tensor, size: int, chunk: int = 2048) -> torch.Tensor:
    """Resize uint8 ``N x C x H x W`` images to ``size`` (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8, device=x.device)
    shrink = size < max(x.shape[-2:])
    for i in range(0, x.shape[0], chunk):
        xf = F.interpolate(
            x[i : i + chunk].float(), size=(size, size), mode="bilinear", antialias=shrink
        )
        out[i : i + chunk] = xf.round_().clamp_(0, 255).to(torch.uint8)
    return out


def affine(
    mean: tuple[float, ...], std: tuple[float, ...], dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``scale, shift`` so that ``u8 * scale + shift`` is normalised."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    sd = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return to_device(1.0 / (255.0 * sd), dev), to_device(-m / sd, dev)


def normalise(
    x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, channels_last: bool
) -> torch.Tensor:
    x = torch.addcmul(shift, x.float(), scale)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=fmt)


def draw_augment(
    n: int, pad: int, crop: bool, flip: bool, gen: torch.Generator, dev: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """One epoch of crop offsets (``n x 2``) and flip flags, drawn on the CPU generator."""
    if not crop and not flip:
        return None, None
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen) if crop else None
    flips = torch.rand(n, generator=gen) < 0.5 if flip else None
    if offsets is None:
        offsets = torch.full((n, 2), pad, dtype=torch.int64)
    return to_device(offsets, dev), None if flips is None else to_device(flips, dev)


def crop_flip(
    x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor | None, pad: int
) -> torch.Tensor:
    """Random crop from a zero-padded batch, and optional flips, as one gather."""
    b, _, h, w = x.shape
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    rows = offsets[:, :1] + torch.arange(h, device=x.device)
    cols = offsets[:, 1:] + torch.arange(w, device=x.device)
    if flips is not None:
        cols = torch.where(flips[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


# --------------------------------------------------------------------------- public helpers
