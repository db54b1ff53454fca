"""Per-sender media keys of a call and the verification code they give (sans-I/O).

Every participant makes a random *base key* for the media it sends (epoch 0) and seals it
(crypto_box, signed, naming both joins; see :mod:`client.call.signalling`) to each admitted
participant that is live for its join (:mod:`client.call.client`). Membership
changes move every sender's key on, in the server's order of call states (``version``):

- someone joins: every key **ratchets forward** (``HKDF(key, "salon/call-media-ratchet/v1")``,
  epoch + 1) and each sender seals its ratcheted key to the joiner, who therefore cannot
  derive any earlier key (it cannot decrypt media from before it joined);
- someone leaves or is removed: every sender **rekeys** (a fresh random key, epoch + 1) and
  seals it to the remaining participants only; until it arrives, the old key of that sender
  is *stale*.

A sealed key says at which state version it was current (``at_version``), so a receiver
that has seen later joins ratchets it forward itself, and one that has seen a later leave
waits for the rekey. Receivers keep the previous key of each sender for an overlap — also
a key that a later leave superseded before it arrived (the sender used it until it heard of
that leave).

Mesh calls do not need these keys for media (DTLS-SRTP is end to end between each pair);
they give mesh and SFU calls the same **verification code**: a hash of the sorted
(member key, key commitment) pairs of everyone in the call, shown as four groups of four
digits, identical for all participants who hold the same keys for the same set of people.
The SFU topology encrypts frames with these keys (SFrame, :mod:`client.call.sframe`), with
:func:`protocol.media_keys.media_kid` as the key id. Key ids never wrap: a sender's epoch
has 16 bits in it, so a participant whose own key would move past ``MAX_EPOCH`` (65,535
membership changes in one call) does not move it — :attr:`CallKeys.exhausted` turns True
and the call client ends its call (rejoining gives a new sender index, so fresh key ids).
Keys of others past that epoch are refused. No key id ever names two keys.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Final

import msgspec

from client.core import crypto
from protocol.labels import CALL_CODE_DOMAIN as CODE_DOMAIN
from protocol.labels import CALL_KEY_COMMITMENT_DOMAIN as COMMITMENT_DOMAIN
from protocol.labels import CALL_MEDIA_RATCHET_LABEL as RATCHET_LABEL
from protocol.media_keys import MAX_EPOCH, media_kid

__all__ = [
    "CallKeys",
    "MediaKeyMessage",
    "SenderKey",
    "media_kid",
    "verification_code",
]

CHANGES_KEPT: Final = 1000


@dataclass(frozen=True)
class SenderKey:
    epoch: int
    key: bytes

    def ratchet(self) -> SenderKey:
        """The next epoch's key; the old one cannot be derived from it."""
        return SenderKey(self.epoch + 1, crypto.hkdf(self.key, RATCHET_LABEL))

    def commitment(self) -> bytes:
        """A public, binding fingerprint of the key (it reveals nothing about the key)."""
        return hashlib.sha256(COMMITMENT_DOMAIN + self.key).digest()[:16]


class MediaKeyMessage(msgspec.Struct, frozen=True):
    """What a sender seals to a participant: its key, current as of call state version."""

    epoch: int
    key: bytes
    at_version: int


def verification_code(pairs: Iterable[tuple[bytes, bytes]]) -> str:
    """Four groups of four digits from sorted (member key, key commitment) pairs."""
    digest = hashlib.sha256(
        CODE_DOMAIN + b"".join(member + commitment for member, commitment in sorted(pairs))
    ).digest()
    digits = f"{int.from_bytes(digest[:8], 'big') % 10**16:016d}"
    return " ".join(digits[i : i + 4] for i in range(0, 16, 4))


@dataclass
class _Held:
    key: SenderKey
    as_of: int  # the state version this key is current for


class CallKeys:
    """One participant's view of every sender's media key in one call.

    Feed it membership changes in state order (:meth:`baseline`, :meth:`membership`) and the
    keys others sealed to it (:meth:`receive`); after each, :attr:`own` is the key to send
    with (and to seal to others) and :meth:`code` the verification code, if every key is in.
    """

    def __init__(
        self,
        me: bytes,
        random_key: Callable[[], bytes] = crypto.random_key,
        *,
        max_epoch: int = MAX_EPOCH,
    ) -> None:
        self.me = me
        self._random_key = random_key
        # The last epoch with a key id of its own; smaller in tests, to reach it.
        self.max_epoch = min(max_epoch, MAX_EPOCH)
        # Our key cannot move on without reusing a key id: the call must end for us.
        self.exhausted = False
        self.own = SenderKey(0, random_key())
        self.previous_own: SenderKey | None = None
        self.version = -1
        self._peers: dict[bytes, _Held] = {}
        self._previous: dict[bytes, SenderKey] = {}
        self._stale: set[bytes] = set()
        self._changes: list[tuple[int, str]] = []  # (version, "join" | "leave")
        # The newest change no longer in _changes: keys sealed before it cannot be judged.
        self._forgotten = -1
        self.listeners: list[Callable[[bytes], None]] = []  # called with whose key changed

    def baseline(self, version: int) -> None:
        """This participant was admitted at ``version``: nothing before it concerns it."""
        self.version = max(self.version, version)

    def membership(self, version: int, joined: Collection[bytes], left: Collection[bytes]) -> None:
        """The admitted participants changed at state ``version``: rekey if anyone left,
        else ratchet if anyone joined."""
        for member in left:
            had = self._peers.pop(member, None) or self._previous.pop(member, None)
            self._previous.pop(member, None)
            self._stale.discard(member)
            if had is not None:  # its keys are over (if it joined again too, its new key comes)
                self._notify(member)
        if not (joined or left):
            self.version = max(self.version, version)
            return
        # A change in a state no newer than the last one (a server reordering states, or a
        # state judged again after a roster change) still moves every key: a leaver must
        # not keep reading, a joiner must not get the keys from before it joined.
        late = version <= self.version
        version = max(version, self.version)
        if self.own.epoch >= self.max_epoch:
            # Moving on would alias a key id (or keep a key a removed member holds): stop.
            self.exhausted = True
            self.version = version
            return
        kind = "leave" if left else "join"
        if not late:
            self._changes.append((version, kind))
            if len(self._changes) > CHANGES_KEPT:
                self._forgotten = self._changes[-CHANGES_KEPT - 1][0]
                del self._changes[:-CHANGES_KEPT]
        self.previous_own = self.own
        if kind == "leave":
            self.own = SenderKey(self.own.epoch + 1, self._random_key())
        else:
            self.own = self.own.ratchet()
        for member, held in self._peers.items():
            if held.as_of < version or late:
                self._advance(member, held, kind, version)
        self.version = version
        self._notify(self.me)

    def _advance(self, member: bytes, held: _Held, kind: str, version: int) -> None:
        held.as_of = version
        if member in self._stale:
            # Superseded by a leave already (its fresh key is on its way): a join neither
            # ratchets it on (the leaver could derive that key too) nor makes it previous.
            return
        self._previous[member] = held.key
        if kind == "leave" or held.key.epoch >= self.max_epoch:
            self._stale.add(member)  # its fresh key is on its way (or it must leave)
            # Its key is superseded now, not when the next one arrives: a server that
            # withholds that one must not keep alive a key the removed member holds.
            self._notify(member)
        else:
            held.key = held.key.ratchet()
            self._notify(member)

    def message(self) -> MediaKeyMessage:
        """Our current key, to seal to a participant."""
        return MediaKeyMessage(self.own.epoch, self.own.key, self.version)

    def receive(self, sender: bytes, message: MediaKeyMessage) -> bool:
        """Take a key ``sender`` sealed to us; True if it is news (a newer epoch)."""
        if len(message.key) != crypto.KEY_LEN or not 0 <= message.epoch <= self.max_epoch:
            return False
        if message.at_version < self._forgotten:
            return False  # sealed before changes we no longer know of (a leave among them?)
        # Which changes it missed: the joins to ratchet over, up to a leave (the sender
        # rekeys after that one: the key is only kept as superseded). Judged before any key
        # is derived, so a message that is no news costs nothing (a flood of them neither).
        joins, superseded = 0, False
        for version, kind in self._changes:
            if message.at_version < version <= self.version:
                if kind == "leave":
                    superseded = True
                    break
                joins += 1
        epoch = message.epoch + joins
        held, previous = self._peers.get(sender), self._previous.get(sender)
        if held is not None and epoch <= held.key.epoch:
            return False
        if superseded and previous is not None and epoch <= previous.epoch:
            return False
        if not superseded and epoch > self.max_epoch:
            return False  # no key id for it: the sender has to leave the call
        key = SenderKey(message.epoch, message.key)
        for _ in range(joins):
            key = key.ratchet()
        if superseded:  # the sender rekeys after that leave; wait for it
            self._keep_superseded(sender, key)
            return False
        if held is not None and (previous is None or held.key.epoch > previous.epoch):
            self._previous[sender] = held.key
        self._peers[sender] = _Held(key, max(message.at_version, self.version))
        self._stale.discard(sender)
        self._notify(sender)
        return True

    def _keep_superseded(self, sender: bytes, key: SenderKey) -> None:
        """A key the sender used until it heard of a later leave: never current again, but
        what it sent meanwhile is ours to read, so keep it as the previous key."""
        held, previous = self._peers.get(sender), self._previous.get(sender)
        if held is not None and key.epoch <= held.key.epoch:
            return
        if previous is not None and key.epoch <= previous.epoch:
            return
        self._previous[sender] = key
        self._notify(sender)

    def usable(self, member: bytes) -> list[SenderKey]:
        """Every key of ``member``'s that may still decrypt its media, newest first: its
        current key (unless stale) and the previous one (the overlap)."""
        keys = [self.current(member), self._previous.get(member)]
        if member == self.me:
            keys = [self.own, self.previous_own]
        found = [k for k in keys if k is not None]
        return sorted(found, key=lambda k: k.epoch, reverse=True)

    def current(self, member: bytes) -> SenderKey | None:
        """The key ``member`` sends with now (ours for ``self.me``); None if not held yet."""
        if member == self.me:
            return self.own
        held = self._peers.get(member)
        return None if held is None or member in self._stale else held.key

    def key_for(self, member: bytes, epoch: int) -> SenderKey | None:
        """A key of ``member`` for ``epoch``: the current or the previous one (overlap)."""
        candidates = [self.own, self.previous_own] if member == self.me else []
        if member != self.me:
            held = self._peers.get(member)
            candidates = [held.key if held else None, self._previous.get(member)]
        return next((k for k in candidates if k is not None and k.epoch == epoch), None)

    def code(self, participants: Iterable[bytes]) -> str | None:
        """The verification code for these participants (us included or not), or None
        while a key is missing or stale."""
        pairs = [(self.me, self.own.commitment())]
        for member in set(participants) - {self.me}:
            key = self.current(member)
            if key is None:
                return None
            pairs.append((member, key.commitment()))
        return verification_code(pairs)

    def _notify(self, member: bytes) -> None:
        for listener in self.listeners:
            listener(member)
