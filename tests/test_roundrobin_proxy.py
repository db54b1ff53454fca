"""tests/support/roundrobin.py, the round-robin TCP front of the SIGKILL bench: connections
go to the upstreams in turn, one that refuses is skipped, and an upstream that goes away
ends its client's connection (as a dead instance's clients must notice)."""

from __future__ import annotations

import asyncio
import socket

from support.roundrobin import RoundRobinProxy


def refused_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connecting is refused
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def named_upstream(name: bytes) -> tuple[asyncio.Server, list[asyncio.StreamWriter]]:
    """Answers each connection with its name, then echoes."""
    accepted: list[asyncio.StreamWriter] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        writer.write(name)
        while data := await reader.read(1024):
            writer.write(data)
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), accepted


def test_round_robin_skips_refusals_and_ends_clients_of_a_dead_upstream() -> None:
    async def scenario() -> None:
        a, a_conns = await named_upstream(b"A")
        b, _ = await named_upstream(b"B")
        dead = ("127.0.0.1", refused_port())
        upstreams = [a.sockets[0].getsockname()[:2], dead, b.sockets[0].getsockname()[:2]]
        async with RoundRobinProxy(upstreams) as proxy:
            names = []
            clients = []
            for _ in range(4):
                reader, writer = await asyncio.open_connection(proxy.host, proxy.port)
                names.append(await asyncio.wait_for(reader.readexactly(1), 5))
                clients.append((reader, writer))
            # A, then the refused one is skipped (to B), B, A: each upstream in turn.
            assert names == [b"A", b"B", b"B", b"A"]
            assert proxy.chosen == [2, 0, 2]
            reader, writer = clients[0]
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
            for conn in a_conns:  # upstream A drops its connections
                conn.transport.abort()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            other_reader, other_writer = clients[1]  # B's clients stay connected
            other_writer.write(b"pong")
            assert await asyncio.wait_for(other_reader.readexactly(4), 5) == b"pong"
            for _, w in clients:
                w.close()
        for server in (a, b):
            server.close()

    asyncio.run(scenario())
