"""A seat freed under a session that is still connected is not a ghost (issue 11, red team).

Two real ``salon serve`` instances on one real PostgreSQL behind a round-robin address,
real SDK clients: Alice through A, Bob through B, both in a call. A stalls (SIGSTOP: a long
pause, an overloaded machine) for longer than ``seat_grace_seconds``; B takes it for dead
and frees Alice's seat through the call's log, and Bob sees her leave. When A wakes up, its
replica applies that leave too — and Alice's session, still connected, must hear that her
part in the call ended (``call_ended``), not stay in a call that no longer has her (no
updates, no signals, the others gone without a word).
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import SalonServer
from postgres_support import PostgresServer
from support.instance_loss import cluster
from test_call_server import join, keystore, next_event

from client.core.rooms import create_room
from client.core.space import create_space, join_space, open_space
from protocol.conference_wire import CallEnded, CallUpdate

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
GRACE = 4.0
CONFIG = {
    "limits": {"join_attempts_per_minute_per_address": 1000},
    "conference": {"seat_grace_seconds": GRACE},
}


async def test_a_session_whose_seat_another_instance_freed_hears_it(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with cluster(SalonServer, postgres.create_database(), tmp_path, CONFIG) as two:
        proxy = two.proxy
        stores = {name: keystore(tmp_path / name) for name in ("alice", "bob")}
        proxy.send_next_to(0)
        alice_m, link = await create_space(stores["alice"], two.url, "Town", "Alice", 10, 3600)
        proxy.send_next_to(1)
        bob_m = await join_space(stores["bob"], str(link), "Bob")
        async with contextlib.AsyncExitStack() as stack:

            async def session_on(index: int, name: str, membership: Any) -> Any:
                made = len(proxy.connections)
                proxy.send_next_to(index)
                opened = await stack.enter_async_context(open_space(stores[name], membership))
                assert proxy.connections[made] == index, "another connection took the turn"
                return opened

            alice = await session_on(0, "alice", alice_m)  # through A
            bob = await session_on(1, "bob", bob_m)  # through B
            await alice.sync()
            room = (await create_room(alice, "hall", "conference")).room_id
            await bob.sync()
            call_id = (await join(alice, room)).state.call_id
            await join(bob, room)
            assert two.a.proc is not None
            two.a.proc.send_signal(signal.SIGSTOP)
            try:

                def alone(event: CallUpdate) -> bool:
                    members = [p.member for p in event.state.participants]
                    return members == [bob.member_key]

                await next_event(bob, CallUpdate, alone, timeout=60)  # B freed Alice's seat
            finally:
                two.a.proc.send_signal(signal.SIGCONT)
            ended = await next_event(
                alice, CallEnded, lambda e: e.room_id == room and e.call_id == call_id, 30
            )
            assert ended.reason == "ended" and ended.action is None
