"""``salon sfu``: a standalone SFU node that serves the spaces servers it registers with.

The node dials ``/sfu/node`` (``ws://`` or ``wss://``) on each of ``[sfu] server_urls``
(or the one ``[sfu] server_url``): every ``salon serve`` instance of a deployment, since
participants of one call may be connected to different instances (issue 11). On each
channel it proves it holds ``[sfu] node_secret`` and checks that the instance does too
(:mod:`sfu.control`: each instance is authenticated on its own, with its own session
key), then does what the instance asks — connect a participant (an SDP offer in, the
answer out), let one go, kick one, mute one — and reports its load every
``load_report_seconds`` (the same node-wide figures on every channel), plus participants
who drop off and the active speaker of each conference.

Conferences are indexed globally: the instances agree on a call's conference id (the
calls' ordered log, :mod:`spaces.handlers.call_media`), so participants joined through
different instances' channels share one conference. Each participant belongs to the
channel that joined it, and a channel may let go, kick or mute only its own participants
(anything else is answered ``not_found``, as for a participant that does not exist) and
cannot take over one another channel joined: an instance cannot make the node act on
another instance's participants. A participant's departure is told to its own channel;
the active speaker to every channel with participants in that conference.

If a channel ends (the instance died, or shut down), its participants are *orphaned*
rather than let go: their media keeps flowing for ``[sfu] orphan_grace_seconds`` while
they rejoin through another instance (as new participants: a join is a new seat), and
then they are let go. Meanwhile any instance's channel may let go, kick or mute an orphan
(an instance that survives enforces its call's moderation), and none may take it over.
Each channel dials again on its own, backing off up to :data:`MAX_BACKOFF` seconds.
``GET /health`` on ``[sfu] host``:``port`` answers with the node's state and load as JSON,
for operators and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec
from aiohttp import WSMsgType, web

from rtc.aiortc_adapter import apply_ice_env, restrict_ice_host_addresses
from sfu import control
from sfu.errors import NotFound, SfuError
from sfu.node import ActiveSpeaker, NodeEvent, ParticipantLeft, SfuConfig, SfuNode

log = logging.getLogger(__name__)
MAX_BACKOFF = 10.0
HANDSHAKE_SECONDS = 10.0
ORPHAN_GRACE = 30.0
Key = tuple[str, str]  # (conference, participant)


class NodeConfigError(Exception):
    """The node cannot run with this configuration (one line for the user)."""


def node_url(server_url: str, secret: str) -> str:
    """The WebSocket URL a node dials; raises :class:`NodeConfigError` on a bad config."""
    if not secret:
        raise NodeConfigError("[sfu] node_secret is empty: the server would refuse this node")
    if not server_url.startswith(("http://", "https://")):
        raise NodeConfigError(f"[sfu] server_url must be http(s)://HOST:PORT, not {server_url!r}")
    return "ws" + server_url.rstrip("/")[len("http") :] + control.PATH


@dataclass(eq=False)
class _Link:
    """The channel to one spaces server instance."""

    url: str
    registered: bool = False
    registrations: int = 0
    send: Callable[[msgspec.Struct], None] | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class StandaloneNode:
    """One node process: the SFU, its links to the servers, and its health endpoint."""

    def __init__(
        self,
        server_url: str | list[str],
        secret: str,
        name: str,
        report_seconds: float = 1.0,
        public_address: str = "",
        orphan_grace: float = ORPHAN_GRACE,
    ) -> None:
        urls = [server_url] if isinstance(server_url, str) else list(server_url)
        if not urls:
            raise NodeConfigError("[sfu] server_urls is empty: no server to register with")
        self.links = [_Link(node_url(url, secret)) for url in dict.fromkeys(urls)]
        self.url = self.links[0].url
        self.secret = secret
        self.name = name
        self.report_seconds = report_seconds
        self.orphan_grace = orphan_grace
        self.node = SfuNode(SfuConfig(public_address=public_address), on_event=self._on_event)
        self._owners: dict[Key, _Link] = {}  # who joined each participant
        self._orphans: dict[Key, float] = {}  # participants whose link ended -> let go at
        self._expiry: asyncio.Task[None] | None = None

    @property
    def registered(self) -> bool:
        return any(link.registered for link in self.links)

    @property
    def registrations(self) -> int:
        return sum(link.registrations for link in self.links)

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        stats = self.node.stats()
        conferences = stats["conferences"]
        return {
            "status": "ok",
            "name": self.name,
            "registered": self.registered,
            "registrations": self.registrations,
            "servers": [{"url": link.url, "registered": link.registered} for link in self.links],
            "load": self.node.load(),
            "conferences": len(conferences),
            "participants": sum(len(c["participants"]) for c in conferences.values()),
            "orphans": len(self._orphans),
            "packets_in": stats["packets_in"],
            "packets_out": stats["packets_out"],
        }

    # -- the links to the servers ----------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay registered with every server (reconnecting as needed) until ``stop`` is set."""
        try:
            async with aiohttp.ClientSession() as http:
                await asyncio.gather(*(self._keep(link, http, stop) for link in self.links))
        finally:
            if self._expiry is not None:
                self._expiry.cancel()
                await asyncio.gather(self._expiry, return_exceptions=True)
            await self.node.close()

    async def _keep(self, link: _Link, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                await self._session(link, http, stop)
                backoff = 0.5
            except control.ChannelError as exc:
                log.warning("the server refused this node: %s", exc)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.info("cannot reach %s (%s); retrying", link.url, type(exc).__name__)
            finally:
                link.registered = False
                link.send = None
                await self._link_ended(link)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _link_ended(self, link: _Link) -> None:
        """Its requests in flight stop; its participants are orphaned for the grace."""
        for task in list(link.tasks):
            task.cancel()
        await asyncio.gather(*link.tasks, return_exceptions=True)
        until = time.monotonic() + self.orphan_grace
        orphaned = [key for key, owner in self._owners.items() if owner is link]
        for key in orphaned:
            del self._owners[key]
            self._orphans[key] = until
        if orphaned:
            log.info(
                "%d participants orphaned: kept %g s for them to rejoin elsewhere",
                len(orphaned),
                self.orphan_grace,
            )
            if self._expiry is None or self._expiry.done():
                self._expiry = asyncio.create_task(self._expire())

    async def _expire(self) -> None:
        while self._orphans:
            now = time.monotonic()
            await asyncio.sleep(max(0.05, min(self._orphans.values()) - now))
            now = time.monotonic()
            for key, until in list(self._orphans.items()):
                if until <= now:
                    del self._orphans[key]
                    with contextlib.suppress(SfuError):
                        await self.node.leave(*key)

    async def _session(self, link: _Link, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        async with http.ws_connect(link.url, max_msg_size=control.MAX_FRAME, heartbeat=15) as ws:
            codec = await self._handshake(ws)
            link.registered = True
            link.registrations += 1
            print(f"registered with {link.url} as {self.name}", flush=True)
            send_lock = asyncio.Lock()
            outbox: asyncio.Queue[msgspec.Struct] = asyncio.Queue()

            async def writer() -> None:
                while True:
                    message = await outbox.get()
                    async with send_lock:
                        await ws.send_bytes(codec.seal(message))

            link.send = outbox.put_nowait
            tasks = [
                asyncio.create_task(writer()),
                asyncio.create_task(self._report_loop(link)),
                asyncio.create_task(stop.wait()),
            ]
            reader = asyncio.create_task(self._read(link, ws, codec))
            try:
                done, _ = await asyncio.wait([reader, *tasks], return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    failure = task.exception()
                    if failure is not None:
                        raise failure
            finally:
                for task in [reader, *tasks]:
                    task.cancel()
                await asyncio.gather(reader, *tasks, return_exceptions=True)

    async def _handshake(self, ws: aiohttp.ClientWebSocketResponse) -> control.ChannelCodec:
        challenge = await self._handshake_message(ws)
        if not isinstance(challenge, control.NodeChallenge):
            raise control.ChannelError("expected the server's challenge")
        control.check_nonce(challenge.nonce)
        nonce = secrets.token_bytes(control.NONCE_LEN)
        mac = control.hello_mac(self.secret, challenge.nonce, nonce, self.name)
        await ws.send_bytes(control.encoder.encode(control.NodeHello(self.name, nonce, mac)))
        welcome = await self._handshake_message(ws)
        if isinstance(welcome, control.NodeRefused):
            raise control.ChannelError(welcome.reason)
        if not isinstance(welcome, control.NodeWelcome):
            raise control.ChannelError("expected the server's welcome")
        expected = control.welcome_mac(self.secret, challenge.nonce, nonce, self.name)
        control.verify(expected, welcome.mac, "the server's proof")
        key = control.session_key(self.secret, challenge.nonce, nonce, self.name)
        return control.ChannelCodec(key, "node")

    @staticmethod
    async def _handshake_message(ws: aiohttp.ClientWebSocketResponse) -> control.Handshake:
        msg = await asyncio.wait_for(ws.receive(), HANDSHAKE_SECONDS)
        if msg.type != WSMsgType.BINARY:
            raise control.ChannelError("the server closed the connection during the handshake")
        try:
            message: control.Handshake = control.handshake_decoder.decode(msg.data)
        except msgspec.DecodeError as exc:
            raise control.ChannelError(f"bad handshake message: {exc}") from None
        return message

    async def _read(
        self, link: _Link, ws: aiohttp.ClientWebSocketResponse, codec: control.ChannelCodec
    ) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            request = codec.open_request(msg.data)
            task = asyncio.create_task(self._serve(link, request))
            link.tasks.add(task)
            task.add_done_callback(link.tasks.discard)

    def _check_owner(self, link: _Link, key: Key, joining: bool) -> None:
        """A link acts on its own participants, and on orphans but to take them over."""
        owner = self._owners.get(key)
        if owner is link:
            return
        orphan = owner is None and key in self._orphans
        if joining and owner is None and not orphan:
            return  # a new participant
        if orphan and not joining:
            return
        if joining:  # an orphan rejoins as a new participant (a new seat), never as itself
            raise NotFound("that participant is connected through another server")
        raise NotFound(f"no participant {key[1]!r} in that conference")

    async def _serve(self, link: _Link, request: control.ServerToNode) -> None:
        reply: msgspec.Struct
        key = (request.conference, request.participant)
        try:
            self._check_owner(link, key, isinstance(request, control.NodeJoin))
            if isinstance(request, control.NodeJoin):
                self._owners[key] = link  # before the join: its "replaced" event is ours
                try:
                    sdp = await self.node.join(
                        request.conference,
                        request.participant,
                        request.sdp,
                        sender_index=request.index,
                    )
                except BaseException:
                    if request.participant not in self.node.participants(request.conference):
                        self._owners.pop(key, None)
                    raise
                reply = control.NodeAnswer(request.id, sdp)
            else:
                if isinstance(request, control.NodeLeave):
                    await self.node.leave(request.conference, request.participant)
                elif isinstance(request, control.NodeKick):
                    await self.node.kick(request.conference, request.participant)
                elif isinstance(request, control.NodeView):
                    if self._owners.get(key) is not link:  # a view is its owner's alone
                        raise NotFound(f"no participant {request.participant!r} of yours")
                    self.node.set_view(request.conference, request.participant, request.heights)
                else:
                    self.node.set_muted(
                        request.conference, request.participant, request.muted, request.kind
                    )
                reply = control.NodeDone(request.id)
        except SfuError as exc:
            reply = control.NodeError(request.id, exc.code, exc.message)
        except Exception as exc:  # one bad request must not end the node
            log.exception("SFU request failed")
            reply = control.NodeError(request.id, "internal", type(exc).__name__)
        self._post(link, reply)

    @staticmethod
    def _post(link: _Link, message: msgspec.Struct) -> None:
        if link.send is not None:
            link.send(message)

    async def _report_loop(self, link: _Link) -> None:
        while True:
            health = self.health()
            self._post(
                link,
                control.NodeLoad(
                    health["load"],
                    health["conferences"],
                    health["participants"],
                    health["packets_in"],
                    health["packets_out"],
                ),
            )
            await asyncio.sleep(self.report_seconds)

    def _on_event(self, event: NodeEvent) -> None:
        if isinstance(event, ParticipantLeft):
            key = (event.conference_id, event.participant_id)
            owner = self._owners.get(key)
            if event.reason != "replaced":  # a new connection of the same participant stays
                self._owners.pop(key, None)
                self._orphans.pop(key, None)
            if owner is not None:
                self._post(owner, control.NodeLeft(*key, event.reason))
        elif isinstance(event, ActiveSpeaker):
            message = control.NodeSpeaker(event.conference_id, event.participant_id or "")
            links = {o for (c, _), o in self._owners.items() if c == event.conference_id}
            for link in links:
                self._post(link, message)


async def run_standalone(
    server_url: str | list[str],
    secret: str,
    host: str,
    port: int,
    name: str = "",
    ice_hosts: list[str] | None = None,
    report_seconds: float = 1.0,
    public_address: str = "",
    metrics_token: str | None = None,
    orphan_grace: float = ORPHAN_GRACE,
) -> None:
    """``salon sfu``: serve ``/health`` (and ``/metrics`` unless ``metrics_token`` is None:
    ``[metrics] enabled``), register with every server, run until SIGINT/SIGTERM."""
    urls = [server_url] if isinstance(server_url, str) else server_url
    if not urls:
        raise NodeConfigError("[sfu] server_urls is empty: no server to register with")
    for url in urls:
        node_url(url, secret)  # a bad config fails before anything starts
    if ice_hosts:
        restrict_ice_host_addresses(ice_hosts)
    apply_ice_env()  # $SALON_ICE_HOSTS wins
    app = web.Application()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    holder: dict[str, StandaloneNode] = {}

    async def health(request: web.Request) -> web.Response:
        node = holder.get("node")
        return web.json_response(node.health() if node else {"status": "starting"})

    app.router.add_get("/health", health)
    if metrics_token is not None:
        from prometheus_client import CollectorRegistry

        from sfu.metrics import SfuCollector, metrics_response

        registry = CollectorRegistry(auto_describe=True)
        registry.register(SfuCollector(lambda: [holder["node"].node] if "node" in holder else []))
        token = metrics_token

        async def metrics(request: web.Request) -> web.Response:
            return metrics_response(request, registry, token)

        app.router.add_get("/metrics", metrics)

    async def no_version(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "salon"

    app.on_response_prepare.append(no_version)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_host, bound_port = runner.addresses[0][:2]
    node = StandaloneNode(
        server_url,
        secret,
        name or f"{socket.gethostname()}:{bound_port}",
        report_seconds,
        public_address,
        orphan_grace,
    )
    holder["node"] = node
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    print(f"listening on http://{shown}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.run(stop)
    finally:
        await runner.cleanup()
