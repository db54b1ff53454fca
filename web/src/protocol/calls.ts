/**
 * Calls (PROTOCOL.md §13.1, §14): call-action signing bytes, sealed signals, the pair link,
 * per-sender media keys (ratchet, commitment) and the verification code.
 */
import { concat, equal, utf8 } from "./bytes.ts";
import { blake2bPersonal, box, ed25519Sign, ed25519Verify, hkdf, randomBytes, sha256 } from "./crypto.ts";
import { encode as pack } from "./msgpack.ts";
import { WireError, decodeStruct, encodeStruct, f, fd, literal, struct } from "./schema.ts";
import { openBox } from "./sealed.ts";

export { blake2bPersonal };

const NONCE_BYTES = 24;

export const CALL_ACTION_DOMAIN = utf8("salon/call-action/v1\x00");
export const CALL_SIGNAL_DOMAIN = utf8("salon/call-signal/v1\x00");
export const CALL_KEY_COMMITMENT_DOMAIN = utf8("salon/call-key-commitment/v1\x00");
export const CALL_CODE_DOMAIN = utf8("salon/call-verification-code/v1\x00");
/** 15 bytes; BLAKE2b personalization is 16 bytes, zero-padded (as hashlib and libsodium do). */
export const CALL_LINK_PERSON = utf8("salon-call-link");
export const CALL_MEDIA_RATCHET_LABEL = "salon/call-media-ratchet/v1";

export class CallError extends Error {}


// ---- call actions (§13.1) ---------------------------------------------------------------

export type CallActionKind =
  | "join" | "hand-up" | "hand-down" | "mic-off" | "mic-on" | "camera-off" | "camera-on" | "mute" | "unmute" | "mute-all" | "kick" | "ban" | "unban"
  | "admit" | "deny" | "lock" | "unlock" | "promote" | "demote" | "lower-hand" | "end";

export const SEAT_ACTIONS: ReadonlySet<CallActionKind> = new Set(["admit", "deny", "kick", "promote", "demote"]);

/** CallAction (not tagged); defaults: target b"", issued_at 0, nonce b"", head_seq -1, head_hash b"", join_ref b"", sig b"". */
export interface CallAction {
  spaceId: string;
  roomId: string;
  callId: string;
  actor: Uint8Array;
  action: CallActionKind;
  target: Uint8Array;
  issuedAt: number;
  nonce: Uint8Array;
  headSeq: number;
  headHash: Uint8Array;
  joinRef: Uint8Array;
  sig: Uint8Array;
}

/** CALL_ACTION_DOMAIN || msgpack([space_id, room_id, call_id, actor, action, target, issued_at, nonce, head_seq, head_hash, join_ref]). */
export function actionSigningBytes(a: Omit<CallAction, "sig">): Uint8Array {
  return concat(CALL_ACTION_DOMAIN, pack([
    a.spaceId, a.roomId, a.callId, a.actor, a.action, a.target, a.issuedAt, a.nonce, a.headSeq, a.headHash, a.joinRef,
  ]));
}

export async function signAction(a: Omit<CallAction, "sig">, actorSeed: Uint8Array): Promise<CallAction> {
  return { ...a, sig: await ed25519Sign(actorSeed, actionSigningBytes(a)) };
}

/** Rule 2 and 3 of action_problem: the signature under `actor`, and join_ref present iff a seat action. */
export async function actionSignatureProblem(a: CallAction): Promise<string | null> {
  if (!(await ed25519Verify(a.actor, actionSigningBytes(a), a.sig))) return "its signature does not verify";
  const seat = SEAT_ACTIONS.has(a.action);
  if (seat && a.joinRef.length !== 16) return "it names no join";
  if (!seat && a.joinRef.length !== 0) return "it names a join it should not";
  return null;
}

const EMPTY = new Uint8Array(0);

/** CallAction (§13.1, not tagged), fields in declaration order. */
export const CALL_ACTION = struct("CallAction", [
  f("space_id", "str"), f("room_id", "str"), f("call_id", "str"), f("actor", "bytes"), f("action", "str"),
  fd("target", "bytes", EMPTY), fd("issued_at", "int", 0), fd("nonce", "bytes", EMPTY), fd("head_seq", "int", -1),
  fd("head_hash", "bytes", EMPTY), fd("join_ref", "bytes", EMPTY), fd("sig", "bytes", EMPTY),
]);

export function encodeCallAction(a: CallAction): Uint8Array {
  return encodeStruct(CALL_ACTION, {
    space_id: a.spaceId, room_id: a.roomId, call_id: a.callId, actor: a.actor, action: a.action, target: a.target,
    issued_at: a.issuedAt, nonce: a.nonce, head_seq: a.headSeq, head_hash: a.headHash, join_ref: a.joinRef, sig: a.sig,
  });
}

// ---- pair link (§14.2) ------------------------------------------------------------------

/** link = BLAKE2b-128(offerer_join_nonce || answerer_join_nonce, person = CALL_LINK_PERSON). */
export function linkId(offererJoinNonce: Uint8Array, answererJoinNonce: Uint8Array): Promise<Uint8Array> {
  return blake2bPersonal(16, concat(offererJoinNonce, answererJoinNonce), CALL_LINK_PERSON);
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const d = (a[i] ?? 0) - (b[i] ?? 0);
    if (d !== 0) return d;
  }
  return a.length - b.length;
}

/** Is `me` the offerer of the pair (the lexicographically smaller member key)? */
export const isOfferer = (me: Uint8Array, peer: Uint8Array): boolean => compareBytes(me, peer) < 0;

/** The pair's link from both members' keys and join nonces (the offerer's nonce first). */
export function pairLink(aKey: Uint8Array, aJoinNonce: Uint8Array, bKey: Uint8Array, bJoinNonce: Uint8Array): Promise<Uint8Array> {
  return isOfferer(aKey, bKey) ? linkId(aJoinNonce, bJoinNonce) : linkId(bJoinNonce, aJoinNonce);
}

// ---- sealed signals (§14.1) -------------------------------------------------------------

export type SignalKind = "offer" | "answer" | "media-key";

export interface SignalBody {
  spaceId: string;
  roomId: string;
  callId: string;
  sender: Uint8Array;
  recipient: Uint8Array;
  kind: SignalKind;
  link: Uint8Array;
  attempt: number;
  payload: Uint8Array;
}

/** SignalBody (§14.1, not tagged). */
export const SIGNAL_BODY = struct("SignalBody", [
  f("space_id", "str"), f("room_id", "str"), f("call_id", "str"), f("sender", "bytes"), f("recipient", "bytes"),
  f("kind", literal("offer", "answer", "media-key")), f("link", "bytes"), f("attempt", "int"), f("payload", "bytes"),
]);
/** The signed signal inside the box: {body: raw SignalBody bytes, sig}. */
export const SIGNED_SIGNAL = struct("SignedSignal", [f("body", "bytes"), f("sig", "bytes")]);
/** MediaKeyMessage (§14.3). */
export const MEDIA_KEY_MESSAGE = struct("MediaKeyMessage", [f("epoch", "int"), f("key", "bytes"), f("at_version", "int")]);

export function encodeSignalBody(b: SignalBody): Uint8Array {
  return encodeStruct(SIGNAL_BODY, {
    space_id: b.spaceId, room_id: b.roomId, call_id: b.callId, sender: b.sender, recipient: b.recipient,
    kind: b.kind, link: b.link, attempt: b.attempt, payload: b.payload,
  });
}

function decodeAs<T>(def: Parameters<typeof decodeStruct>[0], bytes: Uint8Array, what: string): T {
  try {
    return decodeStruct<T>(def, bytes);
  } catch (err) {
    if (err instanceof WireError) throw new CallError(`malformed ${what}`);
    throw err;
  }
}

export function decodeSignalBody(bytes: Uint8Array): SignalBody {
  const m = decodeAs<{
    space_id: string; room_id: string; call_id: string; sender: Uint8Array; recipient: Uint8Array; kind: SignalKind;
    link: Uint8Array; attempt: number; payload: Uint8Array;
  }>(SIGNAL_BODY, bytes, "signal body");
  return {
    spaceId: m.space_id, roomId: m.room_id, callId: m.call_id, sender: m.sender, recipient: m.recipient, kind: m.kind,
    link: m.link, attempt: m.attempt, payload: m.payload,
  };
}

/** box(sender box secret, recipient box key, msgpack({body: raw, sig: Ed25519(CALL_SIGNAL_DOMAIN || raw)})). */
export async function sealSignal(
  body: SignalBody, senderSeed: Uint8Array, senderBoxSecret: Uint8Array, recipientBoxKey: Uint8Array,
  nonce: Uint8Array = randomBytes(NONCE_BYTES),
): Promise<Uint8Array> {
  const raw = encodeSignalBody(body);
  const signed = encodeStruct(SIGNED_SIGNAL, { body: raw, sig: await ed25519Sign(senderSeed, concat(CALL_SIGNAL_DOMAIN, raw)) });
  return box(senderBoxSecret, recipientBoxKey, signed, nonce);
}

/**
 * Opens a CallSignal from `sender` (its member key and box key from the verified roster):
 * the signature over the received body bytes, body.sender == sender, body.recipient == me, and
 * this call. The caller checks the link. Throws CallError.
 */
export async function openSignal(
  box: Uint8Array, me: { memberKey: Uint8Array; boxSecret: Uint8Array },
  sender: { memberKey: Uint8Array; boxKey: Uint8Array }, call: { spaceId: string; roomId: string; callId: string },
): Promise<SignalBody> {
  let plain: Uint8Array;
  try {
    plain = await openBox(box, me.boxSecret, sender.boxKey);
  } catch {
    throw new CallError("the signal does not open");
  }
  const { body: raw, sig } = decodeAs<{ body: Uint8Array; sig: Uint8Array }>(SIGNED_SIGNAL, plain, "signed signal");
  const body = decodeSignalBody(raw);
  if (!(await ed25519Verify(sender.memberKey, concat(CALL_SIGNAL_DOMAIN, raw), sig))) throw new CallError("bad signal signature");
  if (!equal(body.sender, sender.memberKey)) throw new CallError("the signal names another sender");
  if (!equal(body.recipient, me.memberKey)) throw new CallError("the signal is for someone else");
  if (body.spaceId !== call.spaceId || body.roomId !== call.roomId || body.callId !== call.callId) {
    throw new CallError("the signal belongs to another call");
  }
  return body;
}

// ---- media keys (§14.3) -----------------------------------------------------------------

export interface SenderKey {
  epoch: number;
  key: Uint8Array;
}

/** ratchet(k) = SenderKey(k.epoch + 1, HKDF(k.key, CALL_MEDIA_RATCHET_LABEL, b"")). */
export async function ratchetSenderKey(k: SenderKey): Promise<SenderKey> {
  return { epoch: k.epoch + 1, key: await hkdf(k.key, CALL_MEDIA_RATCHET_LABEL, new Uint8Array(0)) };
}

/** commitment(k) = SHA-256(CALL_KEY_COMMITMENT_DOMAIN || k.key)[:16]. */
export async function keyCommitment(key: Uint8Array): Promise<Uint8Array> {
  return (await sha256(concat(CALL_KEY_COMMITMENT_DOMAIN, key))).slice(0, 16);
}

/** MediaKeyMessage {epoch, key, at_version}, the payload of a media-key signal. */
export interface MediaKeyMessage {
  epoch: number;
  key: Uint8Array;
  atVersion: number;
}

export function encodeMediaKeyMessage(m: MediaKeyMessage): Uint8Array {
  return encodeStruct(MEDIA_KEY_MESSAGE, { epoch: m.epoch, key: m.key, at_version: m.atVersion });
}

export function decodeMediaKeyMessage(bytes: Uint8Array): MediaKeyMessage {
  const { epoch, key, at_version } = decodeAs<{ epoch: number; key: Uint8Array; at_version: number }>(
    MEDIA_KEY_MESSAGE, bytes, "media key message");
  if (key.length !== 32) {
    throw new CallError("malformed media key message");
  }
  return { epoch, key, atVersion: at_version };
}

// ---- verification code (§14.4) ----------------------------------------------------------

/** "dddd dddd dddd dddd" from everyone's (member key, commitment of its current key). */
export async function verificationCode(pairs: ReadonlyArray<readonly [Uint8Array, Uint8Array]>): Promise<string> {
  const sorted = [...pairs].sort((a, b) => compareBytes(a[0], b[0]) || compareBytes(a[1], b[1]));
  const digest = await sha256(concat(CALL_CODE_DOMAIN, ...sorted.flatMap(([k, c]) => [k, c])));
  let n = 0n;
  for (const b of digest.subarray(0, 8)) n = (n << 8n) | BigInt(b);
  const digits = (n % 10n ** 16n).toString().padStart(16, "0");
  return digits.match(/.{4}/g)!.join(" ");
}
