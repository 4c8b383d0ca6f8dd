"""Run reports: ``pareto.csv``, PNG plots and one self-contained ``report.html``.

:func:`write_report` regenerates everything from a run directory's run.yaml and trials.csv, so
it can be called at any time, also while the run is still going.
"""

from __future__ import annotations

from .data import RunData, load_run
from .writer import write_report

__all__ = ["write_report", "load_run", "RunData"]
