"""Numbered migrations: each engine ships ``NNNN_name.sql`` files in its ``migrations``
package, numbered 1..N with no gaps; the same number means the same schema in every engine.

SQLite records the number applied in ``PRAGMA user_version``, PostgreSQL in the
``salon_schema`` table (:mod:`spaces.storage.postgres.database`); each migration runs in one
transaction of its own.
"""

from __future__ import annotations

from importlib import resources

from spaces.storage.interfaces import StorageError


def numbered_migrations(package: str) -> list[tuple[int, str]]:
    """(number, sql) of every migration in ``package``, in order."""
    found = []
    for entry in resources.files(package).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            found.append((int(name[:4]), entry.read_text(encoding="utf-8")))
    found.sort()
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(found) + 1)):
        raise StorageError(f"migrations are not numbered 1..N: {numbers}")
    return found
