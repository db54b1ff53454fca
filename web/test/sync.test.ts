import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex } from "../src/protocol/bytes.ts";
import { EMPTY_HEAD, RECORD, type Head, type Record } from "../src/protocol/records.ts";
import { rosterFromRecords, type Roster } from "../src/protocol/roster.ts";
import {
  EMPTY_CHAIN, FAILS, REWROTE, WITHHELD, syncBase, syncChain, syncStep, type RecordsPage,
} from "../src/protocol/sync.ts";
import { fromJson, loadVectors } from "./vectors.ts";

const vectors = loadVectors("records");
const chain: Record[] = vectors.records.map((item: { record: unknown }) => fromJson(RECORD, item.record));
const spaceId: string = vectors.space_id;
const HEAD: Head = { seq: vectors.roster.head_seq, hash: fromHex(vectors.roster.head_hash) };
const hashOf = (seq: number): Uint8Array => fromHex(vectors.records[seq].record_hash);
const headAt = (seq: number): Head => ({ seq, hash: hashOf(seq) });
const cut = (seq: number): Promise<Roster> => rosterFromRecords(spaceId, chain.slice(0, seq + 1));
const page = (records: Record[], head: Head = HEAD): RecordsPage => ({ records, head_seq: head.seq, head_hash: head.hash });
const flipped = (bytes: Uint8Array): Uint8Array => {
  const out = bytes.slice();
  out[0]! ^= 1;
  return out;
};

/** A server that pages its chain `size` records at a time, reporting `head`. */
function server(records: Record[], size: number, head: Head = HEAD): { fetch: (after: number) => Promise<RecordsPage>; calls: number[] } {
  const calls: number[] = [];
  return {
    calls,
    fetch: async (after) => {
      calls.push(after);
      return page(records.filter((r) => r.seq > after).slice(0, size), head);
    },
  };
}

test("§6.6: from the genesis, one page or many, the chain verifies to the vector head", async () => {
  const whole = await syncStep(spaceId, null, EMPTY_HEAD, page(chain));
  assert.equal(whole.outcome, "done");
  assert.equal(whole.outcome === "done" && whole.roster.head.seq, 16);
  const s = server(chain, 5);
  const paged = await syncChain(spaceId, null, EMPTY_HEAD, s.fetch);
  assert.equal(paged.outcome, "done");
  assert.deepEqual(paged.outcome === "done" && paged.roster.head, HEAD);
  assert.deepEqual(s.calls, [-1, 4, 9, 14]);
});

test("§6.6: a cached roster cut anywhere continues to the same head", async () => {
  for (const at of [0, 3, 8, 14, 15]) {
    const base = await cut(at);
    assert.equal(syncBase(spaceId, base, headAt(at)), base);
    const s = server(chain, 4);
    const step = await syncChain(spaceId, base, headAt(at), s.fetch);
    assert.equal(step.outcome, "done", `cut at ${at}`);
    assert.deepEqual(step.outcome === "done" && step.roster.head, HEAD);
    assert.equal(s.calls[0], at);
  }
  // a page running past the head the server announced is accepted
  const past = await syncStep(spaceId, await cut(10), headAt(10), page(chain.slice(11), headAt(12)));
  assert.equal(past.outcome, "done");
});

test("§6.6: the cached roster is used only at the remembered head of this space", async () => {
  const base = await cut(8);
  assert.equal(syncBase(spaceId, base, headAt(7)), null);
  assert.equal(syncBase(spaceId, base, { seq: 8, hash: flipped(hashOf(8)) }), null);
  assert.equal(syncBase("another", base, headAt(8)), null);
  assert.equal(syncBase(spaceId, null, headAt(8)), null);
});

test("§6.6 rule 3: an empty page at our head is done; ahead is withheld; behind or another hash is a rewrite", async () => {
  const base = await cut(16);
  const mine = headAt(16);
  assert.equal((await syncStep(spaceId, base, mine, page([], HEAD))).outcome, "done");
  assert.deepEqual(await syncStep(spaceId, base, mine, page([], { seq: 17, hash: HEAD.hash })), { outcome: "withheld", reason: WITHHELD });
  assert.deepEqual(await syncStep(spaceId, base, mine, page([], headAt(15))), { outcome: "rewrote", reason: REWROTE });
  assert.deepEqual(await syncStep(spaceId, base, mine, page([], { seq: 16, hash: flipped(HEAD.hash) })), { outcome: "rewrote", reason: REWROTE });
  // a cached roster behind what the keystore remembers: the server's head behind ours is rule 2
  const older = await cut(12);
  assert.deepEqual(await syncStep(spaceId, older, mine, page([], headAt(12))), { outcome: "rewrote", reason: REWROTE });
});

test("§6.6 rules 1, 2, 4: a continuation that does not link, a dropped tail, a head hash that differs", async () => {
  const base = await cut(10);
  const mine = headAt(10);
  // the first record's prev flipped (the server's history forked before our head)
  const forked = [{ ...chain[11]!, prev: flipped(chain[11]!.prev) }, ...chain.slice(12)];
  assert.deepEqual(await syncStep(spaceId, base, mine, page(forked)), { outcome: "rewrote", reason: REWROTE });
  // a continuation that skips a record
  assert.deepEqual(await syncStep(spaceId, base, mine, page(chain.slice(12))), { outcome: "rewrote", reason: REWROTE });
  // reaching the server's head whose hash is not the one it announced (rule 4)
  const wrongHead = { seq: 16, hash: flipped(HEAD.hash) };
  assert.deepEqual(await syncStep(spaceId, base, mine, page(chain.slice(11), wrongHead)), { outcome: "rewrote", reason: REWROTE });
  // from the genesis (no usable cache) the remembered head must be met on the way
  assert.deepEqual(
    await syncStep(spaceId, null, { seq: 10, hash: flipped(hashOf(10)) }, page(chain)),
    { outcome: "rewrote", reason: REWROTE },
  );
  // the server claims a head behind the one we remember, sending what it has (rule 2)
  assert.deepEqual(await syncStep(spaceId, null, mine, page(chain.slice(0, 9), headAt(8))), { outcome: "rewrote", reason: REWROTE });
  // and the loop stops on the refusal
  const s = server(forked, 3);
  assert.equal((await syncChain(spaceId, base, mine, s.fetch)).outcome, "rewrote");
});

test("§6.6: any other rule failure fails verification; nothing at all is an empty chain", async () => {
  const base = await cut(10);
  // a record inside the page (not its first) that does not link
  const broken = [chain[11]!, chain[13]!];
  const step = await syncStep(spaceId, base, headAt(10), page(broken));
  assert.equal(step.outcome, "invalid");
  assert.ok(step.outcome === "invalid" && step.reason.startsWith(FAILS));
  // a first record whose signature is flipped links but does not verify
  const badSig = { ...chain[11]!, sig: flipped(chain[11]!.sig) };
  assert.equal((await syncStep(spaceId, base, headAt(10), page([badSig]))).outcome, "invalid");
  // a genesis of another space
  assert.equal((await syncStep("aaaaaaaaaaaaaaaaaaaaaaaa", null, EMPTY_HEAD, page(chain))).outcome, "invalid");
  assert.deepEqual(await syncStep(spaceId, null, EMPTY_HEAD, page([], EMPTY_HEAD)), { outcome: "invalid", reason: EMPTY_CHAIN });
});
