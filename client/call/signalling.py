"""End-to-end sealed and signed call signalling (sans-I/O).

Everything one participant sends another through the server — SDP offers and answers
(which carry the DTLS fingerprints), media keys — is a :class:`SignalBody` bound to
(space, room, call id, sender, recipient, kind, pair link, attempt), signed with the sender's
member key (Ed25519) and sealed with crypto_box from the sender's box key to the
recipient's, both keys taken from the *verified* roster. The server relays an opaque box: it
cannot read it, and if it alters, swaps, re-addresses or replays one into another call, the
recipient's :func:`open_signal` raises :class:`SignalRejected` and the pair fails closed.

Every body, media keys included, carries the pair's link: a hash of both participants'
current join nonces (random, signed by each in their ``join``). The recipient takes a
signal only if its link names the join *it* signed and the sender's current one, so a
signal sent to an earlier join of either cannot be replayed into this one, and a signal
naming our join proves its sender is in the call now (see :mod:`client.call.client`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final, Literal

import msgspec

from client.core import crypto
from client.core.errors import VerificationError
from protocol.labels import CALL_LINK_PERSON
from protocol.labels import CALL_SIGNAL_DOMAIN as SIGNAL_DOMAIN
from protocol.records import verify_signature

MAX_SDP_BYTES: Final = 32_768
MAX_CANDIDATES: Final = 32

SignalKind = Literal["offer", "answer", "media-key"]


class SignalRejected(VerificationError):
    """A relayed signal fails end-to-end checks; nothing in it may be used."""


class SignalBody(msgspec.Struct, frozen=True):
    space_id: str
    room_id: str
    call_id: str
    sender: bytes
    recipient: bytes
    kind: SignalKind
    link: bytes  # the pair's incarnation (see link_id): both sides' current join nonces
    attempt: int  # offers/answers: counts up per link, so an old one cannot be replayed
    payload: bytes


class _Signed(msgspec.Struct, frozen=True):
    body: bytes
    sig: bytes


@dataclass(frozen=True)
class SignalContext:
    """Where a signal must belong for the receiver to accept it."""

    space_id: str
    room_id: str
    call_id: str
    me: bytes


def link_id(offerer_join_nonce: bytes, answerer_join_nonce: bytes) -> bytes:
    """Identifies one connection between two participants' current joins of the call."""
    return hashlib.blake2b(
        offerer_join_nonce + answerer_join_nonce, digest_size=16, person=CALL_LINK_PERSON
    ).digest()


def seal_signal(
    signing_seed: bytes,
    box_secret: bytes,
    recipient_box_key: bytes,
    body: SignalBody,
    nonce: bytes | None = None,
) -> bytes:
    raw = msgspec.msgpack.encode(body)
    signed = _Signed(raw, crypto.sign(signing_seed, SIGNAL_DOMAIN + raw))
    return crypto.seal_to(box_secret, recipient_box_key, msgspec.msgpack.encode(signed), nonce)


def open_signal(
    box_secret: bytes,
    sender_box_key: bytes,
    sender: bytes,
    box: bytes,
    context: SignalContext,
) -> SignalBody:
    """Open, verify and check a relayed box from ``sender``; raises SignalRejected."""
    try:
        plain = crypto.open_from(box_secret, sender_box_key, box)
    except VerificationError:
        raise SignalRejected(
            "its sealed box does not open with the sender's key: it was altered or forged"
        ) from None
    try:
        signed = msgspec.msgpack.decode(plain, type=_Signed)
        body = msgspec.msgpack.decode(signed.body, type=SignalBody)
    except msgspec.DecodeError:
        raise SignalRejected("it is malformed") from None
    if not verify_signature(sender, SIGNAL_DOMAIN + signed.body, signed.sig):
        raise SignalRejected("its signature does not verify under the sender's member key")
    if body.sender != sender or body.recipient != context.me:
        raise SignalRejected("it was addressed from or to someone else")
    if (body.space_id, body.room_id, body.call_id) != (
        context.space_id,
        context.room_id,
        context.call_id,
    ):
        raise SignalRejected("it belongs to another call")
    return body


def check_sdp(sdp: str) -> None:
    """Bound what we hand to aiortc: size, candidate count, and a DTLS fingerprint."""
    if len(sdp.encode()) > MAX_SDP_BYTES:
        raise SignalRejected(f"its SDP is larger than {MAX_SDP_BYTES} bytes")
    lines = sdp.splitlines()
    if sum(1 for line in lines if line.startswith("a=candidate:")) > MAX_CANDIDATES:
        raise SignalRejected(f"its SDP has more than {MAX_CANDIDATES} ICE candidates")
    if not any(line.startswith("a=fingerprint:") for line in lines):
        raise SignalRejected("its SDP has no DTLS fingerprint")
