"""Red team on media keys and their timing (PROTOCOL.md §14.3, §15.5), CLI side.

A hostile server withholds a sender's fresh key after a leave (a kick) and lets others join
meanwhile; the removed member holds the sender's old key. Nothing derived from that key may
become a key the honest receiver decrypts with, and that key itself never decrypts again
once its time is over, however often the receiver's keys are posted again. The page's side:
``web/test/redteam_media_keys.test.ts``.
"""

from __future__ import annotations

from client.callkeys import CallKeys, MediaKeyMessage, SenderKey
from client.e2ee_media import MEDIA_SUITE
from client.sframe import SFrameContext
from client.sfu_topology import SUPERSEDED_MAX_SECONDS, MediaKeyRing
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
