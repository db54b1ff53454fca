"""One WebSocket connection to a spaces server: requests by id, events on a queue."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import msgspec

from client.core.errors import ClientError, ServerError, Unreachable, UsageError, VerificationError
from protocol.wire import Challenge, Error, ServerMessage, SessionClosed, encoder, server_decoder

R = TypeVar("R", bound=msgspec.Struct)
CONNECT_TIMEOUT = 10.0
REQUEST_TIMEOUT = 30.0


def check_server_url(server: str) -> str:
    """A normalised http(s) server URL; UsageError with the reason if it is not one."""
    try:
        parts = urlsplit(server.strip())
        parts.port  # noqa: B018 -- raises ValueError on a malformed host:port
    except ValueError:
        raise UsageError(f"{server!r} is not a valid server URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"{server!r} is not a server URL like http://127.0.0.1:8080")
    return server.strip().rstrip("/")


def origin_of(server: str) -> str:
    parts = urlsplit(server)
    return f"{parts.scheme}://{parts.netloc}"


def websocket_url(server: str) -> str:
    parts = urlsplit(server.rstrip("/"))
    scheme = "wss" if parts.scheme == "https" else "ws"
    return f"{scheme}://{parts.netloc}{parts.path}/ws"


class Connection:
    """Use :meth:`open`; then :meth:`request` and :attr:`events`; always :meth:`close`."""

    def __init__(self, server: str) -> None:
        self.server = check_server_url(server)
        self.origin = origin_of(self.server)
        self.events: asyncio.Queue[ServerMessage] = asyncio.Queue()
        self.challenge: Challenge | None = None
        self.closed_reason: str | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[ServerMessage]] = {}
        self._http: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, server: str) -> Connection:
        conn = cls(server)
        try:
            await conn._connect()
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _connect(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT)
        self._http = aiohttp.ClientSession(timeout=timeout)
        try:
            self._ws = await self._http.ws_connect(
                websocket_url(self.server), max_msg_size=64 * 1024 * 1024, heartbeat=30
            )
            first = await asyncio.wait_for(self._ws.receive(), CONNECT_TIMEOUT)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = str(exc) or type(exc).__name__
            raise Unreachable(f"cannot reach the server at {self.server}: {reason}") from None
        if first.type != aiohttp.WSMsgType.BINARY:
            raise Unreachable(f"{self.server} is not a Salon server")
        try:
            challenge = server_decoder.decode(first.data)
        except msgspec.DecodeError:
            raise Unreachable(f"{self.server} is not a Salon server") from None
        if isinstance(challenge, Error):  # refused before a session (too many connections)
            raise ServerError(challenge.code, challenge.message)
        if not isinstance(challenge, Challenge):
            raise Unreachable(f"{self.server} did not start with a challenge")
        if challenge.origin != self.origin:
            raise VerificationError(
                f"the server calls itself {challenge.origin}, not {self.origin}; "
                "use the address from your invite link"
            )
        self.challenge = challenge
        self._reader = asyncio.create_task(self._read_loop())

    @property
    def nonce(self) -> bytes:
        assert self.challenge is not None
        return self.challenge.nonce

    def next_id(self) -> int:
        return next(self._ids)

    async def request(self, message: msgspec.Struct, expect: type[R]) -> R:
        """Send a request (its ``id`` from :meth:`next_id`) and wait for its reply."""
        if self._ws is None or self._ws.closed:
            raise Unreachable(self._closed_message())
        request_id: int = message.id  # type: ignore[attr-defined]
        future: asyncio.Future[ServerMessage] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send_bytes(encoder.encode(message))
            reply = await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except TimeoutError:
            raise Unreachable(f"the server at {self.server} did not answer in time") from None
        except (aiohttp.ClientError, ConnectionError):
            raise Unreachable(self._closed_message()) from None
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, Error):
            raise ServerError(reply.code, reply.message)
        if not isinstance(reply, expect):
            raise VerificationError(f"unexpected reply {type(reply).__name__} from the server")
        return reply

    def _closed_message(self) -> str:
        if self.closed_reason:
            return f"the server ended the session: {self.closed_reason}"
        return f"the connection to {self.server} was lost"

    async def _read_loop(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                if frame.type != aiohttp.WSMsgType.BINARY:
                    continue
                try:
                    message = server_decoder.decode(frame.data)
                except msgspec.DecodeError:
                    continue  # a newer server's event we do not know: ignore it
                request_id: Any = getattr(message, "id", None)
                future = self._pending.get(request_id) if request_id is not None else None
                if future is not None and not future.done():
                    future.set_result(message)
                    continue
                if isinstance(message, SessionClosed):
                    self.closed_reason = message.reason
                self.events.put_nowait(message)
        finally:
            error: ClientError = Unreachable(self._closed_message())
            if self.closed_reason:
                error = ServerError(self.closed_reason, self._closed_message())
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(error)
            self.events.put_nowait(SessionClosed(self.closed_reason or "disconnected"))

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
        if self._http is not None:
            await self._http.close()
