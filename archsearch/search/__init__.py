"""Search: design spaces (YAML), Optuna study, candidate evaluation, run orchestration."""

from .evaluate import CostTarget, Evaluator, Outcome
from .runner import Plan, Progress, RunOptions, execute, prepare, run
from .space import SearchSpace, builtin_spaces, load_space

__all__ = [
    "CostTarget",
    "Evaluator",
    "Outcome",
    "Plan",
    "Progress",
    "RunOptions",
    "SearchSpace",
    "builtin_spaces",
    "execute",
    "load_space",
    "prepare",
    "run",
]
