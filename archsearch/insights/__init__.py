"""What a run says about the papers' claims and about every dimension of its space.

:func:`analyse` reads a run folder (``run.yaml``, ``trials.csv`` and, when present, the
calibration and the front's weights), estimates each claim's effects and every option's effect
with a 95% interval and a verdict (supported / contradicted / cannot tell), and
:func:`write_insights` stores the result as ``insights.json``. The method: docs/insights.md.
"""

from __future__ import annotations

from .analysis import FILENAME, analyse, analyse_designs, to_json, write_insights
from .designs import Designs, from_run
from .estimate import Estimate, estimate, verdict

__all__ = [
    "FILENAME",
    "analyse",
    "analyse_designs",
    "to_json",
    "write_insights",
    "Designs",
    "from_run",
    "Estimate",
    "estimate",
    "verdict",
]
