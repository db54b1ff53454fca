"""Mesh call benchmark: join-to-first-decoded-frame time, and CPU per participant.

Everything is real and on this machine: a ``salon serve`` process, and ``salon call``
processes (each a real aiortc peer, 320x240 test pattern at 15 fps + Opus tone) with ICE on
loopback (``SALON_ICE_HOSTS=127.0.0.1``).

1. **Join to first frame**: Alice stays in a call; Bob joins 10 times (a fresh process each
   time). Measured in Bob's process, from sending the join request to decoding Alice's first
   video frame (``first_video_frame_ms`` in ``--stats``); also from starting the process
   (Python start-up, keystore unlock and roster verification included).
2. **CPU per participant** in a 3-way and a 4-way mesh: once every pair decodes video, each
   process's user+system CPU time over a steady window, as a percentage of one core.

Run ``make bench-call`` (``--quick``: 3 joins, 3 s windows, a smoke run). The last line printed
is JSON; percentiles are ``_harness.percentile`` (linear interpolation).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import SALON, Server, emit, percentile  # run as a script: bench/ is on sys.path

PASSPHRASE = "bench"
JOINS = 10
STEADY_SECONDS = 8.0
WAIT = 40.0
TARGET_FIRST_FRAME_MS = 1500.0


def env_for(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(SALON_HOME=str(home), SALON_PASSPHRASE=PASSPHRASE, SALON_ICE_HOSTS="127.0.0.1")
    return env


def salon(home: Path, *args: str) -> str:
    done = subprocess.run(
        [str(SALON), *args], env=env_for(home), capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise SystemExit(f"salon {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Call:
    def __init__(self, proc: asyncio.subprocess.Process, stats: Path, started: float) -> None:
        self.proc = proc
        self.stats = stats
        self.started = started
        self.lines: list[tuple[float, str]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, home: Path, space: str, room: str, stats: Path, seconds: float) -> Call:
        started = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            str(SALON), "call", space, room, "--duration", str(seconds), "--stats", str(stats),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=env_for(home),
        )  # fmt: skip
        return cls(proc, stats, started)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append((time.monotonic(), line.decode(errors="replace")))

    async def wait_for(self, pattern: str, count: int = 1) -> float:
        """Wait until ``count`` lines match; returns when the last of them arrived."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            hits = [t for t, line in self.lines if regex.search(line)]
            if len(hits) >= count:
                return hits[count - 1]
            if self.reader.done():
                break
            await asyncio.sleep(0.02)
        text = "".join(line for _, line in self.lines)
        raise SystemExit(f"no {pattern!r} from a call:\n{text}")

    async def stop(self) -> dict[str, Any]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        await asyncio.wait_for(self.proc.wait(), WAIT)
        await self.reader
        return dict(json.loads(self.stats.read_text()))


async def join_to_first_frame(root: Path, space: str, homes: dict[str, Path]) -> dict[str, Any]:
    salon(homes["alice"], "room", "create", space, "joins", "--kind", "conference")
    host = await Call.start(homes["alice"], space, "joins", root / "host.json", 600)
    await host.wait_for("topology mesh")
    from_join: list[float] = []
    from_start: list[float] = []
    for i in range(JOINS):
        joiner = await Call.start(homes["bob"], space, "joins", root / f"join{i}.json", 60)
        arrived = await joiner.wait_for("first video from Alice")
        stats = await joiner.stop()
        (alice,) = stats["participants"]
        from_join.append(float(alice["first_video_frame_ms"]))
        from_start.append((arrived - joiner.started) * 1000)
        await host.wait_for(r"Bob \(\w+\) left", count=i + 1)
        print(
            f"join {i + 1:2d}: first frame {from_join[-1]:6.0f} ms after the join request,"
            f" {from_start[-1]:6.0f} ms after process start",
            flush=True,
        )
    await host.stop()
    return {
        "first_frame_p50_ms": round(percentile(from_join, 0.5), 1),
        "first_frame_p95_ms": round(percentile(from_join, 0.95), 1),
        "first_frame_from_process_start_p50_ms": round(percentile(from_start, 0.5), 1),
        "first_frame_from_process_start_p95_ms": round(percentile(from_start, 0.95), 1),
    }


async def mesh_cpu(root: Path, space: str, homes: dict[str, Path], size: int) -> dict[str, Any]:
    room = f"mesh{size}"
    salon(homes["alice"], "room", "create", space, room, "--kind", "conference")
    names = list(homes)[:size]
    calls = [await Call.start(homes[n], space, room, root / f"{room}-{n}.json", 600) for n in names]
    for call in calls:
        await call.wait_for(rf"verification code .* \({size} in the call")
        await call.wait_for("first video from", count=size - 1)
    await asyncio.sleep(1.0)  # let encoders and jitter buffers settle
    before = [cpu_seconds(c.proc.pid) for c in calls]
    t0 = time.monotonic()
    await asyncio.sleep(STEADY_SECONDS)
    after = [cpu_seconds(c.proc.pid) for c in calls]
    elapsed = time.monotonic() - t0
    stats = [await c.stop() for c in calls]
    per = [100 * (b - a) / elapsed for a, b in zip(before, after, strict=True)]
    decoded = [p["video_frames_decoded"] for s in stats for p in s["participants"]]
    print(
        f"{size}-way mesh: CPU per participant {statistics.mean(per):.1f} % of a core"
        f" (min {min(per):.1f}, max {max(per):.1f}); every pair decoded video: {min(decoded) > 0}",
        flush=True,
    )
    return {
        f"cpu_per_participant_{size}way_pct": round(statistics.mean(per), 1),
        f"cpu_per_participant_{size}way_max_pct": round(max(per), 1),
    }


async def main() -> None:
    global JOINS, STEADY_SECONDS
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 joins, 3 s windows (smoke run)")
    args = parser.parse_args()
    if args.quick:
        JOINS, STEADY_SECONDS = 3, 3.0
    root = Path(tempfile.mkdtemp(prefix="bench-call-"))
    server = Server(root / "server", env=env_for(root / "server"), data_dir=root / "data")
    try:
        url = server.start()
        homes = {n: root / n for n in ("alice", "bob", "carol", "dave")}
        created = json.loads(
            salon(homes["alice"], "space", "create", "Bench", "--server", url, "--as", "Alice",
                  "--json")
        )  # fmt: skip
        for name in ("bob", "carol", "dave"):
            salon(homes[name], "join", created["link"], "--as", name.capitalize())
        space = created["space_id"]
        result: dict[str, Any] = {"cores": os.cpu_count()}
        result |= await join_to_first_frame(root, space, homes)
        result |= await mesh_cpu(root, space, homes, 3)
        result |= await mesh_cpu(root, space, homes, 4)
        result["first_frame_target_met"] = result["first_frame_p95_ms"] <= TARGET_FIRST_FRAME_MS
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
    emit(result)


if __name__ == "__main__":
    asyncio.run(main())
