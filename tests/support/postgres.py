"""A throwaway PostgreSQL server (Debian's server binaries, ``initdb`` into a temporary
directory), without pytest: the suite's ``postgres`` fixture (``tests/postgres_support.py``)
and the benches (``bench/bench_multi.py``, ``bench/bench_scale.py``) start it the same way.

:func:`find_bindir` finds ``initdb``/``pg_ctl``/``pg_dump``; :class:`PostgresServer` runs a
cluster on a unix socket in its own directory (no TCP), ``fsync`` off unless asked (a test
needs no power-loss durability; a bench of durable commits does); :func:`pg_query` and
:func:`pg_dump` look into a database.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import glob
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

PG_USER = "salon"
START_TIMEOUT = 60


def find_bindir() -> Path | None:
    """Where initdb, pg_ctl and pg_dump are: pg_config's answer, else the newest Debian one."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with_config = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if with_config.returncode == 0:
            candidates.append(Path(with_config.stdout.strip()))

    def version(path: str) -> int:
        found = re.search(r"/postgresql/(\d+)/", path)
        return int(found.group(1)) if found else 0

    candidates += [
        Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version)[::-1]
    ]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for bindir in candidates:
        if all((bindir / tool).is_file() for tool in ("initdb", "pg_ctl", "pg_dump")):
            return bindir
    return None


class PostgresServer:
    """A throwaway PostgreSQL cluster; ``url(name)`` is a libpq/asyncpg URL over its socket.
    ``fsync=True`` keeps PostgreSQL's default (a commit reaches the disk before it returns)."""

    def __init__(self, bindir: Path, *, fsync: bool = False) -> None:
        self.bindir = bindir
        self.fsync = fsync
        self.root = Path(tempfile.mkdtemp(prefix="salon-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.log_path = self.root / "postgres.log"
        with socket.socket() as sock:  # a free number; it only names the socket file here
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        # PostgreSQL refuses to run as root: then the cluster belongs to the postgres user.
        self.run_as: str | None = None
        if os.geteuid() == 0:
            self.run_as = "postgres"
            entry = pwd.getpwnam(self.run_as)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o755)

    def _run(self, *args: str) -> None:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            check=False,
            user=self.run_as,
            cwd=self.root,
            timeout=START_TIMEOUT,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{args[0]} failed:\n{result.stdout}\n{result.stderr}")

    def start(self) -> None:
        self._run(
            str(self.bindir / "initdb"),
            "-D", str(self.data), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync",
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Start the cluster's server (again, after a test stopped it: same data, same socket)."""
        # No TCP: a unix socket in our own directory. fsync off unless asked: a test needs no
        # power-loss durability, and the suite shares a small machine.
        fsync = "on" if self.fsync else "off"
        options = f"-k {self.socket_dir} -p {self.port} -c listen_addresses='' -c fsync={fsync}"
        self._run(
            str(self.bindir / "pg_ctl"), "start", "-w", "-t", str(START_TIMEOUT),
            "-D", str(self.data), "-l", str(self.log_path), "-o", options,
        )  # fmt: skip

    def stop(self) -> None:
        with_ctl = [str(self.bindir / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data)]
        subprocess.run(with_ctl, capture_output=True, check=False, user=self.run_as, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@/{database}?host={self.socket_dir}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = "t_" + secrets.token_hex(6)
        pg_query(self.url(), f"CREATE DATABASE {name}")
        return self.url(name)


def pg_dump(url: str) -> bytes:
    """What a canary grep must search: ``pg_dump``'s plain SQL of the database, followed by
    every ``bytea`` value in it as raw bytes (the dump writes them as hex)."""
    bindir = find_bindir()
    assert bindir is not None, "pg_dump not found"
    dump = subprocess.run(
        [str(bindir / "pg_dump"), "--dbname", url], capture_output=True, check=True, timeout=120
    ).stdout
    raw = [bytes.fromhex(h.decode()) for h in re.findall(rb"\\x((?:[0-9a-f]{2})+)", dump)]
    return dump + b"\n" + b"\n".join(raw)


def pg_query(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Rows of one statement (``?`` placeholders, as the SQLite helpers write them)."""
    import asyncpg

    numbered = iter(range(1, len(params) + 1))
    statement = re.sub(r"\?", lambda _: f"${next(numbered)}", sql)

    async def fetch() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            if not params and not statement.lstrip().upper().startswith("SELECT"):
                await conn.execute(statement)
                return []
            return [tuple(row) for row in await conn.fetch(statement, *params)]
        finally:
            await conn.close()

    # Its own loop on its own thread: callable from sync tests and from async ones alike.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fetch()).result()


def is_postgres(database: Any) -> bool:
    return isinstance(database, str) and database.startswith("postgresql://")
