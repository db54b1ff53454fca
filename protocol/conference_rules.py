"""Conference rules (sans-I/O): who may do what in a call, and what a participant's signed
actions say about it. Shared by the server (which checks every action on entry) and every
client (which re-checks them against its own verified roster, so a server that forges or
replays a moderator event is ignored, DESIGN §1.3).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from protocol.conference_wire import (
    END_ACTIONS,
    SEAT_ACTIONS,
    ActionName,
    CallAction,
    CallParticipant,
    CallState,
    TopologyName,
    action_signing_bytes,
)
from protocol.records import ROLE_RANK, Role, RoomCreate, verify_signature

# What a member says about itself: its join, and its self-state (hand, microphone, camera).
SELF_STATE: Final[frozenset[str]] = frozenset(
    {"hand-up", "hand-down", "mic-off", "mic-on", "camera-off", "camera-on"}
)
SELF_ACTIONS: Final[frozenset[str]] = SELF_STATE | {"join"}
# Host actions about one member; the target may not outrank the actor.
TARGETED: Final[frozenset[str]] = frozenset(
    {"mute", "unmute", "kick", "ban", "unban", "admit", "deny", "promote", "demote", "lower-hand"}
)
UNTARGETED: Final[frozenset[str]] = frozenset({"mute-all", "lock", "unlock", "end"})
NOT_ON_SELF: Final[frozenset[str]] = frozenset({"kick", "ban", "deny"})
# How far an action's timestamp may be from the server's clock when it arrives.
FRESHNESS_MS: Final = 5 * 60 * 1000
NONCES_KEPT: Final = 20_000
KEY_LEN: Final = 32
NONCE_LEN: Final = 16  # an action's nonce, and so a join's (what join_ref names)
# Restrictions a client honours whatever call they were signed in: obeying a replayed one
# only keeps someone out, which a server can do anyway by not relaying to them.
RESTRICTIONS: Final[frozenset[str]] = frozenset({"kick", "ban", "unban", "deny"})


def is_host(role: Role | None) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK["moderator"]


def action_problem(
    action: CallAction,
    roles: Mapping[bytes, Role],
    *,
    space_id: str,
    room_id: str,
    call_id: str | None,
) -> str | None:
    """Why ``action`` must not be obeyed in this call, or None if it may.

    ``roles`` are the space's current members and roles as the checker verified them. An
    action is valid when it is for this space, room and call (``call_id`` None: any call of
    the room, for :data:`RESTRICTIONS`), its signature verifies under its actor's key, the
    actor is a member, self actions are about the actor, host actions come from a host
    whose role is not below the target's, and seat actions name a join (``join_ref``).
    Freshness is separate (:func:`freshness_problem`): it depends on the checker's clock.
    """
    if (action.space_id, action.room_id) != (space_id, room_id) or (
        call_id is not None and action.call_id != call_id
    ):
        return "it belongs to another call"
    if not verify_signature(action.actor, action_signing_bytes(action), action.sig):
        return "its signature does not verify"
    if (len(action.join_ref) == NONCE_LEN) != (action.action in SEAT_ACTIONS):
        return "it names a join it should not" if action.join_ref else "it names no join"
    actor_role = roles.get(action.actor)
    if actor_role is None:
        return "its signer is not a member of the space"
    if action.action in SELF_ACTIONS:
        return None if action.target == action.actor else "it is about someone else"
    if not is_host(actor_role):
        return "its signer is not a host (owner or moderator)"
    if action.action in UNTARGETED:
        return None if action.target == b"" else "it names a target it should not"
    if len(action.target) != KEY_LEN:
        return "it names no member"
    if action.action in NOT_ON_SELF and action.target == action.actor:
        return "a host cannot do that to themselves"
    target_role = roles.get(action.target)
    if target_role is not None and ROLE_RANK[target_role] > ROLE_RANK[actor_role]:
        return "its target outranks its signer"
    return None


def freshness_problem(
    action: CallAction, now_ms: int, clock: str = "this device's clock"
) -> str | None:
    """Why ``action`` is not fresh at ``now_ms`` (the checker's ``clock``), or None."""
    if len(action.nonce) != NONCE_LEN:
        return f"it has no {NONCE_LEN}-byte nonce"
    skew = action.issued_at - now_ms
    if abs(skew) > FRESHNESS_MS:
        when = "ahead of" if skew > 0 else "behind"
        return f"it is stale (its timestamp is {abs(skew) // 1000} s {when} {clock})"
    return None


def end_problem(reason: str, action: CallAction | None, member: bytes, join_nonce: bytes) -> str:
    """Why a CallEnded ``reason`` is not proven by ``action`` for ``member`` whose join has
    ``join_nonce`` ("" if it is; validity and freshness are checked separately)."""
    wanted = END_ACTIONS.get(reason)
    if wanted is None:
        return "" if action is None else "it carries an action it should not"
    if action is None:
        return "without a signed action"
    if action.action != wanted:
        return f"with a signed {action.action!r}, which is no {wanted!r}"
    if wanted == "end":
        return ""
    if action.target != member:
        return f"with a signed {wanted!r} of someone else"
    if wanted in SEAT_ACTIONS and action.join_ref != join_nonce:
        return f"with a signed {wanted!r} of an earlier join"
    return ""


class Restrictions:
    """The kicks, denials and bans a participant has verified, and whom they keep out.

    A kick or denial removes one join (its ``join_ref``); a ban keeps its target out of
    every call of the room until a later (by ``issued_at``) unban. The checker adds only
    actions it verified (with :func:`action_problem`, ``call_id`` None).
    """

    def __init__(self) -> None:
        self.removed: dict[bytes, CallAction] = {}  # join nonce -> the kick or deny
        self.bans: dict[bytes, CallAction] = {}  # member -> its latest ban or unban
        self._since: dict[bytes, int] = {}  # member -> when its latest ban or unban counts
        self._first_seen: dict[bytes, int] = {}  # ban/unban signature -> when first seen

    def add(self, action: CallAction, now_ms: int | None = None) -> bool:
        """Remember a verified restriction; True if it is new. Bans and unbans are ordered
        by ``issued_at``, but one counts no later than when it was seen (``now_ms``): a
        signer dating an unban ahead, within the allowed skew, cannot outlive a later ban."""
        if action.action in ("kick", "deny"):
            if action.join_ref in self.removed:
                return False
            self.removed[action.join_ref] = action
            return True
        if action.action in ("ban", "unban"):
            # The time it was *first* seen: shown again later (by a server replaying a ban
            # dated ahead), it must not overtake an unban seen in between.
            seen = now_ms if now_ms is None else self._first_seen.setdefault(action.sig, now_ms)
            since = action.issued_at if seen is None else min(action.issued_at, seen)
            known = self._since.get(action.target)
            if known is not None and known >= since:
                return False
            self.bans[action.target], self._since[action.target] = action, since
            return True
        return False

    def barring(self, member: bytes, join_nonce: bytes) -> CallAction | None:
        """The signed action that keeps this join of ``member`` out, or None."""
        ban = self.bans.get(member)
        if ban is not None and ban.action == "ban":
            return ban
        return self.removed.get(join_nonce)


@dataclass(frozen=True)
class SeatFlags:
    """What a participant's signed actions say about it (see :func:`seat_flags`)."""

    admitted: bool
    host: bool
    muted: bool
    muted_by: bytes | None
    hand_raised: bool
    speaker: bool
    # The member's own word (a signed "mic-off"/"camera-off" by itself): shown to others,
    # never lifting ``muted`` (a host's mute, undone only by a host).
    mic_off: bool = False
    camera_off: bool = False


Verifier = Callable[[CallAction], bool]


def seat_flags(
    seat: CallParticipant,
    room: RoomCreate,
    call_id: str,
    roles: Mapping[bytes, Role],
    valid: Verifier,
) -> SeatFlags:
    """Derive a participant's state from the actions in ``seat``, trusting only those for
    which ``valid`` is true (the server passes an always-true check: it verified on entry).

    Whether the room has a lobby or a stage comes from ``room``, its signed record as the
    checker verified it, never from the server's call state. An admission or a promotion
    counts only for the join it names (``join_ref``)."""
    member = seat.member
    host = is_host(roles.get(member))
    join_nonce = seat.join.nonce

    def ok(action: CallAction | None, *names: ActionName) -> bool:
        return action is not None and action.action in names and valid(action)

    joined = (
        seat.status == "joined"
        and seat.join.actor == member
        and seat.join.call_id == call_id
        and ok(seat.join, "join")
    )
    admitted = joined and (
        not room.lobby
        or host
        or (
            seat.admission is not None
            and seat.admission.target == member
            and seat.admission.join_ref == join_nonce
            and ok(seat.admission, "admit")
        )
    )
    mute = seat.mute
    # A "mute-all" covers only those its signer does not rank below (as the server applies
    # it): filed on a higher host's seat, it must not silence them.
    member_role, actor_role = roles.get(member), roles.get(mute.actor) if mute else None
    outranks = (
        member_role is not None
        and actor_role is not None
        and ROLE_RANK[member_role] > ROLE_RANK[actor_role]
    )
    muted = mute is not None and (
        (mute.target == member and ok(mute, "mute"))
        or (mute.target == b"" and mute.actor != member and not outranks and ok(mute, "mute-all"))
    )
    hand = seat.hand
    hand_raised = hand is not None and hand.actor == member and ok(hand, "hand-up")
    mic, camera = seat.mic, seat.camera
    mic_off = mic is not None and mic.actor == member and ok(mic, "mic-off")
    camera_off = camera is not None and camera.actor == member and ok(camera, "camera-off")
    stage = seat.stage
    promoted = (
        stage is not None
        and stage.target == member
        and stage.join_ref == join_nonce
        and ok(stage, "promote")
    )
    return SeatFlags(
        admitted=admitted,
        host=host,
        muted=muted,
        muted_by=mute.actor if muted and mute is not None else None,
        hand_raised=hand_raised,
        speaker=not room.stage or host or promoted,
        mic_off=mic_off,
        camera_off=camera_off,
    )


def is_locked(state: CallState, valid: Verifier) -> bool:
    return state.lock is not None and state.lock.action == "lock" and valid(state.lock)


def topology_for(
    requested: str,
    joined: int,
    mesh_max: int,
    sfu_available: bool,
    *,
    stage: bool = False,
    current: TopologyName | None = None,
    mesh_return_max: int | None = None,
) -> TopologyName | None:
    """Which topology carries a call of ``joined`` participants; None if it cannot grow.

    Without an SFU every room runs as a mesh of at most ``mesh_max`` participants. With
    one, "sfu" and stage rooms always use it, "mesh" rooms never do, and "auto" rooms move
    to it past ``mesh_max`` and back only at ``mesh_return_max`` (hysteresis: ``current``
    is what carries the call now).
    """
    if not sfu_available:
        return "mesh" if joined <= mesh_max else None
    if requested == "sfu" or stage:
        return "sfu"
    if requested == "mesh":
        return "mesh" if joined <= mesh_max else None
    if joined > mesh_max:
        return "sfu"
    if current == "sfu" and mesh_return_max is not None and joined > mesh_return_max:
        return "sfu"
    return "mesh"
