"""The control channel between a spaces server and a standalone SFU node (sans-I/O).

A node (``salon sfu``) dials the server's WebSocket at ``/sfu/node``; the server drives it
from then on. Both hold the same ``[sfu] node_secret``; nothing else identifies a node.

Handshake (binary MessagePack frames, no MAC yet)::

    server -> node   NodeChallenge(server_nonce)                       32 random bytes
    node -> server   NodeHello(name, node_nonce,
                               mac = HMAC(secret, "node" | nonces | name))
    server -> node   NodeWelcome(mac = HMAC(secret, "server" | nonces | name))

so each side proves it holds the secret, bound to both fresh nonces (no replay) and to the
node's name. Both then derive a session key, ``HMAC(secret, "session" | nonces | name)``,
and every later frame is ``seq (8 bytes) | body | HMAC(session key, direction | seq |
body)[:16]`` (:class:`ChannelCodec`): a frame that is altered, replayed, reordered, or
injected by anyone on the path is refused and the channel closes. The channel is
authenticated, not encrypted; use ``wss://`` (TLS) where the path is not trusted — SDP
carries addresses. Media keys never cross it: the node never has any.

After the handshake the server sends requests (:data:`ServerToNode`), each answered by
:class:`NodeAnswer`, :class:`NodeDone` or :class:`NodeError` with the same ``id``, and the
node pushes :class:`NodeLoad` reports and :class:`NodeLeft` / :class:`NodeSpeaker` events.
The node only ever sees opaque conference ids and participant numbers.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final, Literal

import msgspec

from protocol.labels import SFU_NODE_DOMAIN as DOMAIN

NONCE_LEN: Final = 32
TAG_LEN: Final = 16
SEQ_LEN: Final = 8
PATH: Final = "/sfu/node"
MAX_FRAME: Final = 262_144

Direction = Literal["server", "node"]


class ChannelError(Exception):
    """The peer failed authentication or sent a frame that does not verify."""


# -- handshake ----------------------------------------------------------------------------------


class NodeChallenge(msgspec.Struct, tag="node_challenge", frozen=True):
    nonce: bytes
    version: int = 1


class NodeHello(msgspec.Struct, tag="node_hello", frozen=True):
    name: str
    nonce: bytes
    mac: bytes


class NodeWelcome(msgspec.Struct, tag="node_welcome", frozen=True):
    mac: bytes


class NodeRefused(msgspec.Struct, tag="node_refused", frozen=True):
    reason: str


Handshake = NodeChallenge | NodeHello | NodeWelcome | NodeRefused


def _mac(secret: str, label: bytes, server_nonce: bytes, node_nonce: bytes, name: str) -> bytes:
    message = DOMAIN + label + b"\x00" + server_nonce + node_nonce + name.encode("utf-8")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).digest()


def hello_mac(secret: str, server_nonce: bytes, node_nonce: bytes, name: str) -> bytes:
    """What the node sends to prove it holds the secret."""
    return _mac(secret, b"node", server_nonce, node_nonce, name)


def welcome_mac(secret: str, server_nonce: bytes, node_nonce: bytes, name: str) -> bytes:
    """What the server sends back to prove the same."""
    return _mac(secret, b"server", server_nonce, node_nonce, name)


def session_key(secret: str, server_nonce: bytes, node_nonce: bytes, name: str) -> bytes:
    return _mac(secret, b"session", server_nonce, node_nonce, name)


def check_nonce(nonce: bytes) -> None:
    if len(nonce) != NONCE_LEN:
        raise ChannelError(f"a handshake nonce is {NONCE_LEN} bytes")


def verify(expected: bytes, got: bytes, what: str) -> None:
    if not hmac.compare_digest(expected, got):
        raise ChannelError(f"{what} does not verify (wrong node secret?)")


# -- after the handshake ------------------------------------------------------------------------


class NodeJoin(msgspec.Struct, tag="node_join", frozen=True):
    """Connect ``participant``; ``index`` is its per-call sender index: the node forwards
    only frames under that index's SFrame key ids (``protocol.media_keys``)."""

    id: int
    conference: str
    participant: str
    sdp: str
    index: int | None = None


class NodeLeave(msgspec.Struct, tag="node_leave", frozen=True):
    id: int
    conference: str
    participant: str


class NodeKick(msgspec.Struct, tag="node_kick", frozen=True):
    id: int
    conference: str
    participant: str


class NodeMute(msgspec.Struct, tag="node_mute", frozen=True):
    id: int
    conference: str
    participant: str
    kind: Literal["audio", "video"]
    muted: bool


class NodeView(msgspec.Struct, tag="node_view", frozen=True):
    """How big ``participant`` shows each of its receiving slots: slot mid -> height in
    device pixels (0: not shown). The whole view; a slot left out: as big as available.
    The server checked its bounds (``protocol.conference_wire.SfuView``)."""

    id: int
    conference: str
    participant: str
    heights: dict[str, int]


class NodeAnswer(msgspec.Struct, tag="node_answer", frozen=True):
    id: int
    sdp: str


class NodeDone(msgspec.Struct, tag="node_done", frozen=True):
    id: int


class NodeError(msgspec.Struct, tag="node_error", frozen=True):
    id: int
    code: str
    message: str


class NodeLoad(msgspec.Struct, tag="node_load", frozen=True):
    """The node's load: ``load`` is subscriber streams routed (``SfuNode.load()``)."""

    load: int
    conferences: int
    participants: int
    packets_in: int = 0
    packets_out: int = 0


class NodeLeft(msgspec.Struct, tag="node_left", frozen=True):
    """A participant's connection ended on the node (``reason`` as in ``ParticipantLeft``)."""

    conference: str
    participant: str
    reason: str


class NodeSpeaker(msgspec.Struct, tag="node_speaker", frozen=True):
    conference: str
    participant: str  # "": nobody


ServerToNode = NodeJoin | NodeLeave | NodeKick | NodeMute | NodeView
NodeToServer = NodeAnswer | NodeDone | NodeError | NodeLoad | NodeLeft | NodeSpeaker

handshake_decoder: Final = msgspec.msgpack.Decoder(Handshake)
_to_node_decoder: Final = msgspec.msgpack.Decoder(ServerToNode)
_to_server_decoder: Final = msgspec.msgpack.Decoder(NodeToServer)
encoder: Final = msgspec.msgpack.Encoder()


class ChannelCodec:
    """Seals and opens the frames of one authenticated channel, for one side.

    ``side`` is who *we* are. Each direction numbers its frames from 0; a frame must carry
    exactly the next number, so nothing can be replayed, dropped silently or reordered.
    """

    def __init__(self, key: bytes, side: Direction) -> None:
        self._key = key
        self._side = side
        self._peer: Direction = "node" if side == "server" else "server"
        self._send_seq = 0
        self._recv_seq = 0

    def _tag(self, direction: Direction, seq: bytes, body: bytes) -> bytes:
        message = direction.encode() + b"\x00" + seq + body
        return hmac.new(self._key, message, hashlib.sha256).digest()[:TAG_LEN]

    def seal(self, message: msgspec.Struct) -> bytes:
        body = encoder.encode(message)
        seq = self._send_seq.to_bytes(SEQ_LEN, "big")
        self._send_seq += 1
        return seq + body + self._tag(self._side, seq, body)

    def _open(self, frame: bytes) -> bytes:
        if len(frame) < SEQ_LEN + TAG_LEN:
            raise ChannelError("a channel frame is too short")
        seq, body, tag = frame[:SEQ_LEN], frame[SEQ_LEN:-TAG_LEN], frame[-TAG_LEN:]
        if not hmac.compare_digest(self._tag(self._peer, seq, body), tag):
            raise ChannelError("a channel frame does not verify")
        if int.from_bytes(seq, "big") != self._recv_seq:
            raise ChannelError("a channel frame is out of order or replayed")
        self._recv_seq += 1
        return body

    def open_request(self, frame: bytes) -> ServerToNode:
        """(Node side) the server's next request."""
        body = self._open(frame)
        try:
            request: ServerToNode = _to_node_decoder.decode(body)
            return request
        except msgspec.DecodeError as exc:
            raise ChannelError(f"a request does not decode: {exc}") from None

    def open_report(self, frame: bytes) -> NodeToServer:
        """(Server side) the node's next reply, report or event."""
        body = self._open(frame)
        try:
            report: NodeToServer = _to_server_decoder.decode(body)
            return report
        except msgspec.DecodeError as exc:
            raise ChannelError(f"a node message does not decode: {exc}") from None
