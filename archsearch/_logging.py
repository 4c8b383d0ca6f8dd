"""The package logger. Library code logs; only the CLI prints."""

from __future__ import annotations

import logging

logger = logging.getLogger("archsearch")
logger.addHandler(logging.NullHandler())


def get_logger(name: str | None = None) -> logging.Logger:
    """Return the package logger or one of its children."""
    return logger if not name else logger.getChild(name)
