"""Red team on media keys and their timing (PROTOCOL.md §14.3, §15.5), CLI side.

A hostile server withholds a sender's fresh key after a leave (a kick) and lets others join
meanwhile; the removed member holds the sender's old key. Nothing derived from that key may
become a key the honest receiver decrypts with, and that key itself never decrypts again
once its time is over, however often the receiver's keys are posted again. The page's side:
``web/test/redteam_media_keys.test.ts``.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from test_redteam_sfu_limits import _Sink

from client.call.e2ee_media import MEDIA_SUITE
from client.call.keys import CHANGES_KEPT, CallKeys, MediaKeyMessage, SenderKey
from client.call.sframe import (
    KeyUsage,
    SFrameContext,
    UnknownKeyError,
    protect_frame,
    unprotect_frame,
)
from client.call.sfu_topology import SUPERSEDED_MAX_SECONDS, MediaKeyRing, SfuTopology
from client.call.topology import Peer
from client.core import crypto
from protocol.media_keys import media_kid

ME, SENDER, LEAVER, JOINER1, JOINER2 = (bytes([n]) * 32 for n in range(1, 6))


def test_joins_after_a_withheld_rekey_derive_nothing_from_the_key_the_leaver_holds() -> None:
    keys = CallKeys(ME)
    keys.baseline(0)
    old = SenderKey(0, b"\x09" * 32)  # the leaver holds it
    assert keys.receive(SENDER, MediaKeyMessage(old.epoch, old.key, 0))
    keys.membership(1, [], [LEAVER])  # kicked: the server withholds the sender's fresh key
    keys.membership(2, [JOINER1], [])
    keys.membership(3, [JOINER2], [])
    derived = {old.ratchet().key, old.ratchet().ratchet().key}
    assert keys.current(SENDER) is None
    assert not derived & {k.key for k in keys.usable(SENDER)}
    # The fresh key the sender sealed at the leave, released late: taken, over both joins.
    fresh = SenderKey(1, b"\x07" * 32)
    assert keys.receive(SENDER, MediaKeyMessage(fresh.epoch, fresh.key, 1))
    assert keys.current(SENDER) == fresh.ratchet().ratchet()
    assert not derived & {k.key for k in keys.usable(SENDER)}


def test_a_key_whose_time_is_over_is_never_installed_again() -> None:
    now = [0.0]
    ring = MediaKeyRing(ME, SFrameContext(MEDIA_SUITE), lambda: now[0])
    ring.set_index(ME, 1)
    ring.set_index(SENDER, 2)
    old = SenderKey(0, b"\x09" * 32)
    assert ring.install(SENDER, old)
    ring.supersede(SENDER)  # a leave; the fresh key withheld
    now[0] = SUPERSEDED_MAX_SECONDS
    ring.tick()
    assert ring.recv_kids == []
    # A later change posts the sender's usable keys again, the old one among them.
    assert not ring.install(SENDER, old, current=False)
    assert not ring.install(SENDER, old, current=True)
    assert media_kid(2, 0) not in ring.recv_kids


async def test_a_kick_of_someone_never_connected_to_still_retires_what_they_hold() -> None:
    """As the page test: Alice is a newcomer; Carol (in the call before her) never sealed her
    a signal, so she is none of Alice's peers. Carol is kicked and Bob's fresh key withheld,
    then someone joins: neither Bob's key (Carol holds it) nor its ratchet (Carol derives it)
    decrypts at Alice's past SUPERSEDED_MAX_SECONDS."""
    now = [100.0]
    alice, bob, carol, dave = b"a" * 32, b"b" * 32, b"c" * 32, b"d" * 32
    keys = CallKeys(alice)
    sfu = SimpleNamespace(my_index=1, send_frames=SFrameContext(MEDIA_SUITE))
    ctx: Any = SimpleNamespace(
        sfu=sfu, me=alice, keys=keys, video=None, audio=None, screen=None, sink=_Sink()
    )
    topology = SfuTopology(ctx, clock=lambda: now[0])
    topology._connecting = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # never connects
    try:
        keys.baseline(1)
        peers = {bob: Peer(bob, 2, b"l1", False, "Bob")}
        await topology.set_peers(peers)
        bobs = SenderKey(0, b"\x02" * 32)
        assert keys.receive(bob, MediaKeyMessage(bobs.epoch, bobs.key, 1))
        keys.membership(2, [], [carol])
        await topology.set_peers(peers)
        now[0] += 1.0
        keys.membership(3, [dave], [])  # a join while Bob's fresh key is withheld
        await topology.set_peers(peers)
        now[0] += SUPERSEDED_MAX_SECONDS
        topology.ring.tick()
        keys.membership(4, [b"e" * 32], [])
        await topology.set_peers(peers)
        bob_ctx = topology.ring.context_for(2)
        assert bob_ctx is not None
        for key in (bobs, bobs.ratchet(), bobs.ratchet().ratchet()):  # Carol's forgeries
            forged = protect_frame(
                _sending(media_kid(2, key.epoch), key.key),
                media_kid(2, key.epoch),
                "opus",
                b"\x78" + bytes(20),
            )
            with pytest.raises(UnknownKeyError):
                unprotect_frame(bob_ctx, "opus", forged)
    finally:
        await topology.close()


def _sending(kid: int, key: bytes) -> SFrameContext:
    ctx = SFrameContext(MEDIA_SUITE)
    ctx.add_key(kid, key, usage=KeyUsage.ENCRYPT)
    return ctx


def test_a_key_sealed_before_the_changes_kept_is_refused() -> None:
    """A server withholds every key Bob seals to Alice through more membership changes than
    she keeps, then replays his first one (same joins, so the link matches): she can no
    longer tell whether a leave superseded it, so it is refused, never taken as current."""
    keys = CallKeys(ME)
    keys.baseline(0)
    first = SenderKey(0, b"\x05" * 32)
    keys.membership(1, [], [LEAVER])
    for version in range(2, CHANGES_KEPT + 3):
        keys.membership(version, [bytes([version % 250 + 6]) * 32], [])
    assert not keys.receive(SENDER, MediaKeyMessage(first.epoch, first.key, 0))
    assert keys.current(SENDER) is None and keys.usable(SENDER) == []
    # One sealed within what she keeps is taken.
    fresh = SenderKey(1, b"\x06" * 32)
    assert keys.receive(SENDER, MediaKeyMessage(fresh.epoch + 1000, fresh.key, CHANGES_KEPT + 2))


def test_a_leave_or_join_in_a_state_no_newer_than_the_last_still_moves_every_key() -> None:
    """A server shows a kick (or a join) in a call state whose version is not above the
    last one (reordered states; or the same state judged again after a roster change made
    a seat fail). Before, the keys did not move: everyone kept sending under keys the
    removed member holds, and sealed a joiner keys from before it joined."""
    keys = CallKeys(ME)
    keys.baseline(0)
    bobs = SenderKey(0, b"\x02" * 32)
    assert keys.receive(SENDER, MediaKeyMessage(bobs.epoch, bobs.key, 0))
    keys.membership(5, [JOINER1], [])
    ours, theirs = keys.own, keys.current(SENDER)
    assert theirs == bobs.ratchet()
    keys.membership(5, [], [LEAVER])  # the same version (or an older one)
    assert keys.own.epoch == ours.epoch + 1 and keys.own.key not in (ours.key, ours.ratchet().key)
    assert keys.current(SENDER) is None  # superseded: the leaver held it
    # The sender's fresh key after that leave (sealed at the same version) is taken.
    fresh = SenderKey(2, b"\x04" * 32)
    assert keys.receive(SENDER, MediaKeyMessage(fresh.epoch, fresh.key, 5))
    assert keys.current(SENDER) == fresh
    # A joiner shown in an older state: every key ratchets, ours sealed to it is not the old one.
    before = keys.own
    keys.membership(3, [JOINER2], [])
    assert keys.own == before.ratchet() and keys.current(SENDER) == fresh.ratchet()


def test_key_messages_that_are_no_news_cost_no_key_derivation(monkeypatch: Any) -> None:
    """Mallory floods Alice with copies of an old key message sealed before many joins
    (each a fresh box, so each is opened and judged): judging one must not ratchet the key
    over every join first."""
    keys = CallKeys(ME)
    keys.baseline(0)
    for version in range(1, 501):
        keys.membership(version, [bytes([version % 250 + 6]) * 32], [])
    mallorys = SenderKey(0, b"\x07" * 32)
    assert keys.receive(SENDER, MediaKeyMessage(mallorys.epoch, mallorys.key, 0))
    derived = [0]
    real = crypto.hkdf

    def counting(*args: Any, **kwargs: Any) -> bytes:
        derived[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(crypto, "hkdf", counting)
    for _ in range(50):
        assert not keys.receive(SENDER, MediaKeyMessage(mallorys.epoch, mallorys.key, 0))
    assert derived[0] == 0
