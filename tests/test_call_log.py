"""A call's replica is a function of its room's log (spaces/call_log.py), without any I/O.

The same inputs give the same state whether a replica lived through them or was rebuilt by
replaying the log as kept (from the newest idle-call snapshot); a rebuilt replica refuses
what the live one refuses; a seat is taken over only with the join that holds it.
"""

from __future__ import annotations

import itertools
import random

import pytest
from test_call_core import NOW, ROOM, SPACE, Person, room

from protocol.errors import ProtocolError, StaleCall
from spaces.call_log import (
    Base,
    CallInput,
    Limits,
    LogGap,
    Replica,
    base_decoder,
    input_decoder,
    input_encoder,
    instance_of,
)

LIMITS = Limits(mesh_max=4, mesh_return_max=3, max_participants=10)


class Log:
    """A room's log and one live replica applying it; kept like PostgresEvents keeps it
    (signals dropped, everything before an idle-call snapshot dropped)."""

    def __init__(self, lobby: bool = False) -> None:
        self.room = room(lobby=lobby)
        self.ids = (f"call{n:012d}" for n in itertools.count())
        self.rows: list[tuple[int, bytes]] = []
        self.base: tuple[int, bytes] | None = None
        self.seq = 0
        self.live: Replica | None = None

    def put(self, entry: CallInput) -> object:
        """Append, apply on the live replica (through the wire encoding) and return its
        result or its error; compact when the call became idle."""
        self.seq += 1
        body = input_encoder.encode(entry)
        self.rows.append((self.seq, body))
        entry = input_decoder.decode(body)
        if self.live is None:
            assert entry.kind == "open"
            self.live = Replica.opened(self.room, LIMITS, entry, self.seq)
            return None
        self.live.seq = self.seq
        if not entry.changes_state:
            return self.live.may_signal(entry)
        try:
            applied = self.live.apply(entry)
        except ProtocolError as exc:
            return exc
        if applied.change is not None and applied.change.ended:
            self.base = (self.seq, input_encoder.encode(self.live.base()))
            self.rows = [(s, b) for s, b in self.rows if s >= self.seq]
        return applied

    def rebuilt(self, upto: int | None = None) -> Replica:
        upto = self.seq if upto is None else upto
        base = (self.base[0], base_decoder.decode(self.base[1])) if self.base else None
        kept = [
            (s, input_decoder.decode(b))
            for s, b in self.rows
            if s <= upto and (base is None or s > base[0])
        ]
        kept = [(s, e) for s, e in kept if e.changes_state]
        return Replica.replay(SPACE, self.room, LIMITS, base, kept, upto)

    def entry(self, kind: str, person: Person | None = None, **fields: object) -> CallInput:
        return CallInput(
            kind,
            SPACE,
            ROOM,
            member=person.key if person else b"",
            now_ms=NOW,
            next_call_id=next(self.ids),
            **fields,  # type: ignore[arg-type]
        )


def people() -> dict[str, Person]:
    return {
        n: Person(r)
        for n, r in (("owner", "owner"), ("bob", "member"), ("carol", "member"), ("dave", "member"))
    }


def roles(everyone: dict[str, Person]) -> dict[bytes, str]:
    return {p.key: p.role for p in everyone.values()}


def call_id(log: Log) -> str:
    assert log.live is not None
    return log.live.conference.call_id


def join(log: Log, person: Person, everyone: dict[str, Person], session: str) -> object:
    action = person.act(call_id(log), "join", person.key)
    return log.put(log.entry("join", person, session=session, action=action, roles=roles(everyone)))


def test_same_inputs_same_state_live_or_replayed() -> None:
    everyone = people()
    owner, bob, carol, dave = (everyone[n] for n in ("owner", "bob", "carol", "dave"))
    log = Log(lobby=True)
    log.put(log.entry("open"))
    join(log, owner, everyone, "A.1")
    join(log, bob, everyone, "B.1")  # in the lobby
    conf = log.live.conference  # type: ignore[union-attr]
    admit = owner.act(call_id(log), "admit", bob.key, join_ref=conf.seats[bob.key].join.nonce)
    log.put(log.entry("act", owner, action=admit, roles=roles(everyone)))
    mute = owner.act(call_id(log), "mute", bob.key)
    log.put(log.entry("act", owner, action=mute, roles=roles(everyone)))
    lock = owner.act(call_id(log), "lock")
    log.put(log.entry("act", owner, action=lock, roles=roles(everyone)))
    assert isinstance(join(log, carol, everyone, "A.2"), ProtocolError)  # locked: refused
    log.put(log.entry("signal", owner, session="A.1", to=bob.key, call_id=call_id(log)))
    ban = owner.act(call_id(log), "ban", dave.key)
    log.put(log.entry("act", owner, action=ban, roles=roles(everyone), sfu=True))
    assert log.base is None
    for upto in range(1, log.seq + 1):  # every prefix of the log replays to the same state
        partial = Log(lobby=True)
        for seq, body in log.rows:
            if seq <= upto:
                partial.put(input_decoder.decode(body))
        assert log.rebuilt(upto).fingerprint() == partial.live.fingerprint()  # type: ignore[union-attr]
    assert log.rebuilt().fingerprint() == log.live.fingerprint()  # type: ignore[union-attr]

    # The call ends (a host ends it): the log is compacted to one snapshot, and a replica
    # rebuilt from it is still the live one; a new call goes on from there.
    end = owner.act(call_id(log), "end")
    log.put(log.entry("act", owner, action=end, roles=roles(everyone)))
    assert log.base is not None and [s for s, _ in log.rows] == [log.seq]
    assert log.rebuilt().fingerprint() == log.live.fingerprint()  # type: ignore[union-attr]
    join(log, bob, everyone, "B.2")
    join(log, owner, everyone, "A.3")
    assert log.rebuilt().fingerprint() == log.live.fingerprint()  # type: ignore[union-attr]
    assert log.live.conference.bans.keys() == {dave.key}  # type: ignore[union-attr]


def test_random_logs_replay_to_the_live_state() -> None:
    """Random joins, leaves, resumes and actions, some refused: every rebuild equals live."""
    rng = random.Random(11)
    for _ in range(30):
        everyone = people()
        names = list(everyone)
        log = Log(lobby=rng.random() < 0.5)
        log.put(log.entry("open", sfu=rng.random() < 0.5))
        sessions = itertools.count()
        for _ in range(rng.randrange(5, 25)):
            person = everyone[rng.choice(names)]
            live = log.live
            assert live is not None
            seat = live.conference.seats.get(person.key)
            pick = rng.random()
            if pick < 0.35 or seat is None:
                join(log, person, everyone, f"{rng.choice('AB')}.{next(sessions)}")
            elif pick < 0.5:
                token = live.seated.get(person.key, "A.x")
                log.put(log.entry("leave", person, session=token))
            elif 0.6 <= pick < 0.66:
                # An SFU placement: the first wins, a move must name what it replaces.
                current = live.placement
                replaces = rng.choice(["", current.conference if current else "", "bogus"])
                node = rng.choice(["", "n1", "n2"])
                log.put(
                    log.entry(
                        "place",
                        call_id=call_id(log),
                        node=node,
                        conference=f"c{next(sessions)}",
                        replaces=replaces,
                    )
                )
            elif pick < 0.6:
                resume = log.entry(
                    "resume", person, session=f"B.{next(sessions)}", action=seat.join
                )
                log.put(resume)
            else:
                name = rng.choice(["hand-up", "mic-off", "lock", "unlock", "end", "mute-all"])
                host = everyone["owner"]
                actor = host if name in ("lock", "unlock", "end", "mute-all") else person
                target = actor.key if name in ("hand-up", "mic-off") else b""
                action = actor.act(call_id(log), name, target)  # type: ignore[arg-type]
                log.put(log.entry("act", person, action=action, roles=roles(everyone)))
            assert log.rebuilt().fingerprint() == log.live.fingerprint()  # type: ignore[union-attr]


def test_a_placement_is_the_first_in_the_log_and_replays() -> None:
    """The SFU node of a call (issue 11): the first ``place`` wins, a later one moves the call
    only if it names the placement it replaces, a placement for another call is ignored, the
    end of the call clears it — and a rebuilt replica has the same placement."""
    everyone = people()
    owner = everyone["owner"]
    log = Log()
    log.put(log.entry("open", sfu=True))
    join(log, owner, everyone, "A.1")
    first = log.entry("place", call_id=call_id(log), node="n1", conference="c1")
    assert log.put(first).placed  # type: ignore[union-attr]
    racing = log.entry("place", call_id=call_id(log), node="n2", conference="c2")
    assert not log.put(racing).placed  # type: ignore[union-attr]  # placed meanwhile: ignored
    stale = log.entry("place", call_id="call-over", node="n2", conference="c3", replaces="c1")
    assert not log.put(stale).placed  # type: ignore[union-attr]
    assert log.live is not None and log.live.placement is not None
    assert (log.live.placement.node, log.live.placement.conference) == ("n1", "c1")
    assert log.rebuilt().placement == log.live.placement
    move = log.entry("place", call_id=call_id(log), node="n2", conference="c4", replaces="c1")
    assert log.put(move).placed  # type: ignore[union-attr]
    assert log.rebuilt().placement == log.live.placement
    assert log.live.placement is not None and log.live.placement.node == "n2"
    end = owner.act(call_id(log), "end")
    log.put(log.entry("act", owner, action=end, roles=roles(everyone)))
    assert log.live.placement is None and log.rebuilt().placement is None
    assert log.rebuilt().fingerprint() == log.live.fingerprint()


def test_a_rebuilt_replica_refuses_what_the_live_one_refuses() -> None:
    everyone = people()
    owner, bob = everyone["owner"], everyone["bob"]
    log = Log()
    log.put(log.entry("open"))
    join(log, owner, everyone, "A.1")
    hand = bob.act(call_id(log), "hand-up", bob.key)
    join(log, bob, everyone, "A.2")
    log.put(log.entry("act", bob, action=hand, roles=roles(everyone)))
    rebuilt = log.rebuilt()
    again = log.entry("act", bob, action=hand, roles=roles(everyone))  # a replayed action
    with pytest.raises(ProtocolError, match="already used"):
        rebuilt.apply(again)
    assert isinstance(log.put(again), ProtocolError)


def test_only_the_seated_join_takes_a_seat_over() -> None:
    everyone = people()
    owner, bob = everyone["owner"], everyone["bob"]
    log = Log()
    log.put(log.entry("open"))
    join(log, owner, everyone, "A.1")
    join(log, bob, everyone, "A.2")
    live = log.live
    assert live is not None
    version = live.conference.version
    bob_join = live.conference.seats[bob.key].join
    # Another member presenting Bob's join (it is in every participant's state): refused.
    stolen = log.entry("resume", owner, session="B.9", action=bob_join)
    assert isinstance(log.put(stolen), StaleCall)
    # A join Bob signed earlier is not the one holding his seat: refused.
    old = bob.act(call_id(log), "join", bob.key)
    assert isinstance(log.put(log.entry("resume", bob, session="B.3", action=old)), StaleCall)
    # Bob's own seated join, from a new session on B: his seat, unchanged, nobody told.
    applied = log.put(log.entry("resume", bob, session="B.4", action=bob_join))
    assert applied.replaced == "A.2" and applied.change is None  # type: ignore[attr-defined]
    assert live.seated[bob.key] == "B.4" and live.conference.version == version
    # The old session's leave (its instance freeing it late) no longer frees the seat.
    log.put(log.entry("leave", bob, session="A.2"))
    assert bob.key in live.conference.seats
    log.put(log.entry("leave", bob, session="B.4"))
    assert bob.key not in live.conference.seats
    # A seat that is gone stays gone: resuming it is refused.
    assert isinstance(log.put(log.entry("resume", bob, session="B.5", action=bob_join)), StaleCall)
    assert log.rebuilt().fingerprint() == live.fingerprint()


def test_a_log_without_its_beginning_is_not_guessed() -> None:
    everyone = people()
    log = Log()
    log.put(log.entry("open"))
    join(log, everyone["owner"], everyone, "A.1")
    log.rows = log.rows[1:]  # the opening input lost
    with pytest.raises(LogGap):
        log.rebuilt()


def test_tokens_name_their_instance() -> None:
    assert instance_of("0a1b2c3d4e5f6a7b.ffee") == "0a1b2c3d4e5f6a7b"
    assert isinstance(Base("c", 1, 2, False, []), Base)


def test_what_each_member_spent_in_a_call_is_replicated_and_starts_again() -> None:
    """Replica.spent (the per-member budget's count, spaces/call_log.py): every join,
    resume and act a member sent, refused ones included, the same live and rebuilt; leaves
    are free; the next call starts from nothing."""
    everyone = people()
    owner, bob = everyone["owner"], everyone["bob"]
    log = Log()
    log.put(log.entry("open"))
    join(log, owner, everyone, "A.1")
    join(log, bob, everyone, "A.2")
    kick = bob.act(call_id(log), "kick", owner.key)  # no host: refused, logged all the same
    for _ in range(3):
        assert isinstance(
            log.put(log.entry("act", bob, action=kick, roles=roles(everyone))), ProtocolError
        )
    live = log.live
    assert live is not None
    bob_join = live.conference.seats[bob.key].join
    log.put(log.entry("resume", bob, session="B.1", action=bob_join))
    assert live.spent == {owner.key: 1, bob.key: 5}
    assert log.rebuilt().spent == live.spent
    assert log.rebuilt().fingerprint() == live.fingerprint()
    log.put(log.entry("leave", bob, session="B.1"))
    log.put(log.entry("leave", owner, session="A.1"))  # the call ends
    assert live.spent == {} and live.is_idle()
    assert log.rebuilt().fingerprint() == live.fingerprint()


def test_an_instance_configured_otherwise_rebuilds_the_same_call() -> None:
    """Inputs carry the call limits they were submitted under: an instance whose
    ``[conference]`` limits differ (a rolling config change) rebuilds the call the others
    have, instead of refusing seats they granted (and the reverse)."""
    everyone = people()
    log = Log()
    submitted = [LIMITS.mesh_max, LIMITS.mesh_return_max, LIMITS.max_participants]
    log.put(log.entry("open", limits=submitted))
    for n, person in enumerate(everyone.values()):
        action = person.act(call_id(log), "join", person.key)
        entry = log.entry(
            "join", person, session=f"A.{n}", action=action, roles=roles(everyone), limits=submitted
        )
        assert not isinstance(log.put(entry), ProtocolError)
    live = log.live
    assert live is not None and len(live.conference.seats) == 4
    strict = Limits(mesh_max=2, mesh_return_max=1, max_participants=2)
    kept = [(s, input_decoder.decode(b)) for s, b in log.rows]
    rebuilt = Replica.replay(SPACE, log.room, strict, None, kept, log.seq)
    assert rebuilt.fingerprint() == live.fingerprint()
    assert len(rebuilt.conference.seats) == 4


def test_a_seat_from_an_earlier_tenure_in_the_space_is_not_taken_over() -> None:
    """A resume names where the member's current tenure in the space began (``since``):
    the seat's join, signed before that (before a removal and a re-join), is refused."""
    everyone = people()
    owner, bob = everyone["owner"], everyone["bob"]
    log = Log()
    log.put(log.entry("open"))
    join(log, owner, everyone, "A.1")
    join(log, bob, everyone, "A.2")
    live = log.live
    assert live is not None
    bob_join = live.conference.seats[bob.key].join
    later = bob_join.head_seq + 1  # his join record after a removal
    refused = log.put(log.entry("resume", bob, session="B.1", action=bob_join, since=later))
    assert isinstance(refused, StaleCall)
    assert live.seated[bob.key] == "A.2"
    same = log.entry("resume", bob, session="B.2", action=bob_join, since=bob_join.head_seq)
    assert log.put(same).replaced == "A.2"  # type: ignore[attr-defined]
    assert log.rebuilt().fingerprint() == live.fingerprint()
