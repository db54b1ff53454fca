/**
 * The record chain (PROTOCOL.md §6): signing bytes, encoding, record hash, signatures, space id,
 * join statement, and the chain-link checks of §7 steps 1–4 (space id, seq, prev, signature).
 * The body rules (§7 step 5) are in roster.ts.
 */
import { concat, equal } from "./bytes.ts";
import { base32Lower, blake2b, ed25519Sign, ed25519Verify } from "./crypto.ts";
import { JOIN_DOMAIN, RECORD_DOMAIN } from "./labels.ts";
import { encode, type MsgValue } from "./msgpack.ts";
import { RECORD, RECORD_BODY, type Genesis, type Record, type RecordBody } from "./recordtypes.ts";
import { decodeStruct, encodeStruct, toMsg } from "./schema.ts";

export * from "./recordtypes.ts";

/** Error classes of §7 with their wire codes (§16). */
export class RecordError extends Error {
  override name = "RecordError";
  readonly code: string = "invalid_message";
}
export class RecordForbidden extends RecordError {
  override name = "RecordForbidden";
  override readonly code = "forbidden";
}
export class ChainConflict extends RecordError {
  override name = "ChainConflict";
  override readonly code = "conflict";
}
export class RecordTooLarge extends RecordError {
  override name = "RecordTooLarge";
  override readonly code = "too_large";
}
export class RecordRateLimited extends RecordError {
  override name = "RecordRateLimited";
  override readonly code = "rate_limited";
}

export const ZERO_HASH = new Uint8Array(32);

function bodyMsg(body: RecordBody): MsgValue {
  const def = RECORD_BODY.byTag.get(body.type);
  if (def === undefined) throw new RecordError(`unknown record body ${body.type}`);
  return toMsg(def, body);
}

/** signing_bytes(r) = RECORD_DOMAIN || msgpack([space_id, seq, prev, author, created_at, body]). */
export function signingBytes(r: Omit<Record, "sig">): Uint8Array {
  return concat(RECORD_DOMAIN, encode([r.space_id, r.seq, r.prev, r.author, r.created_at, bodyMsg(r.body)]));
}

/** encode_record(r) = msgpack(r): the map of §6.1, sig included. */
export const encodeRecord = (r: Record): Uint8Array => encodeStruct(RECORD, r);

/** A record from its msgpack (a `WireError` if it is not one). */
export const decodeRecord = (bytes: Uint8Array): Record => decodeStruct<Record>(RECORD, bytes);

/** record_hash(r) = BLAKE2b-256(encode_record(r)). */
export const recordHash = (r: Record): Promise<Uint8Array> => blake2b(32, encodeRecord(r));

/** Sign a record with its author's seed (the author field must be that seed's key). */
export async function signRecord(seed: Uint8Array, r: Omit<Record, "sig">): Promise<Record> {
  return { ...r, sig: await ed25519Sign(seed, signingBytes(r)) };
}

export const verifyRecordSignature = (r: Record): Promise<boolean> =>
  ed25519Verify(r.author, signingBytes(r), r.sig);

/** space_id = base32(BLAKE2b-120(founder_key || genesis.box_key || genesis.nonce)).lower() (§6.3). */
export async function deriveSpaceId(founder: Uint8Array, genesis: Genesis): Promise<string> {
  return base32Lower(await blake2b(15, concat(founder, genesis.box_key, genesis.nonce)));
}

/** join_statement = JOIN_DOMAIN || msgpack([space_id, member_key, box_key, invite_id]) (§6.4). */
export function joinStatement(spaceId: string, memberKey: Uint8Array, boxKey: Uint8Array, inviteId: string): Uint8Array {
  return concat(JOIN_DOMAIN, encode([spaceId, memberKey, boxKey, inviteId]));
}

/** The head of a chain (§6.2): seq -1 and 32 zero bytes before the genesis. */
export interface Head {
  readonly seq: number;
  readonly hash: Uint8Array;
}

export const EMPTY_HEAD: Head = { seq: -1, hash: ZERO_HASH };

/**
 * §7 steps 1–4: the record belongs to `spaceId`, extends `head` (`ChainConflict`) and is
 * signed by its author (`RecordError`). Returns the new head.
 */
export async function checkLink(spaceId: string, head: Head, r: Record): Promise<Head> {
  if (r.space_id !== spaceId) throw new RecordError(`record ${r.seq} belongs to another space`);
  if (r.seq !== head.seq + 1 || !equal(r.prev, head.hash)) {
    throw new ChainConflict(`record ${r.seq} does not extend the chain`);
  }
  if (!(await verifyRecordSignature(r))) throw new RecordError(`record ${r.seq} has a bad signature`);
  return { seq: r.seq, hash: await recordHash(r) };
}

/**
 * The genesis check of `Roster.from_records`: non-empty, `records[0]` a genesis whose derived
 * space id is `spaceId`.
 */
export async function checkGenesis(spaceId: string, records: readonly Record[]): Promise<void> {
  const first = records[0];
  if (first === undefined) throw new RecordError("no records");
  if (first.body.type !== "genesis") throw new RecordError("the chain does not start with a genesis");
  if ((await deriveSpaceId(first.author, first.body)) !== spaceId) {
    throw new RecordError("the genesis does not derive this space id");
  }
}

/** Genesis + every link of a whole chain (no body rules); returns its head. */
export async function verifyLinks(spaceId: string, records: readonly Record[]): Promise<Head> {
  await checkGenesis(spaceId, records);
  let head = EMPTY_HEAD;
  for (const r of records) head = await checkLink(spaceId, head, r);
  return head;
}
