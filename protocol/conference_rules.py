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
    ActionName,
    CallAction,
    CallParticipant,
    CallState,
    TopologyName,
    action_signing_bytes,
)
from protocol.records import ROLE_RANK, Role, verify_signature

SELF_ACTIONS: Final[frozenset[str]] = frozenset({"join", "hand-up", "hand-down"})
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


def is_host(role: Role | None) -> bool:
    return role is not None and ROLE_RANK[role] >= ROLE_RANK["moderator"]


def action_problem(
    action: CallAction,
    roles: Mapping[bytes, Role],
    *,
    space_id: str,
    room_id: str,
    call_id: str,
) -> str | None:
    """Why ``action`` must not be obeyed in this call, or None if it may.

    ``roles`` are the space's current members and roles as the checker verified them. An
    action is valid when it is for this space, room and call, its signature verifies under
    its actor's key, the actor is a member, self actions are about the actor, and host
    actions come from a host whose role is not below the target's.
    """
    if (action.space_id, action.room_id, action.call_id) != (space_id, room_id, call_id):
        return "it belongs to another call"
    if not verify_signature(action.actor, action_signing_bytes(action), action.sig):
        return "its signature does not verify"
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


@dataclass(frozen=True)
class SeatFlags:
    """What a participant's signed actions say about it (see :func:`seat_flags`)."""

    admitted: bool
    host: bool
    muted: bool
    muted_by: bytes | None
    hand_raised: bool
    speaker: bool


Verifier = Callable[[CallAction], bool]


def seat_flags(
    seat: CallParticipant, state: CallState, roles: Mapping[bytes, Role], valid: Verifier
) -> SeatFlags:
    """Derive a participant's state from the actions in ``seat``, trusting only those for
    which ``valid`` is true (the server passes an always-true check: it verified on entry)."""
    member = seat.member
    host = is_host(roles.get(member))

    def ok(action: CallAction | None, *names: ActionName) -> bool:
        return action is not None and action.action in names and valid(action)

    joined = (
        seat.status == "joined"
        and seat.join.actor == member
        and seat.join.call_id == state.call_id
        and ok(seat.join, "join")
    )
    admitted = joined and (
        not state.lobby
        or host
        or (
            seat.admission is not None
            and seat.admission.target == member
            and ok(seat.admission, "admit")
        )
    )
    mute = seat.mute
    muted = mute is not None and (
        (mute.target == member and ok(mute, "mute"))
        or (mute.target == b"" and mute.actor != member and ok(mute, "mute-all"))
    )
    hand = seat.hand
    hand_raised = hand is not None and hand.actor == member and ok(hand, "hand-up")
    stage = seat.stage
    promoted = stage is not None and stage.target == member and ok(stage, "promote")
    return SeatFlags(
        admitted=admitted,
        host=host,
        muted=muted,
        muted_by=mute.actor if muted and mute is not None else None,
        hand_raised=hand_raised,
        speaker=not state.stage or host or promoted,
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
