/**
 * Space-key secretbox (PROTOCOL.md §1, §9): names, profiles and room names are
 * `secretbox(space_key, msgpack(value))`, written `nonce(24) || tag(16) || ciphertext`
 * (XSalsa20-Poly1305, libsodium `crypto_secretbox_easy`). Also `Rekey.prev_box`.
 * A thin layer over crypto.ts that picks a random nonce when none is given.
 */
import { randomBytes, secretbox, secretboxOpen } from "./crypto.ts";

export const NONCE_BYTES = 24;
export const KEY_BYTES = 32;
export const TAG_BYTES = 16;

/** nonce || secretbox(key, plaintext, nonce); the nonce is 24 random bytes unless given. */
export function seal(key: Uint8Array, plaintext: Uint8Array, nonce: Uint8Array = randomBytes(NONCE_BYTES)): Promise<Uint8Array> {
  return secretbox(key, plaintext, nonce);
}

/** Opens nonce || tag || ciphertext; throws a `CryptoError` if it does not authenticate. */
export function open(key: Uint8Array, box: Uint8Array): Promise<Uint8Array> {
  return secretboxOpen(key, box);
}
