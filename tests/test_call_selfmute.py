"""A member's own microphone and camera state: signed "mic-off"/"mic-on" and
"camera-off"/"camera-on" self actions, filed on its seat and re-verified by every client
(PROTOCOL §13), distinct from a host's mute."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from client.call.client import sign_action
from client.core.errors import ServerError
from protocol.conference_rules import SELF_STATE, action_problem, seat_flags
from protocol.conference_wire import ActInCall, CallAction, CallParticipant, CallUpdate
from protocol.errors import ErrorCode, Forbidden
from protocol.wire import Done
from spaces.handlers.conference import SELF_STATE_BURST
from tests.test_call_core import (
    NOW,
    ROOM,
    SPACE,
    Person,
    conference,
    flags_of,
    join,
    roles,
)
from tests.test_call_server import join as join_call
from tests.test_call_server import lobby_call, next_event, request

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def people() -> dict[str, Person]:
    roles_ = {"owner": "owner", "mod": "moderator", "bob": "member", "carol": "member"}
    return {name: Person(role) for name, role in roles_.items()}  # type: ignore[arg-type]


def test_mic_and_camera_are_self_actions(people: dict[str, Person]) -> None:
    r = roles(people)
    bob, carol, owner = people["bob"], people["carol"], people["owner"]
    for name in ("mic-off", "mic-on", "camera-off", "camera-on"):
        assert name in SELF_STATE

        def problem(action: CallAction) -> str | None:
            return action_problem(action, r, space_id=SPACE, room_id=ROOM, call_id="c1")

        assert problem(bob.act("c1", name, bob.key)) is None
        # nobody, not even a host, says it about someone else
        assert problem(carol.act("c1", name, bob.key)) == "it is about someone else"
        assert problem(owner.act("c1", name, bob.key)) == "it is about someone else"


def test_self_mute_shows_and_clears(people: dict[str, Person]) -> None:
    conf = conference()
    bob, carol = people["bob"], people["carol"]
    r = roles(people)
    join(conf, bob, people)
    join(conf, carol, people)
    flags = flags_of(conf, bob, people, carol)
    assert not flags.mic_off and not flags.camera_off and not flags.muted
    conf.act(bob.act(conf.call_id, "mic-off", bob.key), r, NOW)
    conf.act(bob.act(conf.call_id, "camera-off", bob.key), r, NOW)
    flags = flags_of(conf, bob, people, carol)
    assert flags.mic_off and flags.camera_off
    assert not flags.muted and flags.muted_by is None  # self-muted is no host's mute
    conf.act(bob.act(conf.call_id, "mic-on", bob.key, at=NOW + 1), r, NOW)
    flags = flags_of(conf, bob, people, carol)
    assert not flags.mic_off and flags.camera_off
    conf.act(bob.act(conf.call_id, "camera-on", bob.key, at=NOW + 1), r, NOW)
    assert not flags_of(conf, bob, people, carol).camera_off
    # a new join is a new incarnation: it starts with its microphone and camera on
    conf.act(bob.act(conf.call_id, "mic-off", bob.key, at=NOW + 2), r, NOW)
    join(conf, bob, people)
    assert not flags_of(conf, bob, people, carol).mic_off


def test_mic_on_does_not_lift_a_host_mute(people: dict[str, Person]) -> None:
    conf = conference()
    mod, bob, carol = people["mod"], people["bob"], people["carol"]
    r = roles(people)
    for person in (mod, bob, carol):
        join(conf, person, people)
    conf.act(mod.act(conf.call_id, "mute", bob.key), r, NOW)
    conf.act(bob.act(conf.call_id, "mic-off", bob.key), r, NOW)
    conf.act(bob.act(conf.call_id, "mic-on", bob.key, at=NOW + 1), r, NOW)
    flags = flags_of(conf, bob, people, carol)
    assert flags.muted and flags.muted_by == mod.key and not flags.mic_off
    # and a member cannot unmute itself with the host's action either
    with pytest.raises(Forbidden, match="not a host"):
        conf.act(bob.act(conf.call_id, "unmute", bob.key), r, NOW)
    conf.act(mod.act(conf.call_id, "unmute", bob.key, at=NOW + 2), r, NOW)
    assert not flags_of(conf, bob, people, carol).muted


def test_forged_mic_off_refused_by_server_and_ignored_by_clients(
    people: dict[str, Person],
) -> None:
    conf = conference()
    owner, bob, carol = people["owner"], people["bob"], people["carol"]
    r = roles(people)
    for person in (owner, bob, carol):
        join(conf, person, people)
    # a modified client signs a mic-off about another member: the server refuses it
    for forger in (carol, owner):
        for name in ("mic-off", "camera-off"):
            with pytest.raises(Forbidden, match="about someone else"):
                conf.act(forger.act(conf.call_id, name, bob.key), r, NOW)
    assert not flags_of(conf, bob, people, carol).mic_off
    # a server files one on Bob's seat anyway (Carol's own, or Carol's about Bob): every
    # client re-checks it against its own roster and ignores it
    state = conf.state_for(owner.key, r)

    def check(action: CallAction) -> bool:
        return (
            action_problem(action, r, space_id=SPACE, room_id=ROOM, call_id=state.call_id) is None
        )

    seat = next(p for p in state.participants if p.member == bob.key)
    forgeries = [
        carol.act(conf.call_id, "mic-off", carol.key),  # valid, but Carol's own
        carol.act(conf.call_id, "mic-off", bob.key),  # about Bob, not by Bob
        Person("member").act(conf.call_id, "mic-off", bob.key),  # a stranger
        bob.act("an-earlier-call", "mic-off", bob.key),  # Bob's, from another call
    ]
    for forged in forgeries:
        lying: CallParticipant = msgspec.structs.replace(seat, mic=forged, camera=forged)
        flags = seat_flags(lying, conf.room, state.call_id, r, check)
        assert not flags.mic_off and not flags.camera_off, forged
    # a mic-on filed as the camera field (or any wrong name) does not count either
    wrong = bob.act(conf.call_id, "mic-off", bob.key)
    lying = msgspec.structs.replace(seat, camera=wrong)
    flags = seat_flags(lying, conf.room, state.call_id, r, check)
    assert not flags.camera_off


def test_old_clients_decode_states_without_the_fields(people: dict[str, Person]) -> None:
    """The fields are optional: a seat encoded without them decodes as "on"."""
    conf = conference()
    bob = people["bob"]
    join(conf, bob, people)
    seat = conf.state_for(bob.key, roles(people)).participants[0]
    encoded = msgspec.msgpack.encode(seat)
    assert msgspec.msgpack.decode(encoded, type=CallParticipant) == seat
    assert seat.mic is None and seat.camera is None


async def test_server_files_and_rate_limits_self_state(app_server: Any, tmp_path: Path) -> None:
    async with lobby_call(app_server, tmp_path) as call:
        room, alice, bob = call["room"], call["alice"], call["bob"]
        joined = await join_call(alice, room)
        call_id = joined.state.call_id

        async def act(session: Any, name: Any, target: bytes | None = None) -> Any:
            action = sign_action(
                session, room, call_id, name, session.member_key if target is None else target
            )
            return await request(session, ActInCall(session.conn.next_id(), room, action), Done)

        # Bob (not in the call) cannot file a mic-off about Alice
        with pytest.raises(ServerError) as refused:
            await act(bob, "mic-off", alice.member_key)
        assert refused.value.code == ErrorCode.FORBIDDEN
        await act(alice, "mic-off")
        update = await next_event(
            alice,
            CallUpdate,
            lambda e: e.action is not None and e.action.action == "mic-off",
        )
        (seat,) = update.state.participants
        assert seat.mic is not None and seat.mic.action == "mic-off"
        # a stream of toggles is cut off per member: rate_limited
        codes = []
        for n in range(SELF_STATE_BURST + 5):
            try:
                await act(alice, "mic-on" if n % 2 else "mic-off")
                codes.append("ok")
            except ServerError as error:
                codes.append(error.code)
        assert ErrorCode.RATE_LIMITED in codes
        assert codes.count("ok") <= SELF_STATE_BURST
