"""Instances rebuild calls from the log, and free the seats of silent instances (issue 11).

Several :class:`~spaces.handlers.conference.Conferences` (one per instance) over one shared
log: a small fake of the :class:`~spaces.events.Events` seam that numbers each room's inputs
and keeps them as PostgresEvents does, and can stop delivering to one instance (a LISTEN
connection that was down). The real thing, on PostgreSQL with real instances, is
``tests/test_call_survives_instance_loss.py``; this one drives the edge cases exactly.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from support import until
from test_call_core import NOW, ROOM, SPACE, Person, room

from protocol.errors import ProtocolError
from spaces.call_log import CallInput, input_encoder
from spaces.config import Config
from spaces.counters import Counters
from spaces.events import Dispatch, Room, RoomLog
from spaces.handlers.conference import Conferences
from spaces.hub import Hub

KEY = (SPACE, ROOM)


class SharedLog:
    def __init__(self) -> None:
        self.rows: list[tuple[int, bytes, bool]] = []
        self.base: tuple[int, bytes] | None = None
        self.instances: list[FakeEvents] = []
        self.live: set[str] = set()

    def room_log(self, upto: int | None) -> RoomLog:
        top = upto if upto is not None else 10**9
        after = self.base[0] if self.base and self.base[0] <= top else 0
        base = self.base if after else None
        return base, [(s, b) for s, b, state in self.rows if state and after < s <= top]


class FakeEvents(Dispatch):
    def __init__(self, log: SharedLog, instance: str) -> None:
        super().__init__()
        self.log, self.instance, self.deaf = log, instance, False
        log.instances.append(self)
        log.live.add(instance)

    async def submit(self, body: bytes, room: Room, state: bool) -> Any:
        seq = (self.log.rows[-1][0] if self.log.rows else 0) + 1
        self.log.rows.append((seq, body, state))
        mine: Any = None
        for events in self.log.instances:
            if events.deaf:
                continue
            assert events.ordered is not None
            try:
                result = await events.ordered(body, events is self, seq)
            except ProtocolError as exc:
                result = exc
            if events is self:
                mine = result
        if isinstance(mine, Exception):
            raise mine
        return mine

    async def room_log(self, room: Room, upto: int | None) -> RoomLog:
        return self.log.room_log(upto)

    async def compact(self, room: Room, seq: int, base: bytes) -> None:
        self.log.base = (seq, base)
        self.log.rows = [row for row in self.log.rows if row[0] >= seq]

    async def live_instances(self, silent_for: float) -> set[str] | None:
        return set(self.log.live)

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class People:
    def __init__(self) -> None:
        self.owner, self.bob, self.carol = Person("owner"), Person("member"), Person("member")
        everyone = (self.owner, self.bob, self.carol)
        self.roles = {p.key: p.role for p in everyone}
        members = {p.key: SimpleNamespace(role=p.role) for p in everyone}
        rooms = {ROOM: SimpleNamespace(spec=room())}
        roster = SimpleNamespace(rooms=rooms, members=members, active=lambda member: None)

        async def roster_of(space_id: str) -> Any:
            return roster

        self.membership: Any = SimpleNamespace(roster=roster_of)


def instance(log: SharedLog, name: str, people: People) -> Conferences:
    config = Config()
    store: Any = None  # not reached: the tests submit the inputs themselves
    return Conferences(
        people.membership, Hub(Counters()), config, store, events=FakeEvents(log, name)
    )


async def put(via: Conferences, kind: str, person: Person | None = None, **fields: Any) -> Any:
    entry = CallInput(
        kind,
        SPACE,
        ROOM,
        member=person.key if person else b"",
        now_ms=NOW,
        next_call_id=f"call{len(fields)}{kind}{NOW}",
        **fields,
    )
    return await via.events.submit(input_encoder.encode(entry), KEY, entry.changes_state)


def call_id(conferences: Conferences) -> str:
    return conferences._replicas[KEY].conference.call_id


async def join(via: Conferences, person: Person, people: People, session: str) -> Any:
    action = person.act(call_id(via), "join", person.key)
    return await put(via, "join", person, session=session, action=action, roles=people.roles)


def same(*instances: Conferences) -> bool:
    prints = {c._replicas[KEY].fingerprint() for c in instances}
    return len(prints) == 1


async def test_missed_inputs_and_a_late_instance_rebuild_the_same_call() -> None:
    log, people = SharedLog(), People()
    a, b = instance(log, "A", people), instance(log, "B", people)
    await put(a, "open")
    await join(a, people.owner, people, "A.1")
    await join(b, people.bob, people, "B.1")
    assert same(a, b)

    # B's listener is down: it misses a hand and Carol's join.
    b.events.deaf = True  # type: ignore[attr-defined]
    hand = people.bob.act(call_id(a), "hand-up", people.bob.key)
    await put(a, "act", people.bob, action=hand, roles=people.roles)
    await join(a, people.carol, people, "A.2")
    assert not same(a, b)
    # Back: the next input's number jumps; B rebuilds from the log, then applies it.
    b.events.deaf = False  # type: ignore[attr-defined]
    mic = people.carol.act(call_id(a), "mic-off", people.carol.key)
    await put(a, "act", people.carol, action=mic, roles=people.roles)
    assert same(a, b)
    # The rebuilt replica refuses what the live one refuses: the hand B never heard live.
    with pytest.raises(ProtocolError, match="already used"):
        await put(b, "act", people.bob, action=hand, roles=people.roles)

    # An instance that starts mid-call rebuilds it at its first input.
    c = instance(log, "C", people)
    await put(c, "open")
    assert same(a, b, c)

    # The call ends: compacted to one snapshot; a later instance starts from it.
    end = people.owner.act(call_id(a), "end")
    await put(a, "act", people.owner, action=end, roles=people.roles)
    await until(lambda: log.base is not None, "the log compacted", 5)
    assert log.base is not None and [row[0] for row in log.rows] == [log.base[0]]
    d = instance(log, "D", people)
    await put(d, "open")
    assert same(a, b, c, d)


async def test_after_its_listener_is_back_an_instance_catches_every_call_up() -> None:
    """No further input needed: the resync after a reconnection compares each replica with
    its room's log and rebuilds the ones that fell behind."""
    log, people = SharedLog(), People()
    a, b = instance(log, "A", people), instance(log, "B", people)
    await put(a, "open")
    await join(a, people.owner, people, "A.1")
    b.events.deaf = True  # type: ignore[attr-defined]
    await join(a, people.bob, people, "A.2")
    b.events.deaf = False  # type: ignore[attr-defined]
    assert not same(a, b)
    await b._resync()
    assert same(a, b)


async def test_a_silent_instances_seats_are_freed_unless_taken_over() -> None:
    log, people = SharedLog(), People()
    a, b = instance(log, "A", people), instance(log, "B", people)
    await put(a, "open")
    await join(a, people.owner, people, "A.1")
    await join(a, people.bob, people, "A.2")
    await join(b, people.carol, people, "B.1")
    # A dies. Bob comes back through B with his seated join before the grace ends.
    a.events.deaf = True  # type: ignore[attr-defined]
    log.live.discard("A")
    seated = b._replicas[KEY].conference.seats[people.bob.key].join
    await put(b, "resume", people.bob, session="B.2", action=seated)
    assert await b.free_dead_seats() == 1  # only the owner's seat, held through A
    conference = b._replicas[KEY].conference
    assert set(conference.seats) == {people.bob.key, people.carol.key}
    assert b._replicas[KEY].seated[people.bob.key] == "B.2"
    assert await b.free_dead_seats() == 0  # once
    # A live instance's seats are never freed.
    assert people.carol.key in conference.seats
