"""The SFU nodes a spaces server can use, and which conference runs on which.

Two kinds of node look the same to the rest of the server (:class:`NodeHandle`):

- :class:`LocalNode`: an :class:`~sfu.node.SfuNode` inside ``salon serve`` (``[sfu]
  enabled = true``, the default). It counts as one node.
- :class:`RemoteNode`: a ``salon sfu`` process that dialled ``/sfu/node`` and proved it
  holds ``[sfu] node_secret`` (handshake and per-frame MACs: :mod:`sfu.control`).

:class:`SfuRegistry` assigns each conference to a node when its first participant offers
media, by load: the node with the fewest expected subscriber streams (its own report, or
the registry's count of n·(n-1) per conference if that is higher, since a report lags),
then the fewest conferences, then by name. A conference stays on its node until the call
ends or the node goes away; then its participants are told to reconnect
(:class:`NodeEvents`) and the next offer lands on a node that is up.

Several instances (issue 11): a standalone node registers with every instance (``[sfu]
server_urls``), so each instance has its own registry of the same nodes, and each call's
node is chosen once, in the calls' ordered log (a ``place`` input, see
:mod:`spaces.handlers.call_media`): the instance that takes a call's first media offer
:meth:`chooses <SfuRegistry.choose>` among the nodes *it* has, and every instance then
:meth:`assigns <SfuRegistry.assign>` what the log says. Load reports stay per node.

Errors: :class:`SfuUnavailable` (``sfu_unavailable``: no node, or the node did not answer);
a node's refusal of an offer becomes ``invalid_message`` / ``too_large`` / ``not_found``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

import msgspec
from aiohttp import WSMsgType, web

from protocol.errors import ErrorCode, InvalidMessage, NotFound, ProtocolError, TooLarge
from sfu import control
from sfu.errors import SfuError
from sfu.node import ActiveSpeaker, NodeEvent, ParticipantLeft, SfuConfig, SfuNode
from spaces.services import CONFIG

log = logging.getLogger(__name__)
LOCAL_NAME = "local"
HANDSHAKE_SECONDS = 10.0
MAX_NAME = 64


class SfuUnavailable(ProtocolError):
    code = ErrorCode.SFU_UNAVAILABLE


def node_error(code: str, message: str) -> ProtocolError:
    """A node's refusal as the error a client gets."""
    if code == ErrorCode.TOO_LARGE:
        return TooLarge(f"the SFU refused: {message}")
    if code == ErrorCode.INVALID_SDP:
        return InvalidMessage(f"the SFU refused the offer: {message}")
    if code == ErrorCode.NOT_FOUND:
        return NotFound(f"the SFU does not know that participant: {message}")
    if code == ErrorCode.INVALID_MESSAGE:
        return InvalidMessage(f"the SFU refused: {message}")
    return SfuUnavailable(f"the SFU failed: {message}")


class NodeHandle(Protocol):
    """What the control plane asks of a node (``participant`` is a per-call number)."""

    name: str

    async def join(
        self, conference: str, participant: str, sdp: str, sender_index: int | None = None
    ) -> str: ...

    async def leave(self, conference: str, participant: str) -> None: ...

    async def kick(self, conference: str, participant: str) -> None: ...

    async def set_muted(self, conference: str, participant: str, kind: str, muted: bool) -> None:
        """Stop (or resume) forwarding what the participant publishes of ``kind``."""
        ...

    async def set_view(self, conference: str, participant: str, heights: dict[str, int]) -> None:
        """How big the participant shows each receiving slot (mid -> device px, 0: hidden)."""
        ...

    def load(self) -> int:
        """Subscriber streams routed, as the node last said."""
        ...


class NodeEvents(Protocol):
    """What the registry tells the conference side (see :mod:`spaces.handlers.call_media`)."""

    def participant_left(self, conference: str, participant: str, reason: str) -> None: ...

    def speaker(self, conference: str, participant: str | None) -> None: ...

    def node_lost(self, conferences: list[str]) -> None: ...


@dataclass
class _Entry:
    handle: NodeHandle
    conferences: dict[str, set[str]] = field(default_factory=dict)  # id -> participants

    def expected_streams(self) -> int:
        return sum(len(p) * max(len(p) - 1, 0) for p in self.conferences.values())

    def score(self) -> tuple[int, int, str]:
        load = max(self.handle.load(), self.expected_streams())
        return (load, len(self.conferences), self.handle.name)


class SfuRegistry:
    def __init__(self) -> None:
        self._nodes: dict[str, _Entry] = {}
        self._assigned: dict[str, str] = {}  # conference id -> node name
        self.events: NodeEvents | None = None
        self.sockets: set[web.WebSocketResponse] = set()  # standalone nodes' connections
        self.closing = False  # the server is shutting down: its nodes leave, nothing is lost
        self._added = asyncio.Event()  # set (and replaced) whenever a node registers

    def available(self) -> bool:
        return bool(self._nodes)

    def names(self) -> list[str]:
        return sorted(self._nodes)

    def add(self, handle: NodeHandle) -> None:
        if handle.name in self._nodes:
            raise InvalidMessage(f"an SFU node named {handle.name!r} is already registered")
        self._nodes[handle.name] = _Entry(handle)
        self._added.set()
        self._added = asyncio.Event()

    async def wait_for(self, name: str, timeout: float) -> NodeHandle | None:
        """Node ``name`` once it is registered here, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while (handle := self.handle(name)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            added = self._added
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(added.wait(), remaining)
        return handle

    def remove(self, name: str) -> None:
        """The node is gone: forget it and tell whoever had conferences on it."""
        entry = self._nodes.pop(name, None)
        if entry is None:
            return
        lost = [c for c, node in self._assigned.items() if node == name]
        for conference in lost:
            del self._assigned[conference]
        if lost and self.events is not None:
            self.events.node_lost(lost)

    def node_for(self, conference: str) -> NodeHandle:
        """The node carrying ``conference``, assigning the least loaded one if it has none."""
        name = self._assigned.get(conference)
        if name is None or name not in self._nodes:
            name = self.choose()
            self.assign(conference, name)
        return self._nodes[name].handle

    def choose(self) -> str:
        """The least loaded node registered here (raises :class:`SfuUnavailable` if none)."""
        if not self._nodes:
            raise SfuUnavailable("no SFU node is available right now")
        return min(self._nodes.values(), key=_Entry.score).handle.name

    def assign(self, conference: str, name: str) -> None:
        """``conference`` runs on node ``name`` (as the ordered log says), known here or not."""
        self.release(conference)
        self._assigned[conference] = name
        entry = self._nodes.get(name)
        if entry is not None:
            entry.conferences[conference] = set()
        log.info("conference assigned to SFU node %s", name)

    def handle(self, name: str) -> NodeHandle | None:
        entry = self._nodes.get(name)
        return entry.handle if entry is not None else None

    def assigned(self, conference: str) -> NodeHandle | None:
        """The node carrying ``conference`` now, if any (assigns none)."""
        entry = self._entry_of(conference)
        return entry.handle if entry is not None else None

    def assigned_to(self, conference: str) -> str | None:
        """The name of the node ``conference`` was assigned to, registered here or not."""
        return self._assigned.get(conference)

    def release(self, conference: str) -> None:
        name = self._assigned.pop(conference, None)
        if name is not None and name in self._nodes:
            self._nodes[name].conferences.pop(conference, None)

    def joined(self, conference: str, participant: str) -> None:
        entry = self._entry_of(conference)
        if entry is not None:
            entry.conferences.setdefault(conference, set()).add(participant)

    def left(self, conference: str, participant: str) -> None:
        entry = self._entry_of(conference)
        if entry is not None:
            entry.conferences.get(conference, set()).discard(participant)

    def _entry_of(self, conference: str) -> _Entry | None:
        name = self._assigned.get(conference)
        return self._nodes.get(name) if name is not None else None

    def snapshot(self) -> list[dict[str, object]]:
        """Per node: name, reported load, conferences and participants (for logs, tests)."""
        return [
            {
                "name": name,
                "load": entry.handle.load(),
                "conferences": len(entry.conferences),
                "participants": sum(len(p) for p in entry.conferences.values()),
            }
            for name, entry in sorted(self._nodes.items())
        ]

    # -- events from nodes -------------------------------------------------------------------

    def on_left(self, node: str, conference: str, participant: str, reason: str) -> None:
        if self._assigned.get(conference) != node:
            return  # from a conference that has moved on
        self.left(conference, participant)
        if self.events is not None:
            self.events.participant_left(conference, participant, reason)

    def on_speaker(self, node: str, conference: str, participant: str | None) -> None:
        if self._assigned.get(conference) == node and self.events is not None:
            self.events.speaker(conference, participant)


# -- the in-process node --------------------------------------------------------------------------


class LocalNode:
    """An :class:`SfuNode` on the server's own event loop."""

    def __init__(
        self, registry: SfuRegistry, name: str = LOCAL_NAME, public_address: str = ""
    ) -> None:
        self.name = name
        self._registry = registry
        self.node = SfuNode(SfuConfig(public_address=public_address), on_event=self._on_event)

    def _on_event(self, event: NodeEvent) -> None:
        if isinstance(event, ParticipantLeft):
            self._registry.on_left(
                self.name, event.conference_id, event.participant_id, event.reason
            )
        elif isinstance(event, ActiveSpeaker):
            self._registry.on_speaker(self.name, event.conference_id, event.participant_id)

    async def join(
        self, conference: str, participant: str, sdp: str, sender_index: int | None = None
    ) -> str:
        try:
            return await self.node.join(conference, participant, sdp, sender_index=sender_index)
        except SfuError as exc:
            raise node_error(exc.code, exc.message) from None

    async def leave(self, conference: str, participant: str) -> None:
        try:
            await self.node.leave(conference, participant)
        except SfuError as exc:
            raise node_error(exc.code, exc.message) from None

    async def kick(self, conference: str, participant: str) -> None:
        try:
            await self.node.kick(conference, participant)
        except SfuError as exc:
            raise node_error(exc.code, exc.message) from None

    async def set_muted(self, conference: str, participant: str, kind: str, muted: bool) -> None:
        try:
            self.node.set_muted(
                conference, participant, muted, "video" if kind == "video" else "audio"
            )
        except SfuError as exc:
            raise node_error(exc.code, exc.message) from None

    async def set_view(self, conference: str, participant: str, heights: dict[str, int]) -> None:
        try:
            self.node.set_view(conference, participant, heights)
        except SfuError as exc:
            raise node_error(exc.code, exc.message) from None

    def load(self) -> int:
        return self.node.load()

    async def close(self) -> None:
        await self.node.close()


# -- standalone nodes -----------------------------------------------------------------------------


class RemoteNode:
    """A ``salon sfu`` process on the other end of an authenticated WebSocket."""

    def __init__(
        self,
        name: str,
        ws: web.WebSocketResponse,
        codec: control.ChannelCodec,
        registry: SfuRegistry,
        timeout: float,
    ) -> None:
        self.name = name
        self.ws = ws
        self._codec = codec
        self._registry = registry
        self._timeout = timeout
        self._send_lock = asyncio.Lock()
        self._pending: dict[int, asyncio.Future[control.NodeToServer]] = {}
        self._next_id = 0
        self._load = 0
        self.reported: control.NodeLoad | None = None

    def load(self) -> int:
        return self._load

    async def send(self, message: msgspec.Struct) -> None:
        # Seal and send together: frames must leave in the order their numbers say.
        async with self._send_lock:
            await self.ws.send_bytes(self._codec.seal(message))

    async def _request(self, make: Callable[[int], msgspec.Struct]) -> control.NodeToServer:
        self._next_id += 1
        request_id = self._next_id
        future: asyncio.Future[control.NodeToServer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self.send(make(request_id))
            reply = await asyncio.wait_for(future, self._timeout)
        except (TimeoutError, ConnectionError, RuntimeError) as exc:
            raise SfuUnavailable(f"SFU node {self.name} did not answer") from exc
        finally:
            self._pending.pop(request_id, None)
        if isinstance(reply, control.NodeError):
            raise node_error(reply.code, reply.message)
        return reply

    async def join(
        self, conference: str, participant: str, sdp: str, sender_index: int | None = None
    ) -> str:
        reply = await self._request(
            lambda i: control.NodeJoin(i, conference, participant, sdp, sender_index)
        )
        if not isinstance(reply, control.NodeAnswer):
            raise SfuUnavailable(f"SFU node {self.name} answered an offer with no SDP")
        return reply.sdp

    async def leave(self, conference: str, participant: str) -> None:
        await self._request(lambda i: control.NodeLeave(i, conference, participant))

    async def kick(self, conference: str, participant: str) -> None:
        await self._request(lambda i: control.NodeKick(i, conference, participant))

    async def set_muted(self, conference: str, participant: str, kind: str, muted: bool) -> None:
        video = kind == "video"
        await self._request(
            lambda i: control.NodeMute(
                i, conference, participant, "video" if video else "audio", muted
            )
        )

    async def set_view(self, conference: str, participant: str, heights: dict[str, int]) -> None:
        await self._request(lambda i: control.NodeView(i, conference, participant, heights))

    def on_frame(self, frame: bytes) -> None:
        """One frame from the node; raises :class:`control.ChannelError` if it is bad."""
        message = self._codec.open_report(frame)
        if isinstance(message, control.NodeAnswer | control.NodeDone | control.NodeError):
            future = self._pending.get(message.id)
            if future is not None and not future.done():
                future.set_result(message)
        elif isinstance(message, control.NodeLoad):
            self._load, self.reported = message.load, message
        elif isinstance(message, control.NodeLeft):
            self._registry.on_left(
                self.name, message.conference, message.participant, message.reason
            )
        elif isinstance(message, control.NodeSpeaker):
            self._registry.on_speaker(self.name, message.conference, message.participant or None)

    def fail_all(self) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the SFU node went away"))


REGISTRY = web.AppKey("sfu_registry", SfuRegistry)


async def _handshake(
    ws: web.WebSocketResponse, secret: str
) -> tuple[str, control.ChannelCodec] | None:
    server_nonce = secrets.token_bytes(control.NONCE_LEN)
    await ws.send_bytes(control.encoder.encode(control.NodeChallenge(server_nonce)))
    msg = await asyncio.wait_for(ws.receive(), HANDSHAKE_SECONDS)
    if msg.type != WSMsgType.BINARY:
        return None
    try:
        hello = control.handshake_decoder.decode(msg.data)
        if not isinstance(hello, control.NodeHello):
            raise control.ChannelError("expected a hello")
        control.check_nonce(hello.nonce)
        if not 0 < len(hello.name) <= MAX_NAME or not hello.name.isprintable():
            raise control.ChannelError("a node name is 1 to 64 printable characters")
        expected = control.hello_mac(secret, server_nonce, hello.nonce, hello.name)
        control.verify(expected, hello.mac, "the node's proof")
    except (msgspec.DecodeError, control.ChannelError) as exc:
        log.warning("refused an SFU node: %s", exc)
        reason = str(exc) if isinstance(exc, control.ChannelError) else "bad hello"
        await ws.send_bytes(control.encoder.encode(control.NodeRefused(reason)))
        return None
    welcome = control.welcome_mac(secret, server_nonce, hello.nonce, hello.name)
    await ws.send_bytes(control.encoder.encode(control.NodeWelcome(welcome)))
    key = control.session_key(secret, server_nonce, hello.nonce, hello.name)
    return hello.name, control.ChannelCodec(key, "server")


async def node_endpoint(request: web.Request) -> web.StreamResponse:
    """``GET /sfu/node``: a standalone SFU node registers (see the module docstring)."""
    config = request.app[CONFIG].sfu
    if not config.node_secret:
        raise web.HTTPNotFound()
    registry = request.app[REGISTRY]
    ws = web.WebSocketResponse(max_msg_size=control.MAX_FRAME, heartbeat=15)
    await ws.prepare(request)
    sockets = registry.sockets
    sockets.add(ws)
    node: RemoteNode | None = None
    try:
        shaken = await _handshake(ws, config.node_secret)
        if shaken is None:
            return ws
        name, codec = shaken
        node = RemoteNode(name, ws, codec, registry, config.request_timeout_seconds)
        try:
            registry.add(node)
        except ProtocolError as exc:
            log.warning("refused an SFU node: %s", exc.message)
            node = None
            return ws
        log.info("SFU node %s registered", name)
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                break
            node.on_frame(msg.data)
    except control.ChannelError as exc:
        log.warning("dropped SFU node %s: %s", node.name if node else "?", exc)
    except (TimeoutError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        sockets.discard(ws)
        if node is not None:
            node.fail_all()
            registry.remove(node.name)
            log.info("SFU node %s left", node.name)
        await ws.close()
    return ws


def install_registry(
    app: web.Application,
    enabled: bool,
    accept_remote: bool = False,
    public_address: str = "",
    local_name: str = LOCAL_NAME,
) -> SfuRegistry:
    """Add the registry, the in-process node (if ``enabled``, named ``local_name``) and the
    ``/sfu/node`` route."""
    registry = SfuRegistry()
    app[REGISTRY] = registry
    app.router.add_get(control.PATH, node_endpoint)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        local = LocalNode(registry, local_name, public_address) if enabled else None
        if local is not None:
            registry.add(local)
        log.info(
            "SFU: %s; standalone nodes %s",
            "in-process node running" if local is not None else "no in-process node",
            "may register at " + control.PATH if accept_remote else "are not accepted",
        )
        yield
        if local is not None:
            registry.remove(local.name)
            await local.close()

    async def close_nodes(app: web.Application) -> None:
        registry.closing = True
        for ws in list(registry.sockets):
            with contextlib.suppress(Exception):
                await ws.close()

    app.cleanup_ctx.append(lifecycle)
    app.on_shutdown.append(close_nodes)
    return registry
