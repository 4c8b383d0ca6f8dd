"""Search: design spaces (YAML), the Optuna study, the study driver and its two backends."""

from __future__ import annotations

from typing import Any

from .driver import Candidate, Progress, StudyDriver
from .plan import Plan, prepare
from .space import SearchSpace, builtin_spaces, load_space

__all__ = [
    "Candidate",
    "Plan",
    "Progress",
    "SearchSpace",
    "StudyDriver",
    "builtin_spaces",
    "execute",
    "load_space",
    "prepare",
]


def execute(plan: Plan, progress: Progress | None = None) -> Any:
    """Run the search of ``plan`` on its backend; returns the final Pareto front (DataFrame)."""
    if plan.settings.backend == "ray":
        from .ray_backend import run_ray

        return run_ray(plan, progress or Progress())
    from .local import execute_local

    return execute_local(plan, progress)
