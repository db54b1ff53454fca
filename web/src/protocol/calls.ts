/**
 * Calls (PROTOCOL.md §13.1, §14): call-action signing bytes, sealed signals, the pair link,
 * per-sender media keys (ratchet, commitment) and the verification code.
 */
import { decode } from "@msgpack/msgpack";
import { concat, equal, utf8 } from "./bytes.ts";
import { ed25519Sign, ed25519Verify } from "./messages.ts";
import { hkdf, pack, sha256 } from "./roomkeys.ts";
import { NONCE_BYTES, randomBytes, ready } from "./secretbox.ts";
import { openBox } from "./sealed.ts";

export const CALL_ACTION_DOMAIN = utf8("salon/call-action/v1\x00");
export const CALL_SIGNAL_DOMAIN = utf8("salon/call-signal/v1\x00");
export const CALL_KEY_COMMITMENT_DOMAIN = utf8("salon/call-key-commitment/v1\x00");
export const CALL_CODE_DOMAIN = utf8("salon/call-verification-code/v1\x00");
/** 15 bytes; BLAKE2b personalization is 16 bytes, zero-padded (as hashlib and libsodium do). */
export const CALL_LINK_PERSON = utf8("salon-call-link");
export const CALL_MEDIA_RATCHET_LABEL = "salon/call-media-ratchet/v1";

export class CallError extends Error {}

const isInt = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x);

// ---- call actions (§13.1) ---------------------------------------------------------------

export type CallActionKind =
  | "join" | "hand-up" | "hand-down" | "mute" | "unmute" | "mute-all" | "kick" | "ban" | "unban"
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

/** The CallAction map, fields in declaration order. TODO(merge with web1): belongs with the wire types. */
export function encodeCallAction(a: CallAction): Uint8Array {
  return pack({
    space_id: a.spaceId, room_id: a.roomId, call_id: a.callId, actor: a.actor, action: a.action, target: a.target,
    issued_at: a.issuedAt, nonce: a.nonce, head_seq: a.headSeq, head_hash: a.headHash, join_ref: a.joinRef, sig: a.sig,
  });
}

// ---- pair link (§14.2) ------------------------------------------------------------------

/** The raw libsodium module behind the wrappers (emscripten exports). */
interface RawSodium {
  HEAPU8: Uint8Array;
  _malloc(n: number): number;
  _free(p: number): void;
  _crypto_generichash_blake2b_salt_personal(
    out: number, outlen: number, input: number, inlenLow: number, inlenHigh: number,
    key: number, keylen: number, salt: number, personal: number,
  ): number;
}

/**
 * BLAKE2b with a digest of `outlen` bytes, no key, zero salt and a personalization zero-padded
 * to 16 bytes (hashlib's `blake2b(person=...)`). libsodium.js's own
 * `crypto_generichash_blake2b_salt_personal` wrapper hashes no message (it is a KDF), so this
 * calls the libsodium function itself.
 */
export async function blake2bPersonal(outlen: number, message: Uint8Array, person: Uint8Array): Promise<Uint8Array> {
  if (person.length > 16) throw new Error("a BLAKE2b personalization is at most 16 bytes");
  if (outlen < 1 || outlen > 64) throw new Error("bad BLAKE2b digest size");
  const s = await ready();
  const raw = (s as unknown as { libsodium: RawSodium }).libsodium;
  const p = raw._malloc(outlen + message.length + 32);
  const out = p;
  const input = p + outlen;
  const salt = input + message.length;
  const personal = salt + 16;
  try {
    raw.HEAPU8.set(message, input);
    raw.HEAPU8.fill(0, salt, salt + 32);
    raw.HEAPU8.set(person, personal);
    if (raw._crypto_generichash_blake2b_salt_personal(out, outlen, input, message.length, 0, 0, 0, salt, personal) !== 0) {
      throw new Error("BLAKE2b failed");
    }
    return raw.HEAPU8.slice(out, out + outlen);
  } finally {
    raw._free(p);
  }
}

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

export function encodeSignalBody(b: SignalBody): Uint8Array {
  return pack({
    space_id: b.spaceId, room_id: b.roomId, call_id: b.callId, sender: b.sender, recipient: b.recipient,
    kind: b.kind, link: b.link, attempt: b.attempt, payload: b.payload,
  });
}

function decodeMap(bytes: Uint8Array, what: string): Record<string, unknown> {
  let v: unknown;
  try {
    v = decode(bytes);
  } catch {
    throw new CallError(`malformed ${what}`);
  }
  if (v === null || typeof v !== "object" || Array.isArray(v) || v instanceof Uint8Array) throw new CallError(`malformed ${what}`);
  return v as Record<string, unknown>;
}

export function decodeSignalBody(bytes: Uint8Array): SignalBody {
  const m = decodeMap(bytes, "signal body");
  const { space_id, room_id, call_id, sender, recipient, kind, link, attempt, payload } = m;
  if (
    typeof space_id !== "string" || typeof room_id !== "string" || typeof call_id !== "string" ||
    !(sender instanceof Uint8Array) || !(recipient instanceof Uint8Array) ||
    (kind !== "offer" && kind !== "answer" && kind !== "media-key") ||
    !(link instanceof Uint8Array) || !isInt(attempt) || !(payload instanceof Uint8Array)
  ) {
    throw new CallError("malformed signal body");
  }
  return { spaceId: space_id, roomId: room_id, callId: call_id, sender, recipient, kind, link, attempt, payload };
}

/** box(sender box secret, recipient box key, msgpack({body: raw, sig: Ed25519(CALL_SIGNAL_DOMAIN || raw)})). */
export async function sealSignal(
  body: SignalBody, senderSeed: Uint8Array, senderBoxSecret: Uint8Array, recipientBoxKey: Uint8Array,
  nonce: Uint8Array = randomBytes(NONCE_BYTES),
): Promise<Uint8Array> {
  const raw = encodeSignalBody(body);
  const signed = pack({ body: raw, sig: await ed25519Sign(senderSeed, concat(CALL_SIGNAL_DOMAIN, raw)) });
  const s = await ready();
  return concat(nonce, s.crypto_box_easy(signed, nonce, recipientBoxKey, senderBoxSecret));
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
  const { body: raw, sig } = decodeMap(plain, "signed signal");
  if (!(raw instanceof Uint8Array) || !(sig instanceof Uint8Array)) throw new CallError("malformed signed signal");
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
  return pack({ epoch: m.epoch, key: m.key, at_version: m.atVersion });
}

export function decodeMediaKeyMessage(bytes: Uint8Array): MediaKeyMessage {
  const { epoch, key, at_version } = decodeMap(bytes, "media key message");
  if (!isInt(epoch) || !(key instanceof Uint8Array) || key.length !== 32 || !isInt(at_version)) {
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
