"""A tiny round-robin TCP front for several ``salon serve`` instances (tests and benches).

What an operator's load balancer does in front of several instances (nginx's ``upstream``
with ``proxy_next_upstream error``, HAProxy's ``balance roundrobin``), and nothing more: each
new connection goes to the next upstream in turn, skipping one that refuses the connection;
bytes are copied both ways unchanged; when either side closes or fails, both are closed — so
a client of an instance that dies sees its connection end, as it would behind a real one.
No stickiness, no health checks, no HTTP parsing.

``async with RoundRobinProxy([(host, port), ...]) as proxy:`` listens on 127.0.0.1, port 0;
``proxy.port`` is where clients connect, ``proxy.chosen`` counts connections per upstream.
As a process of its own: ``python tests/support/roundrobin.py HOST:PORT HOST:PORT ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from types import TracebackType

CHUNK = 65536


class RoundRobinProxy:
    def __init__(self, upstreams: Sequence[tuple[str, int]], host: str = "127.0.0.1") -> None:
        if not upstreams:
            raise ValueError("no upstreams")
        self.upstreams = list(upstreams)
        self.host = host
        self.port = 0
        self.chosen = [0] * len(self.upstreams)
        self._next = 0
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0, backlog=1024)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening and end every connection (closing its sockets lets its copies end;
        cancelling them would leave asyncio logging the cancellation)."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._pipes:
            await asyncio.wait(list(self._pipes), timeout=10)

    async def __aenter__(self) -> RoundRobinProxy:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _connect_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        start = self._next
        self._next = (self._next + 1) % len(self.upstreams)
        for step in range(len(self.upstreams)):
            index = (start + step) % len(self.upstreams)
            with contextlib.suppress(OSError):
                streams = await asyncio.open_connection(*self.upstreams[index])
                self.chosen[index] += 1
                return streams
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream = await self._connect_upstream()
        if upstream is None:  # every instance refused: the client sees its connection end
            writer.close()
            return
        up_reader, up_writer = upstream
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        self._writers.update((writer, up_writer))
        try:
            copies = [
                asyncio.ensure_future(_copy(reader, up_writer)),
                asyncio.ensure_future(_copy(up_reader, writer)),
            ]
            try:
                # Either direction ending ends both: a dead instance closes its clients.
                await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for copy in copies:
                    copy.cancel()
                await asyncio.gather(*copies, return_exceptions=True)
        finally:
            self._pipes.discard(task)
            for side in (writer, up_writer):
                self._writers.discard(side)
                side.close()


async def _copy(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()


async def _serve(upstreams: list[tuple[str, int]]) -> None:
    proxy = RoundRobinProxy(upstreams)
    await proxy.start()
    print(f"listening on http://{proxy.host}:{proxy.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await proxy.close()


def main() -> None:
    """``python tests/support/roundrobin.py HOST:PORT HOST:PORT ...``: the front as a process
    of its own (as a real one is), printing ``listening on http://HOST:PORT``."""
    upstreams = []
    for arg in sys.argv[1:]:
        host, _, port = arg.rpartition(":")
        upstreams.append((host, int(port)))
    try:
        import uvloop

        uvloop.run(_serve(upstreams))
    except ImportError:
        asyncio.run(_serve(upstreams))


if __name__ == "__main__":
    main()
