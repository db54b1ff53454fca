/**
 * Sealed keys and envelopes (PROTOCOL.md §10.1): a space or room key sealed to one member with
 * crypto_box (X25519 + XSalsa20-Poly1305), `nonce(24) || tag(16) || ciphertext`, over
 * msgpack([SEALED_KEY_DOMAIN, space_id, scope, epoch, generation, key]) (SealedKey, array_like).
 * The clear Envelope fields are routing only: opening checks the sealed ones against what
 * the reader expects.
 */
import { decode } from "@msgpack/msgpack";
import { concat } from "./bytes.ts";
import { pack } from "./roomkeys.ts";
import { NONCE_BYTES, TAG_BYTES, randomBytes, ready } from "./secretbox.ts";

export const SEALED_KEY_DOMAIN = "salon/sealed-key/v1";

export interface SealedKey {
  spaceId: string;
  scope: string;
  epoch: number;
  generation: number;
  key: Uint8Array;
}

/** Envelope (not tagged): {scope, epoch, recipient, sender, box}. */
export interface Envelope {
  scope: string;
  epoch: number;
  recipient: Uint8Array;
  sender: Uint8Array;
  box: Uint8Array;
}

export class SealedKeyError extends Error {}

const isInt = (x: unknown): x is number => typeof x === "number" && Number.isSafeInteger(x);

/** msgpack([SEALED_KEY_DOMAIN, space_id, scope, epoch, generation, key]). */
export function sealedKeyBytes(k: SealedKey): Uint8Array {
  return pack([SEALED_KEY_DOMAIN, k.spaceId, k.scope, k.epoch, k.generation, k.key]);
}

/** box(sender box secret, recipient box key, sealed_key(...)) as nonce || tag || ciphertext. */
export async function sealKey(
  senderSecret: Uint8Array, recipientPublic: Uint8Array, k: SealedKey,
  nonce: Uint8Array = randomBytes(NONCE_BYTES),
): Promise<Uint8Array> {
  if (nonce.length !== NONCE_BYTES) throw new Error("a box nonce is 24 bytes");
  const s = await ready();
  return concat(nonce, s.crypto_box_easy(sealedKeyBytes(k), nonce, recipientPublic, senderSecret));
}

/** crypto_box_open: needs the recipient's secret and the sender's public key. */
export async function openBox(box: Uint8Array, recipientSecret: Uint8Array, senderPublic: Uint8Array): Promise<Uint8Array> {
  if (box.length < NONCE_BYTES + TAG_BYTES) throw new SealedKeyError("box too short");
  const s = await ready();
  try {
    return s.crypto_box_open_easy(box.subarray(NONCE_BYTES), box.subarray(0, NONCE_BYTES), senderPublic, recipientSecret);
  } catch {
    throw new SealedKeyError("the box does not open");
  }
}

/** Decodes a SealedKey plaintext; anything but the 6-array of the right types is "malformed". */
export function parseSealedKey(plain: Uint8Array): SealedKey {
  let value: unknown;
  try {
    value = decode(plain);
  } catch {
    throw new SealedKeyError("malformed sealed key");
  }
  if (!Array.isArray(value) || value.length !== 6) throw new SealedKeyError("malformed sealed key");
  const [domain, spaceId, scope, epoch, generation, key] = value as unknown[];
  if (
    domain !== SEALED_KEY_DOMAIN || typeof spaceId !== "string" || typeof scope !== "string" ||
    !isInt(epoch) || !isInt(generation) || !(key instanceof Uint8Array) || key.length !== 32
  ) {
    throw new SealedKeyError("malformed sealed key");
  }
  return { spaceId, scope, epoch, generation, key };
}

/**
 * open_sealed_key (§10.1): open, decode, and require the sealed (space_id, scope, epoch) to be
 * the expected ones and generation ≥ 0. The caller checks the generation itself.
 */
export async function openSealedKey(
  box: Uint8Array, recipientSecret: Uint8Array, senderPublic: Uint8Array,
  expected: { spaceId: string; scope: string; epoch: number },
): Promise<SealedKey> {
  const sealed = parseSealedKey(await openBox(box, recipientSecret, senderPublic));
  if (sealed.spaceId !== expected.spaceId || sealed.scope !== expected.scope || sealed.epoch !== expected.epoch) {
    throw new SealedKeyError(
      `a sealed key was relabelled: sealed for ${sealed.spaceId}/${sealed.scope} epoch ${sealed.epoch}, ` +
      `delivered as ${expected.spaceId}/${expected.scope} epoch ${expected.epoch}`,
    );
  }
  if (sealed.generation < 0) throw new SealedKeyError("a sealed key with a negative generation");
  return sealed;
}

/** Envelope → msgpack map in declaration order. TODO(merge with web1): belongs with the wire types. */
export function encodeEnvelope(e: Envelope): Uint8Array {
  return pack({ scope: e.scope, epoch: e.epoch, recipient: e.recipient, sender: e.sender, box: e.box });
}

export function decodeEnvelope(bytes: Uint8Array): Envelope {
  const value = decode(bytes) as Record<string, unknown> | null;
  if (value === null || typeof value !== "object" || Array.isArray(value)) throw new Error("not an envelope");
  const { scope, epoch, recipient, sender, box } = value;
  if (
    typeof scope !== "string" || !isInt(epoch) || !(recipient instanceof Uint8Array) ||
    !(sender instanceof Uint8Array) || !(box instanceof Uint8Array)
  ) {
    throw new Error("not an envelope");
  }
  return { scope, epoch, recipient, sender, box };
}

/** Opens an envelope addressed to this reader, expecting its own space id, the scope it asked for and the clear epoch. */
export async function openEnvelope(
  e: Envelope, spaceId: string, scope: string, recipientSecret: Uint8Array, senderPublic: Uint8Array,
): Promise<SealedKey> {
  return openSealedKey(e.box, recipientSecret, senderPublic, { spaceId, scope, epoch: e.epoch });
}
