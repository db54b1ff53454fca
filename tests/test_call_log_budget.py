"""One member cannot grow a room's call log without bound (issue 11, red team).

The room's log on PostgreSQL keeps every join, resume and action of a call until the call
ends (spaces/call_log.py), so a participant who re-sends its join, or sends actions that are
refused, or toggles its hand for hours, would grow the ``call_inputs`` table for as long as
the call lasts. Here a real ``salon serve`` on a real PostgreSQL and real SDK clients (which
send what an honest ``salon call`` never would): a re-sent join on the session that holds
the seat adds nothing to the log, and a member's refused actions stop at
``[conference] max_inputs_per_member`` — the others keep acting, and the next call gives
the member a new budget.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from test_call_server import join, keystore, request

from client.call.client import sign_action
from client.core.errors import ServerError
from client.core.rooms import create_room
from client.core.space import create_space, join_space, open_space
from protocol.conference_wire import ActInCall, JoinCall, LeaveCall
from protocol.errors import ErrorCode
from protocol.wire import Done

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]
STORAGE_ENGINES = ("postgresql",)
BUDGET = 20


async def logged(url: str, space: str, room: str) -> int:
    """The state-changing inputs the room's log holds."""
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM call_inputs WHERE space_id = $1 AND room_id = $2 AND state",
                space,
                room,
            )
        )
    finally:
        await conn.close()


async def test_one_member_cannot_grow_the_call_log_without_bound(
    make_server: Any, tmp_path: Path
) -> None:
    srv = make_server({"conference": {"max_inputs_per_member": BUDGET}})
    stores = {name: keystore(tmp_path / name) for name in ("alice", "bob")}
    alice_m, link = await create_space(stores["alice"], srv.url, "Town", "Alice", 10, 3600)
    bob_m = await join_space(stores["bob"], str(link), "Bob")
    async with contextlib.AsyncExitStack() as stack:
        alice = await stack.enter_async_context(open_space(stores["alice"], alice_m))
        bob = await stack.enter_async_context(open_space(stores["bob"], bob_m))
        await alice.sync()
        room = (await create_room(alice, "hall", "conference")).room_id
        await bob.sync()
        joined = await join(alice, room)
        call_id = joined.state.call_id
        held = joined.state.participants[0].join
        assert held is not None
        before = await logged(srv.storage_url, alice.space_id, room)

        # Alice re-sends the join that holds her seat, on the session that holds it: the
        # server answers from its replica, and the log does not grow.
        for _ in range(3 * BUDGET):
            again = await request(alice, JoinCall(alice.conn.next_id(), room, held), type(joined))
            assert again.status == "joined"
        assert await logged(srv.storage_url, alice.space_id, room) == before

        # Bob, who is no host, tries to kick Alice again and again: each is refused, and
        # after his budget the server stops logging them.
        codes = []
        for _ in range(3 * BUDGET):
            kick = sign_action(bob, room, call_id, "kick", alice.member_key)
            with pytest.raises(ServerError) as refused:
                await request(bob, ActInCall(bob.conn.next_id(), room, kick), Done)
            codes.append(refused.value.code)
        assert codes.count(ErrorCode.RATE_LIMITED) == 2 * BUDGET, codes
        grown = await logged(srv.storage_url, alice.space_id, room) - before
        assert grown == BUDGET, f"the log grew by {grown} inputs for one member's requests"

        # Alice is unaffected; once the call is over, Bob starts a new one with a new budget.
        hand = sign_action(alice, room, call_id, "hand-up", alice.member_key)
        await request(alice, ActInCall(alice.conn.next_id(), room, hand), Done)
        await request(alice, LeaveCall(alice.conn.next_id(), room), Done)
        assert (await join(bob, room)).status == "joined"
