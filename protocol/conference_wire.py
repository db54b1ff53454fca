"""The conference messages of the WebSocket protocol (DESIGN §6); :mod:`protocol.wire` lists
them in its unions.

Every change to a call's moderation state is a :class:`CallAction` signed by the member who
made it: a participant's own join, hand, microphone and camera, or a host's mute, admit,
kick, and so on. The server checks and stores the actions and puts the ones that explain
each participant's state into every :class:`CallState` it pushes, so a client re-verifies
everything it obeys or shows against its own verified roster (see :mod:`spaces.conference`).

Requests (client to server), each answered as shown::

    GetCall          -> CallInfo      the room's call (an idle one has no participants)
    JoinCall         -> CallJoined    enter the call (or its lobby) with a signed "join"
    LeaveCall        -> Done
    ActInCall        -> Done          any other signed action (moderation, hands, mic/camera)
    SendCallSignal   -> Done          relay a sealed box to another admitted participant
    SfuOffer         -> SfuAnswer     connect this participant's media to the call's SFU node
    SfuView          -> Done          how big this participant shows each receiving slot

Events (server to client): :class:`CallUpdate` (the state changed, and why),
:class:`CallSignal` (a relayed box), :class:`CallEnded` (this member's call is over),
:class:`CallSpeaker` (the SFU's active speaker) and :class:`SfuReconnect` (this member's
SFU connection is gone: offer again).
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

from protocol.labels import CALL_ACTION_DOMAIN

ActionName = Literal[
    # a participant about itself
    "join",
    "hand-up",
    "hand-down",
    "mic-off",
    "mic-on",
    "camera-off",
    "camera-on",
    # hosts (space owners and moderators)
    "mute",
    "unmute",
    "mute-all",
    "kick",
    "ban",
    "unban",
    "admit",
    "deny",
    "lock",
    "unlock",
    "promote",
    "demote",
    "lower-hand",
    "end",
]
TopologyName = Literal["mesh", "sfu"]
ParticipantStatus = Literal["lobby", "joined"]
EndReason = Literal["removed", "banned", "denied", "ended", "replaced"]

# The signed action each CallEnded reason needs (see CallEnded).
END_ACTIONS: Final[dict[str, ActionName]] = {
    "removed": "kick",
    "banned": "ban",
    "denied": "deny",
    "ended": "end",
}

_encoder = msgspec.msgpack.Encoder()


class CallAction(msgspec.Struct, frozen=True):
    """A signed statement by ``actor``: ``action`` on ``target`` in one call of one room.

    ``issued_at`` (ms since the epoch) and the random ``nonce`` make each statement unique:
    the server and every client refuse one whose time is more than ``FRESHNESS_MS`` from
    their clock when it arrives, or whose nonce they already saw on another action. The
    call id keeps it out of other calls; since a server picks call ids (and could re-use
    one), actions about a participant's seat (:data:`SEAT_ACTIONS`: admit, deny, kick,
    promote, demote) also name the seat's join in ``join_ref`` (the nonce of the target's
    signed ``join``, which the target drew at random), so they apply to that join only and
    never to a later one, in this call or in a call that re-uses its id.
    ``head_seq`` and ``head_hash`` name the roster head the actor had verified
    (:mod:`protocol.forks`): a participant obeys an action only if that head is on its own
    verified chain, so a server showing members different histories is detected.
    """

    space_id: str
    room_id: str
    call_id: str
    actor: bytes
    action: ActionName
    target: bytes = b""
    issued_at: int = 0
    nonce: bytes = b""
    head_seq: int = -1
    head_hash: bytes = b""
    join_ref: bytes = b""
    sig: bytes = b""


# Host actions bound to one join of their target (CallAction.join_ref).
SEAT_ACTIONS: Final[frozenset[str]] = frozenset({"admit", "deny", "kick", "promote", "demote"})


def action_signing_bytes(action: CallAction) -> bytes:
    """The exact bytes an action's signature covers (everything but the signature)."""
    unsigned = (
        action.space_id,
        action.room_id,
        action.call_id,
        action.actor,
        action.action,
        action.target,
        action.issued_at,
        action.nonce,
        action.head_seq,
        action.head_hash,
        action.join_ref,
    )
    return CALL_ACTION_DOMAIN + _encoder.encode(unsigned)


class CallParticipant(msgspec.Struct, frozen=True):
    """One member in a call or its lobby, with the signed actions behind its state."""

    member: bytes
    index: int  # small per-call number, unique in the call (SFrame key ids use it)
    status: ParticipantStatus
    join: CallAction
    admission: CallAction | None = None  # the host's "admit", in lobby rooms
    mute: CallAction | None = None  # latest "mute", "unmute" or "mute-all" that covers it
    hand: CallAction | None = None  # latest "hand-up", "hand-down" or "lower-hand"
    stage: CallAction | None = None  # latest "promote" or "demote" (stage rooms)
    # The member's own word on its microphone and camera (absent: on); distinct from
    # ``mute``, a host's: a "mic-on" never lifts a host's mute.
    mic: CallAction | None = None  # latest "mic-off" or "mic-on"
    camera: CallAction | None = None  # latest "camera-off" or "camera-on"


class CallState(msgspec.Struct, frozen=True):
    room_id: str
    call_id: str
    version: int  # counts every change of this call; clients order key changes by it
    topology: TopologyName  # what carries the media now
    requested_topology: str  # the room's setting: auto, mesh or sfu
    participants: list[CallParticipant] = []
    lock: CallAction | None = None  # the latest "lock" or "unlock"
    # The room's standing bans (signed "ban" actions, from any call of the room), so a
    # client that joins later honours them too. A room's lobby and stage settings are not
    # here: clients take them from the room's signed record (RoomCreate), never the server.
    bans: list[CallAction] = []


# -- client to server ---------------------------------------------------------------------------


class GetCall(msgspec.Struct, tag="get_call", frozen=True):
    id: int
    room_id: str


class JoinCall(msgspec.Struct, tag="join_call", frozen=True):
    id: int
    room_id: str
    join: CallAction  # "join", by and about the session's member, for the current call id


class LeaveCall(msgspec.Struct, tag="leave_call", frozen=True):
    id: int
    room_id: str


class ActInCall(msgspec.Struct, tag="act_in_call", frozen=True):
    id: int
    room_id: str
    action: CallAction


class SendCallSignal(msgspec.Struct, tag="send_call_signal", frozen=True):
    """A box sealed end to end for another participant (SDP, media keys); opaque here."""

    id: int
    room_id: str
    call_id: str
    to: bytes
    box: bytes


class SfuOffer(msgspec.Struct, tag="sfu_offer", frozen=True):
    """An SDP offer for the call's SFU node, answered by the node (:class:`SfuAnswer`).

    Not sealed end to end, unlike mesh SDP: the SFU terminates DTLS (it has to, to forward
    anything), so the DTLS hop protects only the way to the SFU. The frames inside are
    SFrame ciphertext under keys the SFU never sees. Only admitted participants may offer.
    """

    id: int
    room_id: str
    call_id: str
    sdp: str


# How big a subscriber shows its receiving slots (SfuView): bounded so that a view costs the
# server and the node next to nothing. The node has at most 34 media sections (sfu/node.py).
MAX_VIEW_SLOTS: Final = 32
MAX_VIEW_HEIGHT: Final = 4320  # device pixels: an 8K screen's full height
MAX_MID_CHARS: Final = 32


class SlotView(msgspec.Struct, array_like=True, frozen=True):
    """One receiving slot (its SDP ``a=mid``) and the height, in device pixels, at which
    the subscriber shows it now: 0 when it is not shown (hidden, minimised, off screen)."""

    mid: str
    height: int


class SfuView(msgspec.Struct, tag="sfu_view", frozen=True):
    """How big this participant shows each of its receiving video and screen slots, so the
    SFU forwards a simulcast layer that fits each tile (and none to a slot nobody sees).

    A whole view each time (a slot left out: as big as available, as before any view); sent
    only when it changes. Advisory and about the sender's own slots only: it never changes
    what anyone else receives. At most :data:`MAX_VIEW_SLOTS` slots, each mid named once,
    heights 0 to :data:`MAX_VIEW_HEIGHT`; answered by ``Done``.
    """

    id: int
    room_id: str
    call_id: str
    slots: list[SlotView] = []


def view_problem(slots: list[SlotView]) -> str | None:
    """Why a view breaks the bounds of :class:`SfuView` (None: it does not)."""
    if len(slots) > MAX_VIEW_SLOTS:
        return f"a view names at most {MAX_VIEW_SLOTS} slots (this one {len(slots)})"
    mids: set[str] = set()
    for slot in slots:
        if not 0 < len(slot.mid) <= MAX_MID_CHARS:
            return f"a slot's mid is 1 to {MAX_MID_CHARS} characters"
        if slot.mid in mids:
            return f"a view names slot {slot.mid!r} twice"
        mids.add(slot.mid)
        if not 0 <= slot.height <= MAX_VIEW_HEIGHT:
            return (
                f"a slot's height is 0 to {MAX_VIEW_HEIGHT} px (slot {slot.mid!r}: {slot.height})"
            )
    return None


# -- server to client ---------------------------------------------------------------------------


class CallInfo(msgspec.Struct, tag="call_info", frozen=True):
    id: int
    state: CallState


class CallJoined(msgspec.Struct, tag="call_joined", frozen=True):
    id: int
    state: CallState
    status: ParticipantStatus


class CallUpdate(msgspec.Struct, tag="call_update", frozen=True):
    """Event: the call's state changed; ``action`` is the signed action that changed it."""

    state: CallState
    action: CallAction | None = None


class CallSignal(msgspec.Struct, tag="call_signal", frozen=True):
    """Event: a box another participant sealed for this member."""

    room_id: str
    call_id: str
    sender: bytes
    box: bytes


class CallEnded(msgspec.Struct, tag="call_ended", frozen=True):
    """Event: this member's part in the call is over (``action`` says who did it).

    A client believes ``reason`` only with a valid, fresh ``action`` that says the same
    (:data:`END_ACTIONS`): "removed" needs a "kick" of its own current join, "banned" a
    "ban" of it, "denied" a "deny" of its current join, "ended" an "end"; anything else it
    reports as the server dropping it without a signed action. "replaced" has no action
    (the member's own newer session took the seat)."""

    room_id: str
    call_id: str
    reason: EndReason
    action: CallAction | None = None


class SfuAnswer(msgspec.Struct, tag="sfu_answer", frozen=True):
    id: int
    sdp: str


class CallSpeaker(msgspec.Struct, tag="call_speaker", frozen=True):
    """Event: the SFU's active speaker, from the RFC 6464 audio levels senders attach (the
    SFU hears nothing). Unsigned and advisory: for display only. ``member`` b"": nobody."""

    room_id: str
    call_id: str
    member: bytes


class SfuReconnect(msgspec.Struct, tag="sfu_reconnect", frozen=True):
    """Event: this participant's SFU connection is gone (its node went away or dropped it);
    send a new :class:`SfuOffer` (the server picks a node that is up)."""

    room_id: str
    call_id: str
    reason: str


CLIENT_MESSAGES: Final = (
    GetCall,
    JoinCall,
    LeaveCall,
    ActInCall,
    SendCallSignal,
    SfuOffer,
    SfuView,
)
SERVER_MESSAGES: Final = (
    CallInfo,
    CallJoined,
    CallUpdate,
    CallSignal,
    CallEnded,
    SfuAnswer,
    CallSpeaker,
    SfuReconnect,
)
