"""The seam between the call client and whatever carries the media (mesh now, SFU later).

The call client (:mod:`client.call.client`) decides *who* is in the call, verifies every signed
action and signal, holds the media keys and counts what arrives; a :class:`Topology` only
moves media: it is told the admitted peers, hands over the verified signals addressed to it,
sends what it is allowed to send, and gives every decoded frame to the :class:`MediaSink`.
Dropping a muted or non-speaking sender's frames is the sink's business, so it holds for any
topology.

``TOPOLOGIES`` maps the server's ``topology`` name to a factory; the SFU topology
(:mod:`client.call.sfu_topology`) registers itself there and receives the same
:class:`TopologyContext` — including :class:`~client.call.keys.CallKeys`, whose per-sender
keys it uses for SFrame, and the call's :class:`SfuChannel`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import av
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av.frame import Frame
from av.packet import Packet

from client.call.ice import IceConfig
from client.call.keys import CallKeys
from client.call.retry import QuietDetector, TransportState
from client.call.sframe import SFrameContext
from client.call.signalling import SignalKind

LinkState = Literal["waiting", "connecting", "connected", "failed", "refused", "closed"]


@dataclass(frozen=True)
class Peer:
    """An admitted participant to exchange media with."""

    member: bytes
    index: int  # its per-call index (SFrame key ids)
    link: bytes  # this pair's current incarnation (changes when either joins again)
    offerer: bool  # True when *we* make the offer (the lower member key offers)
    label: str  # display name and fingerprint, for messages


class MediaSink(Protocol):
    def on_video(self, member: bytes, frame: av.VideoFrame) -> None: ...

    def on_audio(self, member: bytes, frame: av.AudioFrame) -> None: ...

    def on_link(self, member: bytes, state: LinkState, detail: str = "") -> None: ...

    def on_decrypt_failure(self, member: bytes) -> None: ...

    def on_screen(self, member: bytes, frame: av.VideoFrame) -> None:
        """A decoded frame of ``member``'s shared screen."""
        ...

    def on_screen_decrypt_failure(self, member: bytes) -> None: ...

    def on_send_key(self, epoch: int) -> None:
        """Our media now leaves encrypted under our key of ``epoch`` (SFU only)."""
        ...

    def on_reconnected(self, member: bytes | None, outage: float) -> None:
        """A fresh connection replaced a lost one (``client.call.retry``) after ``outage``
        seconds: to ``member`` (mesh), or to the SFU (None)."""
        ...

    def on_retransmission(self, member: bytes, *, nacked: int = 0, resent: int = 0) -> None:
        """Mesh: we asked ``member`` to resend ``nacked`` packets (one RTCP NACK), or resent
        ``resent`` packets to it on its NACK."""
        ...


class Signaller(Protocol):
    async def send(self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int) -> None:
        """Seal, sign and relay ``payload`` to ``peer``."""
        ...


class SfuChannel(Protocol):
    """What the call gives an SFU topology: the way to the call's SFU node and the
    call-wide sending SFrame context (counters outlive reconnects and switches)."""

    @property
    def my_index(self) -> int:
        """Our per-call index (SFrame key ids)."""
        ...

    @property
    def send_frames(self) -> SFrameContext: ...

    async def sfu_offer(self, sdp: str) -> str:
        """Hand an SDP offer to the server for the call's SFU node; its answer."""
        ...


@dataclass
class TopologyContext:
    me: bytes
    keys: CallKeys
    sink: MediaSink
    signaller: Signaller
    video: MediaStreamTrack | None  # our sources (None: nothing of that kind)
    audio: MediaStreamTrack | None
    sfu: SfuChannel | None = None
    screen: MediaStreamTrack | None = None  # our shared screen
    # STUN/TURN and the transport policy, for every RTCPeerConnection a topology makes.
    ice: IceConfig = field(default_factory=IceConfig)
    # Those admitted before us who have not yet sealed us their key (a newcomer's first
    # peers, §14.1 liveness): the SFU topology waits for them (bounded) before connecting.
    awaited: Callable[[], Collection[bytes]] = lambda: ()


class Topology(Protocol):
    name: Literal["mesh", "sfu"]
    e2ee: bool
    encryption: str  # one line for the terminal: what protects the media

    async def set_peers(self, peers: Mapping[bytes, Peer]) -> None:
        """The admitted peers now; connect new ones, drop the others."""
        ...

    async def on_signal(self, peer: Peer, kind: SignalKind, payload: bytes, attempt: int) -> None:
        """A verified signal from ``peer`` (opened and checked by the call client)."""
        ...

    async def refuse(self, member: bytes, reason: str) -> None:
        """A signal from ``member`` failed verification: tear the pair down, for good (until
        either side joins again), and never fall back to anything unverified."""
        ...

    def set_sending(self, *, video: bool, audio: bool) -> None:
        """Whether our video and audio may leave this machine (stage role, mute)."""
        ...

    async def close(self) -> None: ...


TopologyFactory = Callable[[TopologyContext], Topology]
TOPOLOGIES: dict[str, TopologyFactory] = {}


def register_topology(name: str, factory: TopologyFactory) -> None:
    TOPOLOGIES[name] = factory


class SourceTap(MediaStreamTrack):
    """A topology's reader of one local source; stopping it leaves the source running.

    Video comes out as yuv420p, converted once here on the event loop: the relay hands the
    *same* frame object to every pair's VP8 encoder, and each encoder thread would otherwise
    call ``frame.reformat()`` on it at the same time — PyAV keeps one swscale context per
    frame, so that crashes or deadlocks. (It also converts once instead of once per peer.)
    """

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self._source = source

    async def recv(self) -> Frame | Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._source.recv()
        if not isinstance(frame, av.VideoFrame) or frame.format.name == "yuv420p":
            return frame
        converted = frame.reformat(format="yuv420p")
        converted.pts, converted.time_base = frame.pts, frame.time_base
        return converted


async def transport_state(pc: RTCPeerConnection | None, quiet: QuietDetector) -> TransportState:
    """What :class:`client.call.retry.RetryPolicy` needs to know of ``pc``: aiortc's state,
    and ``disconnected`` when a connected transport has received nothing for a while (aiortc
    has no such state; its consent checks give up only after ~30 s). Public API only: the
    DTLS transport's ``packetsReceived`` from a receiver's ``getStats()``."""
    if pc is None or pc.connectionState in ("failed", "closed"):
        return "failed"
    if pc.connectionState != "connected":
        return "connecting"
    receivers = pc.getReceivers()
    if not receivers:
        return "connected"
    try:
        # One receiver's report holds the (max-bundle: the only) transport's counters; the
        # whole connection's would build every sender's and receiver's, twice a second.
        report = await receivers[0].getStats()
    except Exception:  # closing under us
        return "failed"
    received = sum(
        getattr(stats, "packetsReceived", 0)
        for stats in report.values()
        if stats.type == "transport"
    )
    return "disconnected" if quiet.update(received) else "connected"
