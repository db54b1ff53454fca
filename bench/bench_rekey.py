"""Rekey after a kick on the SFU, 5 participants: how long until everyone is on new keys.

Everything is real: a ``salon serve`` process (SFU in-process) and five ``salon call``
processes (320x240 test pattern at 15 fps + Opus tone, SFrame end to end) on loopback.
Alice hosts; she kicks one participant (``salon mod kick``), the four who remain rekey
(each makes a fresh media key and seals it to the other three), the kicked one comes back
as a new joiner (a ratchet), and so on, ``--kicks`` times.

A kick's rekey time is measured from the first moment any remaining participant saw the
kick (the server pushes it to all of them at once) to the last moment any of them held
every other remaining sender's new key and was sending under its own new key — the
``key_changes`` records of their ``--stats`` (unix times, one machine, one clock).

Usage: python bench/bench_rekey.py [--kicks 8]. The last line is JSON:
``{"rekey_p50_ms", "rekey_p95_ms", "rekey_max_ms", "kicks", "participants",
"decrypt_failures"}``. ``make bench-sfu`` runs it and puts ``rekey_p95_ms`` into the SFU
benchmark's summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import SALON, Server, emit, percentile  # run as a script: bench/ is on sys.path
from bench_call import env_for, salon

WAIT = 40.0
NAMES = ("Alice", "Bob", "Carol", "Dave", "Erin")
TARGET_MS = 1000.0


class Call:
    def __init__(self, name: str, proc: asyncio.subprocess.Process, stats: Path) -> None:
        self.name = name
        self.proc = proc
        self.stats = stats
        self.lines: list[str] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, name: str, home: Path, space: str, stats: Path) -> Call:
        proc = await asyncio.create_subprocess_exec(
            str(SALON), "call", space, "hall", "--duration", "900", "--stats", str(stats),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env_for(home),
        )  # fmt: skip
        return cls(name, proc, stats)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace"))

    async def wait_for(self, pattern: str, count: int = 1) -> None:
        regex = re.compile(pattern)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            if sum(1 for line in self.lines if regex.search(line)) >= count:
                return
            if self.reader.done():
                break
            await asyncio.sleep(0.02)
        raise SystemExit(f"{self.name}: no {pattern!r}:\n" + "".join(self.lines[-30:]))

    def seen(self, pattern: str) -> int:
        regex = re.compile(pattern)
        return sum(1 for line in self.lines if regex.search(line))

    async def stop(self) -> dict[str, Any]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.proc.wait(), WAIT)
        await self.reader
        return dict(json.loads(self.stats.read_text()))


async def run(root: Path, url: str, kicks: int) -> dict[str, Any]:
    homes = {n: root / n.lower() for n in NAMES}
    created = json.loads(
        salon(homes["Alice"], "space", "create", "Bench", "--server", url, "--as", "Alice",
              "--json")
    )  # fmt: skip
    space = created["space_id"]
    for name in NAMES[1:]:
        salon(homes[name], "join", created["link"], "--as", name)
    salon(homes["Alice"], "room", "create", space, "hall", "--kind", "conference",
          "--topology", "sfu")  # fmt: skip
    calls: dict[str, Call] = {}
    runs: list[dict[str, Any]] = []  # stats of every process, when it ends

    async def start(name: str, n: int) -> None:
        calls[name] = await Call.start(name, homes[name], space, root / f"{name}-{n}.json")

    for name in NAMES:
        await start(name, 0)
    full = r"verification code .* \(5 in the call"
    for call in calls.values():
        await call.wait_for(full)
        await call.wait_for("first video from", count=4)
    kicked_versions: list[set[str]] = []
    for k in range(kicks):
        victim = NAMES[1 + k % 4]
        remaining = [n for n in NAMES if n != victim]
        before = {n: calls[n].seen(r"\(4 in the call") for n in remaining}
        await asyncio.sleep(1.0)
        salon(homes["Alice"], "mod", space, "hall", "kick", victim)
        runs.append(await calls.pop(victim).stop())
        for n in remaining:
            await calls[n].wait_for(r"verification code .* \(4 in the call", before[n] + 1)
        kicked_versions.append(set(remaining))
        await asyncio.sleep(0.5)
        counts = {n: calls[n].seen(full) for n in remaining}
        await start(victim, k + 1)
        for n in remaining:
            await calls[n].wait_for(full, counts[n] + 1)
        await calls[victim].wait_for(full)
        await calls[victim].wait_for("first video from", count=4)
        print(f"kick {k + 1}/{kicks}: {victim} removed and back", flush=True)
    for call in list(calls.values()):
        runs.append(await call.stop())

    # Per kick (a "leave" at one state version): first seen, last completed.
    by_version: dict[int, list[dict[str, Any]]] = {}
    for stats in runs:
        for change in stats.get("key_changes", []):
            if change["kind"] == "leave":
                by_version.setdefault(change["version"], []).append(change)
    durations = []
    for changes in by_version.values():
        if len(changes) < 4:
            continue  # a leave at the very end (processes stopping), not a kick
        seen = min(c["seen_at"] for c in changes)
        done = [max(c["keys_at"] or 1e18, c["sending_at"] or 1e18) for c in changes]
        durations.append((max(done) - seen) * 1000)
    durations = sorted(durations)[: len(kicked_versions)]
    failures = sum(p["decrypt_failures"] for s in runs for p in s["participants"])
    result = {
        "rekey_p50_ms": round(percentile(durations, 0.5), 1),
        "rekey_p95_ms": round(percentile(durations, 0.95), 1),
        "rekey_max_ms": round(max(durations), 1),
        "kicks": len(durations),
        "participants": len(NAMES),
        "decrypt_failures": failures,
        "rekey_target_met": percentile(durations, 0.95) <= TARGET_MS,
    }
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kicks", type=int, default=8)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-rekey-"))
    server = Server(root / "server", env=env_for(root / "server"), data_dir=root / "data")
    try:
        result = await run(root, server.start(), args.kicks)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    line = (
        f"rekey after a kick, 5 participants: p50 {result['rekey_p50_ms']} ms, "
        f"p95 {result['rekey_p95_ms']} ms, max {result['rekey_max_ms']} ms "
        f"over {result['kicks']} kicks"
    )
    emit(result, [line])


if __name__ == "__main__":
    asyncio.run(main())
