"""Red team: a hostile SFU interleaving two publishers' genuine frames in one slot.

Every frame is genuine (each publisher's own key id, the right CSRC), so §15.8's checks pass;
but a slot's video decoder holds one picture. Bob's delta frames decoded on Mallory's last
picture show Mallory's face under Bob's name (and the reverse) until a keyframe comes. The
key that decrypts a frame names its sender: a receiver binds its decoder to that sender, and
a frame from another one starts a new picture only at a keyframe (its delta frames before one
are dropped, never decoded on the other's picture).
"""

from __future__ import annotations

import asyncio
from typing import Any

from test_sfu_keyids import (
    BOB,
    BOB_KEY,
    BOB_KID,
    MALLORY,
    MALLORY_KEY,
    MALLORY_KID,
    SAME_COLOUR,
    Feed,
    ring_for_alice,
)

from client.call.e2ee_media import MEDIA_SUITE, DecryptingReceiver, EncryptedVideoSender
from client.call.media import TestPatternTrack, colour_distance, dominant_colour, name_colour
from client.call.sframe import SFrameContext
from protocol.media_keys import kid_index
from rtc.aiortc_adapter import EncodedFrame


async def test_interleaved_publishers_in_one_slot_never_show_under_each_others_names() -> None:
    ring = ring_for_alice()
    feed = Feed()
    receiver = DecryptingReceiver(feed, ring.context_for, kid_source=kid_index)
    senders: dict[int, Any] = {}
    sources = []
    for index, name, kid, key in (
        (BOB, "Bob", BOB_KID, BOB_KEY),
        (MALLORY, "Mallory", MALLORY_KID, MALLORY_KEY),
    ):
        tx = SFrameContext(MEDIA_SUITE)
        tx.add_key(kid, key * 2)
        sources.append(TestPatternTrack(name))
        senders[index] = EncryptedVideoSender(sources[-1], tx, kid)
    try:
        # The SFU starts the slot with Bob (a keyframe, then deltas), then interleaves
        # Mallory's genuine frames: her keyframe first, then both publishers' deltas.
        frames: list[EncodedFrame] = []
        for index in (BOB, BOB, BOB, MALLORY, BOB, MALLORY, BOB, MALLORY, BOB, MALLORY):
            sent = await senders[index].recv()
            frames.append(EncodedFrame(sent.data, sent.pts, "vp8", index))
        for frame in frames:
            feed.queue.put_nowait(frame)
        feed.queue.put_nowait(None)
        decoded: list[tuple[int, Any]] = []
        while True:
            try:
                decoded.append(await asyncio.wait_for(receiver.recv_with_kid(), 10))
            except Exception:
                break
    finally:
        for track in (*senders.values(), *sources):
            track.stop()
    assert decoded, "nothing decoded at all"
    names = {BOB_KID: "Bob", MALLORY_KID: "Mallory"}
    for kid, frame in decoded:
        colour = dominant_colour(frame.to_ndarray(format="bgr24"))
        assert colour_distance(colour, name_colour(names[kid])) < SAME_COLOUR, (names[kid], colour)
    assert {kid for kid, _ in decoded} >= {BOB_KID}
