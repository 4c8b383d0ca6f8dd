"""One root exception for archsearch, with a subclass per pipeline stage.

Messages say what was expected and what was given, on one line, so the CLI can print them as-is.
"""

from __future__ import annotations

__all__ = [
    "ArchsearchError",
    "ConfigError",
    "SpaceError",
    "BudgetError",
    "CountError",
    "DataError",
    "TrainingCutOff",
    "TrainingError",
    "ExportError",
]


class ArchsearchError(Exception):
    """Root of every error archsearch raises on purpose."""


class ConfigError(ArchsearchError, ValueError):
    """An architecture config is malformed or inconsistent."""


class SpaceError(ConfigError):
    """A search-space YAML file is malformed."""


class BudgetError(ArchsearchError, ValueError):
    """A budget string cannot be parsed, or a budget cannot be met."""


class CountError(ArchsearchError):
    """Cost counting failed (for example, an operator with no MAC handle)."""


class DataError(ArchsearchError):
    """A dataset is unknown, missing or malformed."""


class TrainingError(ArchsearchError):
    """Proxy training failed for a reason attributable to the candidate (e.g. non-finite loss)."""


class TrainingCutOff(ArchsearchError):
    """Training was stopped at its deadline (``--timeout``): not the candidate's fault, and not a
    result; the trial is run again by a later resume."""


class ExportError(ArchsearchError):
    """An export request cannot be satisfied."""
