"""Record-chain benchmark (not a test): a command's cost must not grow with the chain.

Usage: python bench/bench_roster.py [--records 100000] [--runs 5]

Two spaces on one real ``salon serve`` (SQLite): a small one of 10 records and a big one of
``--records`` records. Both have the same three members (an owner and two members) and one
chat room; the big one adds profile changes by the three members and renames of the space by
its owner, signed times spread over the past (within the profile quota), until it holds
``--records`` records. The chains are made and signed here with the Python API and written
straight into the server's store (the server still loads and verifies them itself, and every
client verifies what it fetches): appending 100,000 records through the server's per-member
rate limits would take days, as it would in a real space.

A real CLI user (its own ``SALON_HOME``, one keystore holding both memberships) then runs real
``salon`` subprocesses: first ``salon members`` once per space (a device's first sync of the
whole chain: reported, not part of the ratio), then ``--runs`` timed runs each of
``salon members`` and ``salon send``. Figures are medians; the ratio is big / small
(target <= 2).

Prints human-readable figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
from _harness import SALON, Server, emit, percentile

try:
    from client.core import crypto
except ImportError:  # running from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from client.core import crypto
from client.core.keystore import Keystore, KeystoreData, SpaceMembership
from client.core.rooms import RoomName
from client.core.space import ProfileInfo, SpaceInfo
from protocol.records import (
    PROFILE_QUOTA,
    PROFILE_WINDOW,
    Genesis,
    InviteCreate,
    Join,
    Profile,
    Record,
    RecordBody,
    RoomCreate,
    SpaceMeta,
    derive_space_id,
    encode_record,
    join_statement,
    record_hash,
    signing_bytes,
)

PASSPHRASE = "bench-roster"
ROOM = "general"


class Identity:
    def __init__(self) -> None:
        self.seed = crypto.random_key()
        self.box_secret = crypto.random_key()
        self.key = crypto.public_signing_key(self.seed)
        self.box_key = crypto.public_box_key(self.box_secret)


def pack(value: msgspec.Struct) -> bytes:
    return msgspec.msgpack.encode(value)


class ChainBuilder:
    def __init__(self, owner: Identity, space_key: bytes) -> None:
        self.genesis = Genesis(owner.box_key, os.urandom(16))
        self.space_id = derive_space_id(owner.key, self.genesis)
        self.space_key = space_key
        self.records: list[Record] = []
        self.prev = bytes(32)

    def add(self, author: Identity, body: RecordBody, created_at: int) -> None:
        unsigned = Record(self.space_id, len(self.records), self.prev, author.key, created_at, body)
        record = msgspec.structs.replace(
            unsigned, sig=crypto.sign(author.seed, signing_bytes(unsigned))
        )
        self.records.append(record)
        self.prev = record_hash(record)

    def profile(self, name: str) -> Profile:
        return Profile(0, crypto.secretbox(self.space_key, pack(ProfileInfo(name))))


def build_space(
    owner: Identity, others: list[Identity], total: int, start: int
) -> tuple[ChainBuilder, bytes]:
    """Genesis .. room (10 records), then profile changes and renames up to ``total``."""
    space_key = crypto.random_key()
    chain = ChainBuilder(owner, space_key)
    t = start
    invite_seed = crypto.random_key()
    invite_key = crypto.public_signing_key(invite_seed)
    chain.add(owner, chain.genesis, t)
    chain.add(owner, SpaceMeta(0, crypto.secretbox(space_key, pack(SpaceInfo("Bench")))), t)
    chain.add(owner, chain.profile("Owner"), t)
    chain.add(owner, InviteCreate("benchinvite", invite_key, "member", t + 10**9, 100), t)
    for i, member in enumerate(others):
        statement = join_statement(chain.space_id, member.key, member.box_key, "benchinvite")
        chain.add(
            member, Join("benchinvite", member.box_key, crypto.sign(invite_seed, statement)), t
        )
        chain.add(member, chain.profile(f"Member {i + 1}"), t)
    name_box = crypto.secretbox(space_key, pack(RoomName(ROOM)))
    chain.add(owner, RoomCreate("benchroom-general", "chat", 0, name_box), t)
    everyone = [owner, *others]
    # Each member changes profile once every len(everyone) records: space them so that no
    # member exceeds the profile quota within its window.
    step = PROFILE_WINDOW // (PROFILE_QUOTA - 1) // len(everyone) + 1
    i = 0
    while len(chain.records) < total:
        t += step
        author = everyone[i % len(everyone)]
        if i % 10 == 9:
            info = SpaceInfo("Bench", f"description {i}")
            chain.add(owner, SpaceMeta(0, crypto.secretbox(space_key, pack(info))), t)
        else:
            chain.add(author, chain.profile(f"Member {i % len(everyone)} v{i}"), t)
        i += 1
    return chain, space_key


def insert(db_path: Path, chain: ChainBuilder) -> None:
    db = sqlite3.connect(db_path)
    try:
        with db:
            db.execute(
                "INSERT INTO spaces (space_id, created_at) VALUES (?, ?)",
                (chain.space_id, int(time.time())),
            )
            db.executemany(
                "INSERT INTO records (space_id, seq, hash, data) VALUES (?, ?, ?, ?)",
                [(r.space_id, r.seq, record_hash(r), encode_record(r)) for r in chain.records],
            )
    finally:
        db.close()


def salon(home: Path, *args: str) -> float:
    env = {**os.environ, "SALON_HOME": str(home), "SALON_PASSPHRASE": PASSPHRASE}
    began = time.perf_counter()
    result = subprocess.run(
        [str(SALON), *args], env=env, capture_output=True, text=True, timeout=900, check=False
    )
    elapsed = time.perf_counter() - began
    if result.returncode != 0:
        raise RuntimeError(f"salon {' '.join(args)} failed: {result.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-roster-") as tmp:
        root = Path(tmp)
        server = Server(root, cwd=root)
        server.start()  # creates the schema
        server.stop()

        owner, others = Identity(), [Identity(), Identity()]
        began = time.perf_counter()
        start = int(time.time()) - args.records * 200  # the past, so no time is in the future
        small, small_key = build_space(owner, others, 10, start)
        big, big_key = build_space(owner, others, args.records, start)
        build_s = time.perf_counter() - began
        insert(root / "data" / "salon.db", small)
        insert(root / "data" / "salon.db", big)
        print(
            f"built and signed {len(small.records)} + {len(big.records)} records in {build_s:.1f} s"
        )

        home = root / "home"
        keystore = Keystore(home, passphrase=lambda _creating: PASSPHRASE)
        url = server.start()
        try:

            def remember(data: KeystoreData) -> None:
                for chain, key in ((small, small_key), (big, big_key)):
                    data.memberships.append(
                        SpaceMembership(
                            chain.space_id,
                            url,
                            "Bench",
                            "Owner",
                            owner.seed,
                            owner.box_secret,
                            space_keys={0: key},
                        )
                    )

            keystore.update(remember)
            first = {
                name: salon(home, "members", chain.space_id)
                for name, chain in (("small", small), ("big", big))
            }
            print(
                f"first sync of a device (whole chain, server loading it too): "
                f"small {first['small']:.2f} s, big {first['big']:.2f} s"
            )
            for chain in (small, big):  # the room key is made on the first send
                salon(home, "send", chain.space_id, ROOM, "warm-up")
            times: dict[str, dict[str, list[float]]] = {
                cmd: {"small": [], "big": []} for cmd in ("members", "send")
            }
            for run in range(args.runs):
                for name, chain in (("small", small), ("big", big)):
                    times["members"][name].append(salon(home, "members", chain.space_id))
                    times["send"][name].append(
                        salon(home, "send", chain.space_id, ROOM, f"hello {run}")
                    )
        finally:
            server.stop()

    medians = {
        cmd: {name: percentile(values, 0.5) for name, values in by_space.items()}
        for cmd, by_space in times.items()
    }
    ratios = {cmd: m["big"] / m["small"] for cmd, m in medians.items()}
    lines = [
        f"salon {cmd:7}  {len(small.records)} records: {m['small'] * 1000:7.0f} ms   "
        f"{len(big.records)} records: {m['big'] * 1000:7.0f} ms   "
        f"ratio {ratios[cmd]:.2f} (target <= 2)"
        for cmd, m in medians.items()
    ]
    emit(
        {
            "bench": "roster",
            "records_small": len(small.records),
            "records_big": len(big.records),
            "runs": args.runs,
            "members_ms": {k: round(v * 1000, 1) for k, v in medians["members"].items()},
            "send_ms": {k: round(v * 1000, 1) for k, v in medians["send"].items()},
            "members_ratio": round(ratios["members"], 3),
            "send_ratio": round(ratios["send"], 3),
            "first_sync_s": {k: round(v, 2) for k, v in first.items()},
            "build_s": round(build_s, 1),
            "target_ratio": 2.0,
            "ok": max(ratios.values()) <= 2.0,
            "python": platform.python_version(),
        },
        lines,
    )


if __name__ == "__main__":
    main()
