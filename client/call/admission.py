"""Who is in the call for this device: admission decisions, sans-I/O, a clock injected.

:class:`Admission` takes the call as the server last showed it (a :class:`CallView`: the state,
the roles and the room's signed record this device verified, the event that came with it) and
returns an :class:`AdmissionDelta`: where we are (not in the call, in the lobby, joined), whom
to connect to and give our media key, who joined and who left since the last state, which
knocks a host is shown, and what the server lists that does not verify. The call client
(:mod:`client.call.client`) does the I/O the delta asks for — topology, keys, lines on the
terminal — then calls :meth:`Admission.admit` to take it as done. Nothing here does I/O; the
verdicts on single actions come from an :class:`~client.call.ledger.ActionLedger`.

The rules (the module doc of :mod:`client.call.client` says why):

- a participant is admitted when their seat verifies (:func:`~protocol.conference_rules.seat_flags`:
  a genuine join, and in a lobby room an admission naming it, unless they are a host), no kick,
  denial or ban this device verified bars them, and — if they entered after us — what let them
  in is fresh and its nonce unused (:meth:`Admission.entry_problem`);
- of those, the ones *live* for our join get our key: who entered after us at once, who was in
  the call before us only once they send us a signal naming our join (:meth:`Admission.now_live`);
- a host is shown each lobby seat once, as a knock it may admit or, with the reason, as none
  (:func:`knock_problem`: the join must be fresh when the host first saw it);
- signals from someone not admitted yet are held (:class:`PendingSignals`), capped in all and
  per sender, for :data:`PENDING_SIGNAL_SECONDS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from client.call.ledger import ActionLedger, WallClock
from protocol.conference_rules import FRESHNESS_MS, SeatFlags, is_host, seat_flags
from protocol.conference_wire import CallAction, CallParticipant, CallSignal, CallState
from protocol.records import Role, RoomCreate

PENDING_SIGNAL_SECONDS = 5.0
PENDING_SIGNALS_MAX = 64
# Of those, from one sender: a participant flooding signals before we let them in can
# neither grow our memory nor crowd out a newcomer's early media key (call.ts: the same).
PENDING_PER_SENDER = 8
# The longest a knock may have waited in the lobby when a host first sees it (someone
# waiting longer before any host arrives has to join again; call.ts: the same).
KNOCK_MAX_AGE_MS = 30 * 60_000

Where = Literal["absent", "lobby", "joined"]


def knock_problem(
    seat: CallParticipant, call_id: str, valid: Callable[[CallAction], bool], seen_ms: int
) -> str | None:
    """Why a lobby seat is no knock a host may admit, or None (the page's knockProblem):
    its join must be the member's own, for this call, verified, and fresh when the host
    first saw it (``seen_ms``) — else a server could show an old join of someone who is not
    knocking (a re-used call id) and turn a host's fresh admission into a ghost of them
    everyone lets in."""
    join = seat.join
    if join.action != "join" or join.actor != seat.member or join.call_id != call_id:
        return "their 'join' does not verify"
    if not valid(join):
        return "their 'join' does not verify"
    if join.issued_at > seen_ms + FRESHNESS_MS:
        return "their 'join' is dated in the future"
    if join.issued_at < seen_ms - KNOCK_MAX_AGE_MS:
        minutes = (seen_ms - join.issued_at) // 60_000
        return f"their 'join' is {minutes} min old when first shown (an old join, not a knock)"
    return None


class PendingSignals:
    """Signals from senders we have not admitted yet (their seat may reach us after their
    first signal), each kept until ``now + PENDING_SIGNAL_SECONDS`` (``now``: any monotonic
    clock in seconds, the caller's)."""

    def __init__(self) -> None:
        self.held: list[tuple[float, CallSignal]] = []  # (expires at, signal), oldest first

    def hold(self, event: CallSignal, now: float) -> bool:
        """Keep ``event`` for later; False if it was dropped (too many held, in all or from
        its sender)."""
        self.expire(now)
        theirs = sum(1 for _, ev in self.held if ev.sender == event.sender)
        if len(self.held) < PENDING_SIGNALS_MAX and theirs < PENDING_PER_SENDER:
            self.held.append((now + PENDING_SIGNAL_SECONDS, event))
            return True
        return False

    def expire(self, now: float) -> None:
        self.held = [(t, ev) for t, ev in self.held if t > now]

    def release(self, admitted: Iterable[bytes]) -> list[CallSignal]:
        """The held signals whose sender is in ``admitted`` now, in arrival order (no longer
        held)."""
        ready = set(admitted)
        out = [ev for _, ev in self.held if ev.sender in ready]
        self.held = [(t, ev) for t, ev in self.held if ev.sender not in ready]
        return out


@dataclass(frozen=True)
class CallView:
    """One call state as this device takes it in: the server's ``state`` (and the ``action``
    that came with it, if any), with what this device verified to judge it — the roster's
    ``roles`` and the room's signed record ``room`` (its lobby and stage settings)."""

    state: CallState
    call_id: str
    roles: dict[bytes, Role]
    room: RoomCreate
    action: CallAction | None = None


@dataclass
class AdmissionDelta:
    """What changed with one :class:`CallView`, for the call client to act on (in this
    order: the event, the lobby, the topology, the barred, the unverified, the keys)."""

    where: Where
    # The event that came with the state: why it must be ignored (None: tell the user).
    event_problem: str | None = None
    waiting: bool = False  # we are in the lobby, and were not told so before
    # (Hosts) lobby seats newly shown, each with why it is no knock to admit (None: a knock).
    knocks: list[tuple[bytes, str | None]] = field(default_factory=list)
    # Members the server lists though a verified kick, denial or ban keeps them out (each
    # restriction once), with it.
    barred: list[tuple[bytes, CallAction]] = field(default_factory=list)
    # Members listed as joined whose seat does not verify (each join once), and why.
    unverified: list[tuple[bytes, str | None]] = field(default_factory=list)
    peers: dict[bytes, bytes] = field(default_factory=dict)  # the admitted -> join nonce
    joined: list[bytes] = field(default_factory=list)  # admitted since the last state
    left: list[bytes] = field(default_factory=list)  # no longer (or with another join)
    gone: list[bytes] = field(default_factory=list)  # of ``left``: out of the call, not barred
    first: bool = False  # we were just let in (the keys start from here)


class Admission:
    """The seats of one call as this device judges them (see the module doc).

    After :meth:`step`, ``seats`` and ``flags`` describe the state just seen; ``admitted``
    and ``live`` change only in :meth:`admit` and :meth:`now_live`."""

    def __init__(self, me: bytes, ledger: ActionLedger, now_ms: WallClock) -> None:
        self.me = me
        self.ledger = ledger
        self.now_ms = now_ms
        self.view: CallView | None = None
        self.seats: dict[bytes, CallParticipant] = {}
        self.flags: dict[bytes, SeatFlags] = {}
        self.admitted: dict[bytes, bytes] = {}  # admitted peers -> their join nonce
        # Those of them live for our join (see the module doc): they entered after us with
        # a fresh action, or sent us a signal naming our join. Only these get our key.
        self.live: dict[bytes, bytes] = {}
        self.me_admitted = False
        self.baseline = False  # we have seen the call as it was when we were let in
        self.pending = PendingSignals()
        self._knocks_seen: dict[bytes, int] = {}  # a lobby seat's join sig -> first seen (ms)
        self._knocks_noted: set[bytes] = set()  # those a host was told about
        self._lobby_seen: set[bytes] = set()
        self._unverified: set[bytes] = set()
        self._barred_noted: set[bytes] = set()  # signatures of restrictions announced

    # -- one state ---------------------------------------------------------------------------

    def step(self, view: CallView) -> AdmissionDelta:
        """Take in one call state; what the caller must act on. ``admitted`` is unchanged
        until :meth:`admit` (the caller moves the keys on first)."""
        state, ledger = view.state, self.ledger
        self.view = view
        self.seats = {p.member: ledger.pin(p) for p in state.participants}
        knocks = {p.join.sig for p in state.participants if p.status == "lobby"}
        now = self.now_ms()
        self._knocks_seen = {
            sig: self._knocks_seen.get(sig, now) for sig in knocks
        }  # each knock's join, and when this device first saw it
        self.flags = {
            m: seat_flags(p, view.room, view.call_id, view.roles, ledger.valid)
            for m, p in self.seats.items()
        }
        for ban in state.bans:
            ledger.learn(ban)
        problem = ledger.delivered(view.action) if view.action is not None else None
        mine = self.seats.get(self.me)
        if mine is None:
            return AdmissionDelta("absent", problem)
        if mine.status == "lobby":
            waiting = self.me not in self._lobby_seen
            self._lobby_seen.add(self.me)
            return AdmissionDelta("lobby", problem, waiting=waiting)
        delta = AdmissionDelta("joined", problem)
        self._lobby(view.roles, delta)
        peers = {
            m: seat
            for m, seat in self.seats.items()
            if m != self.me
            and seat.status == "joined"
            and self.flags[m].admitted
            and self.entry_problem(seat) is None
            and not self._barred(seat, delta)
        }
        barred = {m for m, seat in self.seats.items() if m != self.me and self._barred(seat, delta)}
        for member, seat in self.seats.items():
            unverified = member != self.me and seat.status == "joined" and member not in peers
            if unverified and member in barred:
                continue  # _barred said why
            if unverified and seat.join.nonce not in self._unverified:
                self._unverified.add(seat.join.nonce)  # once per join of theirs
                why = self.entry_problem(seat) if self.flags[member].admitted else None
                delta.unverified.append((member, why))
        current = {m: seat.join.nonce for m, seat in peers.items()}
        delta.peers = current
        delta.joined = [m for m in current if self.admitted.get(m) != current[m]]
        delta.left = [m for m in self.admitted if current.get(m) != self.admitted[m]]
        delta.gone = [m for m in delta.left if m not in current and m not in barred]
        delta.first = not self.me_admitted
        return delta

    def admit(self, delta: AdmissionDelta) -> list[bytes]:
        """Take a joined ``delta`` as done (the keys moved on); returns who gets our key now,
        in order: everyone live after a leave (a rekey), else those who just joined."""
        first = delta.first
        self.me_admitted = True
        current, joined = delta.peers, delta.joined
        self.admitted = current
        self.live = {m: n for m, n in self.live.items() if current.get(m) == n}
        if not first:  # they entered after us, with a fresh join or admission: live
            self.live.update((m, current[m]) for m in joined)
        return [m for m in (self.live if delta.left else joined) if m in self.live]

    def settled(self) -> None:
        """The state is fully applied: from now on, whoever enters enters after us."""
        self.baseline = True

    # -- rules -------------------------------------------------------------------------------

    def entry_problem(self, seat: CallParticipant) -> str | None:
        """Why a participant who is new to us must not enter (None if they may).

        Who was in the call when we were let in may have entered long ago (they get
        nothing from us until they prove they are here now: :meth:`now_live`); anyone after
        that enters now, so what let them in (their admission in a lobby room, else their
        join) must be fresh and its nonce unused: an old admit or join, even one whose call
        id the server re-uses, is refused. A join must also use a nonce no other action
        used: an admission names its join by nonce, so a later join re-using an admitted
        join's nonce would otherwise inherit that admission."""
        # (Remembered at least as long as an admission judged with it now.)
        if not self.ledger.claim_nonce(seat.join, self.now_ms() + FRESHNESS_MS):
            return "their 'join' was refused: its nonce was already used (a replay)"
        if not self.baseline or self.admitted.get(seat.member) == seat.join.nonce:
            return None
        assert self.view is not None
        lobby = self.view.room.lobby and not self.flags[seat.member].host
        entry = seat.admission if lobby and seat.admission is not None else seat.join
        problem = self.ledger.freshness(entry)
        return f"their {entry.action!r} was refused: {problem}" if problem else None

    def _barred(self, seat: CallParticipant, delta: AdmissionDelta) -> bool:
        """Whether a verified kick, denial or ban keeps this seat out (noted once)."""
        barring = self.ledger.restrictions.barring(seat.member, seat.join.nonce)
        if barring is None:
            return False
        if barring.sig not in self._barred_noted:
            self._barred_noted.add(barring.sig)
            delta.barred.append((seat.member, barring))
        return True

    def barring_us(self, my_join_nonce: bytes) -> CallAction | None:
        """The verified kick, denial or ban that removed our join, while the server still
        seats us (None: none, or we are not seated)."""
        mine = self.seats.get(self.me)
        return self.ledger.restrictions.barring(self.me, my_join_nonce) if mine else None

    def _lobby(self, roles: dict[bytes, Role], delta: AdmissionDelta) -> None:
        """(Hosts) each lobby seat once: a knock to list, or why it is none."""
        if not is_host(roles.get(self.me)):
            return
        knocks = {seat.join.sig for seat in self.seats.values() if seat.status == "lobby"}
        self._knocks_noted &= knocks
        for member, seat in self.seats.items():
            if seat.status == "lobby" and seat.join.sig not in self._knocks_noted:
                self._knocks_noted.add(seat.join.sig)  # once per knock (a join of theirs)
                delta.knocks.append((member, self.knock_problem(seat)))
        self._lobby_seen &= set(self.seats) | {self.me}

    def knock_problem(self, seat: CallParticipant) -> str | None:
        seen = self._knocks_seen.get(seat.join.sig, self.now_ms())
        call_id = self.view.call_id if self.view is not None else ""
        return knock_problem(seat, call_id, self.ledger.valid, seen)

    def lobby(self) -> list[bytes]:
        """The lobby seats a host may admit (for the picture)."""
        lobby = [(m, s) for m, s in self.seats.items() if s.status == "lobby"]
        return [m for m, s in lobby if self.knock_problem(s) is None]

    # -- liveness and signals ------------------------------------------------------------------

    def awaited(self) -> set[bytes]:
        """Admitted participants whose key has not reached us yet because they were in the
        call before us and have not proved their presence (§14.1): until they seal us
        their key, we connect to none of their media."""
        return {m for m in self.admitted if m not in self.live}

    def proves_live(self, sender: bytes) -> bool:
        """Whether a signal naming our join from ``sender`` (admitted) makes them live now."""
        return self.live.get(sender) != self.admitted[sender]

    def now_live(self, member: bytes) -> None:
        """``member``, in the call when we were let in, sent us a signal naming our join:
        they are in the call now, so connect to them and give them our key."""
        self.live[member] = self.admitted[member]

    def holds(self, sender: bytes) -> bool:
        """Whether a signal from ``sender`` waits (they are not admitted, or not seated)."""
        return sender not in self.admitted or sender not in self.seats


__all__ = [
    "KNOCK_MAX_AGE_MS",
    "PENDING_PER_SENDER",
    "PENDING_SIGNALS_MAX",
    "PENDING_SIGNAL_SECONDS",
    "Admission",
    "AdmissionDelta",
    "CallView",
    "PendingSignals",
    "knock_problem",
]
