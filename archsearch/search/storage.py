"""The ``--storage`` URL of a study shared through an Optuna RDB storage: its check and its
printable form (no password: what run.yaml records and messages show)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ..errors import ConfigError

__all__ = ["redact", "storage_url"]


def redact(url: str) -> str:
    """``url`` without its password."""
    from sqlalchemy.engine import URL, make_url

    try:
        u = make_url(url)
        bare = URL.create(u.drivername, u.username, None, u.host, u.port, u.database, u.query)
        return str(bare.render_as_string(hide_password=False))
    except Exception:  # not a URL: cut what would be a password all the same
        return re.sub(r"://([^:/@]*):[^@/]*@", r"://\1@", url)


_URL_EXPECTED = (
    "--storage: expected an Optuna RDB URL such as postgresql+psycopg2://USER@HOST:5432/DB or "
    "sqlite:///PATH"
)


def storage_url(text: str) -> str:
    """Check an ``--storage`` URL (its form and its database driver; no connection) and return it
    normalised: a relative SQLite path made absolute."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(text)
        dialect = url.get_dialect()
    except NoSuchModuleError:  # (an ArgumentError too)
        raise ConfigError(f"{_URL_EXPECTED}, got the unknown database {url.drivername!r}") from None
    except (ArgumentError, ValueError):
        raise ConfigError(f"{_URL_EXPECTED}, got {redact(text)!r}") from None
    url = _with_driver(url, dialect)
    if url.get_backend_name() == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ConfigError(f"{_URL_EXPECTED}, got an in-memory SQLite database {text!r}")
        url = url.set(database=str(Path(url.database).expanduser().resolve()))
    elif not url.database:
        raise ConfigError(f"{_URL_EXPECTED}, got no database name in {redact(text)!r}")
    return str(url.render_as_string(hide_password=False))


def _with_driver(url: Any, dialect: Any) -> Any:
    """``url`` with a database driver that is installed: a bare ``postgresql://`` takes
    psycopg2 or psycopg, whichever is there (SQLAlchemy's default depends on its version)."""
    choices = [(url, dialect)]
    if url.get_backend_name() == "postgresql" and "+" not in url.drivername:
        choices += [(url.set(drivername=f"postgresql+{d}"), None) for d in ("psycopg2", "psycopg")]
    missing = None
    for candidate, d in choices:
        try:
            (d or candidate.get_dialect()).import_dbapi()
            return candidate
        except ImportError as e:
            missing = missing or e.name
    extra = "archsearch[postgres]" if url.get_backend_name() == "postgresql" else missing
    raise ConfigError(
        f"--storage: expected the {url.drivername!r} database driver to be installed, got no "
        f"module {missing!r}; pip install '{extra}'"
    )
