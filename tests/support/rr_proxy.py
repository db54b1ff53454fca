"""One URL in front of several ``salon serve`` instances: a round-robin TCP proxy.

Each new client connection goes to the next backend in turn; a backend that refuses the
connection is skipped for the next one (like nginx's ``proxy_next_upstream error``), so
when an instance dies its clients' reconnections land on the others. Bytes are copied both
ways unchanged (the ``Host`` header stays the proxy's address: the origin clients sign). When
a backend closes or resets a connection, the client's side is closed too.

It runs on its own event loop in a thread, so sync and async tests use it alike::

    with RoundRobinProxy() as proxy:
        proxy.backends = [(host, port_a), (host, port_b)]
        ... clients use proxy.url ...
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType

HOST = "127.0.0.1"


class RoundRobinProxy:
    def __init__(self) -> None:
        self.backends: list[tuple[str, int]] = []
        self.port = 0
        self.connections: list[int] = []  # backend index of each connection made, in order
        self._turn = 0
        self._pinned: int | None = None
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._open: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def send_next_to(self, index: int) -> None:
        """The next connection goes to backend ``index`` (if it is up), then round-robin
        resumes: lets a test put a given client on a given instance."""
        self._pinned = index

    def __enter__(self) -> RoundRobinProxy:
        self._thread.start()
        started = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        self.port = started.result(timeout=10)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> int:
        self._server = await asyncio.start_server(self._serve, HOST, 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.close()

    async def _connect(self) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter] | None:
        count = len(self.backends)
        first = self._pinned if self._pinned is not None else self._turn
        self._pinned = None
        for step in range(count):
            index = (first + step) % count
            try:
                reader, writer = await asyncio.open_connection(*self.backends[index])
            except OSError:
                continue  # down: the next one
            self._turn = index + 1
            return index, reader, writer
        return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        backend = await self._connect()
        if backend is None:
            client_w.close()
            return
        index, server_r, server_w = backend
        self.connections.append(index)
        self._open.update((client_w, server_w))
        try:
            await asyncio.gather(_pipe(client_r, server_w), _pipe(server_r, client_w))
        finally:
            self._open.difference_update((client_w, server_w))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF or an error on either side, then close the writing side."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()
