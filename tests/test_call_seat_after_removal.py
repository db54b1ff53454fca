"""A member removed from the space does not get its old call seat back (issue 11, red team).

Two real ``salon serve`` instances on one real PostgreSQL behind a round-robin address; real
SDK sessions, and a modified client where the attack needs one. In a lobby room Alice (the
host, through B) admits Bob (through A). A is SIGKILLed, so nobody leaves Bob's seat until
``seat_grace_seconds`` pass. Meanwhile Alice removes Bob from the space (no ban). Bob joins
the space again through a link he still knows — with his old key — and presents the join
that held his old seat: a take-over would put him back in the call with the admission Alice
gave before she removed him, past the lobby. His seat left the call when he was removed (not
a grace period later), and the take-over is refused: a seat joined before a removal
is not its member's to take over (he can knock again, like anyone), and his new session
holds no seat (it may not signal in the call).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from conftest import SalonServer
from postgres_support import PostgresServer
from support.instance_loss import cluster
from test_call_server import join, keystore, next_event, request

from client.call.client import sign_action
from client.core import crypto
from client.core.connection import Connection
from client.core.errors import ServerError
from client.core.invites import parse_invite_link
from client.core.keystore import SpaceMembership
from client.core.rooms import create_room
from client.core.space import _authenticate, _sign, create_space, join_space, open_space
from protocol.conference_wire import (
    ActInCall,
    CallJoined,
    CallUpdate,
    JoinCall,
    SendCallSignal,
)
from protocol.records import Join, join_statement
from protocol.wire import Done, InviteOpened, Joined, JoinSpace, OpenInvite, auth_statement

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
CONFIG = {
    "limits": {"join_attempts_per_minute_per_address": 1000},
    "conference": {"seat_grace_seconds": 60.0},  # the seat outlives the whole attack
}


async def join_again_with_old_key(link_text: str, m: SpaceMembership) -> None:
    """A modified client: join the space through ``link_text`` with a key it held before."""
    link = parse_invite_link(link_text)
    conn = await Connection.open(link.server)
    try:
        invite_sig = crypto.sign(
            link.signing_seed, auth_statement(conn.origin, "invite", link.invite_id, conn.nonce)
        )
        opened = await conn.request(
            OpenInvite(conn.next_id(), link.invite_id, invite_sig), InviteOpened
        )
        box_key = crypto.public_box_key(m.box_secret)
        member_key = crypto.public_signing_key(m.signing_seed)
        statement = join_statement(opened.space_id, member_key, box_key, link.invite_id)
        body = Join(link.invite_id, box_key, crypto.sign(link.signing_seed, statement))
        record = _sign(m, opened.space_id, opened.head_seq + 1, opened.head_hash, body)
        member_sig = crypto.sign(
            m.signing_seed, auth_statement(conn.origin, "member", opened.space_id, conn.nonce)
        )
        await conn.request(
            JoinSpace(conn.next_id(), link.invite_id, invite_sig, record, member_sig), Joined
        )
    finally:
        await conn.close()


async def test_a_removed_member_who_joins_again_does_not_resume_the_old_seat(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with cluster(SalonServer, postgres.create_database(), tmp_path, CONFIG) as two:
        proxy = two.proxy
        stores = {name: keystore(tmp_path / name) for name in ("alice", "bob")}
        alice_m, link = await create_space(stores["alice"], two.url, "Town", "Alice", 10, 3600)
        async with contextlib.AsyncExitStack() as stack:

            async def session_on(index: int, name: str, membership: Any) -> Any:
                made = len(proxy.connections)
                proxy.send_next_to(index)
                opened = await stack.enter_async_context(open_space(stores[name], membership))
                assert proxy.connections[made] == index, "another connection took the turn"
                return opened

            alice = await session_on(1, "alice", alice_m)  # through B
            again = str(await alice.create_invite(5, 3600, "member"))  # a link Bob keeps
            bob_m = await join_space(stores["bob"], str(link), "Bob")
            bob = await session_on(0, "bob", bob_m)  # through A
            await alice.sync()
            room = (await create_room(alice, "hall", "conference", lobby=True)).room_id
            await bob.sync()
            call_id = (await join(alice, room)).state.call_id
            waiting = await join(bob, room)
            assert waiting.status == "lobby"
            old_join = waiting.state.participants[0].join
            admit = sign_action(alice, room, call_id, "admit", bob.member_key, old_join.nonce)
            await request(alice, ActInCall(alice.conn.next_id(), room, admit), Done)
            await next_event(bob, CallUpdate, lambda e: e.action == admit)
            await next_event(alice, CallUpdate, lambda e: e.action == admit)  # (older ones gone)

            two.kill_a()  # Bob's instance: his seat stays (seat_grace_seconds)
            await alice.sync()
            (bob_view,) = [m for m in alice.members() if m.key == bob.member_key]
            await alice.kick(bob_view, ban=False)
            # His seat leaves the call at once, not seat_grace_seconds later.

            def without_bob(event: CallUpdate) -> bool:
                return bob.member_key not in {p.member for p in event.state.participants}

            await next_event(alice, CallUpdate, without_bob, timeout=20)
            await join_again_with_old_key(again, bob_m)

            conn = await Connection.open(two.url)  # only B is left behind the address
            try:
                await _authenticate(conn, bob_m)
                with pytest.raises(ServerError):
                    await conn.request(JoinCall(conn.next_id(), room, old_join), CallJoined)
                # Nor does his session hold the seat: it may not signal in the call.
                box = SendCallSignal(conn.next_id(), room, call_id, alice.member_key, b"offer")
                with pytest.raises(ServerError, match="only the session that joined"):
                    await conn.request(box, Done)
            finally:
                await conn.close()
