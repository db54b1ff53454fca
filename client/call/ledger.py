"""What this device has judged of a call's signed actions (sans-I/O, a clock injected).

:class:`ActionLedger` is the memory behind "trust nothing you cannot check"
(:mod:`client.call.client`): for each :class:`~protocol.conference_wire.CallAction` it keeps

- whether it verifies (``check``: the signature, the actor's role, the roster head; cached per
  signature until :meth:`forget_checks`, since roles change when the roster does);
- whether it was fresh when this device first saw it, and which action first used its nonce
  (judged once: an action stays fresh as the call goes on; a second action with a used nonce
  is a replay);
- which events were delivered (an event shown twice is a replay);
- the kicks, denials and bans verified (:class:`~protocol.conference_rules.Restrictions`),
  honoured whatever the server says next;
- the newest verified mute, stage and self-state action on each join (:meth:`pin`), so a
  server showing an older one again cannot undo what was signed.

Entries are dropped once :data:`FORGET_MS` old (such an action is refused as stale anyway), so
a participant streaming actions cannot grow these tables with the call's length.

Times are unix milliseconds from ``now_ms``; nothing here does I/O.
"""

from __future__ import annotations

import collections
from collections.abc import Callable

import msgspec

from protocol.conference_rules import FRESHNESS_MS, RESTRICTIONS, Restrictions, freshness_problem
from protocol.conference_wire import CallAction, CallParticipant

FORGET_MS = 2 * FRESHNESS_MS  # older actions are stale for any clock within the skew

Check = Callable[[CallAction], str | None]  # why an action does not verify, or None
WallClock = Callable[[], int]  # unix milliseconds


class ActionLedger:
    """The verdicts on a call's actions (see the module doc)."""

    def __init__(self, check: Check, now_ms: WallClock) -> None:
        self._check = check
        self.now_ms = now_ms
        self._checked: dict[bytes, str | None] = {}  # action signature -> problem
        # Freshness, judged once, when this device first sees an action: signature ->
        # problem; and every nonce seen, with the signature of the action that used it.
        self._fresh: dict[bytes, str | None] = {}
        self._nonces: dict[bytes, bytes] = {}
        self._noted: set[bytes] = set()  # signatures of the events we were told about
        # (issued_at, signature, nonce) of each action as first judged: entries are dropped
        # once FORGET_MS old, since such an action is refused as stale anyway; so a
        # participant streaming actions cannot grow these tables with the call's length.
        self._judged: collections.deque[tuple[int, bytes, bytes]] = collections.deque()
        self.restrictions = Restrictions()
        # The newest verified mute and stage action seen on each join (member, join nonce,
        # field): a server showing an older one again cannot undo what a host signed.
        self._pinned: dict[tuple[bytes, bytes, str], CallAction] = {}

    # -- verification ------------------------------------------------------------------------

    def problem(self, action: CallAction) -> str | None:
        """Why ``action`` does not verify, or None (cached per signature)."""
        if action.sig not in self._checked:
            self._checked[action.sig] = self._check(action)
        return self._checked[action.sig]

    def valid(self, action: CallAction) -> bool:
        return self.problem(action) is None

    def forget_checks(self) -> None:
        """After a roster sync: roles may have changed, so every action is checked again."""
        self._checked.clear()

    def recheck(self, action: CallAction) -> None:
        """Check ``action`` again next time (the roster head it names was just loaded)."""
        self._checked.pop(action.sig, None)

    # -- freshness and replays -----------------------------------------------------------------

    def freshness(self, action: CallAction) -> str | None:
        """Whether ``action`` was fresh when this device first saw it, and the first action
        with its nonce (judged once: an action stays fresh as the call goes on)."""
        if action.sig not in self._fresh:
            self._forget_old()
            if not self.claim_nonce(action):
                self._fresh[action.sig] = "its nonce was already used (a replay)"
                self._judged.append((self.now_ms(), action.sig, b""))
            else:
                self._fresh[action.sig] = freshness_problem(action, self.now_ms())
        return self._fresh[action.sig]

    def claim_nonce(self, action: CallAction, keep_until: int = 0) -> bool:
        """Record ``action`` as its nonce's first user; False if another action was. The
        record is forgotten FORGET_MS after ``action.issued_at`` (or ``keep_until``)."""
        first = self._nonces.get(action.nonce)
        if first is None:
            self._nonces[action.nonce] = action.sig
            # (Capped: an action beyond the skew is refused as stale, forgotten or not.)
            at = min(max(action.issued_at, keep_until), self.now_ms() + FRESHNESS_MS)
            self._judged.append((at, action.sig, action.nonce))
        return first in (None, action.sig)

    def _forget_old(self) -> None:
        horizon = self.now_ms() - FORGET_MS
        judged = self._judged
        while judged and judged[0][0] < horizon:
            _, sig, nonce = judged.popleft()
            self._fresh.pop(sig, None)
            self._checked.pop(sig, None)
            self._noted.discard(sig)
            if self._nonces.get(nonce) == sig:
                del self._nonces[nonce]

    def event_problem(self, action: CallAction) -> str | None:
        """Why an action the server says just happened must be ignored (or None)."""
        return self.problem(action) or self.freshness(action)

    def delivered(self, action: CallAction) -> str | None:
        """Take ``action`` as an event the server says just happened: learn it if it is a
        restriction, and say why it must be ignored (None: tell the user). Each event is
        believed once; delivered again, it is a replay."""
        self.learn(action)
        problem = self.event_problem(action)
        if problem is None and action.sig in self._noted:
            problem = "it was already delivered (a replay)"
        self._noted.add(action.sig)
        return problem

    # -- what is honoured ----------------------------------------------------------------------

    def learn(self, action: CallAction) -> None:
        """Remember a kick, denial or ban that verifies, to honour it from now on."""
        if action.action in RESTRICTIONS and self.problem(action) is None:
            self.restrictions.add(action, self.now_ms())

    def pin(self, seat: CallParticipant) -> CallParticipant:
        """The seat with its mute and stage actions no older than the newest this device
        verified on this join: only a later signed action (unmute, promote) changes them."""
        changes = {}
        for field in ("mute", "stage", "mic", "camera"):
            key = (seat.member, seat.join.nonce, field)
            shown: CallAction | None = getattr(seat, field)
            pinned = self._pinned.get(key)
            newer = shown is not None and (pinned is None or shown.issued_at >= pinned.issued_at)
            if newer and shown is not None and self._about(shown, seat, field):
                self._pinned[key] = pinned = shown
            if pinned is not None and pinned is not shown:
                changes[field] = pinned
        return msgspec.structs.replace(seat, **changes) if changes else seat

    def _about(self, action: CallAction, seat: CallParticipant, field: str) -> bool:
        """Whether a verified ``action`` is one that sets ``field`` of this join."""
        if field == "mute" and action.action == "mute-all":
            return action.target == b"" and self.valid(action)
        if field in ("mic", "camera"):  # the member's own word, about itself
            return (
                action.action in (f"{field}-off", f"{field}-on")
                and action.actor == action.target == seat.member
                and self.valid(action)
            )
        names = ("mute", "unmute") if field == "mute" else ("promote", "demote")
        return (
            action.action in names
            and action.target == seat.member
            and (field == "mute" or action.join_ref == seat.join.nonce)
            and self.valid(action)
        )


__all__ = ["FORGET_MS", "ActionLedger"]
