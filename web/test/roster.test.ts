import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { RECORD, decodeRecord, type Record } from "../src/protocol/records.ts";
import {
  HASH_CHECKPOINT, HASH_WINDOW, applyRecord, epochAt, epochStart, formerProfile, generationAt, mayPost, mayPostAt,
  memberDuring, rememberHash, needsRekey, roleAt, roomGeneration, roomGenerationAt, rosterAt, rosterFromRecords,
  type Roster,
} from "../src/protocol/roster.ts";
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

// ---- history (§6.6 Roster.at, §7 member_during), from the vector chain ----
// The chain: 4 bob joins (member), 6 carol joins, 8 channel room (since-join), 12 carol granted
// publisher, 13 bob made moderator, 14 carol removed (banned), 15 rekey to epoch 1.
const ROOM = "roomAAAAAAAAAAAA";
const keyOf = (seq: number): string => vectors.records[seq].record.author;
const [alice, bob, carol] = [keyOf(0), keyOf(4), keyOf(6)];
const seqs = [...Array(chain.length).keys()];

test("history: epoch_at, the epoch starts and Roster.at bounds", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  assert.deepEqual(roster.epochStarts, [0, 15]);
  assert.equal(epochStart(roster, 1), 15);
  assert.equal(epochStart(roster, 2), undefined);
  assert.deepEqual(seqs.map((s) => epochAt(roster, s)), seqs.map((s) => (s >= 15 ? 1 : 0)));
  assert.deepEqual(seqs.map((s) => rosterAt(roster, s)?.epoch), seqs.map((s) => (s >= 15 ? 1 : 0)));
  assert.equal(rosterAt(roster, -1), null);
  assert.equal(rosterAt(roster, chain.length), null);
});

test("history: role_at and the role log", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  assert.deepEqual(seqs.map((s) => roleAt(roster, alice, s)), seqs.map(() => "owner"));
  assert.deepEqual(seqs.map((s) => roleAt(roster, bob, s)), seqs.map((s) => (s < 4 ? "" : s < 13 ? "member" : "moderator")));
  assert.deepEqual(seqs.map((s) => roleAt(roster, carol, s)), seqs.map((s) => (s >= 6 && s < 14 ? "member" : "")));
  assert.deepEqual(roster.roleLog.get(carol), [[6, "member"], [14, ""]]);
  assert.deepEqual(roster.roleLog.get(bob), [[4, "member"], [13, "moderator"]]);
  assert.deepEqual(roster.tenures.get(carol), [[6, 14]]);
  assert.deepEqual(roster.tenures.get(bob), [[4, -1]]);
  assert.deepEqual(roster.tenures.get(alice), [[0, -1]]);
});

test("history: may_post_at in the channel (creation, grant, role change, removal)", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  const at = (key: string): boolean[] => seqs.map((s) => rosterAt(roster, s)!.mayPost(ROOM, key));
  assert.deepEqual(at(alice), seqs.map((s) => s >= 8));
  assert.deepEqual(at(bob), seqs.map((s) => s >= 13));
  assert.deepEqual(at(carol), seqs.map((s) => s === 12 || s === 13));
  assert.deepEqual(roster.rooms.get(ROOM)!.publisherLog.get(carol), [[12, true], [14, false]]);
  assert.equal(mayPostAt(roster, "no-such-room", alice, 16), false);
  // today's answer agrees with the history's at the head
  for (const key of [alice, bob, carol]) assert.equal(mayPostAt(roster, ROOM, key, 16), mayPost(roster, ROOM, key));
});

test("history: generation_at and room_generation at a head", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  const want = (s: number): number => (s >= 15 ? 0 : s >= 6 ? 2 : s >= 4 ? 1 : 0);
  assert.deepEqual(seqs.map((s) => generationAt(roster, s)), seqs.map(want));
  assert.deepEqual(seqs.map((s) => rosterAt(roster, s)!.roomGeneration(ROOM)), seqs.map(want));
  // the room keys committed at 9..11 are the generations that existed then
  for (const s of [9, 10, 11]) {
    const body = chain[s]!.body;
    assert.ok(body.type === "room_key" && body.generation <= roomGenerationAt(roster, ROOM, s));
  }
  // and the history agrees with each prefix's live generation
  for (const s of seqs) {
    const prefix = await rosterFromRecords(vectors.space_id, chain.slice(0, s + 1));
    assert.equal(generationAt(roster, s), prefix.generation, `seq ${s}`);
    assert.equal(epochAt(roster, s), prefix.epoch, `seq ${s}`);
    for (const key of [alice, bob, carol]) assert.equal(mayPostAt(roster, ROOM, key, s), mayPost(prefix, ROOM, key));
  }
});

test("history: member_during and former profiles", async () => {
  const roster = await rosterFromRecords(vectors.space_id, chain);
  assert.equal(memberDuring(roster, alice, 0), true);
  assert.equal(memberDuring(roster, alice, 1), true);
  assert.equal(memberDuring(roster, bob, 1), true);
  assert.equal(memberDuring(roster, carol, 0), true);
  assert.equal(memberDuring(roster, carol, 1), false); // removed at 14, before the rekey at 15
  assert.equal(memberDuring(roster, alice, 2), false);
  assert.equal(memberDuring(roster, "00".repeat(32), 0), false);
  // before the rekey carol was still within epoch 0's open span
  const before = await rosterFromRecords(vectors.space_id, chain.slice(0, 14));
  assert.equal(memberDuring(before, carol, 0), true);
  assert.deepEqual(formerProfile(roster, carol), chain[7]!.body);
  assert.equal(formerProfile(roster, bob), undefined);
});
