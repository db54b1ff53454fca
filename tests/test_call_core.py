"""The conference rules, media keys and sealed signalling, driven without any I/O."""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.call.keys import CallKeys, SenderKey, media_kid, verification_code
from client.call.signalling import (
    SignalBody,
    SignalContext,
    SignalRejected,
    check_sdp,
    link_id,
    open_signal,
    seal_signal,
)
from client.core import crypto
from protocol.conference_rules import (
    Restrictions,
    action_problem,
    end_problem,
    freshness_problem,
    is_locked,
    seat_flags,
    topology_for,
)
from protocol.conference_wire import ActionName, CallAction, CallState, action_signing_bytes
from protocol.errors import (
    Banned,
    CallFull,
    CallLocked,
    Forbidden,
    InvalidMessage,
    NotFound,
    StaleCall,
)
from protocol.media_keys import KeyIdExhausted
from protocol.records import Role, RoomCreate
from spaces.conference import Conference

SPACE = "space0123456789"
ROOM = "room0123456789"
NOW = 1_800_000_000_000


class Person:
    def __init__(self, role: Role) -> None:
        self.seed = crypto.random_key()
        self.key = crypto.public_signing_key(self.seed)
        self.box_secret = crypto.random_key()
        self.box_key = crypto.public_box_key(self.box_secret)
        self.role = role

    def act(
        self,
        call_id: str,
        name: ActionName,
        target: bytes = b"",
        at: int = NOW,
        join_ref: bytes = b"",
    ) -> CallAction:
        unsigned = CallAction(
            SPACE,
            ROOM,
            call_id,
            self.key,
            name,
            target,
            at,
            secrets.token_bytes(16),
            join_ref=join_ref,
        )
        return msgspec.structs.replace(
            unsigned, sig=crypto.sign(self.seed, action_signing_bytes(unsigned))
        )


@pytest.fixture
def people() -> dict[str, Person]:
    return {
        "owner": Person("owner"),
        "mod": Person("moderator"),
        "bob": Person("member"),
        "carol": Person("member"),
        "dave": Person("member"),
    }


def roles(people: dict[str, Person]) -> dict[bytes, Role]:
    return {p.key: p.role for p in people.values()}


def room(lobby: bool = False, stage: bool = False, topology: str = "auto") -> RoomCreate:
    return RoomCreate(ROOM, "conference", 0, b"", lobby, stage, topology)  # type: ignore[arg-type]


def conference(lobby: bool = False, stage: bool = False, mesh_max: int = 4) -> Conference:
    ids = (f"call{n:012d}" for n in itertools.count())
    return Conference(
        SPACE,
        room(lobby, stage),
        mesh_max=mesh_max,
        max_participants=10,
        make_call_id=lambda: next(ids),
    )


def on_seat(conf: Conference, host: Person, name: ActionName, target: Person) -> CallAction:
    """A seat action by ``host`` about ``target``'s current join."""
    return host.act(conf.call_id, name, target.key, join_ref=conf.seats[target.key].join.nonce)


def join(conf: Conference, person: Person, everyone: dict[str, Person]) -> str:
    return conf.join(person.act(conf.call_id, "join", person.key), roles(everyone), NOW).status


def flags_of(conf: Conference, person: Person, everyone: dict[str, Person], viewer: Person):
    state = conf.state_for(viewer.key, roles(everyone))
    seat = next(p for p in state.participants if p.member == person.key)
    return seat_flags(seat, conf.room, state.call_id, roles(everyone), lambda a: True)


# -- action checks -----------------------------------------------------------------------------


def test_action_problem(people: dict[str, Person]) -> None:
    r = roles(people)
    owner, mod, bob, carol = people["owner"], people["mod"], people["bob"], people["carol"]

    def problem(action: CallAction, call_id: str = "c1") -> str | None:
        return action_problem(action, r, space_id=SPACE, room_id=ROOM, call_id=call_id)

    assert problem(mod.act("c1", "mute", bob.key)) is None
    assert problem(bob.act("c1", "hand-up", bob.key)) is None
    assert (
        problem(bob.act("c1", "mute", carol.key)) == "its signer is not a host (owner or moderator)"
    )
    assert problem(mod.act("c0", "mute", bob.key)) == "it belongs to another call"
    seat = bytes(16)  # seat actions name the join they are about
    assert problem(mod.act("c1", "kick", owner.key, join_ref=seat)) == (
        "its target outranks its signer"
    )
    assert problem(owner.act("c1", "kick", owner.key, join_ref=seat)) == (
        "a host cannot do that to themselves"
    )
    assert problem(owner.act("c1", "kick", bob.key)) == "it names no join"
    assert problem(owner.act("c1", "mute", bob.key, join_ref=seat)) == (
        "it names a join it should not"
    )
    # Restrictions are honoured from any call of the room (call_id None), others are not.
    kick = owner.act("c0", "kick", bob.key, join_ref=seat)
    assert action_problem(kick, r, space_id=SPACE, room_id=ROOM, call_id=None) is None
    assert problem(bob.act("c1", "hand-up", carol.key)) == "it is about someone else"
    assert problem(mod.act("c1", "lock", bob.key)) == "it names a target it should not"
    assert problem(mod.act("c1", "mute")) == "it names no member"
    stranger = Person("owner")
    assert problem(stranger.act("c1", "mute", bob.key)) == "its signer is not a member of the space"
    forged = msgspec.structs.replace(mod.act("c1", "mute", bob.key), target=carol.key)
    assert problem(forged) == "its signature does not verify"
    # A member pretending to be the owner: the owner's key, the member's signature.
    fake = msgspec.structs.replace(bob.act("c1", "mute", carol.key), actor=owner.key)
    assert problem(fake) == "its signature does not verify"


def test_topology_for() -> None:
    assert topology_for("auto", 4, 4, sfu_available=False) == "mesh"
    assert topology_for("sfu", 3, 4, sfu_available=False) == "mesh"  # a server with no SFU
    assert topology_for("auto", 5, 4, sfu_available=False) is None
    assert topology_for("auto", 5, 4, sfu_available=True) == "sfu"
    assert topology_for("sfu", 2, 4, sfu_available=True) == "sfu"
    assert topology_for("mesh", 5, 4, sfu_available=True) is None


# -- the conference state machine --------------------------------------------------------------


def test_join_leave_and_restart(people: dict[str, Person]) -> None:
    conf = conference()
    first_call = conf.call_id
    assert join(conf, people["bob"], people) == "joined"
    assert join(conf, people["carol"], people) == "joined"
    state = conf.state_for(people["bob"].key, roles(people))
    assert [p.index for p in state.participants] == [1, 2]
    assert state.topology == "mesh" and state.requested_topology == "auto"
    assert conf.may_relay(people["bob"].key, people["carol"].key)
    assert not conf.may_relay(people["bob"].key, people["bob"].key)
    # Joining again (a new connection) keeps the seat.
    assert join(conf, people["bob"], people) == "joined"
    assert len(conf.seats) == 2
    assert conf.leave(people["bob"].key) is not None
    assert conf.leave(people["bob"].key) is None
    change = conf.leave(people["carol"].key)
    assert change is not None and change.ended
    assert conf.call_id != first_call and conf.is_idle()


def test_replayed_stale_and_old_actions_refused(people: dict[str, Person]) -> None:
    conf = conference()
    bob = people["bob"]
    action = bob.act(conf.call_id, "join", bob.key)
    conf.join(action, roles(people), NOW)
    with pytest.raises(InvalidMessage, match="already used"):
        conf.join(action, roles(people), NOW)
    with pytest.raises(StaleCall):
        conf.act(bob.act("other-call", "hand-up", bob.key), roles(people), NOW)
    with pytest.raises(InvalidMessage, match=r"stale .* behind the server's clock"):
        conf.act(bob.act(conf.call_id, "hand-up", bob.key, at=NOW - 600_000), roles(people), NOW)
    with pytest.raises(Forbidden, match="not a host"):
        conf.act(bob.act(conf.call_id, "lock"), roles(people), NOW)


def test_lobby_admit_deny_and_visibility(people: dict[str, Person]) -> None:
    conf = conference(lobby=True)
    owner, bob, carol = people["owner"], people["bob"], people["carol"]
    assert join(conf, owner, people) == "joined"  # hosts skip the lobby
    assert join(conf, bob, people) == "lobby"
    assert join(conf, carol, people) == "lobby"
    r = roles(people)
    # A lobby member sees only itself; hosts see the lobby; nothing is relayed to it.
    assert [p.member for p in conf.state_for(bob.key, r).participants] == [bob.key]
    assert len(conf.state_for(owner.key, r).participants) == 3
    assert not conf.may_relay(owner.key, bob.key) and not conf.may_relay(bob.key, owner.key)
    conf.act(on_seat(conf, owner, "admit", bob), r, NOW)
    assert conf.may_relay(owner.key, bob.key)
    assert flags_of(conf, bob, people, owner).admitted
    # Non-hosts in the call do not see who knocks.
    assert [p.member for p in conf.state_for(bob.key, r).participants] == [owner.key, bob.key]
    change = conf.act(on_seat(conf, owner, "deny", carol), r, NOW)
    assert change.removed == [(carol.key, "denied")]
    with pytest.raises(NotFound):
        conf.act(owner.act(conf.call_id, "admit", carol.key, join_ref=bytes(16)), r, NOW)


def test_lobby_admission_must_verify(people: dict[str, Person]) -> None:
    """A server that marks a lobby member 'joined' without a host's admit convinces no one."""
    conf = conference(lobby=True)
    owner, bob = people["owner"], people["bob"]
    join(conf, owner, people)
    join(conf, bob, people)
    conf.seats[bob.key].status = "joined"  # the server lies
    assert not flags_of(conf, bob, people, owner).admitted
    fake_admit = on_seat(conf, people["carol"], "admit", bob)  # not a host
    conf.seats[bob.key].admission = fake_admit
    state = conf.state_for(owner.key, roles(people))
    seat = next(p for p in state.participants if p.member == bob.key)

    def check(action: CallAction) -> bool:
        return (
            action_problem(
                action, roles(people), space_id=SPACE, room_id=ROOM, call_id=state.call_id
            )
            is None
        )

    assert not seat_flags(seat, conf.room, state.call_id, roles(people), check).admitted


def test_seat_actions_bind_to_one_join(people: dict[str, Person]) -> None:
    """An admission or promotion counts for the join it names, never for a later one."""
    conf = conference(lobby=True)
    owner, bob = people["owner"], people["bob"]
    r = roles(people)
    join(conf, owner, people)
    join(conf, bob, people)
    first_join = conf.seats[bob.key].join.nonce
    with pytest.raises(StaleCall, match="joined again"):
        conf.act(owner.act(conf.call_id, "admit", bob.key, join_ref=bytes(16)), r, NOW)
    conf.act(on_seat(conf, owner, "admit", bob), r, NOW)
    assert flags_of(conf, bob, people, owner).admitted
    # Joining again is a new incarnation: back to the lobby, the old admission is spent.
    assert join(conf, bob, people) == "lobby"
    seat = conf.seats[bob.key]
    assert seat.admission is None and seat.join.nonce != first_join
    # A server that puts the old admission back convinces no client.
    old_admit = owner.act(conf.call_id, "admit", bob.key, join_ref=first_join)
    seat.status, seat.admission = "joined", old_admit
    assert not flags_of(conf, bob, people, owner).admitted
    # Whether the room has a lobby is the room record's, not the state's, to say.
    state = conf.state_for(owner.key, r)
    wire = next(p for p in state.participants if p.member == bob.key)
    assert seat_flags(wire, room(lobby=False), conf.call_id, r, lambda a: True).admitted
    assert not seat_flags(wire, room(lobby=True), conf.call_id, r, lambda a: True).admitted


def test_freshness_restrictions_and_end_reasons(people: dict[str, Person]) -> None:
    owner, bob = people["owner"], people["bob"]
    assert freshness_problem(owner.act("c1", "lock"), NOW + 299_000) is None
    assert "behind this device's clock" in str(
        freshness_problem(owner.act("c1", "lock"), NOW + 301_000)
    )
    ahead = owner.act("c1", "lock", at=NOW + 400_000)
    assert "400 s ahead" in str(freshness_problem(ahead, NOW))
    short = msgspec.structs.replace(owner.act("c1", "lock"), nonce=b"n")
    assert "nonce" in str(freshness_problem(short, NOW))

    join_a, join_b = secrets.token_bytes(16), secrets.token_bytes(16)
    kept = Restrictions()
    kick = owner.act("c1", "kick", bob.key, join_ref=join_a)
    assert kept.add(kick) and not kept.add(kick)
    assert kept.barring(bob.key, join_a) == kick
    assert kept.barring(bob.key, join_b) is None  # a kick is no ban: a new join may enter
    ban = owner.act("c1", "ban", bob.key, at=NOW)
    unban = owner.act("c1", "unban", bob.key, at=NOW + 10)
    assert kept.add(unban) and not kept.add(ban)  # an older ban does not undo a later unban
    assert kept.barring(bob.key, join_b) is None
    assert kept.add(owner.act("c1", "ban", bob.key, at=NOW + 20))
    assert kept.barring(bob.key, join_b) is not None

    mute = owner.act("c1", "mute", bob.key)
    assert end_problem("removed", kick, bob.key, join_a) == ""
    assert (
        end_problem("removed", kick, bob.key, join_b) == "with a signed 'kick' of an earlier join"
    )
    assert end_problem("removed", None, bob.key, join_a) == "without a signed action"
    assert (
        end_problem("removed", mute, bob.key, join_a) == "with a signed 'mute', which is no 'kick'"
    )
    assert end_problem("banned", ban, owner.key, join_a) == "with a signed 'ban' of someone else"
    assert end_problem("ended", owner.act("c1", "end"), bob.key, join_a) == ""
    assert end_problem("replaced", None, bob.key, join_a) == ""


def test_mute_hands_kick_ban_lock(people: dict[str, Person]) -> None:
    conf = conference()
    owner, mod, bob, carol, dave = (people[n] for n in ("owner", "mod", "bob", "carol", "dave"))
    r = roles(people)
    for person in (owner, mod, bob, carol):
        join(conf, person, people)
    conf.act(mod.act(conf.call_id, "mute", bob.key), r, NOW)
    flags = flags_of(conf, bob, people, carol)
    assert flags.muted and flags.muted_by == mod.key
    conf.act(mod.act(conf.call_id, "unmute", bob.key), r, NOW)
    assert not flags_of(conf, bob, people, carol).muted
    conf.act(mod.act(conf.call_id, "mute-all"), r, NOW)
    assert flags_of(conf, bob, people, carol).muted and flags_of(conf, carol, people, bob).muted
    assert not flags_of(conf, mod, people, bob).muted  # not the host who did it
    assert not flags_of(conf, owner, people, bob).muted  # nor anyone above them
    conf.act(carol.act(conf.call_id, "hand-up", carol.key), r, NOW)
    assert flags_of(conf, carol, people, bob).hand_raised
    conf.act(mod.act(conf.call_id, "lower-hand", carol.key), r, NOW)
    assert not flags_of(conf, carol, people, bob).hand_raised
    with pytest.raises(Forbidden, match="outranks"):
        conf.act(on_seat(conf, mod, "kick", owner), r, NOW)
    change = conf.act(on_seat(conf, mod, "kick", carol), r, NOW)
    assert change.removed == [(carol.key, "removed")]
    join(conf, carol, people)  # a kick is not a ban
    change = conf.act(mod.act(conf.call_id, "ban", carol.key), r, NOW)
    assert change.removed == [(carol.key, "banned")] and change.ban_added is not None
    with pytest.raises(Banned):
        join(conf, carol, people)
    conf.act(owner.act(conf.call_id, "lock"), r, NOW)
    assert is_locked(conf.state_for(bob.key, r), lambda a: True)
    with pytest.raises(CallLocked):
        join(conf, dave, people)
    conf.act(owner.act(conf.call_id, "unlock"), r, NOW)
    conf.act(owner.act(conf.call_id, "unban", carol.key), r, NOW)
    assert join(conf, carol, people) == "joined"
    change = conf.act(owner.act(conf.call_id, "end"), r, NOW)
    assert change.ended and {m for m, why in change.removed if why == "ended"} == {
        owner.key,
        mod.key,
        bob.key,
        carol.key,
    }
    assert conf.is_idle() and conf.lock is None


def test_stage_roles(people: dict[str, Person]) -> None:
    conf = conference(stage=True)
    owner, bob = people["owner"], people["bob"]
    join(conf, owner, people)
    join(conf, bob, people)
    assert flags_of(conf, owner, people, bob).speaker
    assert not flags_of(conf, bob, people, owner).speaker
    conf.act(on_seat(conf, owner, "promote", bob), roles(people), NOW)
    assert flags_of(conf, bob, people, owner).speaker
    conf.act(on_seat(conf, owner, "demote", bob), roles(people), NOW)
    assert not flags_of(conf, bob, people, owner).speaker
    with pytest.raises(InvalidMessage, match="stage"):
        plain = conference()
        join(plain, owner, people)
        join(plain, bob, people)
        plain.act(on_seat(plain, owner, "promote", bob), roles(people), NOW)


def test_mesh_is_full_without_an_sfu(people: dict[str, Person]) -> None:
    conf = conference(lobby=True, mesh_max=2)
    owner, mod, bob = people["owner"], people["mod"], people["bob"]
    join(conf, owner, people)
    join(conf, mod, people)
    assert join(conf, bob, people) == "lobby"  # the lobby still takes knocks
    with pytest.raises(CallFull, match="no SFU"):
        conf.act(on_seat(conf, owner, "admit", bob), roles(people), NOW)


def test_forged_mute_in_state_is_not_obeyed(people: dict[str, Person]) -> None:
    """Clients derive mute from the signed action, checked against their own roster."""
    conf = conference()
    owner, bob = people["owner"], people["bob"]
    join(conf, owner, people)
    join(conf, bob, people)
    r = roles(people)
    state = conf.state_for(bob.key, r)
    forged_by_member = people["carol"].act(conf.call_id, "mute", bob.key)
    stranger = Person("owner")
    forged_by_stranger = stranger.act(conf.call_id, "mute", bob.key)
    replayed = owner.act("an-earlier-call", "mute", bob.key)

    def check(action: CallAction) -> bool:
        return (
            action_problem(action, r, space_id=SPACE, room_id=ROOM, call_id=state.call_id) is None
        )

    for forged in (forged_by_member, forged_by_stranger, replayed):
        seats = [
            msgspec.structs.replace(p, mute=forged) if p.member == bob.key else p
            for p in state.participants
        ]
        lying = msgspec.structs.replace(state, participants=seats)
        seat = next(p for p in lying.participants if p.member == bob.key)
        assert not seat_flags(seat, conf.room, lying.call_id, r, check).muted


# -- media keys and the verification code ------------------------------------------------------


def test_ratchet_is_one_way_and_commitments_differ() -> None:
    key = SenderKey(0, bytes(32))
    nxt = key.ratchet()
    assert nxt.epoch == 1 and nxt.key != key.key
    assert nxt.commitment() != key.commitment()
    assert nxt.ratchet().key == SenderKey(1, nxt.key).ratchet().key
    assert media_kid(3, 2) == (3 << 16) | 2 and media_kid(1, 0xFFFF) == (2 << 16) - 1
    with pytest.raises(KeyIdExhausted):  # never wrapped onto an older key's id
        media_kid(1, 0x1_0005)


def test_verification_code_format_and_order() -> None:
    pairs = [(b"a" * 32, b"x" * 16), (b"b" * 32, b"y" * 16)]
    code = verification_code(pairs)
    assert len(code) == 19 and all(g.isdigit() and len(g) == 4 for g in code.split(" "))
    assert verification_code(reversed(pairs)) == code
    assert verification_code(pairs[:1]) != code


class Sim:
    """Participants exchanging keys through a perfect relay, in server order."""

    def __init__(self) -> None:
        self.keys: dict[str, CallKeys] = {}
        self.members: dict[str, bytes] = {}
        self.version = 0
        self.wire: list[tuple[str, str, object]] = []  # (from, to, message) in flight

    def admit(self, name: str) -> None:
        self.version += 1
        member = crypto.public_signing_key(crypto.random_key())
        self.members[name] = member
        for other, keys in self.keys.items():
            keys.membership(self.version, [member], [])
            self.wire.append((other, name, keys.message()))
        mine = CallKeys(member)
        mine.baseline(self.version)
        self.keys[name] = mine
        for other in self.keys:
            if other != name:
                self.wire.append((name, other, mine.message()))

    def leave(self, name: str) -> CallKeys:
        self.version += 1
        gone = self.keys.pop(name)
        member = self.members.pop(name)
        for other, keys in self.keys.items():
            keys.membership(self.version, [], [member])
            for to in self.keys:
                if to != other:
                    self.wire.append((other, to, keys.message()))
        self.wire = [w for w in self.wire if w[1] != name]
        return gone

    def deliver(self) -> None:
        for sender, to, message in self.wire:
            if to in self.keys and sender in self.members:
                self.keys[to].receive(self.members[sender], message)  # type: ignore[arg-type]
        self.wire = []

    def codes(self) -> set[str | None]:
        everyone = list(self.members.values())
        return {keys.code(everyone) for keys in self.keys.values()}


def test_codes_agree_through_joins_and_leaves() -> None:
    sim = Sim()
    sim.admit("alice")
    sim.admit("bob")
    assert None in sim.codes()  # keys still on the wire
    sim.deliver()
    two = sim.codes()
    assert len(two) == 1 and None not in two
    sim.admit("carol")
    sim.deliver()
    three = sim.codes()
    assert len(three) == 1 and None not in three and three != two
    old_bob = sim.keys["bob"].own
    sim.leave("carol")
    assert sim.codes() == {None}  # everyone waits for the rekeys
    sim.deliver()
    after = sim.codes()
    assert len(after) == 1 and None not in after and after.isdisjoint(three | two)
    assert sim.keys["bob"].own.key != old_bob.key  # rekeyed, not ratcheted


def test_late_key_is_ratcheted_and_stale_key_waits() -> None:
    alice, bob = CallKeys(b"a" * 32), CallKeys(b"b" * 32)
    alice.baseline(1)
    bob.baseline(1)
    sent = bob.message()  # as of version 1
    carol = b"c" * 32
    alice.membership(2, [carol], [])  # carol joined at 2: alice ratchets everyone she holds
    bob.membership(2, [carol], [])
    assert alice.receive(bob.me, sent)  # sent before the join: alice ratchets it herself
    assert alice.current(bob.me) == bob.own
    assert not alice.receive(bob.me, sent)  # a replay is no news
    sent = bob.message()
    alice.membership(3, [], [carol])
    bob.membership(3, [], [carol])
    assert alice.current(bob.me) is None  # stale until bob's rekey arrives
    assert not alice.receive(bob.me, sent)  # from before the leave: not good enough
    assert alice.receive(bob.me, bob.message())
    assert alice.current(bob.me) == bob.own
    assert alice.key_for(bob.me, bob.own.epoch - 1) is not None  # overlap kept


def test_joiner_cannot_derive_earlier_keys() -> None:
    sim = Sim()
    sim.admit("alice")
    sim.admit("bob")
    sim.deliver()
    before = sim.keys["alice"].own
    sim.admit("carol")
    sim.deliver()
    carol = sim.keys["carol"]
    held = carol.current(sim.members["alice"])
    assert held is not None and held.epoch == before.epoch + 1
    assert carol.key_for(sim.members["alice"], before.epoch) is None


def test_removed_participant_gets_nothing_new() -> None:
    sim = Sim()
    for name in ("alice", "bob", "carol"):
        sim.admit(name)
    sim.deliver()
    carol = sim.leave("carol")
    sim.deliver()
    for name in ("alice", "bob"):
        member = sim.members[name]
        now = sim.keys[name].own
        kept = carol.current(member)
        assert kept is not None and kept.key != now.key
        # Nothing carol holds ratchets into the new key either.
        assert kept.ratchet().key != now.key


# -- sealed, signed signalling -----------------------------------------------------------------


def body(sender: Person, recipient: Person, **kw: object) -> SignalBody:
    values: dict[str, object] = {
        "space_id": SPACE,
        "room_id": ROOM,
        "call_id": "c1",
        "sender": sender.key,
        "recipient": recipient.key,
        "kind": "offer",
        "link": b"l" * 16,
        "attempt": 1,
        "payload": b"v=0\r\na=fingerprint:sha-256 AB:CD\r\n",
    }
    values.update(kw)
    return SignalBody(**values)  # type: ignore[arg-type]


def seal(sender: Person, recipient: Person, signal: SignalBody) -> bytes:
    return seal_signal(sender.seed, sender.box_secret, recipient.box_key, signal)


def opener(recipient: Person) -> Callable[[Person, bytes], SignalBody]:
    context = SignalContext(SPACE, ROOM, "c1", recipient.key)
    return lambda sender, box: open_signal(
        recipient.box_secret, sender.box_key, sender.key, box, context
    )


def test_signal_round_trip(people: dict[str, Person]) -> None:
    alice, bob = people["owner"], people["bob"]
    sent = body(alice, bob)
    assert opener(bob)(alice, seal(alice, bob, sent)) == sent


_PAIR = (Person("owner"), Person("member"))
_BOX = seal(_PAIR[0], _PAIR[1], body(_PAIR[0], _PAIR[1]))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(_BOX) * 8 - 1))
def test_every_bit_flip_is_refused(bit: int) -> None:
    alice, bob = _PAIR
    tampered = bytearray(_BOX)
    tampered[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(SignalRejected, match="altered or forged"):
        opener(bob)(alice, bytes(tampered))


def test_signals_bound_to_sender_recipient_and_call(people: dict[str, Person]) -> None:
    alice, bob, mallory = people["owner"], people["bob"], people["carol"]
    open_as_bob = opener(bob)
    # The server relays Mallory's box as if Alice sent it: it does not open.
    with pytest.raises(SignalRejected, match="altered or forged"):
        open_as_bob(alice, seal(mallory, bob, body(alice, bob)))
    # Mallory seals a body claiming to be Alice: it opens as Mallory's, names Alice: refused.
    with pytest.raises(SignalRejected, match="from or to someone else"):
        open_as_bob(mallory, seal(mallory, bob, body(alice, bob)))
    # An offer sealed to Bob but for Carol, or for another call.
    with pytest.raises(SignalRejected, match="from or to someone else"):
        open_as_bob(alice, seal(alice, bob, body(alice, mallory)))
    with pytest.raises(SignalRejected, match="another call"):
        open_as_bob(alice, seal(alice, bob, body(alice, bob, call_id="c0")))


def test_signature_inside_box_is_checked(people: dict[str, Person]) -> None:
    """A box that opens but whose inner signature is by someone else is refused."""
    alice, bob, mallory = people["owner"], people["bob"], people["carol"]
    from client.call.signalling import _Signed

    raw = msgspec.msgpack.encode(body(alice, bob))
    signed = _Signed(raw, crypto.sign(mallory.seed, b"salon/call-signal/v1\x00" + raw))
    box = crypto.seal_to(alice.box_secret, bob.box_key, msgspec.msgpack.encode(signed))
    with pytest.raises(SignalRejected, match="signature"):
        opener(bob)(alice, box)


def test_check_sdp_limits() -> None:
    check_sdp(
        "v=0\r\na=fingerprint:sha-256 AB\r\n" + "a=candidate:1 1 udp 1 127.0.0.1 1 typ host\r\n"
    )
    with pytest.raises(SignalRejected, match="fingerprint"):
        check_sdp("v=0\r\n")
    with pytest.raises(SignalRejected, match="candidates"):
        check_sdp("a=fingerprint:x\r\n" + "a=candidate:x\r\n" * 33)
    with pytest.raises(SignalRejected, match="larger"):
        check_sdp("a=fingerprint:x\r\n" + "x" * 40_000)


def test_link_ids_differ_per_incarnation() -> None:
    a, b = secrets.token_bytes(16), secrets.token_bytes(16)
    assert link_id(a, b) != link_id(b, a)
    assert link_id(a, b) != link_id(a, secrets.token_bytes(16))


def test_state_struct_round_trips(people: dict[str, Person]) -> None:
    conf = conference(lobby=True)
    join(conf, people["owner"], people)
    join(conf, people["bob"], people)
    state = conf.state_for(people["owner"].key, roles(people))
    data = msgspec.msgpack.encode(state)
    assert msgspec.msgpack.decode(data, type=CallState) == state
