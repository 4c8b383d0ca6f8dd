"""How fast can candidates be costed before training?

Prints, for this machine:

* the median time of ``count_params_from_config`` per candidate (meta device; target < 50 ms);
* the median time of a full MAC ``count`` of a ~3.5M-parameter candidate at 224 (target < 1 s).

The candidate is the LVT reference design (``archsearch.models.reference_config("lvt")``). Also
printed: the closed-form estimate (``archsearch.cost.analytic.estimate``) the search uses as its
pre-filter, which rejects over-budget candidates before any model is built.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

from archsearch.cost import count, count_params_from_config
from archsearch.cost.analytic import estimate
from archsearch.models import build_model, reference_config

PARAM_REPEATS = 30
MAC_REPEATS = 5
PARAM_TARGET_MS = 50.0
MAC_TARGET_S = 1.0


def _median_time(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


def main() -> None:
    torch.manual_seed(0)
    candidate = reference_config("lvt")
    print(f"candidate: lvt; torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    med, _ = _median_time(lambda: estimate(candidate), PARAM_REPEATS)
    print(f"closed-form estimate (pre-filter): median {med * 1e6:.0f} us per candidate")

    count_params_from_config(candidate)  # warm-up: imports, first-call overheads
    params, backbone = count_params_from_config(candidate)
    med, times = _median_time(lambda: count_params_from_config(candidate), PARAM_REPEATS)
    verdict = "ok" if med * 1e3 < PARAM_TARGET_MS else "OVER TARGET"
    print(
        f"count_params_from_config: median {med * 1e3:.1f} ms over {PARAM_REPEATS} runs "
        f"(min {min(times) * 1e3:.1f}, max {max(times) * 1e3:.1f}); target < {PARAM_TARGET_MS:.0f}"
        f" ms: {verdict}  [{params / 1e6:.3f}M params, {backbone / 1e6:.3f}M backbone]"
    )

    model = build_model(candidate, num_classes=1000, in_chans=3, img_size=224)
    report = count(model, img_size=224)  # warm-up
    med, times = _median_time(lambda: count(model, img_size=224), MAC_REPEATS)
    verdict = "ok" if med < MAC_TARGET_S else "OVER TARGET"
    print(
        f"count (MACs at 224, model built): median {med:.3f} s over {MAC_REPEATS} runs "
        f"(min {min(times):.3f}, max {max(times):.3f}); target < {MAC_TARGET_S:.0f} s: {verdict}  "
        f"[{report.params / 1e6:.3f}M params, {report.gmacs:.3f} GMACs]"
    )
    med_build, _ = _median_time(lambda: count(candidate, img_size=224), MAC_REPEATS)
    print(f"count (from config, build included): median {med_build:.3f} s over {MAC_REPEATS} runs")


if __name__ == "__main__":
    main()
