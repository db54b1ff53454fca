"""Red team of ``SfuView`` (PROTOCOL.md §15.6) as a modified client: views (and offers) naming
rooms that do not exist must still spend the sender's budget. Keyed by the room the message
names, each made-up room got a fresh bucket: no limit at all, and a flood of them filled the
server's limiter (100 000 keys, least recently used evicted), resetting every real member's
bucket.

Runs the server in the test's event loop with a real member session (no call needed)."""

from __future__ import annotations

from typing import Any

import pytest
from call_helpers import amake_town

from client.core.errors import ServerError
from client.core.space import open_space
from protocol.conference_wire import SfuAnswer, SfuOffer, SfuView, SlotView
from protocol.errors import ErrorCode
from protocol.wire import Done

pytestmark = pytest.mark.e2e


async def test_views_naming_made_up_rooms_spend_the_senders_view_budget(
    app_server: Any, user: Any
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    keystore = town["Bob"].keystore()
    async with open_space(keystore, keystore.load().memberships[0]) as bob:
        codes = []
        for i in range(30):
            view = SfuView(bob.conn.next_id(), f"room-{i}", "call", [SlotView("1", 90)])
            try:
                await bob.conn.request(view, Done)
            except ServerError as exc:
                codes.append(exc.code)
        assert codes[:10] == [ErrorCode.NOT_FOUND] * 10, codes
        assert ErrorCode.RATE_LIMITED in codes[10:], codes


async def test_offers_naming_made_up_rooms_spend_the_senders_offer_budget(
    app_server: Any, user: Any
) -> None:
    """The same for SfuOffer (each real one costs the node a peer connection)."""
    srv = await app_server()
    town = await amake_town(srv.url, user, ("Bob",))
    keystore = town["Bob"].keystore()
    async with open_space(keystore, keystore.load().memberships[0]) as bob:
        codes = []
        for i in range(20):
            offer = SfuOffer(bob.conn.next_id(), f"room-{i}", "call", "v=0\r\n")
            try:
                await bob.conn.request(offer, SfuAnswer)
            except ServerError as exc:
                codes.append(exc.code)
        assert codes[:6] == [ErrorCode.NOT_FOUND] * 6, codes
        assert ErrorCode.RATE_LIMITED in codes[6:], codes
