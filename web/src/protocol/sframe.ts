/**
 * SFrame (RFC 9605) for SFU media, suite 4 AES_128_GCM_SHA256_128 only (PROTOCOL.md §15), on
 * WebCrypto. Pure functions: the caller keeps the counters and the replay window.
 *
 * KID and CTR are JS numbers: up to 2^53 − 1 here (RFC 9605 allows 64 bits; Salon's key ids
 * are index << 16 | epoch and its counters start at 0, so a larger value is refused).
 */
import { concat, utf8 } from "./bytes.ts";
import { hkdfRaw, own as ab } from "./crypto.ts";

export const CIPHER_SUITE = 4; // AES_128_GCM_SHA256_128
export const NK = 16;
export const NN = 12;
export const NT = 16;
export const EPOCH_BITS = 16;
export const MAX_EPOCH = (1 << EPOCH_BITS) - 1;
export const SFRAME_KEY_LABEL = utf8("SFrame 1.0 Secret key ");
export const SFRAME_SALT_LABEL = utf8("SFrame 1.0 Secret salt ");

export class KeyIdExhausted extends Error {}
export class SFrameError extends Error {}

const MAX_VALUE = Number.MAX_SAFE_INTEGER;

// ---- key ids (§15.2) --------------------------------------------------------------------

/** kid = index << 16 | epoch; an epoch outside 0…MAX_EPOCH has no key id (never wrapped). */
export function mediaKid(index: number, epoch: number): number {
  if (!Number.isSafeInteger(epoch) || epoch < 0 || epoch > MAX_EPOCH) {
    throw new KeyIdExhausted(`epoch ${epoch} has no key id (0…${MAX_EPOCH})`);
  }
  if (!Number.isSafeInteger(index) || index < 0 || index > Math.floor(MAX_VALUE / 2 ** EPOCH_BITS)) {
    throw new RangeError(`bad sender index ${index}`);
  }
  return index * 2 ** EPOCH_BITS + epoch; // index << 16 without 32-bit overflow
}

export const kidIndex = (kid: number): number => Math.floor(kid / 2 ** EPOCH_BITS);
export const kidEpoch = (kid: number): number => kid % 2 ** EPOCH_BITS;

// ---- header (RFC 9605 §4.3) -------------------------------------------------------------

function minimalBytes(value: number): Uint8Array {
  const out: number[] = [];
  for (let v = value; v > 0; v = Math.floor(v / 256)) out.unshift(v % 256);
  return new Uint8Array(out);
}

function checkValue(value: number, what: string): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new SFrameError(`${what} out of range: ${value}`);
}

/** Config byte X|K(3)|Y|C(3), then the KID bytes, then the CTR bytes, each minimal. */
export function encodeHeader(kid: number, ctr: number): Uint8Array {
  checkValue(kid, "KID");
  checkValue(ctr, "CTR");
  let config = 0;
  let kidBytes: Uint8Array = new Uint8Array(0);
  let ctrBytes: Uint8Array = new Uint8Array(0);
  if (kid < 8) config |= kid << 4;
  else {
    kidBytes = minimalBytes(kid);
    config |= 0x80 | ((kidBytes.length - 1) << 4);
  }
  if (ctr < 8) config |= ctr;
  else {
    ctrBytes = minimalBytes(ctr);
    config |= 0x08 | (ctrBytes.length - 1);
  }
  return concat(new Uint8Array([config]), kidBytes, ctrBytes);
}

/** The header length a config byte implies. */
export function headerLength(config: number): number {
  let n = 1;
  if (config & 0x80) n += ((config >> 4) & 0x07) + 1;
  if (config & 0x08) n += (config & 0x07) + 1;
  return n;
}

function readField(data: Uint8Array, at: number, size: number, what: string): number {
  if (data.length < at + size) throw new SFrameError(`truncated SFrame header (${what})`);
  let value = 0;
  for (let i = 0; i < size; i++) value = value * 256 + (data[at + i] ?? 0);
  if (!Number.isSafeInteger(value)) throw new SFrameError(`${what} too large`);
  if (value < 8 || minimalBytes(value).length !== size) throw new SFrameError(`non-minimal ${what} encoding`);
  return value;
}

/** Parses the header at the start of `data` (trailing bytes ignored); non-minimal encodings are refused. */
export function decodeHeader(data: Uint8Array): { kid: number; ctr: number; length: number } {
  const config = data[0];
  if (config === undefined) throw new SFrameError("empty SFrame ciphertext");
  let at = 1;
  let kid: number;
  let ctr: number;
  if (config & 0x80) {
    const n = ((config >> 4) & 0x07) + 1;
    kid = readField(data, at, n, "KID");
    at += n;
  } else kid = (config >> 4) & 0x07;
  if (config & 0x08) {
    const n = (config & 0x07) + 1;
    ctr = readField(data, at, n, "CTR");
    at += n;
  } else ctr = config & 0x07;
  return { kid, ctr, length: at };
}

// ---- key schedule and encryption (RFC 9605 §4.4) ----------------------------------------

function kidContext(kid: number): Uint8Array {
  checkValue(kid, "KID");
  const out = new Uint8Array(10);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(kid));
  view.setUint16(8, CIPHER_SUITE);
  return out;
}

/** sframe_key, sframe_salt = HKDF-Expand(HKDF-Extract("", base_key), label || u64be(kid) || u16be(4), Nk / Nn). */
export async function deriveKeySalt(baseKey: Uint8Array, kid: number): Promise<{ key: Uint8Array; salt: Uint8Array }> {
  const context = kidContext(kid);
  const empty = new Uint8Array(0);
  return {
    key: await hkdfRaw(baseKey, empty, concat(SFRAME_KEY_LABEL, context), NK),
    salt: await hkdfRaw(baseKey, empty, concat(SFRAME_SALT_LABEL, context), NN),
  };
}

/** One key id's AES-GCM key (non-extractable) and salt. */
export interface SFrameKey {
  kid: number;
  key: CryptoKey;
  salt: Uint8Array;
}

export async function sframeKey(baseKey: Uint8Array, kid: number): Promise<SFrameKey> {
  const { key, salt } = await deriveKeySalt(baseKey, kid);
  return { kid, salt, key: await crypto.subtle.importKey("raw", ab(key), "AES-GCM", false, ["encrypt", "decrypt"]) };
}

/** nonce = sframe_salt XOR u96be(ctr). */
export function makeNonce(salt: Uint8Array, ctr: number): Uint8Array {
  checkValue(ctr, "CTR");
  if (salt.length !== NN) throw new SFrameError("an SFrame salt is 12 bytes");
  const c = new Uint8Array(NN);
  new DataView(c.buffer).setBigUint64(4, BigInt(ctr));
  return salt.map((b, i) => b ^ (c[i] ?? 0));
}

/** SFrame ciphertext = header || AES-GCM(key, nonce, payload, aad = header || metadata) (ct || tag). */
export async function encryptFrame(k: SFrameKey, ctr: number, metadata: Uint8Array, payload: Uint8Array): Promise<Uint8Array> {
  const header = encodeHeader(k.kid, ctr);
  const ct = await crypto.subtle.encrypt(
    { name: "AES-GCM", iv: ab(makeNonce(k.salt, ctr)), additionalData: ab(concat(header, metadata)), tagLength: 8 * NT },
    k.key,
    ab(payload),
  );
  return concat(header, new Uint8Array(ct));
}

/** Reads the header, looks the key id up, authenticates and decrypts. */
export async function decryptFrame(
  data: Uint8Array, metadata: Uint8Array, keyFor: (kid: number) => SFrameKey | undefined,
): Promise<{ kid: number; ctr: number; payload: Uint8Array }> {
  const { kid, ctr, length } = decodeHeader(data);
  if (data.length < length + NT) throw new SFrameError("SFrame ciphertext too short");
  const k = keyFor(kid);
  if (k === undefined || k.kid !== kid) throw new SFrameError(`no key for key id ${kid}`);
  const header = data.subarray(0, length);
  try {
    const pt = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: ab(makeNonce(k.salt, ctr)), additionalData: ab(concat(header, metadata)), tagLength: 8 * NT },
      k.key,
      ab(data.subarray(length)),
    );
    return { kid, ctr, payload: new Uint8Array(pt) };
  } catch {
    throw new SFrameError("SFrame frame does not authenticate");
  }
}

// ---- clear codec bytes (§15.4) ----------------------------------------------------------

export type Codec = "vp8" | "opus";

/** VP8: 10 clear bytes for a keyframe (frame[0] & 1 == 0), 3 for a delta frame; Opus: 1. */
export function clearSize(codec: Codec, frame: Uint8Array): number {
  if (codec === "opus") return 1;
  const first = frame[0];
  if (first === undefined) return 0;
  return (first & 0x01) === 0 ? 10 : 3;
}

/** protected = frame[:clear] || header || AES-GCM(frame[clear:], aad = header || frame[:clear]). */
export async function protectFrame(k: SFrameKey, ctr: number, codec: Codec, frame: Uint8Array): Promise<Uint8Array> {
  const clear = frame.subarray(0, Math.min(clearSize(codec, frame), frame.length));
  return concat(clear, await encryptFrame(k, ctr, clear, frame.subarray(clear.length)));
}

/** Clear-prefix lengths to try, the full one first, then the shorter splits of a short frame. */
export function splitCandidates(codec: Codec, data: Uint8Array): number[] {
  const full = clearSize(codec, data);
  const out: number[] = [];
  const at = (i: number): number => data[i] ?? 0;
  if (data.length > full && data.length - full >= headerLength(at(full)) + NT) out.push(full);
  for (let size = Math.min(full, data.length) - 1; size >= 0; size--) {
    if (size + headerLength(at(size)) + NT === data.length) out.push(size);
  }
  return out;
}

/** Inverse of `protectFrame`: returns the key id, counter and original frame; the first failure is reported. */
export async function unprotectFrame(
  codec: Codec, data: Uint8Array, keyFor: (kid: number) => SFrameKey | undefined,
): Promise<{ kid: number; ctr: number; frame: Uint8Array }> {
  const candidates = splitCandidates(codec, data);
  if (candidates.length === 0) throw new SFrameError("protected frame too short");
  let first: unknown;
  for (const size of candidates) {
    const clear = data.subarray(0, size);
    try {
      const { kid, ctr, payload } = await decryptFrame(data.subarray(size), clear, keyFor);
      return { kid, ctr, frame: concat(clear, payload) };
    } catch (e) {
      first ??= e;
    }
  }
  throw first;
}
