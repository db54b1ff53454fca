"""``salon admin migrate-storage``: a SQLite deployment moved into PostgreSQL (issue 11).

A real ``salon serve`` on SQLite fills its file through the real CLI (a space, a join, a
kick with a rekey, chat with one message already expired, a story, a conference ban); the
command copies it into a new PostgreSQL database of the suite's own cluster and verifies it;
then ``salon serve`` on that database, on the same address, serves the same people: they
read the same messages, members and stories, post on, and the kicked member stays out.
The verification is shown to fail on a row changed in the target, and the command to refuse
a non-empty target and bad URLs (one line, the password masked).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from chat_support import jpeg_with_gps, query
from conftest import SALON, SalonServer, SalonUser, assert_one_line_error, until_sync
from postgres_support import PostgresServer, pg_query

from spaces.storage.transfer import SqliteSource, moved_on

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
# The old server must not sweep the expired message away before the migration reads it.
CONFIG = {"limits": {"expiry_sweep_seconds": 3600, "join_attempts_per_minute_per_address": 1000}}


def migrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SALON), "admin", "migrate-storage", *args],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@dataclass
class Deployment:
    old: SalonServer
    db: Path  # the old server's salon.db (stopped)
    url: str  # the PostgreSQL database it was migrated into
    report: dict[str, Any]
    alice: SalonUser
    bob: SalonUser
    carol: SalonUser
    space: str
    story_id: str
    photo: Path


@pytest.fixture(scope="module")
def deployment(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("migrate")
    people = root / "people"
    alice, bob, carol = (SalonUser(n, people / n) for n in ("alice", "bob", "carol"))
    old = SalonServer(root / "old", CONFIG)
    old.start()
    try:
        made = alice.json("space", "create", "Moving", "--server", old.url, "--as", "Alice")
        space = made["space_id"]
        alice.run("room", "create", space, "general", "--kind", "chat")
        alice.run("room", "create", space, "news", "--kind", "channel")
        alice.run("room", "create", space, "hall", "--kind", "conference")
        bob.json("join", made["link"], "--as", "Bob")
        carol.json("join", made["link"], "--as", "Carol")
        alice.run("send", space, "general", "hello before the move")
        bob.run("send", space, "general", "hi Alice")
        alice.run("send", space, "general", "this one expires", "--ttl", "1s")
        photo = root / "photo.jpg"
        photo.write_bytes(jpeg_with_gps(320, 240))
        story = alice.json("story", "post", space, "news", str(photo), "--caption", "Boxes")
        alice.run("mod", space, "hall", "ban", "Carol")
        alice.run("kick", space, "Carol")
        bob.run("send", space, "general", "after the rekey")
    finally:
        old.stop()
    db = old.data_dir / "salon.db"
    until_sync(
        lambda: query(db, "SELECT 1 FROM messages WHERE expires_at <= ?", time.time()),
        "the short-lived message to expire (still in the file)",
    )
    url = postgres.create_database()
    result = migrate("--from", f"sqlite:{db}", "--to", url, "--json")
    assert result.returncode == 0, result.stderr
    yield Deployment(
        old,
        db,
        url,
        json.loads(result.stdout),
        alice,
        bob,
        carol,
        space,
        story["story_id"],
        photo,
    )


def test_the_report_counts_every_table_and_skips_expired_messages(
    deployment: Deployment,
) -> None:
    report, db, url = deployment.report, deployment.db, deployment.url
    assert report["verified"] and report["copied"] and report["problems"] == []
    assert report["expired_not_copied"] == {"messages": 1, "stories": 0}
    for table, rows in report["tables"].items():
        expired = 1 if table == "messages" else 0
        assert rows == query(db, f"SELECT count(*) FROM {table}")[0][0] - expired, table
        assert rows == pg_query(url, f"SELECT count(*) FROM {table}")[0][0], table
    assert report["tables"]["messages"] == 3 and report["tables"]["stories"] == 1
    assert report["tables"]["conference_bans"] == 1
    # The expired message's ciphertext is in the SQLite file, and nowhere in PostgreSQL.
    [(expired_box,)] = query(db, "SELECT box FROM messages WHERE expires_at IS NOT NULL")
    assert pg_query(url, "SELECT 1 FROM messages WHERE box = ?", expired_box) == []
    assert pg_query(url, "SELECT count(*) FROM messages WHERE expires_at IS NOT NULL") == [(0,)]
    # The record chain head of the space, as in the file.
    [space] = report["spaces"]
    [(seq, digest)] = query(
        db, "SELECT seq, hash FROM records WHERE space_id = ? ORDER BY seq DESC LIMIT 1",
        space["space_id"],
    )  # fmt: skip
    assert (space["head_seq"], space["head_hash"]) == (seq, bytes(digest).hex())
    # Room sequences go on where they were (a room never hands out a sequence twice).
    assert sorted(query(db, "SELECT room_id, last_seq FROM room_seqs")) == sorted(
        pg_query(url, "SELECT room_id, last_seq FROM room_seqs")
    )


def test_serve_on_postgresql_serves_the_same_space(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    new = SalonServer(tmp_path / "new", CONFIG, d.url)
    new.start(port=d.old.port)  # memberships remember the server's address
    try:
        for person in (d.alice, d.bob):
            rows = person.json("read", d.space, "general")
            assert [(r["seq"], r["sender"], r["text"]) for r in rows] == [
                (1, "Alice", "hello before the move"),
                (2, "Bob", "hi Alice"),
                (4, "Bob", "after the rekey"),
            ]  # 3 expired before the move
            members = {r["display_name"] for r in person.json("members", d.space)}
            assert members == {"Alice", "Bob"}
        listed = d.bob.json("story", "list", d.space, "news")
        assert [(s["story_id"], s["caption"]) for s in listed] == [(d.story_id, "Boxes")]
        out = tmp_path / "story.jpg"
        got = d.bob.json("story", "get", d.space, d.story_id, "--out", str(out))
        assert got["bytes"] == out.stat().st_size > 0
        assert d.bob.json("send", d.space, "general", "on PostgreSQL now")["seq"] == 5
        assert [r["text"] for r in d.alice.json("read", d.space, "general", "--last", "1")] == [
            "on PostgreSQL now"
        ]
        # The kicked member stays out; the conference ban is still there.
        assert "no longer a member" in d.carol.fail("members", d.space)
        assert pg_query(d.url, "SELECT count(*) FROM conference_bans") == [(1,)]
    finally:
        new.stop()


def test_verify_only_finds_a_row_changed_in_the_target(
    deployment: Deployment, postgres: PostgresServer
) -> None:
    url = postgres.create_database()
    source = f"sqlite:{deployment.db}"
    assert migrate("--from", source, "--to", url).returncode == 0
    checked = migrate("--from", source, "--to", url, "--verify-only")
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("compared ")
    assert "verified: 1 space: row counts" in checked.stdout
    # One byte of one message's ciphertext changes: the counts still agree, the digest not.
    pg_query(url, "UPDATE messages SET box = box || '\\x00'::bytea WHERE seq = 2")
    line = assert_one_line_error(migrate("--from", source, "--to", url, "--verify-only"))
    assert "verification failed" in line and "messages: row contents differ" in line
    # A record chain cut short: the row count and the chain head both differ.
    pg_query(url, "DELETE FROM records WHERE seq = (SELECT max(seq) FROM records)")
    line = assert_one_line_error(migrate("--from", source, "--to", url, "--verify-only"))
    assert "records: " in line and "rows in SQLite" in line and "more difference" in line


def test_refuses_a_non_empty_target_and_bad_urls(deployment: Deployment, tmp_path: Path) -> None:
    source = f"sqlite:{deployment.db}"
    line = assert_one_line_error(migrate("--from", source, "--to", deployment.url))
    assert "is not empty" in line and "--verify-only" in line
    secret = "s3cret-pw"
    for target in (f"mysql://salon:{secret}@db/salon", f"postgresql://salon:{secret}@/x?port=1"):
        result = migrate("--from", source, "--to", target)
        line = assert_one_line_error(result)
        assert secret not in result.stdout + result.stderr and "***" in line, line
    bare = migrate("--from", str(deployment.db), "--to", "x")
    assert "sqlite:PATH" in assert_one_line_error(bare)
    missing = assert_one_line_error(migrate("--from", f"sqlite:{tmp_path}/none.db", "--to", "x"))
    assert "no SQLite database" in missing


def test_a_running_server_is_read_in_a_snapshot(
    deployment: Deployment, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The copy reads a WAL snapshot, so ``salon serve`` may keep running on the file; a
    write after the snapshot is noticed (the copy would lack it), not lost silently."""
    copy_dir = tmp_path / "running"
    copy_dir.mkdir()
    db = copy_dir / "salon.db"
    shutil.copy(deployment.db, db)
    running = SalonServer(tmp_path / "srv", CONFIG, f"sqlite:{db}")
    running.start()
    try:
        url = postgres.create_database()
        result = migrate("--from", f"sqlite:{db}", "--to", url)
        assert result.returncode == 0, result.stderr
        assert running.running
        # Held snapshot, then a write through another connection: moved_on names it.
        reader = SqliteSource(db)
        reader.open()
        try:
            assert reader.snapshot(0.0).count("records") > 0  # the snapshot starts here
            assert moved_on(reader, db) == []
            writer = sqlite3.connect(db)
            with writer:
                writer.execute("UPDATE invites SET epoch = epoch + 1")
            writer.close()
            [problem] = moved_on(reader, db)
            assert "changed during the migration" in problem
        finally:
            reader.close()
    finally:
        running.stop()


def test_a_crafted_file_whose_copy_does_not_verify_leaves_the_target_empty(
    deployment: Deployment, postgres: PostgresServer, tmp_path: Path
) -> None:
    """Red team (issue 11): a SQLite file crafted so that PostgreSQL stores a value other
    than SQLite reads it (a column declared ANY holding integers where the
    target has double precision) copies without an error but does not verify. The copy
    must not stay in the target: it is rolled back, and the target is still empty."""
    db = tmp_path / "crafted.db"
    shutil.copy(deployment.db, db)
    crafted = sqlite3.connect(db)
    with crafted:
        crafted.execute("PRAGMA writable_schema = ON")
        crafted.execute(
            "UPDATE sqlite_master SET sql = replace(sql, 'sent_at    REAL', 'sent_at    ANY')"
            " WHERE name = 'messages'"
        )
    crafted.close()
    crafted = sqlite3.connect(db)
    with crafted:
        crafted.execute("UPDATE messages SET sent_at = CAST(sent_at AS INTEGER)")
    assert crafted.execute("SELECT typeof(sent_at) FROM messages LIMIT 1").fetchone() == (
        "integer",
    )
    crafted.close()
    url = postgres.create_database()
    line = assert_one_line_error(migrate("--from", f"sqlite:{db}", "--to", url))
    assert "verification failed" in line and "messages: row contents differ" in line, line
    for table in ("spaces", "records", "messages", "invites"):
        assert pg_query(url, f"SELECT count(*) FROM {table}") == [(0,)], table
    # Nothing was left behind: the genuine file migrates into the same database.
    result = migrate("--from", f"sqlite:{deployment.db}", "--to", url)
    assert result.returncode == 0, result.stderr
