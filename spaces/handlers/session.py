"""The WebSocket edge: one session per connection (challenge, authentication, then member
requests dispatched to the app's routes.

Nothing is logged per request: no paths (invite ids), no client addresses, no names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time

import msgspec
from aiohttp import WSMsgType, web

from protocol.errors import (
    ErrorCode,
    InvalidMessage,
    NotFound,
    ProtocolError,
    RateLimited,
    TooLarge,
    Unauthenticated,
)
from protocol.ids import is_valid_id
from protocol.records import Genesis, derive_space_id, verify_signature
from protocol.wire import (
    AUTH_REQUESTS,
    Authenticate,
    Challenge,
    ClientMessage,
    CreateSpace,
    Error,
    InviteOpened,
    Joined,
    JoinSpace,
    OpenInvite,
    Welcome,
    auth_statement,
    client_decoder,
    encoder,
)
from spaces.config import Config
from spaces.hub import Subscriber
from spaces.limits import TokenBucket, address_key, client_address
from spaces.services import (
    ATTEMPTS_BY_ADDRESS,
    ATTEMPTS_BY_INVITE,
    CONFIG,
    COUNTERS,
    CREATIONS_BY_ADDRESS,
    HUB,
    MEMBERSHIP,
    PROXIES,
    ROUTES,
    SOCKETS_BY_ADDRESS,
    STORES,
    Caller,
)

log = logging.getLogger(__name__)
UNREACHABLE_LOG_SECONDS = 10.0  # while the database is down, one warning per this many seconds
# The project's token bucket as a log throttle (one token, refilled every 10 s).
_unreachable_log = TokenBucket.full(1 / UNREACHABLE_LOG_SECONDS, 1.0, time.monotonic())


def _log_unreachable(exc: Exception) -> None:
    if _unreachable_log.take(time.monotonic()):
        log.warning("the database is unreachable (%s); answering 'unavailable'", type(exc).__name__)


class Session:
    """One WebSocket connection: challenge, authentication, then member requests."""

    def __init__(self, app: web.Application, ws: web.WebSocketResponse, origin: str, address: str):
        self.app = app
        self.ws = ws
        self.origin = origin
        self.address = address
        self.config = app[CONFIG]
        self.membership = app[MEMBERSHIP]
        self.nonce = secrets.token_bytes(32)
        limits = self.config.limits
        loop = asyncio.get_running_loop()
        self.bucket = TokenBucket.full(
            limits.requests_per_second, limits.request_burst, loop.time()
        )
        self.subscriber: Subscriber | None = None
        self.writer: asyncio.Task[None] | None = None

    async def run(self) -> None:
        await self.ws.send_bytes(encoder.encode(Challenge(self.nonce, self.origin)))
        try:
            await asyncio.wait_for(self._authenticate(), self.config.limits.auth_timeout_seconds)
        except TimeoutError:
            await self._send_direct(Error(None, "unauthenticated", "authentication timed out"))
            return
        if self.subscriber is None:
            return
        self.writer = asyncio.create_task(self._write_loop(self.subscriber))
        try:
            async for message in self._messages():
                if self.subscriber.closed:
                    break
                if isinstance(message, AUTH_REQUESTS):
                    self._reply(Error(message.id, "invalid_message", "already authenticated"))
                    continue
                self.subscriber.busy = True
                try:
                    self._reply(await self._dispatch(message))
                finally:
                    self.subscriber.finish_request()
        finally:
            self.app[HUB].remove(self.subscriber)
            self.subscriber.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.writer, 5)

    def _messages(self) -> ClientMessageIterator:
        return ClientMessageIterator(self)

    async def _authenticate(self) -> None:
        """Serve requests until one binds this session to a membership (or the socket ends)."""
        async for message in self._messages():
            if not isinstance(message, AUTH_REQUESTS):
                await self._send_direct(Error(message.id, "unauthenticated", "authenticate first"))
                continue
            try:
                reply = await self._auth_request(message)
            except ProtocolError as exc:
                if exc.code == ErrorCode.RATE_LIMITED:
                    self.app[COUNTERS].refused(type(message).__name__)
                await self._send_direct(Error(message.id, exc.code, exc.message))
                continue
            except Exception as exc:
                await self._send_direct(self._unavailable(message.id, exc))
                continue
            await self._send_direct(reply)
            if self.subscriber is not None:
                return

    async def _auth_request(
        self, message: CreateSpace | Authenticate | OpenInvite | JoinSpace
    ) -> msgspec.Struct:
        m = self.membership
        if isinstance(message, CreateSpace):
            if not message.records:
                raise InvalidMessage("a new space needs its genesis record")
            genesis = message.records[0]
            if not isinstance(genesis.body, Genesis):
                raise InvalidMessage("a new space starts with its genesis record")
            # Check the challenge before anything is stored: a bad signature creates nothing.
            space_id = derive_space_id(genesis.author, genesis.body)
            self._check_member_signature(space_id, genesis.author, message.signature, "create")
            self._limit_creation(message.creation_token)
            roster = await m.create_space(message.records, message.seals, message.creation_token)
            founder = genesis.author
            self._bind(roster.space_id, founder)
            return Welcome(message.id, roster.space_id, roster.head_seq)
        if isinstance(message, Authenticate):
            roster = await m.roster(message.space_id)
            self._check_member_signature(message.space_id, message.member_key, message.signature)
            if message.member_key not in roster.members:
                if roster.departed.get(message.member_key):
                    raise Unauthenticated("you are banned from this space")
                if message.member_key in roster.departed:
                    raise Unauthenticated("you are no longer a member of this space")
                raise Unauthenticated("not a member of this space")
            self._bind(message.space_id, message.member_key)
            return Welcome(message.id, message.space_id, roster.head_seq)
        self._limit_join_attempt(message.invite_id)
        signature = (
            message.signature if isinstance(message, OpenInvite) else message.invite_signature
        )
        statement = auth_statement(self.origin, "invite", message.invite_id, self.nonce)
        opened = await m.open_invite(message.invite_id, statement, signature)
        # Per invite only once signed for: whoever has just the id (the URL's path) cannot
        # use up a link's attempts and keep its real holders out.
        if not self.app[ATTEMPTS_BY_INVITE].allow(message.invite_id):
            raise RateLimited("too many join attempts on this invite; wait a minute")
        if isinstance(message, OpenInvite):
            # Before joining: the preview and the head to build on, no chain, no space key.
            return InviteOpened(
                message.id,
                opened.space_id,
                opened.invite.role,
                opened.invite.expires_at,
                opened.seal.preview,
                opened.roster.head_seq,
                opened.roster.head_hash,
            )
        member = message.record.author
        self._check_member_signature(opened.space_id, member, message.signature)
        await m.join(opened, message.record)
        self._bind(opened.space_id, member)
        # The space key goes out only now, with the join on the chain for every member to see.
        head = (await m.roster(opened.space_id)).head_seq
        return Joined(message.id, opened.space_id, head, opened.seal)

    def _limit_creation(self, token: str) -> None:
        """Open creation is limited per address; holders of a creation token are not."""
        spaces = self.config.spaces
        if token and token in spaces.creation_tokens:
            return
        if spaces.allow_create and not self.app[CREATIONS_BY_ADDRESS].allow(self.address):
            per_hour = self.config.limits.space_creations_per_hour_per_address
            raise RateLimited(
                f"too many new spaces from this address (at most {per_hour} an hour); "
                "try again later"
            )

    def _limit_join_attempt(self, invite_id: str) -> None:
        if not self.app[ATTEMPTS_BY_ADDRESS].allow(self.address):
            raise RateLimited("too many join attempts from this address; wait a minute")
        if not is_valid_id(invite_id):  # before it becomes a key of the per-invite limiter
            raise NotFound("unknown invite link")

    def _check_member_signature(
        self, space_id: str, key: bytes, signature: bytes, purpose: str = "member"
    ) -> None:
        statement = auth_statement(self.origin, purpose, space_id, self.nonce)
        if not verify_signature(key, statement, signature):
            raise Unauthenticated("the challenge signature does not verify")

    def _bind(self, space_id: str, member: bytes) -> None:
        self.subscriber = Subscriber(
            space_id, member, max_bytes=self.config.limits.max_queued_bytes_per_connection
        )
        self.app[HUB].add(self.subscriber)

    async def _dispatch(self, message: ClientMessage) -> msgspec.Struct:
        assert self.subscriber is not None
        route = self.app[ROUTES].get(type(message))
        try:
            if route is None:
                raise InvalidMessage(f"unexpected {type(message).__name__}")
            return await route(Caller(self.app, self.subscriber), message)
        except ProtocolError as exc:
            if exc.code == ErrorCode.RATE_LIMITED:
                self.app[COUNTERS].refused(type(message).__name__)
            return Error(message.id, exc.code, exc.message)
        except Exception as exc:
            return self._unavailable(message.id, exc)

    def _unavailable(self, request_id: int, exc: Exception) -> Error:
        """A lost database is a clear ``unavailable`` answer (the session goes on and the
        server reconnects by itself); any other failure is a bug and ends the session."""
        unavailable = self.app[STORES].unavailable(exc)
        if unavailable is None:
            raise exc
        _log_unreachable(exc)
        return Error(request_id, unavailable.code, unavailable.message)

    def _reply(self, reply: msgspec.Struct) -> None:
        assert self.subscriber is not None
        self.subscriber.push(encoder.encode(reply))

    async def _send_direct(self, reply: msgspec.Struct) -> None:
        if not self.ws.closed:
            await self.ws.send_bytes(encoder.encode(reply))

    async def _write_loop(self, subscriber: Subscriber) -> None:
        try:
            while (frame := await subscriber.pop()) is not None:
                await self.ws.send_bytes(frame)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            subscriber.closed = True
            await self.ws.close()

    def take_token(self) -> bool:
        return self.bucket.take(asyncio.get_running_loop().time())


class ClientMessageIterator:
    """Decoded client messages; bad frames are answered with an error and skipped."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def __aiter__(self) -> ClientMessageIterator:
        return self

    async def __anext__(self) -> ClientMessage:
        session = self.session
        while True:
            msg = await session.ws.receive()
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED):
                raise StopAsyncIteration
            if msg.type == WSMsgType.ERROR:
                # Far above the limit (or a broken frame): aiohttp has closed with 1009/1002.
                raise StopAsyncIteration
            if not session.take_token():
                session.app[COUNTERS].refused("request_rate")
                await self._error(RateLimited("too many requests; slow down"))
                continue
            if msg.type != WSMsgType.BINARY:
                await self._error(InvalidMessage("expected a binary MessagePack frame"))
                continue
            limit = session.config.limits.max_message_bytes
            if len(msg.data) > limit:
                await self._error(TooLarge(f"messages are limited to {limit} bytes"))
                continue
            try:
                message: ClientMessage = client_decoder.decode(msg.data)
                return message
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                await self._error(InvalidMessage(f"invalid message: {exc}"))

    async def _error(self, error: ProtocolError) -> None:
        reply = Error(None, error.code, error.message)
        if self.session.subscriber is not None:
            self.session._reply(reply)
        else:
            await self.session._send_direct(reply)


def request_origin(request: web.Request, config: Config) -> str:
    """The origin clients sign challenges for: the configured public URL, else Host."""
    if config.server.public_url:
        return config.server.public_url.rstrip("/")
    return f"{request.scheme}://{request.host}"


async def websocket(request: web.Request) -> web.WebSocketResponse:
    config = request.app[CONFIG]
    # aiohttp drops the connection above its own limit; up to 4x ours we answer too_large
    # and keep the session, so a client learns why instead of seeing a dead socket.
    ws = web.WebSocketResponse(max_msg_size=4 * config.limits.max_message_bytes, heartbeat=30)
    await ws.prepare(request)
    address = address_key(
        client_address(
            request.remote or "", request.headers.get("X-Forwarded-For"), request.app[PROXIES]
        )
    )
    sockets = request.app[SOCKETS_BY_ADDRESS]
    if not sockets.acquire(address):
        # Said in the WebSocket, not as an HTTP status: browsers hide a refused handshake's.
        refused = RateLimited(
            f"too many connections from your address (at most {sockets.limit}); "
            "close some and try again"
        )
        request.app[COUNTERS].refused("websocket")
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(encoder.encode(Error(None, refused.code, refused.message)))
        await ws.close()
        return ws
    session = Session(request.app, ws, request_origin(request, config), address)
    counters = request.app[COUNTERS]
    counters.connections_opened += 1
    counters.connections_open += 1
    try:
        await session.run()
    except (ConnectionError, asyncio.CancelledError):
        pass
    except Exception:  # one broken session must never take the server down
        log.exception("session failed")
    finally:
        counters.connections_open -= 1
        sockets.release(address)
        await ws.close()
    return ws
