"""The storage engines behind one set of interfaces (spaces/storage/): the main store and the
conference store on a real SQLite file and on a real PostgreSQL (postgres_support.py), their
numbered migrations, the engine chosen by ``[storage] url``, and a database that cannot be
reached at start-up (one error line, the password masked, a non-zero exit)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
from conftest import SALON, assert_one_line_error, free_port

from protocol.conference_wire import CallAction
from protocol.errors import Conflict
from protocol.wire import Envelope, InviteSeal
from spaces.config import Config, StorageSection
from spaces.storage.engines import stores_for
from spaces.storage.interfaces import StoredRecord, Stores
from spaces.storage.sqlite.store import SqliteStore, sqlite_stores

SPACE = "s" * 24
GENESIS = StoredRecord(0, b"h" * 32, b"genesis")


def engine_stores(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> Stores:
    if engine == "sqlite":
        return sqlite_stores(tmp_path / "salon.db")
    from spaces.storage.postgres.store import postgres_stores

    return postgres_stores(request.getfixturevalue("postgres").create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    made = engine_stores(request.param, tmp_path, request)
    await made.open()
    yield made
    await made.close()


async def test_records_append_in_order_and_a_taken_seq_conflicts(stores: Stores):
    main = stores.spaces
    assert not await main.space_exists(SPACE)
    await main.append(SPACE, [GENESIS], create=True)
    assert await main.space_exists(SPACE)
    more = [StoredRecord(seq, bytes([seq]) * 32, f"r{seq}".encode()) for seq in (1, 2, 3)]
    await main.append(SPACE, more)
    assert await main.load_records(SPACE) == [b"genesis", b"r1", b"r2", b"r3"]
    assert await main.load_records(SPACE, after=1) == [b"r2", b"r3"]
    assert await main.load_records(SPACE, after=0, limit=2) == [b"r1", b"r2"]
    seal = InviteSeal("invite-0001", 0, b"sealed", b"preview")
    with pytest.raises(Conflict):  # seq 3 is taken: nothing of the append is kept
        await main.append(SPACE, [StoredRecord(3, b"x" * 32, b"again")], seals=[seal])
    assert await main.invite_seal("invite-0001") is None
    with pytest.raises(Conflict):  # the space exists already
        await main.append(SPACE, [GENESIS], create=True)


async def test_invite_seals_are_replaced_and_wiped(stores: Stores):
    main = stores.spaces
    first = InviteSeal("invite-0001", 0, b"sealed-0", b"preview-0")
    await main.append(SPACE, [GENESIS], seals=[first], create=True)
    assert await main.invite_seal("invite-0001") == (SPACE, first)
    assert await main.invite_seal("invite-none") is None
    second = msgspec.structs.replace(first, epoch=1, sealed=b"sealed-1")
    await main.put_seals(SPACE, [second, InviteSeal("invite-0002", 1, b"s2", b"p2")])
    assert await main.invite_seal("invite-0001") == (SPACE, second)
    assert await main.invite_epochs(SPACE) == {"invite-0001": 1, "invite-0002": 1}
    await main.wipe_invite_seals(["invite-0001"])
    assert await main.invite_seal("invite-0001") == (
        SPACE,
        InviteSeal("invite-0001", -1, b"", b""),
    )  # the id stays known, the sealed key is gone
    assert await main.invite_epochs(SPACE) == {"invite-0002": 1}


async def test_envelopes_are_kept_once_and_dropped(stores: Stores):
    main = stores.spaces
    alice, bob = b"a" * 32, b"b" * 32
    envelopes = [
        Envelope("space", 0, alice, alice, b"box-a0"),
        Envelope("space", 1, alice, alice, b"box-a1"),
        Envelope("space", 1, bob, alice, b"box-b1"),
    ]
    await main.append(SPACE, [GENESIS], envelopes=envelopes, create=True)
    # The same (scope, epoch, recipient) again keeps the first envelope.
    await main.append(
        SPACE,
        [StoredRecord(1, b"1" * 32, b"r1")],
        envelopes=[msgspec.structs.replace(envelopes[0], box=b"x")],
    )
    assert await main.envelopes(SPACE, "space", alice) == envelopes[:2]
    assert await main.envelopes(SPACE, "space", alice, min_epoch=1) == envelopes[1:2]
    assert await main.envelope_holders(SPACE, "space", 1) == {alice, bob}
    await main.drop_envelope(SPACE, "space", 1, bob)
    assert await main.envelope_holders(SPACE, "space", 1) == {alice}


async def test_bans_outlive_a_reopen(request: pytest.FixtureRequest, tmp_path: Path):
    for engine in ("sqlite", "postgresql"):
        made = engine_stores(engine, tmp_path / engine, request)
        await made.open()
        await made.spaces.append(SPACE, [GENESIS], create=True)
        first = CallAction(
            SPACE, "room1", "c", b"a" * 32, "ban", b"t" * 32, 1, b"n" * 16, 3, b"h" * 32, b"s"
        )
        ban = msgspec.structs.replace(first, issued_at=2)
        await made.conference.put_ban(SPACE, "room1", first)
        await made.conference.put_ban(SPACE, "room1", ban)  # replaces the first
        await made.close()
        await made.open()
        try:
            assert await made.conference.bans(SPACE, "room1") == {b"t" * 32: ban}
            await made.conference.delete_ban(SPACE, "room1", b"t" * 32)
            assert await made.conference.bans(SPACE, "room1") == {}
        finally:
            await made.close()


def test_both_engines_ship_the_same_numbered_migrations():
    from spaces.storage.postgres.database import migrations as postgres_migrations
    from spaces.storage.sqlite.store import migrations as sqlite_migrations

    numbers = [n for n, _ in sqlite_migrations()]
    assert numbers == [n for n, _ in postgres_migrations()] == list(range(1, len(numbers) + 1))


async def test_postgres_migrates_once_even_when_instances_start_together(postgres):
    """Two instances opening one new database at once: each migration is applied once (an
    advisory lock), recorded in salon_schema, and a later open applies nothing."""
    from spaces.storage.postgres.database import Database, migrations

    url = postgres.create_database()
    first, second = Database(url), Database(url)
    await asyncio.gather(first.open(), second.open())
    try:
        assert await first.schema_version() == len(migrations())
        rows = await first.pool.fetch("SELECT version FROM salon_schema ORDER BY version")
        assert [r[0] for r in rows] == [n for n, _ in migrations()]
    finally:
        await first.close()
        await second.close()


async def test_sqlite_records_its_schema_version(tmp_path: Path):
    store = SqliteStore(tmp_path / "salon.db")
    await store.open()
    try:
        async with store.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        from spaces.storage.sqlite.store import migrations

        assert row is not None and row[0] == len(migrations())
    finally:
        await store.close()


def test_the_url_picks_the_engine(tmp_path: Path):
    from spaces.storage.postgres.store import PostgresStore

    def main_store(url: str) -> object:
        config = Config(storage=StorageSection(url=url))
        config.server.data_dir = str(tmp_path / "data")
        return stores_for(config).spaces

    default = main_store("")
    assert isinstance(default, SqliteStore) and default.path == tmp_path / "data" / "salon.db"
    named = main_store(f"sqlite:{tmp_path / 'other.db'}")
    assert isinstance(named, SqliteStore) and named.path == tmp_path / "other.db"
    bare = main_store(str(tmp_path / "bare.db"))
    assert isinstance(bare, SqliteStore) and bare.path == tmp_path / "bare.db"
    assert isinstance(main_store("postgresql://salon@/salon?host=/run"), PostgresStore)


def test_masked_url_hides_only_the_password():
    from spaces.storage.postgres.database import masked_url

    assert masked_url("postgresql://salon:pa55@db.example:5433/salon?sslmode=require") == (
        "postgresql://salon:***@db.example:5433/salon?sslmode=require"
    )
    assert masked_url("postgresql://salon@/salon?host=/run/pg") == (
        "postgresql://salon@/salon?host=/run/pg"
    )
    assert masked_url("postgresql://u:p@ss:w@h:1/x") == "postgresql://u:***@h:1/x"
    assert masked_url("postgresql://u:pw@h:notaport/x") == "postgresql://u:***@h:notaport/x"
    assert masked_url("postgresql://h/x?user=u&password=pw&sslmode=require") == (
        "postgresql://h/x?user=u&password=***&sslmode=require"
    )


@pytest.mark.parametrize("port", ["free", "notaport"])
def test_unreachable_postgres_is_one_error_line_naming_the_url(tmp_path: Path, port: str):
    if port == "free":
        port = str(free_port())  # nothing listens there
    url = f"postgresql://salon:hunter2-secret@127.0.0.1:{port}/salon"
    web = tmp_path / "web"  # a built web app, so that the error is the only line
    web.mkdir()
    (web / "index.html").write_text("<!doctype html>", encoding="utf-8")
    config = tmp_path / "salon.toml"
    config.write_text(
        f'[server]\nport = 0\nweb_dir = "{web}"\n[storage]\nurl = "{url}"\n', encoding="utf-8"
    )
    result = subprocess.run(
        [str(SALON), "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode != 0
    line = assert_one_line_error(result)
    assert f"postgresql://salon:***@127.0.0.1:{port}/salon" in line, line
    assert "hunter2" not in result.stdout + result.stderr


async def test_postgres_call_log_keeps_inputs_until_a_snapshot_supersedes_them(postgres):
    """The ordered log on PostgreSQL (migration 0005): numbered per room under the room's
    row lock, read back as a replay would, snapshot, pruned; heartbeats name the live."""
    from spaces.storage.postgres.database import Database
    from spaces.storage.postgres.events import PostgresEvents

    database = Database(postgres.create_database())
    await database.open()
    events = PostgresEvents(database)
    events.listening.set()  # submit without the listener: nobody answers, so time out fast
    room, other = ("s1", "hall"), ("s1", "other")
    try:

        async def put(where: tuple[str, str], body: bytes, state: bool = True) -> None:
            with pytest.raises(TimeoutError):  # committed, but no listener applies it here
                await asyncio.wait_for(events.submit(body, where, state), 1.0)

        for body, state in ((b"open", True), (b"join", True), (b"sig", False), (b"end", True)):
            await put(room, body, state)
        await put(other, b"open")
        await put(room, b"join2")
        assert await events.room_log(room, None) == (
            None,
            [(1, b"open"), (2, b"join"), (4, b"end"), (5, b"join2")],
        )
        assert await events.room_log(other, None) == (None, [(1, b"open")])
        assert await events.room_log(room, 2) == (None, [(1, b"open"), (2, b"join")])
        await events.compact(room, 4, b"idle")
        assert await events.room_log(room, None) == ((4, b"idle"), [(5, b"join2")])
        assert await events.room_log(room, 3) == (None, [(1, b"open"), (2, b"join")])
        await events.prune("1 minute")  # nothing old enough yet
        assert len(await database.pool.fetch("SELECT 1 FROM call_inputs")) == 6
        await events.prune("0 seconds")  # the signal and what the snapshot supersedes go
        rows = await database.pool.fetch("SELECT room_id, seq FROM call_inputs ORDER BY 1, 2")
        assert [tuple(r) for r in rows] == [("hall", 4), ("hall", 5), ("other", 1)]
        assert await events.room_log(room, None) == ((4, b"idle"), [(5, b"join2")])

        await events._heartbeat()
        assert await events.live_instances(10) == {database.instance}
        await database.pool.execute("UPDATE instances SET seen_at = now() - interval '1 min'")
        assert await events.live_instances(10) == set()
    finally:
        await database.close()
