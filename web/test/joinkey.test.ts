import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex } from "../src/protocol/bytes.ts";
import {
  INVITE_KEY_REFUSED, chainHoldsJoin, keyFitsChain, takeInviteKey, type PendingInviteKey,
} from "../src/protocol/joinkey.ts";
import { RECORD, type Record } from "../src/protocol/records.ts";
import { rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import { fromJson, loadVectors } from "./vectors.ts";

// The vector chain (records.json) and its space keys (space_keys.json): meta at 1 (epoch 0),
// bob joins at 4, carol at 6 (profile at 7, removed at 14), rekey to epoch 1 at 15.
const vectors = loadVectors("records");
const keys = loadVectors("space_keys");
const chain: Record[] = vectors.records.map((item: { record: unknown }) => fromJson(RECORD, item.record));
const spaceId: string = vectors.space_id;
const K = [0, 1, 2].map((e) => fromHex(keys.space_keys[String(e)]));
const [K0, K1, K2] = [K[0]!, K[1]!, K[2]!];
const carol: string = vectors.records[6].record.author;
const full = (): Promise<Roster> => rosterFromRecords(spaceId, chain);
const pending = (epoch: number, key: Uint8Array, joinSeq: number, space = spaceId): PendingInviteKey =>
  ({ sealed: { space_id: space, epoch, key }, join_seq: joinSeq });

test("§8.4 step 3: the chain holds the join at its seq; a flipped join or an unkept hash does not prove it", async () => {
  const roster = await full();
  assert.equal(await chainHoldsJoin(roster, chain[4]!), true);
  assert.equal(await chainHoldsJoin(roster, chain[6]!), true);
  assert.equal(await chainHoldsJoin(roster, { ...chain[4]!, created_at: chain[4]!.created_at + 1 }), false);
  assert.equal(await chainHoldsJoin(roster, { ...chain[4]!, seq: 17 }), false);
  assert.equal(await chainHoldsJoin({ ...roster, hashes: new Map() }, chain[4]!), null);
});

test("§8.4 step 4: the key of the join's epoch is taken", async () => {
  const roster = await full();
  assert.deepEqual(await takeInviteKey(roster, pending(0, K0, 4)), { accepted: true, epoch: 0, key: K0 });
  assert.deepEqual(await takeInviteKey(roster, pending(0, K0, 14)), { accepted: true, epoch: 0, key: K0 });
  // a join after the rekey at 15 takes epoch 1's key (it opens rekey[1].prev_box)
  assert.deepEqual(await takeInviteKey(roster, pending(1, K1, 15)), { accepted: true, epoch: 1, key: K1 });
  assert.deepEqual(await takeInviteKey(roster, pending(1, K1, 16)), { accepted: true, epoch: 1, key: K1 });
  // on the chain cut right after bob's join too
  const early = await rosterFromRecords(spaceId, chain.slice(0, 5));
  assert.deepEqual(await takeInviteKey(early, pending(0, K0, 4)), { accepted: true, epoch: 0, key: K0 });
});

test("§8.4 step 4: refusals (epoch ≠ epoch_at(join_seq), a key that opens nothing, a join past the head)", async () => {
  const roster = await full();
  const refused = { accepted: false, reason: INVITE_KEY_REFUSED };
  // a seal kept from before the removal: epoch 0's key for a join in epoch 1
  assert.deepEqual(await takeInviteKey(roster, pending(0, K0, 16)), refused);
  // a later epoch's key for a join made in epoch 0
  assert.deepEqual(await takeInviteKey(roster, pending(1, K1, 4)), refused);
  // the right epoch but a key of another epoch, a flipped key, an epoch the chain lacks
  assert.deepEqual(await takeInviteKey(roster, pending(0, K1, 4)), refused);
  assert.deepEqual(await takeInviteKey(roster, pending(1, K0, 16)), refused);
  const flipped = K0.slice();
  flipped[0]! ^= 1;
  assert.deepEqual(await takeInviteKey(roster, pending(0, flipped, 4)), refused);
  assert.deepEqual(await takeInviteKey(roster, pending(2, K2, 16)), refused);
  // the join beyond the verified head, before the genesis, or of another space
  assert.deepEqual(await takeInviteKey(roster, pending(1, K1, 17)), refused);
  assert.deepEqual(await takeInviteKey(roster, pending(0, K0, -1)), refused);
  assert.deepEqual(await takeInviteKey(roster, pending(0, K0, 4, "another")), refused);
});

test("key_fits_chain: epoch 0 by the meta, else by an epoch-0 profile (a departed member's last counts)", async () => {
  const roster = await full();
  assert.equal(await keyFitsChain(roster, 0, K0), true);
  assert.equal(await keyFitsChain(roster, 0, K1), false);
  assert.equal(await keyFitsChain(roster, 1, K1), true);
  assert.equal(await keyFitsChain(roster, 2, K2), false); // no rekey[2] on this chain
  const noMeta = { ...roster, meta: null };
  assert.equal(await keyFitsChain(noMeta, 0, K0), true); // alice's profile (seq 2)
  const onlyCarol = { ...noMeta, profiles: new Map([[carol, roster.profiles.get(carol)!]]) };
  assert.equal(await keyFitsChain(onlyCarol, 0, K0), true); // carol's last profile (seq 7), carol departed
  assert.equal(await keyFitsChain({ ...noMeta, profiles: new Map() }, 0, K0), false);
  // a meta of a later epoch does not count for epoch 0: the profiles decide
  const laterMeta = { ...roster, meta: { ...roster.meta!, epoch: 1 } };
  assert.equal(await keyFitsChain(laterMeta, 0, K0), true);
  assert.equal(await keyFitsChain({ ...laterMeta, profiles: new Map() }, 0, K0), false);
  // nothing to open yet right after the genesis
  assert.equal(await keyFitsChain(await rosterFromRecords(spaceId, chain.slice(0, 1)), 0, K0), false);
});
