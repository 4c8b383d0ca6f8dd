"""The layers' fast training paths must stay faster than their reference formulation.

Each case times forward + backward of one layer at the LVT proxy's shapes (32 px input, so
stage maps of 8x8, 4x4, 2x2 and 1x1 tokens), reference and fast path alternately on one
thread, and compares the best times: a ratio measured side by side is robust to other load on
the machine, absolute times are not. The required speed-ups are well below the measured ones
(in brackets: batch 64, one thread), so that only a real regression fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import torch
from torch import nn

from archsearch.layers import ConvMlp, ConvSelfAttention, SpatialReductionAttention
from archsearch.layers.attention import set_fast_paths

BATCH = 64


pytestmark = pytest.mark.usefixtures("one_thread")


def _best_times(module: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> tuple[float, float]:
    """Best CPU time of forward + backward with the fast paths off and on (alternating)."""
    module.train()
    x = x.requires_grad_()

    def step() -> None:
        out = module(x, hw)
        out.backward(torch.ones_like(out))

    best = [float("inf"), float("inf")]
    previous = set_fast_paths(False)
    try:
        for _ in range(5):
            for fast in (False, True):
                set_fast_paths(fast)
                step()  # warm-up of this path
                t0 = time.thread_time()
                step()
                step()
                best[fast] = min(best[fast], (time.thread_time() - t0) / 2)
    finally:
        set_fast_paths(previous)
    return best[0], best[1]


CASES: dict[str, tuple[Callable[[], nn.Module], int, tuple[int, int], float]] = {
    # name: (layer, channels, map, required speed-up)
    "csa_8x8": (lambda: ConvSelfAttention(64, 2), 64, (8, 8), 1.2),  # (1.9x)
    "rasa_4x4": (
        lambda: SpatialReductionAttention(64, 2, sr_ratio=4, atrous=True, recursion=2),
        64,
        (4, 4),
        2.0,  # (3.4-3.5x)
    ),
    "rasa_2x2": (
        lambda: SpatialReductionAttention(160, 5, sr_ratio=2, atrous=True, recursion=2),
        160,
        (2, 2),
        1.5,  # (2.5-2.6x)
    ),
    "conv_mlp_1x1": (lambda: ConvMlp(256, 1024), 256, (1, 1), 1.2),  # (1.8x)
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_path_is_faster(name: str) -> None:
    make, dim, hw, required = CASES[name]
    torch.manual_seed(0)
    reference, fast = _best_times(make(), torch.randn(BATCH, hw[0] * hw[1], dim), hw)
    speedup = reference / fast
    assert speedup >= required, (
        f"{name}: expected the fast path >= {required}x faster, got {speedup:.2f}x "
        f"({1e3 * reference:.2f} ms reference, {1e3 * fast:.2f} ms fast)"
    )
