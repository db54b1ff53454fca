/**
 * WebSocket frames of PROTOCOL.md §5 (authentication, member requests and events, §5.3–5.5),
 * with the chat and story frames of §11–12 (chat_wire.ts) and the conference frames of §13
 * (conference_wire.ts).
 */
import { RECORD, type Record } from "./recordtypes.ts";
import { CHAT_CLIENT_STRUCTS, CHAT_SERVER_STRUCTS, type ChatClientMessage, type ChatServerMessage } from "./chat_wire.ts";
import {
  CONFERENCE_CLIENT_STRUCTS, CONFERENCE_SERVER_STRUCTS, type ConferenceClientMessage, type ConferenceServerMessage,
} from "./conference_wire.ts";
import { WireError, decodeUnion, encodeUnion, f, fd, list, optional, ref, struct, union } from "./schema.ts";

export { WireError };

export interface Envelope { scope: string; epoch: number; recipient: Uint8Array; sender: Uint8Array; box: Uint8Array }
export interface InviteSeal { invite_id: string; epoch: number; sealed: Uint8Array; preview: Uint8Array }
export interface InviteStatus {
  invite_id: string; role: string; expires_at: number; max_uses: number; uses: number; revoked: boolean;
  seal_epoch: number;
}

export const ENVELOPE = struct("Envelope", [
  f("scope", "str"), f("epoch", "int"), f("recipient", "bytes"), f("sender", "bytes"), f("box", "bytes"),
]);
export const INVITE_SEAL = struct("InviteSeal", [
  f("invite_id", "str"), f("epoch", "int"), f("sealed", "bytes"), f("preview", "bytes"),
]);
/** One entry of RTCConfiguration.iceServers (§5.6): STUN URLs carry no credentials (""). */
export interface IceServer { urls: string[]; username: string; credential: string }
export const ICE_SERVER = struct("IceServer", [
  f("urls", list("str")), fd("username", "str", ""), fd("credential", "str", ""),
]);
export const INVITE_STATUS = struct("InviteStatus", [
  f("invite_id", "str"), f("role", "str"), f("expires_at", "int"), f("max_uses", "int"), f("uses", "int"),
  f("revoked", "bool"), fd("seal_epoch", "int", -1),
]);

// ---- client → server ----

export interface CreateSpace {
  type: "create_space"; id: number; records: Record[]; seals: InviteSeal[]; signature: Uint8Array; creation_token: string;
}
export interface Authenticate { type: "auth"; id: number; space_id: string; member_key: Uint8Array; signature: Uint8Array }
export interface OpenInvite { type: "open_invite"; id: number; invite_id: string; signature: Uint8Array }
export interface JoinSpace {
  type: "join_space"; id: number; invite_id: string; invite_signature: Uint8Array; record: Record; signature: Uint8Array;
}
export interface GetRecords { type: "get_records"; id: number; after: number }
export interface Append { type: "append"; id: number; records: Record[]; envelopes: Envelope[]; seals: InviteSeal[] }
export interface ListInvites { type: "list_invites"; id: number }
export interface GetEnvelopes { type: "get_envelopes"; id: number; scope: string; min_epoch: number }
export interface GetEnvelopeHolders { type: "get_envelope_holders"; id: number; scope: string; epoch: number }
export interface DropEnvelope { type: "drop_envelope"; id: number; scope: string; epoch: number }
export interface PutSeals { type: "put_seals"; id: number; seals: InviteSeal[] }
export interface GetIceServers { type: "get_ice_servers"; id: number }

export type ClientMessage =
  | CreateSpace | Authenticate | OpenInvite | JoinSpace | GetRecords | Append | ListInvites | GetEnvelopes
  | GetEnvelopeHolders | DropEnvelope | PutSeals | GetIceServers | ChatClientMessage | ConferenceClientMessage;

const records = list(ref(RECORD));
const seals = list(ref(INVITE_SEAL));

export const CLIENT_MESSAGE = union("ClientMessage", [
  struct("CreateSpace", [f("id", "int"), f("records", records), f("seals", seals), f("signature", "bytes"),
    fd("creation_token", "str", "")], { tag: "create_space" }),
  struct("Authenticate", [f("id", "int"), f("space_id", "str"), f("member_key", "bytes"), f("signature", "bytes")],
    { tag: "auth" }),
  struct("OpenInvite", [f("id", "int"), f("invite_id", "str"), f("signature", "bytes")], { tag: "open_invite" }),
  struct("JoinSpace", [f("id", "int"), f("invite_id", "str"), f("invite_signature", "bytes"), f("record", ref(RECORD)),
    f("signature", "bytes")], { tag: "join_space" }),
  struct("GetRecords", [f("id", "int"), fd("after", "int", -1)], { tag: "get_records" }),
  struct("Append", [f("id", "int"), f("records", records), fd("envelopes", list(ref(ENVELOPE)), []),
    fd("seals", seals, [])], { tag: "append" }),
  struct("ListInvites", [f("id", "int")], { tag: "list_invites" }),
  struct("GetEnvelopes", [f("id", "int"), f("scope", "str"), fd("min_epoch", "int", 0)], { tag: "get_envelopes" }),
  struct("GetEnvelopeHolders", [f("id", "int"), f("scope", "str"), f("epoch", "int")], { tag: "get_envelope_holders" }),
  struct("DropEnvelope", [f("id", "int"), f("scope", "str"), f("epoch", "int")], { tag: "drop_envelope" }),
  struct("PutSeals", [f("id", "int"), f("seals", seals)], { tag: "put_seals" }),
  struct("GetIceServers", [f("id", "int")], { tag: "get_ice_servers" }),
  ...CHAT_CLIENT_STRUCTS,
  ...CONFERENCE_CLIENT_STRUCTS,
]);

// ---- server → client ----

export interface Challenge { type: "challenge"; nonce: Uint8Array; origin: string; version: number }
export interface Welcome { type: "welcome"; id: number; space_id: string; head_seq: number }
export interface InviteOpened {
  type: "invite_opened"; id: number; space_id: string; role: string; expires_at: number; preview: Uint8Array;
  head_seq: number; head_hash: Uint8Array;
}
export interface Joined { type: "joined"; id: number; space_id: string; head_seq: number; seal: InviteSeal }
export interface Records { type: "records"; id: number; records: Record[]; head_seq: number; head_hash: Uint8Array }
export interface Appended { type: "appended"; id: number; head_seq: number }
export interface Invites { type: "invites"; id: number; invites: InviteStatus[] }
export interface Envelopes { type: "envelopes"; id: number; envelopes: Envelope[] }
export interface EnvelopeHolders { type: "envelope_holders"; id: number; recipients: Uint8Array[] }
export interface Done { type: "done"; id: number }
export interface ErrorReply { type: "error"; id: number | null; code: string; message: string }
export interface RecordAdded { type: "record_added"; record: Record }
export interface SessionClosed { type: "session_closed"; reason: string }
/** §5.6: give `servers` to every RTCPeerConnection (drop empty username/credential);
 * `relay_only`: the operator's "relay calls" — iceTransportPolicy "relay" everywhere. */
export interface IceServers {
  type: "ice_servers"; id: number; servers: IceServer[]; expires_at: number; relay_only: boolean;
}

export type ServerMessage =
  | Challenge | Welcome | InviteOpened | Joined | Records | Appended | Invites | Envelopes | EnvelopeHolders | Done
  | ErrorReply | RecordAdded | SessionClosed | IceServers | ChatServerMessage | ConferenceServerMessage;

export const PROTOCOL_VERSION = 1;

export const SERVER_MESSAGE = union("ServerMessage", [
  struct("Challenge", [f("nonce", "bytes"), f("origin", "str"), fd("version", "int", PROTOCOL_VERSION)],
    { tag: "challenge" }),
  struct("Welcome", [f("id", "int"), f("space_id", "str"), f("head_seq", "int")], { tag: "welcome" }),
  struct("InviteOpened", [f("id", "int"), f("space_id", "str"), f("role", "str"), f("expires_at", "int"),
    f("preview", "bytes"), f("head_seq", "int"), f("head_hash", "bytes")], { tag: "invite_opened" }),
  struct("Joined", [f("id", "int"), f("space_id", "str"), f("head_seq", "int"), f("seal", ref(INVITE_SEAL))],
    { tag: "joined" }),
  struct("Records", [f("id", "int"), f("records", records), f("head_seq", "int"), f("head_hash", "bytes")],
    { tag: "records" }),
  struct("Appended", [f("id", "int"), f("head_seq", "int")], { tag: "appended" }),
  struct("Invites", [f("id", "int"), f("invites", list(ref(INVITE_STATUS)))], { tag: "invites" }),
  struct("Envelopes", [f("id", "int"), f("envelopes", list(ref(ENVELOPE)))], { tag: "envelopes" }),
  struct("EnvelopeHolders", [f("id", "int"), f("recipients", list("bytes"))], { tag: "envelope_holders" }),
  struct("Done", [f("id", "int")], { tag: "done" }),
  struct("Error", [f("id", optional("int")), f("code", "str"), f("message", "str")], { tag: "error" }),
  struct("RecordAdded", [f("record", ref(RECORD))], { tag: "record_added" }),
  struct("SessionClosed", [f("reason", "str")], { tag: "session_closed" }),
  struct("IceServers", [f("id", "int"), f("servers", list(ref(ICE_SERVER))), fd("expires_at", "int", 0),
    fd("relay_only", "bool", false)],
    { tag: "ice_servers" }),
  ...CHAT_SERVER_STRUCTS,
  ...CONFERENCE_SERVER_STRUCTS,
]);

export const encodeClientMessage = (message: ClientMessage): Uint8Array => encodeUnion(CLIENT_MESSAGE, message);
export const decodeClientMessage = (frame: Uint8Array): ClientMessage => decodeUnion(CLIENT_MESSAGE, frame);
export const encodeServerMessage = (message: ServerMessage): Uint8Array => encodeUnion(SERVER_MESSAGE, message);
export const decodeServerMessage = (frame: Uint8Array): ServerMessage => decodeUnion(SERVER_MESSAGE, frame);
