/**
 * The primitives of PROTOCOL.md §1, as pure async functions over bytes.
 *
 * Ed25519 goes through libsodium, not WebCrypto: a record's validity is consensus between
 * members, so verification must accept exactly what PyNaCl (libsodium) accepts — libsodium
 * refuses small-order public keys and non-canonical encodings that other implementations
 * (OpenSSL behind WebCrypto) may accept. Signing is deterministic either way.
 * HKDF-SHA256 and SHA-256 come from WebCrypto.
 */
import sodium from "libsodium-wrappers-sumo";
import { concat, utf8 } from "./bytes.ts";

export class CryptoError extends Error {
  override name = "CryptoError";
}

async function lib(): Promise<typeof sodium> {
  await sodium.ready;
  return sodium;
}

const subtle = (): SubtleCrypto => globalThis.crypto.subtle;
/** A copy on a plain ArrayBuffer (what WebCrypto's types ask for). */
export const own = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(bytes);

/** The Ed25519 public key of a 32-byte seed. */
export async function ed25519PublicKey(seed: Uint8Array): Promise<Uint8Array> {
  if (seed.length !== 32) throw new CryptoError("an Ed25519 seed is 32 bytes");
  return (await lib()).crypto_sign_seed_keypair(seed).publicKey;
}

/** Ed25519(seed, message): a 64-byte detached signature. */
export async function ed25519Sign(seed: Uint8Array, message: Uint8Array): Promise<Uint8Array> {
  if (seed.length !== 32) throw new CryptoError("an Ed25519 seed is 32 bytes");
  const s = await lib();
  const { privateKey } = s.crypto_sign_seed_keypair(seed);
  try {
    return s.crypto_sign_detached(message, privateKey);
  } finally {
    privateKey.fill(0);
  }
}

/** Valid only if the key is 32 bytes, the signature 64, and libsodium accepts it (§1). */
export async function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): Promise<boolean> {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const s = await lib();
  try {
    return s.crypto_sign_verify_detached(signature, message, publicKey);
  } catch {
    return false;
  }
}

/** The X25519 public key of a 32-byte box secret (`crypto_scalarmult_base`). */
export async function x25519PublicKey(secret: Uint8Array): Promise<Uint8Array> {
  if (secret.length !== 32) throw new CryptoError("a box secret is 32 bytes");
  return (await lib()).crypto_scalarmult_base(secret);
}

/** `n` bytes from the platform's CSPRNG. */
export function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  globalThis.crypto.getRandomValues(out);
  return out;
}

/** HKDF-SHA256 (RFC 5869) with an explicit salt and info (SFrame's key schedule, §15). */
export async function hkdfRaw(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, n: number): Promise<Uint8Array> {
  const key = await subtle().importKey("raw", own(ikm), "HKDF", false, ["deriveBits"]);
  const bits = await subtle().deriveBits({ name: "HKDF", hash: "SHA-256", salt: own(salt), info: own(info) }, key, n * 8);
  return new Uint8Array(bits);
}

/** HKDF(secret, label, context, n) of §1: HKDF-SHA256, empty salt, info = utf8(label) || 0x00 || context. */
export async function hkdf(secret: Uint8Array, label: string, context: Uint8Array, n = 32): Promise<Uint8Array> {
  return hkdfRaw(secret, new Uint8Array(0), concat(utf8(label), new Uint8Array([0]), context), n);
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await subtle().digest("SHA-256", own(data)));
}

/** BLAKE2b with an `bytes`-byte digest, unkeyed, no personalization. */
export async function blake2b(bytes: number, data: Uint8Array): Promise<Uint8Array> {
  return (await lib()).crypto_generichash(bytes, data, null);
}

/** secretbox(key, pt, nonce) of §1: nonce(24) || tag(16) || ciphertext. */
export async function secretbox(key: Uint8Array, plaintext: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  if (key.length !== 32 || nonce.length !== 24) throw new CryptoError("secretbox takes a 32-byte key and a 24-byte nonce");
  return concat(nonce, (await lib()).crypto_secretbox_easy(plaintext, nonce, key));
}

/** Open a secretbox; a box too short or that does not authenticate is a `CryptoError`. */
export async function secretboxOpen(key: Uint8Array, box: Uint8Array): Promise<Uint8Array> {
  if (key.length !== 32) throw new CryptoError("secretbox takes a 32-byte key");
  if (box.length < 40) throw new CryptoError("secretbox too short");
  const s = await lib();
  try {
    return s.crypto_secretbox_open_easy(box.subarray(24), box.subarray(0, 24), key);
  } catch {
    throw new CryptoError("secretbox does not open under this key");
  }
}

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
 * to 16 bytes (hashlib's `blake2b(person=...)`, §1). libsodium.js's own
 * `crypto_generichash_blake2b_salt_personal` wrapper hashes no message (it is a KDF), so this
 * calls the libsodium function itself.
 */
export async function blake2bPersonal(outlen: number, message: Uint8Array, person: Uint8Array): Promise<Uint8Array> {
  if (person.length > 16) throw new CryptoError("a BLAKE2b personalization is at most 16 bytes");
  if (outlen < 1 || outlen > 64) throw new CryptoError("bad BLAKE2b digest size");
  const raw = ((await lib()) as unknown as { libsodium: RawSodium }).libsodium;
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
      throw new CryptoError("BLAKE2b failed");
    }
    return raw.HEAPU8.slice(out, out + outlen);
  } finally {
    raw._free(p);
  }
}

/** box(sender secret, recipient key, pt, nonce) of §1 (X25519 + XSalsa20-Poly1305): nonce(24) || tag(16) || ciphertext. */
export async function box(senderSecret: Uint8Array, recipientPublic: Uint8Array, plaintext: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  if (nonce.length !== 24) throw new CryptoError("a box nonce is 24 bytes");
  return concat(nonce, (await lib()).crypto_box_easy(plaintext, nonce, recipientPublic, senderSecret));
}

/** Open a box; too short or not authenticating is a `CryptoError`. */
export async function boxOpen(recipientSecret: Uint8Array, senderPublic: Uint8Array, sealed: Uint8Array): Promise<Uint8Array> {
  if (sealed.length < 40) throw new CryptoError("box too short");
  const s = await lib();
  try {
    return s.crypto_box_open_easy(sealed.subarray(24), sealed.subarray(0, 24), senderPublic, recipientSecret);
  } catch {
    throw new CryptoError("the box does not open");
  }
}

/** aead(key, nonce, pt, ad) of §1: nonce(24) || XChaCha20-Poly1305-IETF(ciphertext || tag). */
export async function aead(key: Uint8Array, plaintext: Uint8Array, ad: Uint8Array, nonce: Uint8Array): Promise<Uint8Array> {
  if (key.length !== 32 || nonce.length !== 24) throw new CryptoError("aead takes a 32-byte key and a 24-byte nonce");
  return concat(nonce, (await lib()).crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, ad, null, nonce, key));
}

/** Open an aead box; too short or not authenticating is a `CryptoError`. */
export async function aeadOpen(key: Uint8Array, sealed: Uint8Array, ad: Uint8Array): Promise<Uint8Array> {
  if (key.length !== 32) throw new CryptoError("aead takes a 32-byte key");
  if (sealed.length < 40) throw new CryptoError("aead box too short");
  const s = await lib();
  try {
    return s.crypto_aead_xchacha20poly1305_ietf_decrypt(null, sealed.subarray(24), ad, sealed.subarray(0, 24), key);
  } catch {
    throw new CryptoError("the aead box does not open");
  }
}

const BASE32 = "abcdefghijklmnopqrstuvwxyz234567";

/** RFC 4648 §6 base32, lowercased, without padding (§1; space ids are 15 bytes → 24 chars). */
export function base32Lower(bytes: Uint8Array): string {
  let out = "";
  let bits = 0;
  let value = 0;
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
    value &= (1 << bits) - 1;
  }
  if (bits > 0) out += BASE32[(value << (5 - bits)) & 31];
  return out;
}

const B64URL = /^[A-Za-z0-9_-]*$/;

/** base64url without padding (RFC 4648 §5). */
export function base64urlEncode(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** Strict: only the URL alphabet, no padding, no leftover bits (a canonical encoding). */
export function base64urlDecode(text: string): Uint8Array {
  if (!B64URL.test(text) || text.length % 4 === 1) throw new CryptoError("not base64url");
  const bin = atob(text.replaceAll("-", "+").replaceAll("_", "/") + "=".repeat((4 - (text.length % 4)) % 4));
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (base64urlEncode(out) !== text) throw new CryptoError("not canonical base64url");
  return out;
}

/** Argon2id's INTERACTIVE limits (libsodium `crypto_pwhash_*_INTERACTIVE`): 2 passes, 64 MiB. */
export const ARGON2ID_INTERACTIVE = { opslimit: 2, memlimit: 64 * 1024 * 1024 } as const;

/** Argon2id(passphrase, 16-byte salt) → `n` bytes (libsodium `crypto_pwhash`, ALG_ARGON2ID13). */
export async function argon2id(
  passphrase: Uint8Array, salt: Uint8Array, n = 32, limits: { opslimit: number; memlimit: number } = ARGON2ID_INTERACTIVE,
): Promise<Uint8Array> {
  if (salt.length !== 16) throw new CryptoError("an Argon2id salt is 16 bytes");
  const s = await lib();
  return s.crypto_pwhash(n, passphrase, salt, limits.opslimit, limits.memlimit, s.crypto_pwhash_ALG_ARGON2ID13);
}
