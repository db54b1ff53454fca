"""``salon sfu``: a standalone SFU node that serves the spaces server it registers with.

The node dials ``[sfu] server_url`` + ``/sfu/node`` (``ws://`` or ``wss://``), proves it
holds ``[sfu] node_secret`` and checks that the server does too (:mod:`sfu.control`), then
does what the server asks — connect a participant (an SDP offer in, the answer out), let
one go, kick one, mute one — and reports its load every ``load_report_seconds``, plus
participants who drop off and the active speaker of each conference.

If the connection to the server ends, every participant on the node is let go (the
server has reassigned its conferences by then) and the node dials again, backing off up
to :data:`MAX_BACKOFF` seconds. ``GET /health`` on ``[sfu] host``:``port`` answers with
the node's state and load as JSON, for operators and tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import socket
from collections.abc import Callable
from typing import Any

import aiohttp
import msgspec
from aiohttp import WSMsgType, web

from rtc.aiortc_adapter import apply_ice_env, restrict_ice_host_addresses
from sfu import control
from sfu.errors import SfuError
from sfu.node import ActiveSpeaker, NodeEvent, ParticipantLeft, SfuConfig, SfuNode

log = logging.getLogger(__name__)
MAX_BACKOFF = 10.0
HANDSHAKE_SECONDS = 10.0


class NodeConfigError(Exception):
    """The node cannot run with this configuration (one line for the user)."""


def node_url(server_url: str, secret: str) -> str:
    """The WebSocket URL a node dials; raises :class:`NodeConfigError` on a bad config."""
    if not secret:
        raise NodeConfigError("[sfu] node_secret is empty: the server would refuse this node")
    if not server_url.startswith(("http://", "https://")):
        raise NodeConfigError(f"[sfu] server_url must be http(s)://HOST:PORT, not {server_url!r}")
    return "ws" + server_url.rstrip("/")[len("http") :] + control.PATH


class StandaloneNode:
    """One node process: the SFU, its link to the server, and its health endpoint."""

    def __init__(
        self,
        server_url: str,
        secret: str,
        name: str,
        report_seconds: float = 1.0,
        public_address: str = "",
    ) -> None:
        self.url = node_url(server_url, secret)
        self.secret = secret
        self.name = name
        self.report_seconds = report_seconds
        self.node = SfuNode(SfuConfig(public_address=public_address), on_event=self._on_event)
        self.registered = False
        self.registrations = 0
        self._send: Callable[[msgspec.Struct], None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- health ---------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        stats = self.node.stats()
        conferences = stats["conferences"]
        return {
            "status": "ok",
            "name": self.name,
            "registered": self.registered,
            "registrations": self.registrations,
            "load": self.node.load(),
            "conferences": len(conferences),
            "participants": sum(len(c["participants"]) for c in conferences.values()),
            "packets_in": stats["packets_in"],
            "packets_out": stats["packets_out"],
        }

    # -- the link to the server ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay registered (reconnecting as needed) until ``stop`` is set."""
        backoff = 0.5
        async with aiohttp.ClientSession() as http:
            while not stop.is_set():
                try:
                    await self._session(http, stop)
                    backoff = 0.5
                except control.ChannelError as exc:
                    log.warning("the server refused this node: %s", exc)
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    log.info("cannot reach the spaces server (%s); retrying", type(exc).__name__)
                finally:
                    self.registered = False
                    self._send = None
                    await self._reset()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
        await self.node.close()

    async def _reset(self) -> None:
        """Let every participant go: without the server, nobody can moderate them."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.node.close()

    async def _session(self, http: aiohttp.ClientSession, stop: asyncio.Event) -> None:
        async with http.ws_connect(self.url, max_msg_size=control.MAX_FRAME, heartbeat=15) as ws:
            codec = await self._handshake(ws)
            self.registered = True
            self.registrations += 1
            print(f"registered with {self.url} as {self.name}", flush=True)
            send_lock = asyncio.Lock()
            outbox: asyncio.Queue[msgspec.Struct] = asyncio.Queue()

            async def writer() -> None:
                while True:
                    message = await outbox.get()
                    async with send_lock:
                        await ws.send_bytes(codec.seal(message))

            self._send = outbox.put_nowait
            tasks = [
                asyncio.create_task(writer()),
                asyncio.create_task(self._report_loop()),
                asyncio.create_task(stop.wait()),
            ]
            reader = asyncio.create_task(self._read(ws, codec))
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

    async def _read(self, ws: aiohttp.ClientWebSocketResponse, codec: control.ChannelCodec) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            request = codec.open_request(msg.data)
            task = asyncio.create_task(self._serve(request))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _serve(self, request: control.ServerToNode) -> None:
        reply: msgspec.Struct
        try:
            if isinstance(request, control.NodeJoin):
                sdp = await self.node.join(
                    request.conference,
                    request.participant,
                    request.sdp,
                    sender_index=request.index,
                )
                reply = control.NodeAnswer(request.id, sdp)
            else:
                if isinstance(request, control.NodeLeave):
                    await self.node.leave(request.conference, request.participant)
                elif isinstance(request, control.NodeKick):
                    await self.node.kick(request.conference, request.participant)
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
        self._post(reply)

    def _post(self, message: msgspec.Struct) -> None:
        if self._send is not None:
            self._send(message)

    async def _report_loop(self) -> None:
        while True:
            health = self.health()
            self._post(
                control.NodeLoad(
                    health["load"],
                    health["conferences"],
                    health["participants"],
                    health["packets_in"],
                    health["packets_out"],
                )
            )
            await asyncio.sleep(self.report_seconds)

    def _on_event(self, event: NodeEvent) -> None:
        if isinstance(event, ParticipantLeft):
            self._post(control.NodeLeft(event.conference_id, event.participant_id, event.reason))
        elif isinstance(event, ActiveSpeaker):
            self._post(control.NodeSpeaker(event.conference_id, event.participant_id or ""))


async def run_standalone(
    server_url: str,
    secret: str,
    host: str,
    port: int,
    name: str = "",
    ice_hosts: list[str] | None = None,
    report_seconds: float = 1.0,
    public_address: str = "",
    metrics_token: str | None = None,
) -> None:
    """``salon sfu``: serve ``/health`` (and ``/metrics`` unless ``metrics_token`` is None:
    ``[metrics] enabled``), register, run until SIGINT/SIGTERM."""
    node_url(server_url, secret)  # a bad config fails before anything starts
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
