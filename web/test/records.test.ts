import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import {
  ChainConflict, EMPTY_HEAD, RECORD, RecordError, checkLink, decodeRecord, deriveSpaceId, encodeRecord,
  joinStatement, recordHash, signRecord, signingBytes, verifyLinks, verifyRecordSignature, type Record,
} from "../src/protocol/records.ts";
import { ed25519Verify } from "../src/protocol/crypto.ts";
import { flip, fromJson, loadVectors } from "./vectors.ts";

const vectors = loadVectors("records");
const people = loadVectors("identities").people;
const chain: Record[] = vectors.records.map((item: { record: unknown }) => fromJson(RECORD, item.record));

test("records.json: signing bytes, signatures, encodings, hashes of all 17 records", async () => {
  assert.equal(chain.length, 17);
  for (const [i, item] of vectors.records.entries()) {
    const r = chain[i]!;
    assert.equal(toHex(signingBytes(r)), item.signing_bytes);
    assert.equal(toHex(encodeRecord(r)), item.record_msgpack);
    assert.equal(toHex(await recordHash(r)), item.record_hash);
    assert.ok(await verifyRecordSignature(r));
    assert.deepEqual(decodeRecord(fromHex(item.record_msgpack)), r);
    // Ed25519 is deterministic: re-signing with the author's seed gives the vector's sig.
    const { sig: _sig, ...unsigned } = r;
    const signed = await signRecord(fromHex(people[item.author].signing_seed), unsigned);
    assert.equal(toHex(signed.sig), item.sig);
  }
});

test("records.json: space id from the genesis", async () => {
  const genesis = chain[0]!;
  assert.equal(genesis.body.type, "genesis");
  if (genesis.body.type !== "genesis") return;
  assert.equal(toHex(genesis.author) + toHex(genesis.body.box_key) + toHex(genesis.body.nonce), vectors.space_id_input);
  assert.equal(await deriveSpaceId(genesis.author, genesis.body), vectors.space_id);
});

test("records.json: the whole chain links (seq, prev, signature) up to the roster's head", async () => {
  const head = await verifyLinks(vectors.space_id, chain);
  assert.equal(head.seq, vectors.roster.head_seq);
  assert.equal(toHex(head.hash), vectors.roster.head_hash);
});

test("records.json: join statements and invite signatures", async () => {
  for (const join of vectors.joins) {
    const r = chain.find((x) => x.body.type === "join" && toHex(x.author) === people[join.member].member_key)!;
    assert.ok(r.body.type === "join");
    if (r.body.type !== "join") return;
    const statement = joinStatement(r.space_id, r.author, r.body.box_key, r.body.invite_id);
    assert.equal(toHex(statement), join.statement);
    assert.ok(await ed25519Verify(fromHex(join.invite_key), statement, r.body.invite_sig));
  }
});

test("a flipped bit anywhere in a record is refused", async () => {
  const heads = [EMPTY_HEAD];
  for (const r of chain) heads.push(await checkLink(vectors.space_id, heads[heads.length - 1]!, r));
  for (const [i, item] of vectors.records.entries()) {
    const bytes = fromHex(item.record_msgpack);
    for (let at = 0; at < bytes.length; at += Math.max(1, Math.floor(bytes.length / 40))) {
      let r: Record;
      try {
        r = decodeRecord(flip(bytes, at, at % 8));
      } catch {
        continue; // no longer a record at all
      }
      if (toHex(encodeRecord(r)) === item.record_msgpack) continue;
      await assert.rejects(checkLink(vectors.space_id, heads[i]!, r), RecordError, `record ${i} byte ${at}`);
    }
  }
});

test("records.json rejected: bad signature and a prev that is not the head", async () => {
  const heads = [EMPTY_HEAD];
  for (const r of chain) heads.push(await checkLink(vectors.space_id, heads[heads.length - 1]!, r));
  const bad = vectors.rejected.find((x: { case: string }) => x.case === "bad signature");
  await assert.rejects(checkLink(vectors.space_id, heads[bad.prefix]!, decodeRecord(fromHex(bad.record_msgpack))),
    (err: Error) => err instanceof RecordError && !(err instanceof ChainConflict) && err.message === bad.reason);
  const prev = vectors.rejected.find((x: { case: string }) => x.case === "prev is not the head hash");
  await assert.rejects(checkLink(vectors.space_id, heads[prev.prefix]!, decodeRecord(fromHex(prev.record_msgpack))),
    (err: Error) => err instanceof ChainConflict && err.code === prev.code && err.message === prev.reason);
  await assert.rejects(verifyLinks("aaaaaaaaaaaaaaaaaaaaaaaa", chain), RecordError);
  await assert.rejects(verifyLinks(vectors.space_id, chain.slice(1)), RecordError);
});
