/**
 * Sealed keys and envelopes (PROTOCOL.md §10.1): a space or room key sealed to one member with
 * crypto_box (X25519 + XSalsa20-Poly1305), `nonce(24) || tag(16) || ciphertext`, over
 * msgpack([SEALED_KEY_DOMAIN, space_id, scope, epoch, generation, key]) (SealedKey, array_like).
 * The clear Envelope fields are routing only: opening checks the sealed ones against what
 * the reader expects.
 */
import { box, boxOpen, randomBytes } from "./crypto.ts";
import { decode, encode as pack } from "./msgpack.ts";
import { decodeStruct, encodeStruct } from "./schema.ts";
import { ENVELOPE, type Envelope } from "./wire.ts";

export type { Envelope };

const NONCE_BYTES = 24;

export const SEALED_KEY_DOMAIN = "salon/sealed-key/v1";

export interface SealedKey {
  spaceId: string;
  scope: string;
  epoch: number;
  generation: number;
  key: Uint8Array;
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
  return box(senderSecret, recipientPublic, sealedKeyBytes(k), nonce);
}

/** crypto_box_open: needs the recipient's secret and the sender's public key. */
export async function openBox(sealed: Uint8Array, recipientSecret: Uint8Array, senderPublic: Uint8Array): Promise<Uint8Array> {
  try {
    return await boxOpen(recipientSecret, senderPublic, sealed);
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

/** Envelope → msgpack map in declaration order (the wire.ts struct). */
export function encodeEnvelope(e: Envelope): Uint8Array {
  return encodeStruct(ENVELOPE, e);
}

export function decodeEnvelope(bytes: Uint8Array): Envelope {
  return decodeStruct<Envelope>(ENVELOPE, bytes);
}

/** Opens an envelope addressed to this reader, expecting its own space id, the scope it asked for and the clear epoch. */
export async function openEnvelope(
  e: Envelope, spaceId: string, scope: string, recipientSecret: Uint8Array, senderPublic: Uint8Array,
): Promise<SealedKey> {
  return openSealedKey(e.box, recipientSecret, senderPublic, { spaceId, scope, epoch: e.epoch });
}
