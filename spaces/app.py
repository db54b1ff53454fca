"""Building the spaces server's aiohttp app, and running it (``salon serve``).

:func:`build_app` puts every shared service under its key (:mod:`spaces.services`) — the
config, the hub, membership, the limiters and the stores handed in — then installs the
handlers (:mod:`spaces.handlers`). :func:`serve` builds the stores from ``[storage] url``
(:func:`spaces.storage.engines.stores_for`), so no handler ever builds one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from protocol.wire import SessionClosed
from spaces.config import Config
from spaces.counters import Counters
from spaces.events import RECORDS
from spaces.handlers.call_media import install_call_media
from spaces.handlers.chat import install_chat
from spaces.handlers.conference import install_conferences
from spaces.handlers.ice import install_ice
from spaces.handlers.membership import MEMBERSHIP_ROUTES
from spaces.handlers.ops import install_ops, migrating_app
from spaces.handlers.session import websocket
from spaces.handlers.webapp import install_webapp
from spaces.hub import Hub
from spaces.limits import (
    ConcurrencyLimiter,
    KeyedLimiter,
    Network,
    address_key,
    is_trusted,
    trusted_networks,
)
from spaces.membership import Membership
from spaces.services import (
    ATTEMPTS_BY_ADDRESS,
    ATTEMPTS_BY_INVITE,
    CHAT_STORE,
    CONFERENCE_STORE,
    CONFIG,
    COUNTERS,
    CREATIONS_BY_ADDRESS,
    EVENTS,
    HUB,
    MEMBERSHIP,
    PROXIES,
    ROUTES,
    SOCKETS_BY_ADDRESS,
    SPACE_STORE,
    STORES,
    STORY_STAGING,
)
from spaces.storage.engines import stores_for
from spaces.storage.interfaces import Stores
from spaces.storage.staging import MemoryStoryStaging

log = logging.getLogger(__name__)
SWEEP_SECONDS = 60.0


def build_app(config: Config, stores: Stores) -> web.Application:
    """The app, with ``stores`` (not yet open) as its storage: opened at start-up, the main
    store first (it migrates), and closed at clean-up after every service has stopped."""
    app = web.Application(client_max_size=config.limits.max_message_bytes)
    counters = Counters()
    hub = Hub(counters)
    loop_time = asyncio.get_event_loop().time
    limits = config.limits
    app[CONFIG] = config
    app[COUNTERS] = counters
    app[ROUTES] = dict(MEMBERSHIP_ROUTES)
    app[HUB] = hub
    app[STORES] = stores
    app[SPACE_STORE] = stores.spaces
    app[CHAT_STORE] = stores.chat
    app[CONFERENCE_STORE] = stores.conference
    app[STORY_STAGING] = MemoryStoryStaging(limits)
    app[MEMBERSHIP] = membership = Membership(stores.spaces, config, hub)
    app[EVENTS] = events = stores.events
    events.subscribe(RECORDS, membership.remote_records)
    events.on_resync(membership.resync)
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
    app[PROXIES] = trusted_networks(config.server.trusted_proxies)
    app.router.add_get("/ws", websocket)
    install_webapp(app, config)  # /, /join/<id>, /space/..., /assets/...; headers on all

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await stores.open()
        sweeper = asyncio.create_task(_sweep(app[MEMBERSHIP]))
        yield
        sweeper.cancel()
        hub.close_all(SessionClosed("shutdown"))
        await asyncio.sleep(0.05)  # let writers flush the goodbye
        await stores.close()

    app.cleanup_ctx.append(lifecycle)

    async def end_sessions(app: web.Application) -> None:
        # aiohttp waits (up to 60 s) for open handlers before cleanup runs: end them first.
        hub.close_all(SessionClosed("shutdown"))

    app.on_shutdown.append(end_sessions)
    install_chat(app)  # after the stores' context: starts after it, stops before
    install_conferences(app)  # likewise
    install_call_media(app)  # the SFU: after conferences, which it follows
    install_ice(app)

    async def listen(app: web.Application) -> AsyncIterator[None]:
        # Last: every service has subscribed; stops first, before any of them.
        await events.start()
        yield
        await events.stop()

    app.cleanup_ctx.append(listen)
    install_ops(app)  # /health, /ready: ready once every context above has started
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


def cap_connections(
    server: web.Server,
    limit: int,
    proxies: tuple[Network, ...] = (),
    counters: Counters | None = None,
) -> ConcurrencyLimiter:
    """Close, at once, a TCP connection from an address already holding ``limit``.

    The WebSocket cap counts upgraded connections only: without this one address could hold
    any number of half-sent HTTP requests (a slowloris) until aiohttp's keep-alive timeout.
    aiohttp tells its ``Server`` of every connection made and lost; both are wrapped here.
    A trusted proxy (``proxies``) carries every client's connections and is not capped.
    """
    limiter = ConcurrencyLimiter(limit)
    keys: dict[object, str] = {}
    made, lost = server.connection_made, server.connection_lost

    def connection_made(handler: Any, transport: asyncio.Transport) -> None:
        made(handler, transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else ""
        if is_trusted(address, proxies):
            return
        key = address_key(address)
        if limiter.acquire(key):
            keys[handler] = key
        else:
            if counters is not None:
                counters.refused("tcp_connection")
            transport.close()  # aiohttp then sees the connection lost, as any other

    def connection_lost(handler: Any, exc: BaseException | None = None) -> None:
        lost(handler, exc)
        key = keys.pop(handler, None)
        if key is not None:
            limiter.release(key)

    server.connection_made = connection_made  # type: ignore[method-assign]
    server.connection_lost = connection_lost  # type: ignore[method-assign]
    return limiter


MIGRATING_NOTICE_SECONDS = 0.5


LISTEN_BACKLOG = 4096  # the kernel caps it at net.core.somaxconn


async def migrate(config: Config) -> int:
    """Apply the database's migrations while a placeholder answers ``/ready`` and
    ``/health`` with 503 on the server's port; returns the port it bound (``port = 0``
    picks one, which the server then keeps)."""
    runner = web.AppRunner(migrating_app(), access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.server.host, config.server.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        shown_host = f"[{host}]" if ":" in host else host
        stores = stores_for(config)
        opening = asyncio.create_task(stores.open())  # applies the pending migrations
        done, _ = await asyncio.wait({opening}, timeout=MIGRATING_NOTICE_SECONDS)
        if not done:
            # Said only when it takes a while (a quick failure stays one error line), and
            # on stderr: "listening on URL" stays the first line of stdout.
            print(f"migrating; readiness at http://{shown_host}:{port}/ready", file=sys.stderr)
        await opening
        await stores.close()
    finally:
        await runner.cleanup()
    return int(port)


async def serve(config: Config) -> None:
    """Run until SIGINT/SIGTERM; prints ``listening on URL`` once ready."""
    config.server.port = await migrate(config)
    app = build_app(config, stores_for(config))
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    assert runner.server is not None
    cap_connections(
        runner.server,
        config.limits.websockets_per_address + CONNECTION_SLACK,
        app[PROXIES],
        app[COUNTERS],
    )
    # A deep accept queue: after an instance dies, its clients reconnect to the others all
    # at once, and past aiohttp's default of 128 the kernel drops SYNs and they wait for
    # its 1 s retry (bench-scale: ~390 overflows with 500 followers; none at 4096).
    site = web.TCPSite(runner, config.server.host, config.server.port, backlog=LISTEN_BACKLOG)
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
