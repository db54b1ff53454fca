"""One PostgreSQL database (asyncpg), shared by the three PostgreSQL stores.

:class:`Database` owns the connection pool: :meth:`Database.open` connects (one error line
naming the URL, its password masked, when the server cannot be reached) and applies the
numbered migrations (``migrations/NNNN_*.sql``). Several ``salon serve`` instances may start
against one database at once: migrations run under a session advisory lock, each in its own
transaction together with its row in ``salon_schema``, so exactly one instance applies each.

Every write is a transaction committed before the method returns; PostgreSQL's defaults
(``synchronous_commit = on``, ``fsync = on``) make a commit durable.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Final
from urllib.parse import unquote_plus

import asyncpg

from spaces.events import CHANNEL, encode_event
from spaces.storage.interfaces import StorageError
from spaces.storage.migrations import numbered_migrations

log = logging.getLogger(__name__)

CONNECT_TIMEOUT: Final = 10.0
HEALTH_TIMEOUT: Final = 3.0  # /health's query, so a hung database answers 503, not never
POOL_MIN: Final = 2
POOL_MAX: Final = 16
# pg_advisory_lock key for applying migrations: "salon" in ASCII.
# What asyncpg raises when the database cannot be reached — refused or lost connections, a
# server shutting down, starting up or crashed, a closed connection, a connect that timed
# out — answered ``unavailable`` (spaces.storage.interfaces.StorageUnavailable).
UNREACHABLE: Final[tuple[type[BaseException], ...]] = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.TooManyConnectionsError,
)
MIGRATION_LOCK: Final = 0x73616C6F6E
# scheme://user:PASSWORD@ — the user part has no ':', '/' or '@'; the password ends at the
# last '@' before the host (a password may itself hold '@' or ':').
_PASSWORD: Final = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*:)[^/]*@")
# A query parameter: its key (percent-decoded and case-folded as asyncpg reads it) says
# whether its value is a secret: the password, or the client certificate key's passphrase.
_PARAMETER: Final = re.compile(r"([?&])([^=&#]*)=([^&#]*)")
_SECRET_PARAMETERS: Final = frozenset({"password", "sslpassword"})


def masked_url(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for a log or an error.
    Textual, so that even a URL too broken to parse is named without its password."""

    def parameter(found: re.Match[str]) -> str:
        key = unquote_plus(found.group(2)).strip().lower()
        return f"{found.group(1)}{found.group(2)}=***" if key in _SECRET_PARAMETERS else found[0]

    return _PARAMETER.sub(parameter, _PASSWORD.sub(r"\1***@", url, count=1))


def migrations() -> list[tuple[int, str]]:
    """(number, sql) of every PostgreSQL migration shipped with the package, in order."""
    return numbered_migrations("spaces.storage.postgres.migrations")


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: asyncpg.Pool | None = None
        # Names this instance in the events it sends, so that it skips its own.
        self.instance = secrets.token_hex(8)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageError("the database is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(
                self.url,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT,
            )
        except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StorageError(
                f"cannot reach the database at {masked_url(self.url)}: {reason}"
            ) from None
        try:
            await self._migrate()
        except BaseException:
            await self.close()
            raise

    async def _migrate(self) -> None:
        available = migrations()
        async with self.pool.acquire() as conn:
            await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS salon_schema ("
                    " version bigint PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                current = int(
                    await conn.fetchval("SELECT coalesce(max(version), 0) FROM salon_schema")
                )
                if current > len(available):
                    raise StorageError(
                        f"database schema version {current} is newer than this server "
                        f"({len(available)})"
                    )
                for number, sql in available[current:]:
                    log.info("applying migration %04d", number)
                    async with conn.transaction():
                        await conn.execute(sql)
                        await conn.execute("INSERT INTO salon_schema (version) VALUES ($1)", number)
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)

    async def healthy(self) -> bool:
        if self._pool is None:
            return False
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                return bool(await self._pool.fetchval("SELECT 1") == 1)
        except Exception:
            return False

    async def notify(self, conn: asyncpg.Connection, kind: str, args: Sequence[str | int]) -> None:
        """Send an event to the other instances when ``conn``'s transaction commits
        (:mod:`spaces.events`; ids and sequence numbers only)."""
        await conn.execute(
            "SELECT pg_notify($1, $2)", CHANNEL, encode_event(self.instance, kind, args)
        )

    async def schema_version(self) -> int:
        return int(await self.pool.fetchval("SELECT coalesce(max(version), 0) FROM salon_schema"))

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
