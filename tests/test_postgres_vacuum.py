"""What an expired message leaves in a PostgreSQL cluster's files, and what removes it (the
README's "Privacy on PostgreSQL" says the same to operators).

A real ``salon serve`` on the suite's PostgreSQL sends a short-lived message; its ciphertext
(read from the table while it lives) is the canary. After the server's sweeper deletes the
row, the canary is still in the table's heap file (DELETE only marks the tuple dead) and in
the WAL; ``VACUUM FULL`` (what the README tells operators to schedule) rewrites the table
into a new file, after which no relation file of the database holds it. Plain VACUUM (and so
autovacuum) only makes the space reusable: it compacts the page by moving the live tuples
that follow a dead one, and never zeroes the freed space. Here the expired message is the
last tuple written to its page, nothing moves over it, and its bytes stay in the file.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import SalonServer, SalonUser, until_sync
from postgres_support import PostgresServer, pg_query

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
CONFIG = {"limits": {"expiry_sweep_seconds": 0.2}}


def relation_files(postgres: PostgresServer, url: str) -> list[Path]:
    """Every file of every relation of the database (main fork, its segments, FSM, VM):
    tables, their TOAST tables and indexes, as ``pg_relation_filepath`` names them."""
    paths = pg_query(
        url,
        "SELECT pg_relation_filepath(oid) FROM pg_class"
        " WHERE pg_relation_filepath(oid) IS NOT NULL",
    )
    found = []
    for (relative,) in paths:
        base = postgres.data / relative
        pattern = re.compile(re.escape(base.name) + r"(\.\d+|_fsm|_vm|_init)?$")
        found += [p for p in base.parent.iterdir() if pattern.fullmatch(p.name)]
    return found


def holding(files: list[Path], canary: bytes) -> list[str]:
    return [str(f) for f in files if canary in f.read_bytes()]


def test_an_expired_message_leaves_the_heap_after_vacuum_full(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.create_database()
    server = SalonServer(tmp_path / "server", CONFIG, url)
    server.start()
    try:
        alice = SalonUser("alice", tmp_path / "alice")
        made = alice.json("space", "create", "Vacuum", "--server", server.url, "--as", "Alice")
        space = made["space_id"]
        alice.run("room", "create", space, "general", "--kind", "chat")
        for n in range(3):
            alice.run("send", space, "general", f"kept {n}")
        alice.run("send", space, "general", "gone in a moment", "--ttl", "5s")
        [(box,)] = pg_query(url, "SELECT box FROM messages WHERE expires_at IS NOT NULL")
        canary = bytes(box)[-48:]  # ciphertext and tag: nothing else holds these bytes
        until_sync(
            lambda: pg_query(url, "SELECT count(*) FROM messages") == [(3,)],
            "the sweeper to delete the expired message",
            timeout=30,
        )
        assert [r["text"] for r in alice.json("read", space, "general")] == [
            "kept 0",
            "kept 1",
            "kept 2",
        ]
    finally:
        server.stop()

    pg_query(url, "CHECKPOINT")  # what the buffers hold reaches the files
    wal = [p for p in (postgres.data / "pg_wal").iterdir() if p.is_file()]
    # Deleted is not gone: the dead tuple stays in the heap, the insert in the WAL.
    assert holding(relation_files(postgres, url), canary), "DELETE left no dead tuple?"
    assert holding(wal, canary), "the WAL should hold the insert until it is recycled"

    pg_query(url, "VACUUM messages")
    pg_query(url, "CHECKPOINT")
    # The README's warning: the dead tuple is gone from the table's pages' item list, its
    # bytes are not (no live tuple followed it on the page to move over them).
    assert holding(relation_files(postgres, url), canary), "plain VACUUM zeroed it after all?"
    pg_query(url, "VACUUM FULL messages")
    pg_query(url, "CHECKPOINT")
    assert holding(relation_files(postgres, url), canary) == []
    assert pg_query(url, "SELECT count(*) FROM messages") == [(3,)]
