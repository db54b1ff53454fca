"""The call client's admission decisions (client.call.admission, client.call.ledger), driven
without any I/O: signed actions in (the real conference rules verify them), a delta out, on a
fake clock. The same decisions run in ``salon call`` (tests/test_call_admission.py and the red
team modules play a hostile server against the real client)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import pytest
from test_call_core import NOW, ROOM, SPACE, Person, roles, room

from client.call.admission import (
    KNOCK_MAX_AGE_MS,
    PENDING_PER_SENDER,
    PENDING_SIGNAL_SECONDS,
    PENDING_SIGNALS_MAX,
    Admission,
    AdmissionDelta,
    CallView,
    PendingSignals,
)
from client.call.ledger import ActionLedger
from client.core import crypto
from protocol.conference_rules import FRESHNESS_MS, RESTRICTIONS, action_problem
from protocol.conference_wire import (
    ActionName,
    CallAction,
    CallParticipant,
    CallSignal,
    CallState,
    action_signing_bytes,
)
from protocol.records import RoomCreate

CALL = "call000000000001"
MINUTE = 60_000


@dataclass
class FakeClock:
    ms: int = NOW

    def __call__(self) -> int:
        return self.ms


class Call:
    """One device's Admission (``me``) on a fake clock, and the seats a server shows it."""

    def __init__(self, people: dict[str, Person], me: str, spec: RoomCreate) -> None:
        self.people, self.spec = people, spec
        self.clock = FakeClock()
        self.roles = roles(people)

        def check(action: CallAction) -> str | None:
            call_id = None if action.action in RESTRICTIONS else CALL
            return action_problem(action, self.roles, space_id=SPACE, room_id=ROOM, call_id=call_id)

        self.ledger = ActionLedger(check, self.clock)
        self.admission = Admission(people[me].key, self.ledger, self.clock)
        self.seats: dict[str, CallParticipant] = {}
        self.bans: list[CallAction] = []
        self.version = 0

    def join(self, name: str, ago_ms: int = 0, status: str = "joined") -> CallParticipant:
        person = self.people[name]
        join = person.act(CALL, "join", person.key, at=self.clock.ms - ago_ms)
        seat = CallParticipant(person.key, len(self.seats) + 1, status, join)  # type: ignore[arg-type]
        self.seats[name] = seat
        return seat

    def admit(self, name: str, by: str = "owner") -> None:
        seat = self.seats[name]
        admission = self.people[by].act(
            CALL, "admit", seat.member, at=self.clock.ms, join_ref=seat.join.nonce
        )
        self.seats[name] = CallParticipant(
            seat.member, seat.index, "joined", seat.join, admission=admission
        )

    def view(self, action: CallAction | None = None) -> CallView:
        self.version += 1
        state = CallState(
            ROOM, CALL, self.version, "mesh", "auto", list(self.seats.values()), bans=self.bans
        )
        return CallView(state, CALL, self.roles, self.spec, action)

    def step(self, action: CallAction | None = None) -> tuple[AdmissionDelta, list[bytes]]:
        """One state in, its delta out, taken as done (as the call client does)."""
        delta = self.admission.step(self.view(action))
        recipients: list[bytes] = []
        if delta.where == "joined":
            recipients = self.admission.admit(delta)
            self.admission.settled()
        return delta, recipients

    def key(self, name: str) -> bytes:
        return self.people[name].key


@pytest.fixture
def people() -> dict[str, Person]:
    return {
        "owner": Person("owner"),
        "mod": Person("moderator"),
        "bob": Person("member"),
        "carol": Person("member"),
        "dave": Person("member"),
    }


def signed(person: Person, name: ActionName, target: bytes, at: int, nonce: bytes) -> CallAction:
    """An action with a nonce of our choosing (Person.act draws a fresh one)."""
    unsigned = CallAction(SPACE, ROOM, CALL, person.key, name, target, at, nonce)
    return msgspec.structs.replace(
        unsigned, sig=crypto.sign(person.seed, action_signing_bytes(unsigned))
    )


# -- knocks: what a host lists ------------------------------------------------------------------


def test_a_host_lists_a_knock_once_and_only_while_its_join_was_fresh_when_first_seen(
    people: dict[str, Person],
) -> None:
    call = Call(people, "owner", room(lobby=True))
    call.join("owner")
    call.join("bob", ago_ms=KNOCK_MAX_AGE_MS - MINUTE, status="lobby")  # 29 min waiting
    call.join("carol", ago_ms=KNOCK_MAX_AGE_MS + MINUTE, status="lobby")  # 31: an old join
    delta, _ = call.step()
    assert delta.knocks == [
        (call.key("bob"), None),
        (
            call.key("carol"),
            "their 'join' is 31 min old when first shown (an old join, not a knock)",
        ),
    ]
    assert call.admission.lobby() == [call.key("bob")]
    # Shown again an hour later: no new lines, and Bob (fresh when first seen) stays a knock.
    call.clock.ms += 60 * MINUTE
    delta, _ = call.step()
    assert delta.knocks == []
    assert call.admission.lobby() == [call.key("bob")]


def test_a_knock_dated_ahead_or_not_the_members_own_is_no_knock(
    people: dict[str, Person],
) -> None:
    call = Call(people, "owner", room(lobby=True))
    call.join("owner")
    call.join("bob", ago_ms=-(FRESHNESS_MS + MINUTE), status="lobby")
    forged = people["carol"].act(CALL, "join", people["dave"].key)  # Carol's, for Dave
    call.seats["dave"] = CallParticipant(people["dave"].key, 9, "lobby", forged)
    delta, _ = call.step()
    assert dict(delta.knocks) == {
        call.key("bob"): "their 'join' is dated in the future",
        call.key("dave"): "their 'join' does not verify",
    }
    assert call.admission.lobby() == []


def test_only_a_host_is_shown_knocks(people: dict[str, Person]) -> None:
    call = Call(people, "bob", room(lobby=True))
    call.join("owner")
    call.join("bob")
    call.admit("bob")
    call.join("carol", status="lobby")
    delta, _ = call.step()
    assert delta.where == "joined" and delta.knocks == []


# -- who is admitted ------------------------------------------------------------------------------


def test_in_a_lobby_room_a_host_enters_with_its_join_a_member_only_with_an_admission(
    people: dict[str, Person],
) -> None:
    call = Call(people, "owner", room(lobby=True))
    call.join("owner")
    call.join("mod")  # a host: no admission needed
    call.join("bob")  # listed as joined, but nobody admitted him
    delta, _ = call.step()
    assert delta.where == "joined" and delta.first
    assert set(delta.peers) == {call.key("mod")}
    assert delta.unverified == [(call.key("bob"), None)]
    call.admit("bob")
    delta, recipients = call.step()
    assert delta.joined == [call.key("bob")] and recipients == [call.key("bob")]
    assert delta.unverified == []


def test_we_wait_in_the_lobby_with_nothing_admitted(people: dict[str, Person]) -> None:
    call = Call(people, "bob", room(lobby=True))
    call.join("owner")
    call.join("bob", status="lobby")
    first, _ = call.step()
    again, _ = call.step()
    assert (first.where, first.waiting) == ("lobby", True)
    assert (again.where, again.waiting) == ("lobby", False)
    assert call.admission.admitted == {} and not call.admission.me_admitted


def test_who_was_there_before_us_gets_our_key_only_once_live_who_enters_after_at_once(
    people: dict[str, Person],
) -> None:
    call = Call(people, "owner", room())
    call.join("bob", ago_ms=40 * MINUTE)  # in the call long before us
    call.join("owner")
    delta, recipients = call.step()
    bob, carol = call.key("bob"), call.key("carol")
    assert delta.first and delta.joined == [bob] and recipients == []
    assert call.admission.awaited() == {bob}
    # Bob's signal names our join: he is here now.
    assert call.admission.proves_live(bob)
    call.admission.now_live(bob)
    assert call.admission.awaited() == set() and not call.admission.proves_live(bob)
    # Carol enters after us, with a fresh join: live at once, she alone gets our key.
    call.clock.ms += MINUTE
    call.join("carol")
    delta, recipients = call.step()
    assert delta.joined == [carol] and recipients == [carol]
    # Bob leaves: everyone still here gets our new key (a rekey).
    del call.seats["bob"]
    delta, recipients = call.step()
    assert delta.left == [bob] and delta.gone == [bob] and recipients == [carol]


def test_after_us_a_stale_join_or_a_replayed_nonce_is_refused(
    people: dict[str, Person],
) -> None:
    call = Call(people, "owner", room())
    call.join("owner")
    call.step()
    call.join("bob", ago_ms=FRESHNESS_MS + MINUTE)  # an old join a server shows again
    delta, _ = call.step()
    assert delta.peers == {}
    [(member, why)] = delta.unverified
    assert member == call.key("bob") and why is not None and "'join' was refused" in why
    assert "stale" in why
    # Carol's join re-uses the nonce of Dave's (so an admission of his would cover hers).
    dave = call.join("dave")
    stolen = signed(people["carol"], "join", people["carol"].key, call.clock.ms, dave.join.nonce)
    del call.seats["bob"]
    call.seats["carol"] = CallParticipant(people["carol"].key, 7, "joined", stolen)
    delta, _ = call.step()
    assert set(delta.peers) == {call.key("dave")}
    assert delta.unverified == [
        (call.key("carol"), "their 'join' was refused: its nonce was already used (a replay)")
    ]


def test_a_verified_kick_bars_that_join_whatever_the_server_shows(
    people: dict[str, Person],
) -> None:
    call = Call(people, "bob", room())
    call.join("owner")
    call.join("bob")
    carol = call.join("carol")
    call.step()
    kick = people["owner"].act(
        CALL, "kick", carol.member, at=call.clock.ms, join_ref=carol.join.nonce
    )
    delta, recipients = call.step(kick)  # the server keeps her seated
    assert delta.event_problem is None
    assert delta.barred == [(call.key("carol"), kick)]
    assert delta.left == [call.key("carol")] and delta.gone == []  # (the kick says why)
    assert call.key("carol") not in call.admission.admitted
    assert recipients == []  # (the owner, there before us, has not proved they are live)
    again, _ = call.step(kick)
    assert again.barred == [] and again.event_problem == "it was already delivered (a replay)"


# -- signals from someone not admitted yet --------------------------------------------------------


def signal(sender: bytes, n: int = 0) -> CallSignal:
    return CallSignal(ROOM, CALL, sender, n.to_bytes(4, "big"))


def test_held_signals_are_capped_per_sender_and_in_all_and_expire() -> None:
    pending = PendingSignals()
    now = 100.0
    flood, newcomer = b"m" * 32, b"n" * 32
    kept = [pending.hold(signal(flood, n), now) for n in range(5 * PENDING_PER_SENDER)]
    assert kept.count(True) == PENDING_PER_SENDER
    assert pending.hold(signal(newcomer), now)  # not crowded out
    for n in range(PENDING_SIGNALS_MAX):  # many senders fill the rest, then nothing fits
        pending.hold(signal(n.to_bytes(32, "big")), now)
    assert len(pending.held) == PENDING_SIGNALS_MAX
    assert not pending.hold(signal(b"z" * 32), now)
    # Released in arrival order, only for the admitted; the rest expire on time.
    assert [ev.sender for ev in pending.release({newcomer: b""})] == [newcomer]
    pending.expire(now + PENDING_SIGNAL_SECONDS - 0.1)
    assert len(pending.held) == PENDING_SIGNALS_MAX - 1
    pending.expire(now + PENDING_SIGNAL_SECONDS)
    assert pending.held == []


def test_a_signal_waits_until_its_sender_is_admitted(people: dict[str, Person]) -> None:
    call = Call(people, "owner", room(lobby=True))
    call.join("owner")
    call.join("bob", status="lobby")
    call.step()
    assert call.admission.holds(call.key("bob"))
    call.admit("bob")
    call.step()
    assert not call.admission.holds(call.key("bob"))


# -- the ledger: what was signed stays -------------------------------------------------------------


def test_a_server_showing_an_older_mute_again_cannot_undo_a_later_one(
    people: dict[str, Person],
) -> None:
    call = Call(people, "bob", room())
    call.join("owner")
    call.join("bob")
    carol = call.join("carol")
    call.step()
    unmute = people["owner"].act(CALL, "unmute", carol.member, at=call.clock.ms)
    call.clock.ms += 1000
    mute = people["owner"].act(CALL, "mute", carol.member, at=call.clock.ms)
    call.seats["carol"] = CallParticipant(
        carol.member, carol.index, "joined", carol.join, mute=mute
    )
    call.step()
    assert call.admission.flags[carol.member].muted
    # The server shows the earlier unmute again: the pinned mute stands.
    call.seats["carol"] = CallParticipant(
        carol.member, carol.index, "joined", carol.join, mute=unmute
    )
    call.step()
    assert call.admission.flags[carol.member].muted
    assert call.admission.seats[carol.member].mute == mute
    # A "mute" no host signed (Dave, a member, on himself) is never pinned nor obeyed.
    forged = people["dave"].act(CALL, "mute", people["dave"].key, at=call.clock.ms + 1)
    dave = call.join("dave")
    call.seats["dave"] = CallParticipant(dave.member, dave.index, "joined", dave.join, mute=forged)
    call.step()
    assert not call.admission.flags[dave.member].muted
