/**
 * Room keys (PROTOCOL.md §10.3, §10.4, §10.6): the commitment a RoomKey record carries, the
 * one-way generation ratchet, and the generation framing of room ciphertexts.
 */
import { concat, utf8 } from "./bytes.ts";
import { hkdf, sha256 } from "./crypto.ts";
import { encode as pack } from "./msgpack.ts";

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
