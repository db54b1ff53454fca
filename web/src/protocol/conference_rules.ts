/**
 * Conference rules (PROTOCOL.md §13.3, §13.4; Python: protocol/conference_rules.py), pure:
 * who may do what in a call, and what a participant's signed actions say about it. Every client
 * re-checks the actions the server shows against its own verified roster, so a server that
 * forges or replays a moderator event is ignored.
 *
 * Member keys are hex strings in maps (as in roster.ts); actions are calls.ts `CallAction`s.
 */
import { equal, toHex } from "./bytes.ts";
import { SEAT_ACTIONS, actionSigningBytes, type CallAction, type CallActionKind } from "./calls.ts";
import { END_ACTIONS, type CallState, type EndReason, type TopologyName, type WireCallAction, toCallAction } from "./conference_wire.ts";
import { ed25519Verify } from "./crypto.ts";
import type { Role, Room } from "./recordtypes.ts";
import { rank } from "./roster.ts";

/** What a member says about itself besides its join: hand, microphone, camera. */
export const SELF_STATE: ReadonlySet<CallActionKind> = new Set([
  "hand-up", "hand-down", "mic-off", "mic-on", "camera-off", "camera-on",
]);
export const SELF_ACTIONS: ReadonlySet<CallActionKind> = new Set(["join", ...SELF_STATE]);
/** Host actions about one member; the target may not outrank the actor. */
export const TARGETED: ReadonlySet<CallActionKind> = new Set([
  "mute", "unmute", "kick", "ban", "unban", "admit", "deny", "promote", "demote", "lower-hand",
]);
export const UNTARGETED: ReadonlySet<CallActionKind> = new Set(["mute-all", "lock", "unlock", "end"]);
export const NOT_ON_SELF: ReadonlySet<CallActionKind> = new Set(["kick", "ban", "deny"]);
/** How far an action's timestamp may be from the checker's clock when it arrives. */
export const FRESHNESS_MS = 5 * 60 * 1000;
export const KEY_LEN = 32;
/** An action's nonce, and so a join's (what join_ref names). */
export const NONCE_LEN = 16;
/** Restrictions a client honours whatever call they were signed in. */
export const RESTRICTIONS: ReadonlySet<CallActionKind> = new Set(["kick", "ban", "unban", "deny"]);

export type Roles = ReadonlyMap<string, Role>;

export const isHost = (role: Role | undefined): boolean => role !== undefined && rank(role) >= rank("moderator");

/**
 * Why `action` must not be obeyed in this call, or null if it may (`callId` null: any call of
 * the room, for RESTRICTIONS). Freshness is separate (`freshnessProblem`).
 */
export async function actionProblem(
  action: CallAction, roles: Roles, where: { spaceId: string; roomId: string; callId: string | null },
): Promise<string | null> {
  if (action.spaceId !== where.spaceId || action.roomId !== where.roomId
    || (where.callId !== null && action.callId !== where.callId)) {
    return "it belongs to another call";
  }
  if (!(await ed25519Verify(action.actor, actionSigningBytes(action), action.sig))) return "its signature does not verify";
  if ((action.joinRef.length === NONCE_LEN) !== SEAT_ACTIONS.has(action.action)) {
    return action.joinRef.length > 0 ? "it names a join it should not" : "it names no join";
  }
  const actorRole = roles.get(toHex(action.actor));
  if (actorRole === undefined) return "its signer is not a member of the space";
  if (SELF_ACTIONS.has(action.action)) return equal(action.target, action.actor) ? null : "it is about someone else";
  if (!isHost(actorRole)) return "its signer is not a host (owner or moderator)";
  if (UNTARGETED.has(action.action)) return action.target.length === 0 ? null : "it names a target it should not";
  if (action.target.length !== KEY_LEN) return "it names no member";
  if (NOT_ON_SELF.has(action.action) && equal(action.target, action.actor)) return "a host cannot do that to themselves";
  const targetRole = roles.get(toHex(action.target));
  if (targetRole !== undefined && rank(targetRole) > rank(actorRole)) return "its target outranks its signer";
  return null;
}

/** Why `action` is not fresh at `nowMs` (the checker's `clock`), or null. */
export function freshnessProblem(action: CallAction, nowMs: number, clock = "this device's clock"): string | null {
  if (action.nonce.length !== NONCE_LEN) return `it has no ${NONCE_LEN}-byte nonce`;
  const skew = action.issuedAt - nowMs;
  if (Math.abs(skew) > FRESHNESS_MS) {
    const when = skew > 0 ? "ahead of" : "behind";
    return `it is stale (its timestamp is ${Math.floor(Math.abs(skew) / 1000)} s ${when} ${clock})`;
  }
  return null;
}

/** Why a CallEnded `reason` is not proven by `action` for `member` whose join has
 * `joinNonce` ("" if it is; validity and freshness are checked separately). */
export function endProblem(reason: EndReason | string, action: CallAction | null, member: Uint8Array, joinNonce: Uint8Array): string {
  const wanted = (END_ACTIONS as Record<string, CallActionKind | undefined>)[reason];
  if (wanted === undefined) return action === null ? "" : "it carries an action it should not";
  if (action === null) return "without a signed action";
  if (action.action !== wanted) return `with a signed '${action.action}', which is no '${wanted}'`;
  if (wanted === "end") return "";
  if (!equal(action.target, member)) return `with a signed '${wanted}' of someone else`;
  if (SEAT_ACTIONS.has(wanted) && !equal(action.joinRef, joinNonce)) return `with a signed '${wanted}' of an earlier join`;
  return "";
}

/**
 * The kicks, denials and bans a participant has verified, and whom they keep out. A kick or
 * denial removes one join (its join_ref); a ban keeps its target out of every call of the room
 * until a later (by issued_at) unban. Bans and unbans count no later than when first seen.
 */
export class Restrictions {
  /** join nonce (hex) → the kick or deny */
  readonly removed = new Map<string, CallAction>();
  /** member (hex) → its latest ban or unban */
  readonly bans = new Map<string, CallAction>();
  private readonly since = new Map<string, number>();
  private readonly firstSeen = new Map<string, number>();

  /** Remember a verified restriction; true if it is new. */
  add(action: CallAction, nowMs: number | null = null): boolean {
    if (action.action === "kick" || action.action === "deny") {
      const ref = toHex(action.joinRef);
      if (this.removed.has(ref)) return false;
      this.removed.set(ref, action);
      return true;
    }
    if (action.action === "ban" || action.action === "unban") {
      let seen: number | null = null;
      if (nowMs !== null) {
        const sig = toHex(action.sig);
        if (!this.firstSeen.has(sig)) this.firstSeen.set(sig, nowMs);
        seen = this.firstSeen.get(sig)!;
      }
      const since = seen === null ? action.issuedAt : Math.min(action.issuedAt, seen);
      const target = toHex(action.target);
      const known = this.since.get(target);
      if (known !== undefined && known >= since) return false;
      this.bans.set(target, action);
      this.since.set(target, since);
      return true;
    }
    return false;
  }

  /** The signed action that keeps this join of `member` out, or null. */
  barring(memberHex: string, joinNonce: Uint8Array): CallAction | null {
    const ban = this.bans.get(memberHex);
    if (ban !== undefined && ban.action === "ban") return ban;
    return this.removed.get(toHex(joinNonce)) ?? null;
  }
}

/** What a participant's signed actions say about it. */
export interface SeatFlags {
  admitted: boolean;
  host: boolean;
  muted: boolean;
  mutedBy: Uint8Array | null;
  handRaised: boolean;
  speaker: boolean;
  /** The member's own signed "mic-off" (muted by themselves); never lifts `muted`, a host's. */
  micOff: boolean;
  /** The member's own signed "camera-off". */
  cameraOff: boolean;
}

/** A participant as seatFlags reads it (actions already converted). */
export interface Seat {
  member: Uint8Array;
  index: number;
  status: "lobby" | "joined";
  join: CallAction;
  admission: CallAction | null;
  mute: CallAction | null;
  hand: CallAction | null;
  stage: CallAction | null;
  /** The member's own "mic-off"/"mic-on" and "camera-off"/"camera-on" (absent: on). */
  mic?: CallAction | null;
  camera?: CallAction | null;
}

const maybe = (w: WireCallAction | null): CallAction | null => (w === null ? null : toCallAction(w));

export function seatOf(p: CallState["participants"][number]): Seat {
  return {
    member: p.member, index: p.index, status: p.status, join: toCallAction(p.join), admission: maybe(p.admission),
    mute: maybe(p.mute), hand: maybe(p.hand), stage: maybe(p.stage),
    mic: maybe(p.mic ?? null), camera: maybe(p.camera ?? null),
  };
}

/** A synchronous validity check (the caller verified signatures beforehand, see call.ts). */
export type Verifier = (action: CallAction) => boolean;

/**
 * A participant's state from the actions in `seat`, trusting only those `valid` accepts.
 * Lobby and stage come from `room` (its verified signed record), never from the server; an
 * admission or a promotion counts only for the join it names.
 */
export function seatFlags(
  seat: Seat, room: Pick<Room, "lobby" | "stage">, callId: string, roles: Roles, valid: Verifier,
): SeatFlags {
  const member = seat.member;
  const memberRole = roles.get(toHex(member));
  const host = isHost(memberRole);
  const joinNonce = seat.join.nonce;
  const ok = (a: CallAction | null, ...names: CallActionKind[]): a is CallAction =>
    a !== null && names.includes(a.action) && valid(a);
  const joined = seat.status === "joined" && equal(seat.join.actor, member) && seat.join.callId === callId
    && ok(seat.join, "join");
  const admission = seat.admission;
  const admitted = joined && (!room.lobby || host || (admission !== null && equal(admission.target, member)
    && equal(admission.joinRef, joinNonce) && ok(admission, "admit")));
  const mute = seat.mute;
  const actorRole = mute !== null ? roles.get(toHex(mute.actor)) : undefined;
  const outranks = memberRole !== undefined && actorRole !== undefined && rank(memberRole) > rank(actorRole);
  const muted = mute !== null && (
    (equal(mute.target, member) && ok(mute, "mute"))
    || (mute.target.length === 0 && !equal(mute.actor, member) && !outranks && ok(mute, "mute-all")));
  const hand = seat.hand;
  const handRaised = hand !== null && equal(hand.actor, member) && ok(hand, "hand-up");
  const mic = seat.mic ?? null, camera = seat.camera ?? null;
  const micOff = mic !== null && equal(mic.actor, member) && ok(mic, "mic-off");
  const cameraOff = camera !== null && equal(camera.actor, member) && ok(camera, "camera-off");
  const stage = seat.stage;
  const promoted = stage !== null && equal(stage.target, member) && equal(stage.joinRef, joinNonce) && ok(stage, "promote");
  return {
    admitted, host, muted, mutedBy: muted && mute !== null ? mute.actor : null, handRaised,
    speaker: !room.stage || host || promoted, micOff, cameraOff,
  };
}

export function isLocked(lock: CallAction | null, valid: Verifier): boolean {
  return lock !== null && lock.action === "lock" && valid(lock);
}

/** Which topology carries a call of `joined` participants; null if it cannot grow (§13.5). */
export function topologyFor(
  requested: string, joined: number, meshMax: number, sfuAvailable: boolean,
  opts: { stage?: boolean; current?: TopologyName | null; meshReturnMax?: number | null } = {},
): TopologyName | null {
  if (!sfuAvailable) return joined <= meshMax ? "mesh" : null;
  if (requested === "sfu" || opts.stage) return "sfu";
  if (requested === "mesh") return joined <= meshMax ? "mesh" : null;
  if (joined > meshMax) return "sfu";
  if (opts.current === "sfu" && opts.meshReturnMax != null && joined > opts.meshReturnMax) return "sfu";
  return "mesh";
}
