import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { RECORD, decodeRecord, type Record } from "../src/protocol/records.ts";
import { HASH_CHECKPOINT, HASH_WINDOW, applyRecord, mayPost, rememberHash, needsRekey, roomGeneration, rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import { fromJson, loadVectors } from "./vectors.ts";

const vectors = loadVectors("records");
const chain: Record[] = vectors.records.map((item: { record: unknown }) => fromJson(RECORD, item.record));

test("records.json: the roster after the 17 records", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  const expected = vectors.roster;
  assert.equal(roster.head.seq, expected.head_seq);
  assert.equal(toHex(roster.head.hash), expected.head_hash);
  assert.equal(roster.epoch, expected.epoch);
  assert.deepEqual(Object.fromEntries([...roster.members].map(([k, m]) => [k, m.role])), expected.members);
  assert.deepEqual(Object.fromEntries(roster.departed), expected.departed);
  assert.deepEqual(Object.fromEntries(roster.inviteUses), expected.invite_uses);
  assert.deepEqual(
    Object.fromEntries([...roster.rooms].map(([id, room]) => [id, {
      kind: room.spec.kind, history: room.spec.history, publishers: [...room.publishers].sort(),
    }])),
    expected.rooms,
  );
  assert.equal(roster.generation, expected.generation);
  assert.deepEqual(Object.fromEntries([...roster.roomKeys].map(([k, v]) => [k, toHex(v)])), expected.room_keys);
  assert.deepEqual([...roster.hashes.keys()].sort((a, b) => a - b), expected.hashes_kept);
  assert.equal(needsRekey(roster), false);
  assert.equal(roomGeneration(roster, "roomAAAAAAAAAAAA"), 0);
  const owner = Object.keys(expected.members)[0]!;
  assert.ok(mayPost(roster, "roomAAAAAAAAAAAA", owner));
});

test("records.json: the twelve refusals, each with its error class and code", async () => {
  const prefixes = new Map<number, Roster>();
  assert.equal(vectors.rejected.length, 12);
  for (const bad of vectors.rejected) {
    let roster = prefixes.get(bad.prefix);
    if (roster === undefined) {
      roster = await rosterFromRecords(vectors.space_id, chain.slice(0, bad.prefix));
      prefixes.set(bad.prefix, roster);
    }
    const record = decodeRecord(fromHex(bad.record_msgpack));
    await assert.rejects(applyRecord(roster, record), (err: Error & { code?: string }) => {
      assert.equal(err.name, bad.error, bad.case);
      assert.equal(err.code, bad.code, bad.case);
      assert.equal(err.message, bad.reason, bad.case);
      return true;
    });
  }
});

test("applying does not modify the input roster", async () => {
  const before = await rosterFromRecords(vectors.space_id, chain.slice(0, 5));
  const after = await applyRecord(before, chain[5]!);
  assert.equal(before.head.seq, 4);
  assert.equal(after.head.seq, 5);
  await assert.rejects(applyRecord(after, chain[5]!));
});

test("hashes.json: the hashes a roster keeps after 1,300 records", () => {
  const v = loadVectors("hashes");
  const count = Number(v.records);
  let hashes: ReadonlyMap<number, Uint8Array> = new Map();
  for (let seq = 0; seq < count; seq++) hashes = rememberHash(hashes, seq, new Uint8Array(0));
  assert.equal(HASH_WINDOW, Number(v.hash_window));
  assert.equal(HASH_CHECKPOINT, Number(v.hash_checkpoint));
  const kept = [...hashes.keys()].sort((a, b) => a - b);
  assert.equal(kept.length, Number(v.kept_count));
  const [lo, hi] = v.kept_window as [number, number];
  const checkpoints = v.kept_checkpoints as number[];
  assert.deepEqual(kept, [...checkpoints, ...Array.from({ length: hi - lo + 1 }, (_, i) => lo + i)]);
});
