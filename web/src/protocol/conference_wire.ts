/**
 * The conference messages of the WebSocket protocol (PROTOCOL.md §13; Python:
 * protocol/conference_wire.py). They join the CLIENT_MESSAGE / SERVER_MESSAGE unions of wire.ts.
 *
 *   GetCall        → CallInfo     the room's call (an idle one has no participants)
 *   JoinCall       → CallJoined   enter the call (or its lobby) with a signed "join"
 *   LeaveCall      → Done
 *   ActInCall      → Done         any other signed action (moderation, hands, mic/camera)
 *   SendCallSignal → Done         relay a sealed box to another admitted participant
 *   SfuOffer       → SfuAnswer    connect this participant's media to the call's SFU node
 *   SfuView        → Done         how big this participant shows each receiving slot
 *
 * Events: CallUpdate, CallSignal, CallEnded, CallSpeaker, SfuReconnect.
 *
 * On the wire a CallAction is a snake_case struct (`WireCallAction`); the rest of the client
 * uses calls.ts `CallAction` (camelCase): `toCallAction` / `fromCallAction` convert.
 */
import type { CallAction, CallActionKind } from "./calls.ts";
import { f, fd, list, literal, optional, ref, struct, type StructDef } from "./schema.ts";

export const ACTION_NAMES: readonly CallActionKind[] = [
  "join", "hand-up", "hand-down", "mic-off", "mic-on", "camera-off", "camera-on",
  "mute", "unmute", "mute-all", "kick", "ban", "unban", "admit", "deny", "lock", "unlock", "promote", "demote",
  "lower-hand", "end",
];
export type TopologyName = "mesh" | "sfu";
export type ParticipantStatus = "lobby" | "joined";
export type EndReason = "removed" | "banned" | "denied" | "ended" | "replaced";

/** The signed action each CallEnded reason needs. */
export const END_ACTIONS: { readonly [R in EndReason]?: CallActionKind } = {
  removed: "kick", banned: "ban", denied: "deny", ended: "end",
};

const EMPTY = new Uint8Array(0);

/** CallAction as decoded from / encoded to the wire (field names of the spec). */
export interface WireCallAction {
  space_id: string; room_id: string; call_id: string; actor: Uint8Array; action: CallActionKind; target: Uint8Array;
  issued_at: number; nonce: Uint8Array; head_seq: number; head_hash: Uint8Array; join_ref: Uint8Array; sig: Uint8Array;
}

export const WIRE_CALL_ACTION = struct("CallAction", [
  f("space_id", "str"), f("room_id", "str"), f("call_id", "str"), f("actor", "bytes"),
  f("action", literal(...ACTION_NAMES)),
  fd("target", "bytes", EMPTY), fd("issued_at", "int", 0), fd("nonce", "bytes", EMPTY), fd("head_seq", "int", -1),
  fd("head_hash", "bytes", EMPTY), fd("join_ref", "bytes", EMPTY), fd("sig", "bytes", EMPTY),
]);

export const toCallAction = (w: WireCallAction): CallAction => ({
  spaceId: w.space_id, roomId: w.room_id, callId: w.call_id, actor: w.actor, action: w.action, target: w.target,
  issuedAt: w.issued_at, nonce: w.nonce, headSeq: w.head_seq, headHash: w.head_hash, joinRef: w.join_ref, sig: w.sig,
});

export const fromCallAction = (a: CallAction): WireCallAction => ({
  space_id: a.spaceId, room_id: a.roomId, call_id: a.callId, actor: a.actor, action: a.action, target: a.target,
  issued_at: a.issuedAt, nonce: a.nonce, head_seq: a.headSeq, head_hash: a.headHash, join_ref: a.joinRef, sig: a.sig,
});

/** One member in a call or its lobby, with the signed actions behind its state. */
export interface CallParticipant {
  member: Uint8Array;
  /** Small per-call number, unique in the call (SFrame key ids use it). */
  index: number;
  status: ParticipantStatus;
  join: WireCallAction;
  admission: WireCallAction | null;
  mute: WireCallAction | null;
  hand: WireCallAction | null;
  stage: WireCallAction | null;
  /** The member's own latest "mic-off"/"mic-on" (absent: on); never lifts a host's `mute`. */
  mic?: WireCallAction | null;
  /** The member's own latest "camera-off"/"camera-on" (optional on the wire, like `mic`). */
  camera?: WireCallAction | null;
}

export interface CallState {
  room_id: string;
  call_id: string;
  /** Counts every change of this call; clients order key changes by it. */
  version: number;
  topology: TopologyName;
  requested_topology: string;
  participants: CallParticipant[];
  lock: WireCallAction | null;
  bans: WireCallAction[];
}

const action = ref(WIRE_CALL_ACTION);
const maybeAction = optional(action);
const TOPOLOGY = literal("mesh", "sfu");
const STATUS = literal("lobby", "joined");

export const CALL_PARTICIPANT = struct("CallParticipant", [
  f("member", "bytes"), f("index", "int"), f("status", STATUS), f("join", action),
  fd("admission", maybeAction, null), fd("mute", maybeAction, null), fd("hand", maybeAction, null),
  fd("stage", maybeAction, null), fd("mic", maybeAction, null), fd("camera", maybeAction, null),
]);

export const CALL_STATE = struct("CallState", [
  f("room_id", "str"), f("call_id", "str"), f("version", "int"), f("topology", TOPOLOGY),
  f("requested_topology", "str"), fd("participants", list(ref(CALL_PARTICIPANT)), []), fd("lock", maybeAction, null),
  fd("bans", list(action), []),
]);

// ---- client → server ----

export interface GetCall { type: "get_call"; id: number; room_id: string }
export interface JoinCall { type: "join_call"; id: number; room_id: string; join: WireCallAction }
export interface LeaveCall { type: "leave_call"; id: number; room_id: string }
export interface ActInCall { type: "act_in_call"; id: number; room_id: string; action: WireCallAction }
/** A box sealed end to end for another participant (SDP, media keys); opaque to the server. */
export interface SendCallSignal {
  type: "send_call_signal"; id: number; room_id: string; call_id: string; to: Uint8Array; box: Uint8Array;
}
/** An SDP offer for the call's SFU node (not sealed: the SFU terminates DTLS; frames are SFrame). */
export interface SfuOffer { type: "sfu_offer"; id: number; room_id: string; call_id: string; sdp: string }

/** Bounds of an SfuView (PROTOCOL.md §15.6; Python: MAX_VIEW_SLOTS, MAX_VIEW_HEIGHT, MAX_MID_CHARS). */
export const MAX_VIEW_SLOTS = 32;
export const MAX_VIEW_HEIGHT = 4320;
export const MAX_MID_CHARS = 32;
/** One receiving slot (its SDP mid) and the height in device pixels it is shown at (0: not shown). */
export interface SlotView { mid: string; height: number }
/** How big we show each receiving video/screen slot: the whole view (a slot left out: as big as available). */
export interface SfuView { type: "sfu_view"; id: number; room_id: string; call_id: string; slots: SlotView[] }

export type ConferenceClientMessage = GetCall | JoinCall | LeaveCall | ActInCall | SendCallSignal | SfuOffer | SfuView;

/** On the wire a SlotView is the pair [mid, height] (array-like, as msgspec's). */
export const SLOT_VIEW = struct("SlotView", [f("mid", "str"), f("height", "int")], { arrayLike: true });

export const CONFERENCE_CLIENT_STRUCTS: readonly StructDef[] = [
  struct("GetCall", [f("id", "int"), f("room_id", "str")], { tag: "get_call" }),
  struct("JoinCall", [f("id", "int"), f("room_id", "str"), f("join", action)], { tag: "join_call" }),
  struct("LeaveCall", [f("id", "int"), f("room_id", "str")], { tag: "leave_call" }),
  struct("ActInCall", [f("id", "int"), f("room_id", "str"), f("action", action)], { tag: "act_in_call" }),
  struct("SendCallSignal", [f("id", "int"), f("room_id", "str"), f("call_id", "str"), f("to", "bytes"),
    f("box", "bytes")], { tag: "send_call_signal" }),
  struct("SfuOffer", [f("id", "int"), f("room_id", "str"), f("call_id", "str"), f("sdp", "str")], { tag: "sfu_offer" }),
  struct("SfuView", [f("id", "int"), f("room_id", "str"), f("call_id", "str"), fd("slots", list(ref(SLOT_VIEW)), [])],
    { tag: "sfu_view" }),
];

// ---- server → client ----

export interface CallInfo { type: "call_info"; id: number; state: CallState }
export interface CallJoined { type: "call_joined"; id: number; state: CallState; status: ParticipantStatus }
/** Event: the call's state changed; `action` is the signed action that changed it. */
export interface CallUpdate { type: "call_update"; state: CallState; action: WireCallAction | null }
/** Event: a box another participant sealed for this member. */
export interface CallSignal { type: "call_signal"; room_id: string; call_id: string; sender: Uint8Array; box: Uint8Array }
/** Event: this member's part in the call is over; believed only with a signed `action` (end_problem). */
export interface CallEnded {
  type: "call_ended"; room_id: string; call_id: string; reason: EndReason; action: WireCallAction | null;
}
export interface SfuAnswer { type: "sfu_answer"; id: number; sdp: string }
/** Event: the SFU's active speaker (unsigned, advisory; `member` empty: nobody). */
export interface CallSpeaker { type: "call_speaker"; room_id: string; call_id: string; member: Uint8Array }
/** Event: our SFU connection is gone: send a new SfuOffer. */
export interface SfuReconnect { type: "sfu_reconnect"; room_id: string; call_id: string; reason: string }

export type ConferenceServerMessage =
  | CallInfo | CallJoined | CallUpdate | CallSignal | CallEnded | SfuAnswer | CallSpeaker | SfuReconnect;

const state = ref(CALL_STATE);

export const CONFERENCE_SERVER_STRUCTS: readonly StructDef[] = [
  struct("CallInfo", [f("id", "int"), f("state", state)], { tag: "call_info" }),
  struct("CallJoined", [f("id", "int"), f("state", state), f("status", STATUS)], { tag: "call_joined" }),
  struct("CallUpdate", [f("state", state), fd("action", maybeAction, null)], { tag: "call_update" }),
  struct("CallSignal", [f("room_id", "str"), f("call_id", "str"), f("sender", "bytes"), f("box", "bytes")],
    { tag: "call_signal" }),
  struct("CallEnded", [f("room_id", "str"), f("call_id", "str"),
    f("reason", literal("removed", "banned", "denied", "ended", "replaced")), fd("action", maybeAction, null)],
    { tag: "call_ended" }),
  struct("SfuAnswer", [f("id", "int"), f("sdp", "str")], { tag: "sfu_answer" }),
  struct("CallSpeaker", [f("room_id", "str"), f("call_id", "str"), f("member", "bytes")], { tag: "call_speaker" }),
  struct("SfuReconnect", [f("room_id", "str"), f("call_id", "str"), f("reason", "str")], { tag: "sfu_reconnect" }),
];
