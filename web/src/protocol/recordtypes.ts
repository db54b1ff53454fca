/** Record and record bodies (PROTOCOL.md §6.1, §6.4): types and msgspec schemas. */
import { f, fd, literal, oneOf, struct, union } from "./schema.ts";

export type Role = "owner" | "moderator" | "member";
const ROLE = literal("owner", "moderator", "member");

export interface Genesis { type: "genesis"; box_key: Uint8Array; nonce: Uint8Array }
export interface Meta { type: "meta"; epoch: number; box: Uint8Array }
export interface Profile { type: "profile"; epoch: number; box: Uint8Array }
export interface InviteCreate {
  type: "invite"; invite_id: string; invite_key: Uint8Array; role: Role; expires_at: number; max_uses: number;
}
export interface InviteRevoke { type: "invite_revoke"; invite_id: string }
export interface Join { type: "join"; invite_id: string; box_key: Uint8Array; invite_sig: Uint8Array }
export interface RoleChange { type: "role"; member: Uint8Array; role: Role }
export interface Remove { type: "remove"; member: Uint8Array; ban: boolean }
export interface Leave { type: "leave" }
export interface Rekey { type: "rekey"; epoch: number; prev_epoch: number; prev_box: Uint8Array }
export interface Room {
  type: "room"; room_id: string; kind: "chat" | "channel" | "conference"; epoch: number; name_box: Uint8Array;
  lobby: boolean; stage: boolean; topology: "auto" | "mesh" | "sfu"; ttl: number; history: "since-join" | "shared";
}
export interface RoomKey { type: "room_key"; room_id: string; epoch: number; generation: number; commit: Uint8Array }
export interface RoomGrant { type: "room_grant"; room_id: string; member: Uint8Array; publisher: boolean }

export type RecordBody =
  | Genesis | Meta | Profile | InviteCreate | InviteRevoke | Join | RoleChange | Remove | Leave | Rekey | Room
  | RoomKey | RoomGrant;

export interface Record {
  space_id: string;
  seq: number;
  prev: Uint8Array;
  author: Uint8Array;
  created_at: number;
  body: RecordBody;
  sig: Uint8Array;
}

export const RECORD_BODY = union("RecordBody", [
  struct("Genesis", [f("box_key", "bytes"), f("nonce", "bytes")], { tag: "genesis" }),
  struct("Meta", [f("epoch", "int"), f("box", "bytes")], { tag: "meta" }),
  struct("Profile", [f("epoch", "int"), f("box", "bytes")], { tag: "profile" }),
  struct(
    "InviteCreate",
    [f("invite_id", "str"), f("invite_key", "bytes"), f("role", ROLE), f("expires_at", "int"), f("max_uses", "int")],
    { tag: "invite" },
  ),
  struct("InviteRevoke", [f("invite_id", "str")], { tag: "invite_revoke" }),
  struct("Join", [f("invite_id", "str"), f("box_key", "bytes"), f("invite_sig", "bytes")], { tag: "join" }),
  struct("RoleChange", [f("member", "bytes"), f("role", ROLE)], { tag: "role" }),
  struct("Remove", [f("member", "bytes"), f("ban", "bool")], { tag: "remove" }),
  struct("Leave", [], { tag: "leave" }),
  struct("Rekey", [f("epoch", "int"), f("prev_epoch", "int"), f("prev_box", "bytes")], { tag: "rekey" }),
  struct(
    "Room",
    [
      f("room_id", "str"),
      f("kind", literal("chat", "channel", "conference")),
      f("epoch", "int"),
      f("name_box", "bytes"),
      fd("lobby", "bool", false),
      fd("stage", "bool", false),
      fd("topology", literal("auto", "mesh", "sfu"), "auto"),
      fd("ttl", "int", 0),
      fd("history", literal("since-join", "shared"), "since-join"),
    ],
    { tag: "room" },
  ),
  struct("RoomKey", [f("room_id", "str"), f("epoch", "int"), f("generation", "int"), f("commit", "bytes")], { tag: "room_key" }),
  struct("RoomGrant", [f("room_id", "str"), f("member", "bytes"), f("publisher", "bool")], { tag: "room_grant" }),
]);

export const RECORD = struct("Record", [
  f("space_id", "str"),
  f("seq", "int"),
  f("prev", "bytes"),
  f("author", "bytes"),
  f("created_at", "int"),
  f("body", oneOf(RECORD_BODY)),
  fd("sig", "bytes", new Uint8Array(0)),
]);
