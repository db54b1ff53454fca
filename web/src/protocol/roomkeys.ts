/**
 * Room keys (PROTOCOL.md §10.3, §10.4, §10.6): the commitment a RoomKey record carries, the
 * one-way generation ratchet, and the generation framing of room ciphertexts.
 *
 * Also holds, for now, the two small helpers the room/message modules share: `pack` (canonical
 * MessagePack, §2) and `hkdf` (§1). TODO(merge with web1): move them to wire.ts / a kdf module.
 */
import { encode } from "@msgpack/msgpack";
import { concat, utf8 } from "./bytes.ts";

/** Canonical MessagePack (§2) of plain values: arrays, strings, safe integers, Uint8Array (bin), null. */
export function pack(value: unknown): Uint8Array {
  return encode(value);
}

/** A copy backed by a plain ArrayBuffer, as WebCrypto's BufferSource wants. */
export function ab(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes.length);
  out.set(bytes);
  return out;
}

/** HKDF-SHA256 with an empty salt and info = utf8(label) || 0x00 || context (§1). */
export async function hkdf(secret: Uint8Array, label: string, context: Uint8Array, n = 32): Promise<Uint8Array> {
  const info = concat(utf8(label), new Uint8Array([0]), context);
  return hkdfRaw(secret, new Uint8Array(0), info, n);
}

/** HKDF-SHA256 (RFC 5869) with an explicit salt and info. */
export async function hkdfRaw(ikm: Uint8Array, salt: Uint8Array, info: Uint8Array, n: number): Promise<Uint8Array> {
  const key = await crypto.subtle.importKey("raw", ab(ikm), "HKDF", false, ["deriveBits"]);
  const bits = await crypto.subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: ab(salt), info: ab(info) },
    key,
    8 * n,
  );
  return new Uint8Array(bits);
}

export async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", ab(data)));
}

export const ROOM_KEY_COMMIT_DOMAIN = utf8("salon/room-key-commit/v1\x00");
export const ROOM_KEY_RATCHET_LABEL = "salon/room-key-ratchet/v1";
export const KEY_BYTES = 32;

function checkGeneration(generation: number): void {
  if (!Number.isSafeInteger(generation) || generation < 0) throw new RangeError("bad generation");
}

/** The input hashed by `roomKeyCommit`: ROOM_KEY_COMMIT_DOMAIN || msgpack([space_id, room_id, epoch, generation, key]). */
export function roomKeyCommitInput(
  spaceId: string, roomId: string, epoch: number, generation: number, key: Uint8Array,
): Uint8Array {
  checkGeneration(generation);
  return concat(ROOM_KEY_COMMIT_DOMAIN, pack([spaceId, roomId, epoch, generation, key]));
}

/** commit = SHA-256(ROOM_KEY_COMMIT_DOMAIN || msgpack([space_id, room_id, epoch, generation, key])) (§10.3). */
export async function roomKeyCommit(
  spaceId: string, roomId: string, epoch: number, generation: number, key: Uint8Array,
): Promise<Uint8Array> {
  return sha256(roomKeyCommitInput(spaceId, roomId, epoch, generation, key));
}

/** The HKDF context of ratchet step g: msgpack([space_id, room_id, epoch, g]). */
export function ratchetContext(spaceId: string, roomId: string, epoch: number, generation: number): Uint8Array {
  return pack([spaceId, roomId, epoch, generation]);
}

/** key[g] = HKDF(key[g-1], ROOM_KEY_RATCHET_LABEL, msgpack([space_id, room_id, epoch, g])) (§10.4). */
export async function ratchetStep(
  previous: Uint8Array, spaceId: string, roomId: string, epoch: number, generation: number,
): Promise<Uint8Array> {
  checkGeneration(generation);
  if (generation === 0) throw new RangeError("generation 0 is not derived");
  return hkdf(previous, ROOM_KEY_RATCHET_LABEL, ratchetContext(spaceId, roomId, epoch, generation));
}

/** advance(key held at g0, to g): ratchet g0+1 … g in order; g < g0 is refused (§10.4). */
export async function advance(
  key: Uint8Array, spaceId: string, roomId: string, epoch: number, from: number, to: number,
): Promise<Uint8Array> {
  checkGeneration(from);
  checkGeneration(to);
  if (to < from) throw new RangeError(`cannot go back from generation ${from} to ${to}`);
  let out = key;
  for (let g = from + 1; g <= to; g++) out = await ratchetStep(out, spaceId, roomId, epoch, g);
  return out;
}

/** framed = u32be(generation) || box (§10.6). */
export function frame(generation: number, box: Uint8Array): Uint8Array {
  if (!Number.isInteger(generation) || generation < 0 || generation > 0xffffffff) {
    throw new RangeError("bad generation");
  }
  const head = new Uint8Array(4);
  new DataView(head.buffer).setUint32(0, generation);
  return concat(head, box);
}

/** Splits a framed ciphertext; fewer than 4 bytes is refused as truncated (§10.6). */
export function unframe(framed: Uint8Array): { generation: number; box: Uint8Array } {
  if (framed.length < 4) throw new Error("truncated framed ciphertext");
  const generation = new DataView(framed.buffer, framed.byteOffset, 4).getUint32(0);
  return { generation, box: framed.slice(4) };
}
