/**
 * The roster rules (PROTOCOL.md §7): what every client and the server check on every record.
 *
 * `applyRecord(roster, record)` returns a new roster (the input is not modified) or throws the
 * first failing check's error class; `rosterFromRecords` starts from the genesis.
 * The history a reader needs (§6.6 "state at an older head", §7 `member_during`) is kept too:
 * epoch starts, every member's role log and tenures, each room's publisher log; `rosterAt`
 * answers from them as of an older head.
 */
import { toHex } from "./bytes.ts";
import { ed25519Verify } from "./crypto.ts";
import { isValidId } from "./ids.ts";
import {
  EMPTY_HEAD, RecordError, RecordForbidden, RecordRateLimited, RecordTooLarge, checkGenesis, checkLink, joinStatement,
  type Head, type InviteCreate, type Meta, type Profile, type Record, type Rekey, type Role, type Room,
} from "./records.ts";

export const MAX_PROFILE_BOX = 14_336;
export const MAX_META_BOX = 4_096;
export const MAX_NAME_BOX = 1_024;
export const MAX_PREV_BOX = 128;
export const MAX_ROOMS = 1_000;
export const PROFILE_QUOTA = 20;
export const PROFILE_WINDOW = 3_600;
export const HASH_WINDOW = 1_024;
export const HASH_CHECKPOINT = 256;

const RANK: { readonly [R in Role]: number } = { member: 1, moderator: 2, owner: 3 };

/** Keys are hex member keys throughout (Uint8Array cannot key a Map by value). */
export interface Member {
  readonly boxKey: Uint8Array;
  readonly role: Role;
  readonly joinedSeq: number;
  readonly joinGeneration: number;
  /** created_at of this membership's last PROFILE_QUOTA profile records. */
  readonly profileTimes: readonly number[];
}

export interface RoomState {
  readonly spec: Room;
  readonly publishers: ReadonlySet<string>;
  readonly createdSeq: number;
  /** key → [(seq, publisher?)]: grants, revocations and departures over time. */
  readonly publisherLog: ReadonlyMap<string, readonly (readonly [number, boolean])[]>;
}

/** A role log entry: the member's role from `seq` on ("" = not a member). */
export type RoleEvent = readonly [seq: number, role: Role | ""];
/** A membership: [joined seq, departed seq or -1]. */
export type Tenure = readonly [joined: number, left: number];

export interface Roster {
  readonly spaceId: string;
  readonly founder: string;
  readonly head: Head;
  readonly members: ReadonlyMap<string, Member>;
  /** key → banned? */
  readonly departed: ReadonlyMap<string, boolean>;
  readonly boxKeys: ReadonlyMap<string, Uint8Array>;
  /** Latest profile of every member, kept after departure for display. */
  readonly profiles: ReadonlyMap<string, Profile>;
  readonly invites: ReadonlyMap<string, InviteCreate>;
  readonly inviteAuthors: ReadonlyMap<string, string>;
  readonly inviteUses: ReadonlyMap<string, number>;
  readonly revoked: ReadonlySet<string>;
  readonly epoch: number;
  readonly epochSeq: number;
  readonly lastDepartureSeq: number;
  readonly meta: Meta | null;
  readonly rekeys: ReadonlyMap<number, Rekey>;
  readonly rekeyAuthors: ReadonlyMap<number, string>;
  readonly rooms: ReadonlyMap<string, RoomState>;
  /** Joins since the current epoch began. */
  readonly generation: number;
  /** "room/epoch/generation" → commit. */
  readonly roomKeys: ReadonlyMap<string, Uint8Array>;
  readonly roomKeyAuthors: ReadonlyMap<string, string>;
  /** "room/epoch" → the author of its first commitment. */
  readonly roomKeyMakers: ReadonlyMap<string, string>;
  /** Record hashes kept (§6.6): the last HASH_WINDOW and every HASH_CHECKPOINT-th. */
  readonly hashes: ReadonlyMap<number, Uint8Array>;
  /** epoch → the seq of the record that began it (0 for epoch 0). */
  readonly epochStarts: readonly number[];
  readonly roleLog: ReadonlyMap<string, readonly RoleEvent[]>;
  readonly tenures: ReadonlyMap<string, readonly Tenure[]>;
}

export const roomKeyId = (room: string, epoch: number, generation: number): string => `${room}/${epoch}/${generation}`;

export const rank = (role: Role): number => RANK[role];

export const needsRekey = (r: Roster): boolean => r.lastDepartureSeq > r.epochSeq;

export function mayRekey(r: Roster, key: string): boolean {
  const member = r.members.get(key);
  return member !== undefined && (rank(member.role) >= RANK.moderator || needsRekey(r));
}

export function mayPost(r: Roster, roomId: string, key: string): boolean {
  const room = r.rooms.get(roomId);
  const member = r.members.get(key);
  if (room === undefined || member === undefined || room.spec.kind === "conference") return false;
  return room.spec.kind === "chat" || rank(member.role) >= RANK.moderator || room.publishers.has(key);
}

export function roomGeneration(r: Roster, roomId: string): number {
  const room = r.rooms.get(roomId);
  return room !== undefined && room.spec.history === "since-join" ? r.generation : 0;
}

export function memberGeneration(r: Roster, roomId: string, key: string): number {
  const member = r.members.get(key);
  const room = r.rooms.get(roomId);
  if (member === undefined || room === undefined || room.spec.history !== "since-join") return 0;
  if (room.createdSeq < member.joinedSeq && member.joinedSeq > r.epochSeq) return member.joinGeneration;
  return 0;
}

function emptyRoster(spaceId: string, founder: string): Roster {
  return {
    spaceId, founder, head: EMPTY_HEAD, members: new Map(), departed: new Map(), boxKeys: new Map(), profiles: new Map(),
    invites: new Map(), inviteAuthors: new Map(), inviteUses: new Map(), revoked: new Set(), epoch: 0, epochSeq: 0,
    lastDepartureSeq: -1, meta: null, rekeys: new Map(), rekeyAuthors: new Map(), rooms: new Map(), generation: 0,
    roomKeys: new Map(), roomKeyAuthors: new Map(), roomKeyMakers: new Map(), hashes: new Map(),
    epochStarts: [0], roleLog: new Map(), tenures: new Map(),
  };
}

function appendLog<T>(log: ReadonlyMap<string, readonly T[]>, key: string, event: T): ReadonlyMap<string, readonly T[]> {
  return new Map(log).set(key, [...(log.get(key) ?? []), event]);
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function depart(next: Mutable<Roster>, key: string, banned: boolean, seq: number): void {
  const members = new Map(next.members);
  members.delete(key);
  next.members = members;
  const rooms = new Map<string, RoomState>();
  for (const [id, room] of next.rooms) {
    if (room.publishers.has(key)) {
      const publishers = new Set(room.publishers);
      publishers.delete(key);
      rooms.set(id, { ...room, publishers, publisherLog: appendLog(room.publisherLog, key, [seq, false]) });
    } else rooms.set(id, room);
  }
  next.rooms = rooms;
  next.roleLog = appendLog(next.roleLog, key, [seq, ""]);
  const tenures = next.tenures.get(key) ?? [];
  const last = tenures[tenures.length - 1];
  if (last !== undefined) next.tenures = new Map(next.tenures).set(key, [...tenures.slice(0, -1), [last[0], seq]]);
  next.departed = new Map(next.departed).set(key, banned);
  next.lastDepartureSeq = seq;
}

function checkEpoch(r: Roster, epoch: number, what: string): void {
  if (epoch < 0 || epoch > r.epoch) throw new RecordError(`${what} names epoch ${epoch}, current is ${r.epoch}`);
}

function checkSize(what: string, size: number, cap: number): void {
  if (size > cap) throw new RecordTooLarge(`${what} record over its size cap (${size} > ${cap} bytes)`);
}

/** §7 `apply`: the checks in the spec's order; returns the roster after the record. */
export async function applyRecord(r: Roster, record: Record): Promise<Roster> {
  const head = await checkLink(r.spaceId, r.head, record); // steps 1-4
  const next: Mutable<Roster> = { ...r };
  const author = toHex(record.author);
  const seq = record.seq;
  const body = record.body;

  if (body.type === "genesis") {
    if (seq !== 0 || author !== r.founder) throw new RecordError("misplaced genesis");
    if (body.box_key.length !== 32) throw new RecordError("bad genesis box key");
    next.members = new Map(r.members).set(author, {
      boxKey: body.box_key, role: "owner", joinedSeq: seq, joinGeneration: 0, profileTimes: [],
    });
    next.boxKeys = new Map(r.boxKeys).set(author, body.box_key);
    next.roleLog = appendLog(r.roleLog, author, [seq, "owner"]);
    next.tenures = appendLog(r.tenures, author, [seq, -1]);
  } else if (body.type === "join") {
    const invite = r.invites.get(body.invite_id);
    if (invite === undefined) throw new RecordForbidden("unknown invite");
    if (r.revoked.has(body.invite_id)) throw new RecordForbidden("this invite was revoked");
    const uses = r.inviteUses.get(body.invite_id) ?? 0;
    if (uses >= invite.max_uses) throw new RecordForbidden("this invite has no uses left");
    if (r.members.has(author)) throw new RecordForbidden("already a member");
    if (r.departed.get(author) === true) throw new RecordForbidden("this key is banned from the space");
    if (record.author.length !== 32 || body.box_key.length !== 32) throw new RecordError("bad member or box key");
    const statement = joinStatement(r.spaceId, record.author, body.box_key, body.invite_id);
    if (!(await ed25519Verify(invite.invite_key, statement, body.invite_sig))) {
      throw new RecordForbidden("join is not signed by the invite key");
    }
    next.inviteUses = new Map(r.inviteUses).set(body.invite_id, uses + 1);
    const departed = new Map(r.departed);
    departed.delete(author);
    next.departed = departed;
    next.generation = r.generation + 1;
    next.members = new Map(r.members).set(author, {
      boxKey: body.box_key, role: invite.role, joinedSeq: seq, joinGeneration: next.generation, profileTimes: [],
    });
    next.boxKeys = new Map(r.boxKeys).set(author, body.box_key);
    const profiles = new Map(r.profiles);
    profiles.delete(author); // a rejoining key starts without its former profile
    next.profiles = profiles;
    next.roleLog = appendLog(r.roleLog, author, [seq, invite.role]);
    next.tenures = appendLog(r.tenures, author, [seq, -1]);
  } else {
    const member = r.members.get(author);
    if (member === undefined) throw new RecordForbidden("author is not a member");
    const myRank = rank(member.role);
    const host = (what: string): void => {
      if (myRank < RANK.moderator) throw new RecordForbidden(`only owners and moderators ${what}`);
    };
    switch (body.type) {
      case "profile": {
        checkEpoch(r, body.epoch, "profile");
        checkSize("profile", body.box.length, MAX_PROFILE_BOX);
        const recent = member.profileTimes.filter((t) => Math.abs(t - record.created_at) < PROFILE_WINDOW);
        if (recent.length >= PROFILE_QUOTA) {
          throw new RecordRateLimited(`at most ${PROFILE_QUOTA} profile changes per member per 60 minutes`);
        }
        const profileTimes = [...member.profileTimes, record.created_at].slice(-PROFILE_QUOTA);
        next.members = new Map(r.members).set(author, { ...member, profileTimes });
        next.profiles = new Map(r.profiles).set(author, body);
        break;
      }
      case "meta":
        host("name the space");
        checkEpoch(r, body.epoch, "meta");
        checkSize("meta", body.box.length, MAX_META_BOX);
        next.meta = body;
        break;
      case "invite":
        host("invite");
        if (body.role === "owner") throw new RecordForbidden("an invite cannot make owners");
        if (rank(body.role) > myRank) throw new RecordForbidden("an invite cannot grant a role above yours");
        if (r.invites.has(body.invite_id)) throw new RecordForbidden("this invite id is taken");
        if (body.max_uses < 1) throw new RecordForbidden("an invite needs at least one use");
        if (body.invite_key.length !== 32 || !isValidId(body.invite_id)) throw new RecordError("bad invite key or id");
        next.invites = new Map(r.invites).set(body.invite_id, body);
        next.inviteAuthors = new Map(r.inviteAuthors).set(body.invite_id, author);
        break;
      case "invite_revoke":
        host("revoke invites");
        if (!r.invites.has(body.invite_id)) throw new RecordForbidden("unknown invite");
        next.revoked = new Set(r.revoked).add(body.invite_id);
        break;
      case "role": {
        const target = toHex(body.member);
        const current = r.members.get(target);
        if (current === undefined) throw new RecordForbidden("no such member");
        if (target === author) throw new RecordForbidden("you cannot change your own role");
        if (myRank <= rank(current.role)) throw new RecordForbidden("target's role is not below yours");
        if (rank(body.role) > myRank) throw new RecordForbidden("you cannot grant a role above yours");
        next.members = new Map(r.members).set(target, { ...current, role: body.role });
        next.roleLog = appendLog(r.roleLog, target, [seq, body.role]);
        break;
      }
      case "remove": {
        const target = toHex(body.member);
        const current = r.members.get(target);
        if (current === undefined) throw new RecordForbidden("no such member");
        if (target === author) throw new RecordForbidden("use leave");
        if (myRank <= rank(current.role)) throw new RecordForbidden("target's role is not below yours");
        depart(next, target, body.ban, seq);
        break;
      }
      case "leave": {
        if (member.role === "owner" && r.members.size > 1) {
          const otherOwner = [...r.members].some(([key, m]) => key !== author && m.role === "owner");
          if (!otherOwner) throw new RecordForbidden("the last owner cannot leave while other members remain");
        }
        depart(next, author, false, seq);
        break;
      }
      case "room":
        host("make rooms");
        if (r.rooms.has(body.room_id)) throw new RecordForbidden("this room id is taken");
        if (!isValidId(body.room_id) || body.ttl < 0) throw new RecordError("bad room id or lifetime");
        checkEpoch(r, body.epoch, "room");
        checkSize("room", body.name_box.length, MAX_NAME_BOX);
        if (r.rooms.size >= MAX_ROOMS) throw new RecordTooLarge(`at most ${MAX_ROOMS} rooms`);
        next.rooms = new Map(r.rooms).set(body.room_id, {
          spec: body, publishers: new Set(), createdSeq: seq, publisherLog: new Map(),
        });
        break;
      case "room_key": {
        if (!r.rooms.has(body.room_id)) throw new RecordForbidden("no such room");
        if (body.epoch !== r.epoch || body.commit.length !== 32) throw new RecordError("bad room key epoch or commitment");
        if (body.generation < 0 || body.generation > roomGeneration(r, body.room_id)) {
          throw new RecordError(`room key generation ${body.generation} does not exist yet`);
        }
        const id = roomKeyId(body.room_id, body.epoch, body.generation);
        if (r.roomKeys.has(id)) throw new RecordForbidden("this room key is already committed to");
        const makerId = `${body.room_id}/${body.epoch}`;
        const maker = r.roomKeyMakers.get(makerId);
        const isMaker = maker === undefined || maker === author;
        if (!isMaker && memberGeneration(r, body.room_id, author) > body.generation) {
          throw new RecordForbidden("a member cannot commit a room key older than its join");
        }
        next.roomKeys = new Map(r.roomKeys).set(id, body.commit);
        next.roomKeyAuthors = new Map(r.roomKeyAuthors).set(id, author);
        if (maker === undefined) next.roomKeyMakers = new Map(r.roomKeyMakers).set(makerId, author);
        break;
      }
      case "room_grant": {
        host("grant publishing");
        const room = r.rooms.get(body.room_id);
        if (room === undefined) throw new RecordForbidden("no such room");
        if (room.spec.kind !== "channel") throw new RecordForbidden("only channels have publishers");
        const target = toHex(body.member);
        if (!r.members.has(target)) throw new RecordForbidden("no such member");
        const publishers = new Set(room.publishers);
        if (body.publisher) publishers.add(target);
        else publishers.delete(target);
        const publisherLog = appendLog(room.publisherLog, target, [seq, body.publisher] as const);
        next.rooms = new Map(r.rooms).set(body.room_id, { ...room, publishers, publisherLog });
        break;
      }
      case "rekey":
        if (body.epoch !== r.epoch + 1) throw new RecordError(`rekey to epoch ${body.epoch}, expected ${r.epoch + 1}`);
        if (body.prev_epoch < 0 || body.prev_epoch >= body.epoch) {
          throw new RecordError(`rekey names previous epoch ${body.prev_epoch}`);
        }
        if (!mayRekey(r, author)) {
          throw new RecordForbidden("only owners and moderators rekey, or a member completing a removal or leave");
        }
        checkSize("rekey", body.prev_box.length, MAX_PREV_BOX);
        next.epoch = body.epoch;
        next.epochSeq = seq;
        next.epochStarts = [...r.epochStarts, seq];
        next.generation = 0;
        next.rekeys = new Map(r.rekeys).set(body.epoch, body);
        next.rekeyAuthors = new Map(r.rekeyAuthors).set(body.epoch, author);
        break;
      default: {
        const never: never = body;
        throw new RecordError(`unknown record body ${(never as { type: string }).type}`);
      }
    }
  }

  next.hashes = rememberHash(r.hashes, seq, head.hash);
  next.head = head;
  return next;
}

/** `Roster.from_records`: a genesis deriving `spaceId`, then every record applied in order. */
export async function rosterFromRecords(spaceId: string, records: readonly Record[]): Promise<Roster> {
  await checkGenesis(spaceId, records);
  let roster = emptyRoster(spaceId, toHex(records[0]!.author));
  for (const record of records) roster = await applyRecord(roster, record);
  return roster;
}

/**
 * §6.6: after record `seq` keep its hash and forget `hash[seq - HASH_WINDOW]` unless that seq
 * is a multiple of HASH_CHECKPOINT. Returns a new map.
 */
export function rememberHash(
  hashes: ReadonlyMap<number, Uint8Array>, seq: number, hash: Uint8Array,
): ReadonlyMap<number, Uint8Array> {
  const out = new Map(hashes).set(seq, hash);
  const old = seq - HASH_WINDOW;
  if (old >= 0 && old % HASH_CHECKPOINT !== 0) out.delete(old);
  return out;
}

/** The hash of record `seq`, if the roster kept it. */
export function hashAt(r: Roster, seq: number): Uint8Array | undefined {
  return r.hashes.get(seq);
}

// ---- history: the state at an older head (§6.6) and member_during (§7) ----

/** The last entry of a seq-sorted log with seq ≤ `seq` (bisect_right − 1), if any. */
function lastAtOrBefore<T extends readonly [number, ...unknown[]]>(log: readonly T[], seq: number): T | undefined {
  let lo = 0;
  let hi = log.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (log[mid]![0] <= seq) lo = mid + 1;
    else hi = mid;
  }
  return lo > 0 ? log[lo - 1] : undefined;
}

/** The epoch in force after record `seq`. */
export function epochAt(r: Roster, seq: number): number {
  let epoch = 0;
  r.epochStarts.forEach((start, e) => {
    if (start <= seq) epoch = e;
  });
  return epoch;
}

/** The seq epoch `epoch` began at, if it has begun. */
export const epochStart = (r: Roster, epoch: number): number | undefined => r.epochStarts[epoch];

/** The member's role after record `seq` ("" if it was not a member then). */
export function roleAt(r: Roster, key: string, seq: number): Role | "" {
  return lastAtOrBefore(r.roleLog.get(key) ?? [], seq)?.[1] ?? "";
}

/** `mayPost` as it was after record `seq`. */
export function mayPostAt(r: Roster, roomId: string, key: string, seq: number): boolean {
  const room = r.rooms.get(roomId);
  const role = roleAt(r, key, seq);
  if (room === undefined || room.createdSeq > seq || role === "" || room.spec.kind === "conference") return false;
  if (room.spec.kind === "chat" || rank(role) >= RANK.moderator) return true;
  return lastAtOrBefore(room.publisherLog.get(key) ?? [], seq)?.[1] ?? false;
}

/** The join count of the epoch in force after `seq`: joins after that epoch began, up to `seq`. */
export function generationAt(r: Roster, seq: number): number {
  const start = r.epochStarts[epochAt(r, seq)] ?? 0;
  let n = 0;
  for (const spans of r.tenures.values()) {
    for (const [joined] of spans) if (joined !== 0 && start < joined && joined <= seq) n++;
  }
  return n;
}

/** The key generation a message to `roomId` used at head `seq` (§10.4). */
export function roomGenerationAt(r: Roster, roomId: string, seq: number): number {
  const room = r.rooms.get(roomId);
  return room !== undefined && room.spec.history === "since-join" ? generationAt(r, seq) : 0;
}

/**
 * member_during(key, epoch) (§7): a tenure [joined, left] overlaps the epoch's span
 * [start, end), start its rekey's seq, end the next epoch's (or head + 1).
 */
export function memberDuring(r: Roster, key: string, epoch: number): boolean {
  const start = r.epochStarts[epoch];
  if (start === undefined) return false;
  const end = r.epochStarts[epoch + 1] ?? r.head.seq + 1;
  return (r.tenures.get(key) ?? []).some(([joined, left]) => joined < end && (left < 0 || left > start));
}

/** The last profile of a departed member (kept for display), or undefined. */
export function formerProfile(r: Roster, key: string): Profile | undefined {
  return r.members.has(key) ? undefined : r.profiles.get(key);
}

/** `Roster.at(seq)`: the roster's answers as of head `seq`. */
export interface RosterAt {
  readonly seq: number;
  readonly epoch: number;
  mayPost(roomId: string, key: string): boolean;
  roomGeneration(roomId: string): number;
  role(key: string): Role | "";
}

/** `Roster.at(seq)`; null unless 0 ≤ seq ≤ head seq. */
export function rosterAt(r: Roster, seq: number): RosterAt | null {
  if (!Number.isSafeInteger(seq) || seq < 0 || seq > r.head.seq) return null;
  return {
    seq,
    epoch: epochAt(r, seq),
    mayPost: (roomId, key) => mayPostAt(r, roomId, key, seq),
    roomGeneration: (roomId) => roomGenerationAt(r, roomId, seq),
    role: (key) => roleAt(r, key, seq),
  };
}
