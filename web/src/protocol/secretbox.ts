/**
 * Space-key secretbox (PROTOCOL.md §1, §9): names, profiles and room names are
 * `secretbox(space_key, msgpack(value))`, written `nonce(24) || tag(16) || ciphertext`
 * (XSalsa20-Poly1305, libsodium `crypto_secretbox_easy`). Also `Rekey.prev_box`.
 */
import sodium from "libsodium-wrappers-sumo";
import { concat } from "./bytes.ts";

export const NONCE_BYTES = 24;
export const KEY_BYTES = 32;
export const TAG_BYTES = 16;

/** libsodium, once it has loaded. */
export async function ready(): Promise<typeof sodium> {
  await sodium.ready;
  return sodium;
}

export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  crypto.getRandomValues(out);
  return out;
}

function checkKey(key: Uint8Array): void {
  if (key.length !== KEY_BYTES) throw new Error("a secretbox key is 32 bytes");
}

/** nonce || secretbox(key, plaintext, nonce); the nonce is 24 random bytes unless given. */
export async function seal(key: Uint8Array, plaintext: Uint8Array, nonce: Uint8Array = randomBytes(NONCE_BYTES)): Promise<Uint8Array> {
  checkKey(key);
  if (nonce.length !== NONCE_BYTES) throw new Error("a secretbox nonce is 24 bytes");
  const s = await ready();
  return concat(nonce, s.crypto_secretbox_easy(plaintext, nonce, key));
}

/** Opens nonce || tag || ciphertext; throws if it does not authenticate. */
export async function open(key: Uint8Array, box: Uint8Array): Promise<Uint8Array> {
  checkKey(key);
  if (box.length < NONCE_BYTES + TAG_BYTES) throw new Error("secretbox too short");
  const s = await ready();
  try {
    return s.crypto_secretbox_open_easy(box.subarray(NONCE_BYTES), box.subarray(0, NONCE_BYTES), key);
  } catch {
    throw new Error("secretbox does not open");
  }
}
