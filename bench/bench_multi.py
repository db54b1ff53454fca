"""Delivery latency across instances (not a test): A→B versus A→A on one PostgreSQL database.

Usage: python bench/bench_multi.py [--messages 300]

Starts a throwaway PostgreSQL (tests/support/postgres.py: Debian's server binaries, fsync
off) and two real ``salon serve`` instances on one database of it. One member follows the
room through instance A, another through instance B; a third sends ``--messages`` messages
through A, one at a time (the next once the acknowledgement and both deliveries are in).
Measured: send-to-delivery latency at each follower (same process's clock). The baseline is
the follower on A, measured in the same run: the ratio is what crossing instances through
LISTEN/NOTIFY (and a reload from the store) adds.

Prints human-readable figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

from _harness import Server, emit, percentile, ratio  # noqa: E402
from bench_chat import (  # noqa: E402
    BENCH_LIMITS,
    authenticate,
    build_space,
    create_space,
    sample_box,
    ws_connect,
)
from support.postgres import PostgresServer, find_bindir  # noqa: E402

from client.core.chat import new_client_id  # noqa: E402
from protocol.chat_wire import FetchMessages, Messages, MessageSent, SendMessage  # noqa: E402
from protocol.wire import encoder, server_decoder  # noqa: E402


async def measure(spec: dict[str, Any], messages: int) -> dict[str, Any]:
    space_id, room_id, seeds = spec["space_id"], spec["room_id"], spec["seeds"]

    async def member(where: dict[str, Any], seed: bytes, follow: bool) -> Any:
        ws = await ws_connect(where["host"], where["port"])
        await authenticate(ws, space_id, seed)
        if follow:
            ws.send(encoder.encode(FetchMessages(2, room_id, 2**62, 1, True)))
            reply = server_decoder.decode(await ws.recv())
            assert isinstance(reply, Messages), reply
        return ws

    on_a = await member(spec["a"], seeds[0], True)
    on_b = await member(spec["b"], seeds[1], True)
    sender = await member(spec["a"], seeds[2], False)
    box = sample_box()
    same: list[float] = []
    cross: list[float] = []
    for index in range(messages + 20):  # the first 20 warm up
        t0 = time.perf_counter()
        sender.send(encoder.encode(SendMessage(index + 10, room_id, new_client_id(), 0, 0, box)))

        async def arrival(ws: Any, t0: float = t0) -> float:
            await ws.recv(30)
            return time.perf_counter() - t0

        got_a, got_b, ack = await asyncio.gather(arrival(on_a), arrival(on_b), sender.recv(30))
        assert isinstance(server_decoder.decode(ack), MessageSent), server_decoder.decode(ack)
        if index >= 20:
            same.append(got_a)
            cross.append(got_b)
    for ws in (on_a, on_b, sender):
        ws.close()

    def figures(values: list[float]) -> dict[str, float]:
        return {
            "p50_ms": round(percentile(values, 0.50) * 1000, 2),
            "p99_ms": round(percentile(values, 0.99) * 1000, 2),
        }

    return {"same_instance": figures(same), "cross_instance": figures(cross)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(
            "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
        )
    load_before = os.getloadavg()[0]
    postgres = PostgresServer(bindir)
    servers: list[Server] = []
    try:
        postgres.start()
        url = postgres.create_database()
        with tempfile.TemporaryDirectory(prefix="salon-bench-multi-") as tmp:
            root = Path(tmp)
            config = {"limits": BENCH_LIMITS, "storage": {"url": url}}
            where = {}
            for name in ("a", "b"):
                server = Server(root / name, config, stop_timeout=15)
                servers.append(server)
                server.start(timeout=30)
                where[name] = {"host": server.host, "port": server.port}
            space = build_space(3)
            asyncio.run(create_space(where["a"]["host"], where["a"]["port"], space))
            spec = {**space, **where}
            results = asyncio.run(measure(spec, args.messages))
    finally:
        for server in servers:
            server.stop()
        postgres.stop()
    same, cross = results["same_instance"], results["cross_instance"]
    across = ratio(cross["p50_ms"], same["p50_ms"])
    shown = "n/a" if across is None else f"{across:.2f}"
    lines = [f"Delivery latency, {args.messages} messages sent one at a time through instance A:"]
    for label, got in (
        ("on A (same instance, baseline)", same),
        ("on B (across instances)", cross),
    ):
        lines.append(f"  follower {label}: p50 {got['p50_ms']} ms, p99 {got['p99_ms']} ms")
    lines.append(f"  across / same (p50): {shown}   (load average before: {load_before:.2f})")
    results.update(
        {
            "messages": args.messages,
            "ratio_p50": None if across is None else round(across, 2),
            "load_before": load_before,
        }
    )
    emit(results, lines)


if __name__ == "__main__":
    main()
