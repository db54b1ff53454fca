"""``/health`` (database and SFU registry; 503 naming what is down) and ``/ready`` (503
while migrations run), against real components: ``salon serve`` and ``salon sfu`` processes,
a SQLite file moved away under the server, a real PostgreSQL stopped under it and a
migration held back by the advisory lock another instance would hold."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SALON, SalonServer, SalonUser, toml_text, until
from postgres_support import PostgresServer, find_bindir

pytestmark = pytest.mark.e2e  # real servers, SFU nodes and PostgreSQL clusters
SECRET = "n0de-secret-for-health-0123456789abcdef"


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as error:
        return int(error.code), json.load(error)


def status_is(url: str, status: int, body: dict[str, Any] | None = None) -> Callable[[], bool]:
    def check() -> bool:
        got = get(url)
        return got[0] == status and (body is None or got[1] == body)

    return check


@pytest.fixture
def private_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, which it may stop."""
    bindir = find_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries not found")
        pytest.skip("PostgreSQL server binaries not found")
    server = PostgresServer(bindir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


def stop_cluster(pg: PostgresServer) -> None:
    subprocess.run(
        [str(pg.bindir / "pg_ctl"), "stop", "-m", "fast", "-D", str(pg.data)],
        capture_output=True,
        check=True,
        user=pg.run_as,
        timeout=60,
    )


async def test_health_and_ready_on_sqlite_and_a_database_moved_away(
    make_server: Callable[..., SalonServer],
) -> None:
    srv = make_server()
    assert get(srv.url + "/health") == (200, {"status": "ok"})
    assert get(srv.url + "/ready") == (200, {"status": "ready"})
    moved = srv.db_file.with_name("moved.db")
    srv.db_file.rename(moved)
    await until(
        status_is(srv.url + "/health", 503, {"status": "down", "down": ["database"]}),
        "503 naming the database",
    )
    moved.rename(srv.db_file)
    await until(status_is(srv.url + "/health", 200), "healthy again")


async def test_health_is_503_when_postgresql_stops(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    srv = SalonServer(tmp_path / "server", None, private_postgres.create_database())
    srv.start()
    try:
        assert get(srv.url + "/health") == (200, {"status": "ok"})
        stop_cluster(private_postgres)
        await until(
            status_is(srv.url + "/health", 503, {"status": "down", "down": ["database"]}),
            "503 naming the database",
            timeout=30,
        )
        assert get(srv.url + "/ready")[0] == 200  # up, just not healthy: no restart loop
    finally:
        srv.stop()


async def test_postgresql_lost_while_running_answers_unavailable_and_loses_nothing(
    tmp_path: Path, private_postgres: PostgresServer, user: Callable[..., SalonUser]
) -> None:
    """PostgreSQL stops under a running server: requests are answered ``unavailable`` (the
    CLI exits 3 with the code under --json), /health is 503; PostgreSQL comes back (same
    data): the server reconnects by itself and every acknowledged message is there, once."""
    srv = SalonServer(tmp_path / "server", None, private_postgres.create_database())
    srv.start()
    try:
        alice = user("alice")
        space = alice.json("space", "create", "Outage", "--server", srv.url, "--as", "Alice")
        space_id = space["space_id"]
        alice.run("room", "create", space_id, "general", "--kind", "chat")
        acked = [alice.json("send", space_id, "general", f"before {i}")["seq"] for i in (1, 2)]
        assert acked == [1, 2]

        stop_cluster(private_postgres)
        refused = alice.run("send", space_id, "general", "during", "--json", check=False)
        assert refused.returncode == 3, (refused.stdout, refused.stderr)
        error = json.loads(refused.stdout)["error"]
        assert error["code"] == "unavailable", error
        assert "database" in error["message"]
        await until(
            status_is(srv.url + "/health", 503, {"status": "down", "down": ["database"]}),
            "503 naming the database",
            timeout=30,
        )
        assert srv.proc is not None and srv.proc.poll() is None  # still serving

        private_postgres.resume()

        def sent_again() -> bool:
            again = alice.run("send", space_id, "general", "after", "--json", check=False)
            return again.returncode == 0 and json.loads(again.stdout)["seq"] == 3

        await until(sent_again, "a send accepted once PostgreSQL is back", timeout=60)
        await until(status_is(srv.url + "/health", 200), "healthy again", timeout=30)
        rows = alice.json("read", space_id, "general")
        messages = rows["messages"] if isinstance(rows, dict) else rows
        assert [(m["seq"], m["text"]) for m in messages] == [
            (1, "before 1"),
            (2, "before 2"),
            (3, "after"),
        ]
    finally:
        srv.stop()


async def test_ready_is_503_while_migrations_run(
    tmp_path: Path, private_postgres: PostgresServer
) -> None:
    import asyncpg

    from spaces.storage.postgres.database import MIGRATION_LOCK

    url = private_postgres.create_database()
    holder = await asyncpg.connect(url)  # another instance migrating, as far as we can tell
    await holder.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    config = tmp_path / "salon.toml"
    config.write_text(toml_text({"storage": {"url": url}}), encoding="utf-8")
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(SALON), "serve", "--config", str(config), "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env={**os.environ, "SALON_ICE_HOSTS": "127.0.0.1"},
        )
    try:
        ready_url = ""

        def announced() -> bool:
            nonlocal ready_url
            found = re.search(r"readiness at (http://\S+)", log_path.read_text())
            ready_url = found.group(1) if found else ""
            return bool(found)

        await until(announced, "the migrating line", timeout=30)
        base = ready_url.removesuffix("/ready")
        assert get(ready_url) == (503, {"status": "migrating"})
        assert get(base + "/health") == (503, {"status": "migrating"})
        assert "listening on" not in log_path.read_text()
        await holder.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
        await until(lambda: "listening on" in log_path.read_text(), "listening", timeout=30)
        await until(status_is(ready_url, 200, {"status": "ready"}), "ready", timeout=10)
        assert f"listening on {base}" in log_path.read_text()  # the same port as announced
    finally:
        await holder.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_health_names_the_sfu_until_a_standalone_node_registers(
    make_server: Callable[..., SalonServer], tmp_path: Path
) -> None:
    srv = make_server({"sfu": {"enabled": False, "node_secret": SECRET}})
    assert get(srv.url + "/health") == (503, {"status": "down", "down": ["sfu"], "sfu_nodes": 0})
    node_config = tmp_path / "node.toml"
    node_config.write_text(
        toml_text({"sfu": {"server_url": srv.url, "node_secret": SECRET, "port": 0}})
    )
    node = subprocess.Popen(
        [str(SALON), "sfu", "--config", str(node_config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "SALON_ICE_HOSTS": "127.0.0.1"},
    )
    try:
        await until(status_is(srv.url + "/health", 200), "healthy with a node", timeout=30)
        node.send_signal(signal.SIGTERM)
        node.wait(timeout=10)
        await until(
            status_is(
                srv.url + "/health", 503, {"status": "down", "down": ["sfu"], "sfu_nodes": 0}
            ),
            "503 naming the SFU once the node left",
            timeout=30,
        )
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
