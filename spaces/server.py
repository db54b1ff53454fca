"""The aiohttp edge of the spaces server: routes, the WebSocket session loop, start-up.

Handlers here only parse, call :class:`~spaces.membership.Membership` and serialise. Nothing
is logged per request: no paths (invite ids), no client addresses, no names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from aiohttp import WSMsgType, web

from protocol.errors import (
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
    Append,
    Appended,
    Authenticate,
    Challenge,
    ClientMessage,
    CreateSpace,
    Done,
    DropEnvelope,
    EnvelopeHolders,
    Envelopes,
    Error,
    GetEnvelopeHolders,
    GetEnvelopes,
    GetRecords,
    InviteOpened,
    Invites,
    Joined,
    JoinSpace,
    ListInvites,
    OpenInvite,
    PutSeals,
    Records,
    SessionClosed,
    Welcome,
    auth_statement,
    client_decoder,
    encoder,
)
from spaces.call_media import install_call_media
from spaces.chat import install_chat
from spaces.conference_routes import install_conferences
from spaces.config import Config
from spaces.hub import Hub, Subscriber
from spaces.ice import install_ice
from spaces.limits import ConcurrencyLimiter, KeyedLimiter, TokenBucket, address_key
from spaces.membership import Membership
from spaces.sqlite_store import SqliteStore
from spaces.storage import Store
from spaces.webapp import install_webapp

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0

# The app's shared objects, typed keys for aiohttp's app registry.
CONFIG = web.AppKey("config", Config)
MEMBERSHIP = web.AppKey("membership", Membership)
HUB = web.AppKey("hub", Hub)
ATTEMPTS_BY_ADDRESS = web.AppKey("attempts_by_address", KeyedLimiter)
ATTEMPTS_BY_INVITE = web.AppKey("attempts_by_invite", KeyedLimiter)
CREATIONS_BY_ADDRESS = web.AppKey("creations_by_address", KeyedLimiter)
SOCKETS_BY_ADDRESS = web.AppKey("sockets_by_address", ConcurrencyLimiter)


@dataclass(frozen=True)
class Caller:
    """Who sent a member request: the app's services and the session's membership."""

    app: web.Application
    subscriber: Subscriber

    @property
    def space_id(self) -> str:
        return self.subscriber.space_id

    @property
    def member(self) -> bytes:
        return self.subscriber.member


# A route answers one member request type; feature modules add theirs with add_routes().
Route = Callable[[Caller, Any], Awaitable[msgspec.Struct]]
ROUTES = web.AppKey("routes", dict[type, Route])


def add_routes(app: web.Application, routes: dict[type, Route]) -> None:
    app[ROUTES].update(routes)


async def get_records(caller: Caller, message: GetRecords) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    (await m.roster(caller.space_id)).active(caller.member)
    page, roster = await m.records_page(caller.space_id, message.after)
    return Records(message.id, page, roster.head_seq, roster.head_hash)


async def append(caller: Caller, message: Append) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    head = await m.append(
        caller.space_id, caller.member, message.records, message.envelopes, message.seals
    )
    return Appended(message.id, head)


async def list_invites(caller: Caller, message: ListInvites) -> msgspec.Struct:
    statuses = await caller.app[MEMBERSHIP].invite_statuses(caller.space_id, caller.member)
    return Invites(message.id, statuses)


async def get_envelopes(caller: Caller, message: GetEnvelopes) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    found = await m.envelopes(caller.space_id, caller.member, message.scope, message.min_epoch)
    return Envelopes(message.id, found)


async def drop_envelope(caller: Caller, message: DropEnvelope) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    await m.drop_envelope(caller.space_id, caller.member, message.scope, message.epoch)
    return Done(message.id)


async def envelope_holders(caller: Caller, message: GetEnvelopeHolders) -> msgspec.Struct:
    m = caller.app[MEMBERSHIP]
    holders = await m.envelope_holders(caller.space_id, caller.member, message.scope, message.epoch)
    return EnvelopeHolders(message.id, sorted(holders))


async def put_seals(caller: Caller, message: PutSeals) -> msgspec.Struct:
    await caller.app[MEMBERSHIP].put_seals(caller.space_id, caller.member, message.seals)
    return Done(message.id)


MEMBERSHIP_ROUTES: dict[type, Route] = {
    GetRecords: get_records,
    Append: append,
    ListInvites: list_invites,
    GetEnvelopes: get_envelopes,
    GetEnvelopeHolders: envelope_holders,
    DropEnvelope: drop_envelope,
    PutSeals: put_seals,
}


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
                await self._send_direct(Error(message.id, exc.code, exc.message))
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
            return Error(message.id, exc.code, exc.message)

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


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


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
    address = address_key(request.remote or "")
    sockets = request.app[SOCKETS_BY_ADDRESS]
    if not sockets.acquire(address):
        # Said in the WebSocket, not as an HTTP status: browsers hide a refused handshake's.
        refused = RateLimited(
            f"too many connections from your address (at most {sockets.limit}); "
            "close some and try again"
        )
        with contextlib.suppress(ConnectionError):
            await ws.send_bytes(encoder.encode(Error(None, refused.code, refused.message)))
        await ws.close()
        return ws
    session = Session(request.app, ws, request_origin(request, config), address)
    try:
        await session.run()
    except (ConnectionError, asyncio.CancelledError):
        pass
    except Exception:  # one broken session must never take the server down
        log.exception("session failed")
    finally:
        sockets.release(address)
        await ws.close()
    return ws


def build_app(config: Config, store: Store) -> web.Application:
    app = web.Application(client_max_size=config.limits.max_message_bytes)
    hub = Hub()
    loop_time = asyncio.get_event_loop().time
    limits = config.limits
    app[CONFIG] = config
    app[ROUTES] = dict(MEMBERSHIP_ROUTES)
    app[HUB] = hub
    app[MEMBERSHIP] = Membership(store, config, hub)
    app[ATTEMPTS_BY_ADDRESS] = KeyedLimiter(
        limits.join_attempts_per_minute_per_address / 60,
        limits.join_attempts_per_minute_per_address,
        loop_time,
    )
    app[ATTEMPTS_BY_INVITE] = KeyedLimiter(
        limits.join_attempts_per_minute_per_invite / 60,
        limits.join_attempts_per_minute_per_invite,
        loop_time,
    )
    app[CREATIONS_BY_ADDRESS] = KeyedLimiter(
        limits.space_creations_per_hour_per_address / 3600,
        limits.space_creations_per_hour_per_address,
        loop_time,
    )
    app[SOCKETS_BY_ADDRESS] = ConcurrencyLimiter(limits.websockets_per_address)
    app.router.add_get("/health", health)
    app.router.add_get("/ws", websocket)
    install_webapp(app, config)  # /, /join/<id>, /space/..., /assets/...; headers on all

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await store.open()
        sweeper = asyncio.create_task(_sweep(app[MEMBERSHIP]))
        yield
        sweeper.cancel()
        hub.close_all(SessionClosed("shutdown"))
        await asyncio.sleep(0.05)  # let writers flush the goodbye
        await store.close()

    app.cleanup_ctx.append(lifecycle)

    async def end_sessions(app: web.Application) -> None:
        # aiohttp waits (up to 60 s) for open handlers before cleanup runs: end them first.
        hub.close_all(SessionClosed("shutdown"))

    app.on_shutdown.append(end_sessions)
    install_chat(app, store)  # after the store's context: opens after it, closes before
    install_conferences(app, store)  # likewise
    install_call_media(app)  # the SFU: after conferences, which it follows
    install_ice(app)
    return app


async def _sweep(membership: Membership) -> None:
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            await membership.sweep_expired_invites()
        except Exception:
            log.exception("sweep failed")


# TCP connections an address may hold beyond its WebSockets (a refusal being explained,
# /health, the web app's files), before the next is closed unanswered.
CONNECTION_SLACK = 16


def cap_connections(server: web.Server, limit: int) -> ConcurrencyLimiter:
    """Close, at once, a TCP connection from an address already holding ``limit``.

    The WebSocket cap counts upgraded connections only: without this one address could hold
    any number of half-sent HTTP requests (a slowloris) until aiohttp's keep-alive timeout.
    aiohttp tells its ``Server`` of every connection made and lost; both are wrapped here.
    """
    limiter = ConcurrencyLimiter(limit)
    keys: dict[object, str] = {}
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        key = address_key(str(peer[0]) if isinstance(peer, tuple) else "")
        if limiter.acquire(key):
            keys[handler] = key
        else:
            transport.close()  # aiohttp then sees the connection lost, as any other

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        key = keys.pop(handler, None)
        if key is not None:
            limiter.release(key)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
    return limiter


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM; prints ``listening on URL`` once ready."""
    data_dir = Path(config.server.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    store = SqliteStore(data_dir / "salon.db")
    app = build_app(config, store)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    cap_connections(runner.server, config.limits.websockets_per_address + CONNECTION_SLACK)
    site = web.TCPSite(runner, config.server.host, config.server.port)
    await site.start()
    host, port = runner.addresses[0][:2]
    shown_host = f"[{host}]" if ":" in host else host
    print(f"listening on http://{shown_host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
