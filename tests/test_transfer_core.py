"""The pure parts of ``salon admin migrate-storage`` (:mod:`spaces.storage.transfer`): it
knows every table the migrations create, and its comparison finds every kind of difference.
The end-to-end flows are in tests/test_migrate_storage.py."""

from __future__ import annotations

import re

from spaces.storage.postgres.database import migrations as postgres_migrations
from spaces.storage.sqlite.store import migrations as sqlite_migrations
from spaces.storage.transfer import (
    POSTGRES_ONLY,
    TABLES,
    Snapshot,
    Tally,
    compare,
    row_digest,
)


def created_tables(migrations: list[tuple[int, str]]) -> set[str]:
    return {
        name
        for _, sql in migrations
        for name in re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql, re.IGNORECASE)
    }


def test_every_table_the_migrations_create_is_copied_or_known_to_be_postgresql_only() -> None:
    """A migration that adds a table must teach the copy about it (or say it is PostgreSQL's
    own): otherwise the migration tool refuses every database."""
    copied = {t.name for t in TABLES}
    assert created_tables(sqlite_migrations()) == copied
    assert created_tables(postgres_migrations()) == copied | (POSTGRES_ONLY - {"salon_schema"})


def test_the_row_digest_sees_every_value_and_its_type() -> None:
    row = ("space", 7, 1.5, b"\x00box", None)
    assert row_digest(row) == row_digest(tuple(row))
    for changed in (
        ("space", 7, 1.5, b"\x00bos", None),  # one byte
        ("space", 8, 1.5, b"\x00box", None),
        ("space", 7, 1.25, b"\x00box", None),
        ("space", 7, 1.5, b"\x00box", b""),  # NULL is not empty
        (b"space", 7, 1.5, b"\x00box", None),  # text is not bytes
        ("spac", 7, 1.5, b"e\x00box", None),  # a boundary moved between columns
    ):
        assert row_digest(changed) != row_digest(row), changed


def snapshot(rows: dict[str, list[tuple[object, ...]]], head: tuple[int, bytes]) -> Snapshot:
    found = Snapshot()
    for table, table_rows in rows.items():
        for row in table_rows:
            found.tallies.setdefault((table, "s1"), Tally()).add(row)
    found.heads["s1"] = head
    return found


def test_compare_names_counts_contents_and_chain_heads() -> None:
    rows = {"records": [("s1", 0, b"h0", b"r0"), ("s1", 1, b"h1", b"r1")]}
    same = snapshot(rows, (1, b"h1"))
    assert compare(same, snapshot(rows, (1, b"h1"))) == []
    # Order does not matter, contents do.
    assert compare(same, snapshot({"records": rows["records"][::-1]}, (1, b"h1"))) == []
    changed = snapshot({"records": [rows["records"][0], ("s1", 1, b"h1", b"rX")]}, (1, b"h1"))
    assert compare(same, changed) == ["space s1: records: row contents differ"]
    fewer = snapshot({"records": rows["records"][:1]}, (0, b"h0"))
    problems = compare(same, fewer)
    assert problems[0] == "space s1: records: 2 rows in SQLite, 1 in PostgreSQL"
    assert problems[1].startswith("space s1: record chain head differs (seq 1 hash 6831")
    missing_space = Snapshot()
    assert len(compare(same, missing_space)) == 2  # its records, and its head
