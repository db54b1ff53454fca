"""Shared fixtures: the real ``salon serve`` in a subprocess and real ``salon`` CLI users.

Integration tests drive the product the way a person does (STYLE.md: never mock our own
components): a server process on 127.0.0.1 with its own data directory, and one keystore
(``$SALON_HOME``) per user, each command a fresh ``salon`` process.

Fixtures
--------
``server`` (module scope)
    One :class:`SalonServer` shared by a test module. A module may set
    ``SERVER_CONFIG = {"limits": {...}}`` to run it with config overrides, and
    ``STORAGE_ENGINES = ("sqlite", "postgresql")`` to run its tests on both engines
    (``postgres_support.py``: a real PostgreSQL started by the suite).
``make_server`` (function scope)
    A factory for private servers (``make_server(config=None)``), for tests that stop,
    tamper with or grep a server's files. All are stopped at teardown. On the module's
    storage engine, like ``server``.
``user`` (function scope), ``module_user`` (module scope)
    A factory: ``user("alice")`` is a :class:`SalonUser` with its own ``SALON_HOME`` and
    ``SALON_PASSPHRASE``. ``.run()``, ``.json()`` and ``.fail()`` run the CLI.
``app_server`` (function scope, async)
    A factory for an in-process server (``await app_server(config=None)``) running on the
    test's event loop: for raw WebSocket tests and for playing a *malicious* server. Drive
    the CLI against it with ``SalonUser.arun``/``ajson``/``afail`` so the loop keeps serving.

Helpers that tests import: :func:`assert_one_line_error`, :data:`PASSPHRASE`, :func:`until`
(the one polling helper, from ``tests/support``; ``until_sync`` outside an event loop), and
the ``loopback_ice`` fixture (real aiortc peers on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support import until, until_sync  # noqa: F401  (tests import them from here too)

SALON = Path(sys.executable).parent / "salon"
PASSPHRASE = "correct horse battery staple"
CLI_TIMEOUT = 60.0
START_TIMEOUT = 20.0
LISTENING = re.compile(rb"listening on (http://\S+)")
# The PostgreSQL fixtures and the per-engine parametrization (STORAGE_ENGINES).
pytest_plugins = ["postgres_support", "support.lossy_net_fixture"]


# -- the e2e marker ----------------------------------------------------------------------------

# A test that asks for one of these runs real processes (a server, CLI subprocesses, a
# browser, coturn) or real network peers: it is marked ``e2e`` by itself. A module that starts
# such things on its own says ``pytestmark = pytest.mark.e2e``. ``make unit`` runs the rest
# (pure core, in seconds), ``make e2e`` these; ``make test`` runs both.
E2E_FIXTURES = frozenset(
    {
        "server",
        "make_server",
        "user",
        "module_user",
        "app_server",
        "loopback_ice",
        "coturn",
        "web_dist",
        "web_server",
        "chromium",
        "new_page",
        "firefox",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


# -- config ------------------------------------------------------------------------------------


def toml_text(config: Mapping[str, Mapping[str, Any]]) -> str:
    """A tiny TOML writer for ``{section: {key: scalar or list}}`` (JSON scalars are TOML)."""
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


# Every test server runs from 127.0.0.1 and many tests create spaces from it: the per-address
# creation rate (20 an hour by default) would make tests depend on each other. Tests of the
# limit itself set it (a test's own config always wins).
TEST_LIMITS: Mapping[str, Any] = {"space_creations_per_hour_per_address": 100_000}


def with_test_limits(
    config: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, Mapping[str, Any]]:
    merged: dict[str, Mapping[str, Any]] = dict(config or {})
    merged["limits"] = {**TEST_LIMITS, **merged.get("limits", {})}
    return merged


@pytest.fixture
def loopback_ice() -> Iterator[None]:
    """Keep aiortc's ICE host candidates on 127.0.0.1 for in-process peers (aioice never
    offers loopback by itself); request it with ``pytest.mark.usefixtures``."""
    import aioice.ice

    from rtc import aiortc_adapter

    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    yield
    aioice.ice.get_host_addresses = previous


def free_port() -> int:
    """A port nothing listens on right now (for 'server unreachable' tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the server --------------------------------------------------------------------------------


class SalonServer:
    """``salon serve`` as a subprocess.

    After :meth:`start`: ``url`` (``http://127.0.0.1:PORT``), ``port``, ``data_dir`` (holds
    ``salon.db`` and, while running, its ``-wal``/``-shm``), ``log_path`` (stdout and stderr
    of every run, appended). :meth:`restart` keeps the data directory and the port, because
    memberships remember the server's URL.
    """

    def __init__(
        self,
        root: Path,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        storage_url: str = "",
    ):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = root / "data"
        self.log_path = root / "server.log"
        self.config_path = root / "salon.toml"
        self.storage_url = storage_url  # "": SQLite in data_dir
        if storage_url:
            config = {**(config or {}), "storage": {"url": storage_url}}
        self.config_path.write_text(toml_text(with_test_limits(config)), encoding="utf-8")
        self.port = 0
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None
        # Where its in-process SFU offers media ($SALON_ICE_HOSTS; "" is every interface).
        self.ice_hosts = "127.0.0.1"

    @property
    def db_path(self) -> Any:
        """The database: the SQLite file's path, or the PostgreSQL URL (``query`` and
        ``stored_records`` take either)."""
        return self.storage_url or self.data_dir / "salon.db"

    @property
    def db_file(self) -> Path:
        """The file that holds the database: ``salon.db``, or on PostgreSQL the dump that
        :meth:`stored_files` writes."""
        return self.root / "pg_dump.bin" if self.storage_url else self.data_dir / "salon.db"

    def stored_files(self) -> list[Path]:
        """Every file holding what the server stored, for canary greps: its data directory's
        files and, on PostgreSQL, a fresh dump of its database (``postgres_support.pg_dump``)."""
        files = sorted(p for p in self.data_dir.rglob("*") if p.is_file())
        if self.storage_url:
            from postgres_support import pg_dump

            self.db_file.write_bytes(pg_dump(self.storage_url))
            files.append(self.db_file)
        return files

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, port: int | None = None) -> None:
        """Start and wait for ``listening on URL`` (raises with the log if it never comes)."""
        assert not self.running, "server already running"
        cmd = [str(SALON), "serve", "--port", str(self.port if port is None else port)]
        cmd += ["--data", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # The in-process SFU offers media on loopback only (this sandbox's rule, and tests'):
        env = {**os.environ, "SALON_ICE_HOSTS": self.ice_hosts}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                env=env,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                found = LISTENING.search(log.read())
            if found:
                self.url = found.group(1).decode()
                self.port = int(self.url.rsplit(":", 1)[1])
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"salon serve did not start; log:\n{self.log_text()}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s. Safe to call twice."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self) -> None:
        self.stop()
        self.start(port=self.port)

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    storage_url: Callable[[], str],
):
    """One running server for the whole module (config from the module's SERVER_CONFIG)."""
    config = getattr(request.module, "SERVER_CONFIG", None)
    srv = SalonServer(tmp_path_factory.mktemp("server"), config, storage_url())
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(
    tmp_path: Path, storage_url: Callable[[], str]
) -> Iterator[Callable[..., SalonServer]]:
    """``make_server(config=None, start=True)``: a private server, stopped at teardown."""
    made: list[SalonServer] = []

    def make(
        config: Mapping[str, Mapping[str, Any]] | None = None, start: bool = True
    ) -> SalonServer:
        srv = SalonServer(tmp_path / f"server{len(made)}", config, storage_url())
        made.append(srv)
        if start:
            srv.start()
        return srv

    yield make
    for srv in made:
        srv.stop()


# -- users -------------------------------------------------------------------------------------


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The CLI's contract for a user mistake: non-zero exit, no traceback, and exactly one
    line on stderr, starting with ``error:``. Returns that line."""
    where = f"stdout={result.stdout!r} stderr={result.stderr!r}"
    assert result.returncode != 0, f"expected a failure, got exit 0: {where}"
    assert "Traceback" not in result.stderr, where
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr: {where}"
    assert lines[0].startswith("error: "), where
    return lines[0]


class SalonUser:
    """One person with one keystore. Every call is a fresh ``salon`` process."""

    def __init__(self, name: str, home: Path, passphrase: str = PASSPHRASE) -> None:
        self.name = name
        self.home = home
        self.passphrase = passphrase

    def env(self, overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
        """os.environ plus SALON_HOME/SALON_PASSPHRASE; an override of None removes a key."""
        env = dict(os.environ)
        env["SALON_HOME"] = str(self.home)
        env["SALON_PASSPHRASE"] = self.passphrase
        for key, value in (overrides or {}).items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``salon ARGS``; stdin is /dev/null unless ``input`` is given (never a TTY).
        With ``check``, a non-zero exit fails the test showing both streams."""
        result = subprocess.run(
            [str(SALON), *args],
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            capture_output=True,
            text=True,
            env=self.env(env),
            timeout=timeout,
        )
        if check:
            _check_ok(args, result)
        return result

    def json(self, *args: str, **kw: Any) -> Any:
        """Run ``salon ARGS --json``; exit 0 and exactly one JSON document on stdout."""
        return _parse_json(args, self.run(*args, "--json", **kw))

    def fail(self, *args: str, **kw: Any) -> str:
        """Run a command that must fail as a user mistake; returns the ``error:`` line."""
        return assert_one_line_error(self.run(*args, check=False, **kw))

    # Async twins, for a server that runs on the test's own event loop.

    async def arun(
        self,
        *args: str,
        check: bool = True,
        input: str | None = None,
        env: Mapping[str, str | None] | None = None,
        timeout: float = CLI_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        proc = await asyncio.create_subprocess_exec(
            str(SALON),
            *args,
            stdin=subprocess.DEVNULL if input is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(env),
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(None if input is None else input.encode()), timeout
            )
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise
        assert proc.returncode is not None
        result = subprocess.CompletedProcess(
            [str(SALON), *args], proc.returncode, out.decode(), err.decode()
        )
        if check:
            _check_ok(args, result)
        return result

    async def ajson(self, *args: str, **kw: Any) -> Any:
        return _parse_json(args, await self.arun(*args, "--json", **kw))

    async def afail(self, *args: str, **kw: Any) -> str:
        return assert_one_line_error(await self.arun(*args, check=False, **kw))

    def keystore(self) -> Any:
        """This user's keystore, opened in-process (for crypto-level checks)."""
        from client.core.keystore import Keystore

        return Keystore(self.home, passphrase=lambda _creating: self.passphrase)

    def __repr__(self) -> str:
        return f"SalonUser({self.name!r})"


def _check_ok(args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 0, (
        f"salon {' '.join(args)} exited {result.returncode}\n"
        f"stdout: {result.stdout}\nstderr: {result.stderr}"
    )


def _parse_json(args: tuple[str, ...], result: subprocess.CompletedProcess[str]) -> Any:
    try:
        return json.loads(result.stdout)  # raises on a second document or stray text
    except json.JSONDecodeError as exc:
        raise AssertionError(
            f"salon {' '.join(args)} --json: not exactly one JSON document ({exc}):\n"
            f"{result.stdout!r}"
        ) from None


def user_factory(root: Path) -> Callable[..., SalonUser]:
    def make(name: str, passphrase: str = PASSPHRASE) -> SalonUser:
        home = root / "users" / name
        assert not home.exists(), f"user {name!r} made twice"
        return SalonUser(name, home, passphrase)

    return make


@pytest.fixture
def user(tmp_path: Path) -> Callable[..., SalonUser]:
    """``user("alice", passphrase=PASSPHRASE)``: a person with an empty keystore home."""
    return user_factory(tmp_path)


@pytest.fixture(scope="module")
def module_user(
    tmp_path_factory: pytest.TempPathFactory, storage_engine: str
) -> Callable[..., SalonUser]:
    """Like ``user``, for module-scoped fixtures (people shared by a module's tests; new
    people for each storage engine the module runs on, as its ``server`` is new)."""
    return user_factory(tmp_path_factory.mktemp(f"people-{storage_engine}"))


# -- an in-process server ----------------------------------------------------------------------


class AppServer:
    """A real spaces app (aiohttp + SQLite) on 127.0.0.1:0 inside the test's event loop.
    ``app`` gives tests the server's objects (e.g. to make it misbehave)."""

    def __init__(self, app: Any, runner: Any, store: Any, url: str, data_dir: Path) -> None:
        self.app = app
        self.runner = runner
        self.store = store
        self.url = url
        self.data_dir = data_dir

    async def stop(self) -> None:
        """Stop serving and close the database (its worker thread would outlive the loop)."""
        try:
            await self.runner.cleanup()
        finally:
            await self.store.close()

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


@pytest.fixture
async def app_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[AppServer]]]:
    """``await app_server(config=None)``: start an in-process server; cleaned up after."""
    from aiohttp import web

    from spaces.app import build_app
    from spaces.config import load_config
    from spaces.storage.sqlite.store import sqlite_stores

    started: list[AppServer] = []

    async def start(config: Mapping[str, Mapping[str, Any]] | None = None) -> AppServer:
        root = tmp_path / f"app{len(started)}"
        root.mkdir()
        path = root / "salon.toml"
        path.write_text(toml_text(with_test_limits(config)), encoding="utf-8")
        cfg = load_config(path)
        data_dir = root / "data"
        stores = sqlite_stores(data_dir / "salon.db")
        app = build_app(cfg, stores)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        srv = AppServer(app, runner, stores.spaces, "", data_dir)
        started.append(srv)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        srv.url = f"http://{host}:{port}"
        return srv

    yield start
    for srv in started:
        with contextlib.suppress(Exception):
            await srv.stop()


# -- reading what the server stored ------------------------------------------------------------


def stored_records(db_path: Path, space_id: str) -> list[Any]:
    """The decoded record chain of a space as it sits in a server's SQLite file (works while
    the server runs: a second, read-only connection sees committed WAL contents)."""
    import sqlite3

    from postgres_support import is_postgres, pg_query

    from protocol.records import decode_record

    if is_postgres(db_path):
        sql = "SELECT data FROM records WHERE space_id = ? ORDER BY seq"
        return [decode_record(bytes(row[0])) for row in pg_query(db_path, sql, space_id)]
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "SELECT data FROM records WHERE space_id = ? ORDER BY seq", (space_id,)
        ).fetchall()
    finally:
        db.close()
    return [decode_record(bytes(row[0])) for row in rows]


# -- a real TURN server ------------------------------------------------------------------------

TURNSERVER = Path("/usr/bin/turnserver")
TURN_USER = re.compile(r"new, realm=<[^>]*>, username=<([^>]*)>")


class Coturn:
    """Debian's coturn (``turnserver``) on 127.0.0.1 with a random port and a fresh secret,
    in the shared-secret REST mode (``use-auth-secret``). No daemon: a child process with a
    temp config, its log in ``log_path``."""

    def __init__(self, root: Path) -> None:
        import secrets

        self.root = root
        self.secret = secrets.token_urlsafe(24)
        self.port = free_udp_port()
        self.log_path = root / "turnserver.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def start(self) -> None:
        import random

        low = random.randrange(49152, 64000, 100)
        config = self.root / "turnserver.conf"
        config.write_text(
            "\n".join(
                [
                    "listening-ip=127.0.0.1",
                    "relay-ip=127.0.0.1",
                    f"listening-port={self.port}",
                    f"min-port={low}",
                    f"max-port={low + 99}",
                    "realm=salon.test",
                    "use-auth-secret",
                    f"static-auth-secret={self.secret}",
                    "allow-loopback-peers",  # every test peer is on 127.0.0.1
                    "no-tls",
                    "no-dtls",
                    "no-cli",
                    "no-multicast-peers",
                    "no-stdout-log",
                    f"log-file={self.log_path}",
                    "simple-log",
                    "verbose",
                    f"userdb={self.root / 'turndb'}",
                    f"pidfile={self.root / 'turnserver.pid'}",
                    "no-software-attribute",
                    "",
                ]
            )
        )
        self.proc = subprocess.Popen(
            [str(TURNSERVER), "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ready = f"UDP listener opened on: 127.0.0.1:{self.port}"
        deadline = time.monotonic() + START_TIMEOUT
        while ready not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"turnserver did not start:\n{self.log()}")
            time.sleep(0.05)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def allocated_usernames(self) -> list[str]:
        """Usernames of the relay allocations coturn made (in order)."""
        return TURN_USER.findall(self.log())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_udp_port() -> int:
    """A port free for both UDP and TCP right now (coturn listens on both)."""
    while True:
        port = free_port()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


@pytest.fixture
def coturn(tmp_path: Path) -> Iterator[Coturn]:
    """A running :class:`Coturn` (skipped where ``turnserver`` is not installed; .ci/run
    installs Debian's ``coturn``)."""
    if not TURNSERVER.exists():
        if os.environ.get("CI"):
            pytest.fail("coturn (turnserver) is not installed: .ci/run installs it")
        pytest.skip("coturn (turnserver) is not installed")
    root = tmp_path / "coturn"
    root.mkdir()
    server = Coturn(root)
    server.start()
    yield server
    server.stop()


# -- the web app in browsers (tests/browser_support.py documents these) ------------------------

from browser_support import chromium, firefox, new_page, web_dist, web_server  # noqa: E402, F401
