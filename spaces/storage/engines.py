"""The storage engine named by ``[storage] url``, and its stores.

- ``""`` — SQLite in ``[server] data_dir`` (``salon.db``), the embedded default;
- ``sqlite:PATH`` or a bare ``PATH`` — that SQLite file;
- ``postgresql://…`` (or ``postgres://…``) — a PostgreSQL database
  (:mod:`spaces.storage.postgres`), which several instances may share.

The stores are built here once, at start-up, and handed to the app (:mod:`spaces.services`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from spaces.config import Config, ConfigError
from spaces.storage.interfaces import Stores
from spaces.storage.sqlite.store import sqlite_stores

SQLITE_FILE = "salon.db"


def sqlite_path(config: Config) -> Path:
    """The SQLite file ``[storage] url`` names (created with a private directory)."""
    url = config.storage.url
    if not url:
        data_dir = Path(config.server.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        return data_dir / SQLITE_FILE
    scheme = _SCHEME.match(url)
    if scheme is not None and scheme.group(1).lower() != "sqlite":
        # A mistyped PostgreSQL URL must not become a SQLite file (an instance apart from
        # the others, in directories named after the password). Only the scheme is named.
        raise ConfigError(
            f"storage.url: {scheme.group(0)!r} is no database this server knows: PostgreSQL "
            "is postgresql://USER:PASSWORD@HOST:PORT/DB, SQLite sqlite:PATH (or a path)"
        )
    path = Path(url.removeprefix("sqlite:"))
    if not path.name:
        raise ConfigError(f"storage.url: {url!r} names no SQLite file")
    return path


POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def stores_for(config: Config) -> Stores:
    """The stores of the database ``[storage] url`` names (not yet open)."""
    if is_postgres(config.storage.url):
        from spaces.storage.postgres.store import postgres_stores  # asyncpg only when used

        return postgres_stores(config.storage.url)
    return sqlite_stores(sqlite_path(config))
