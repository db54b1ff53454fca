// web/src/call/keys.ts (mirrors the media-key tests of tests/test_call_core.py).
import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { ratchetSenderKey, keyCommitment } from "../src/protocol/calls.ts";
import { ed25519PublicKey, randomBytes } from "../src/protocol/crypto.ts";
import { CallKeys } from "../src/call/keys.ts";
import { vectors } from "./kat.ts";

const v = vectors("calls.json");

test("the verification code over CallKeys equals Python's vector", async () => {
  const vc = v.verification_code;
  const [alice, bob] = [vc.pairs[0][0] as string, vc.pairs[1][0] as string];
  const keys = new CallKeys(fromHex(alice));
  keys.own = { epoch: vc.alice_key.epoch, key: fromHex(vc.alice_key.key) };
  assert.equal(toHex(await keyCommitment(keys.own.key)), vc.pairs[0][1]);
  keys.baseline(0);
  const mk = v.media_keys.ratcheted;
  assert.equal(await keys.code([bob]), null); // bob's key still on the wire
  assert.ok(await keys.receive(bob, { epoch: mk.epoch, key: fromHex(mk.key), atVersion: 0 }));
  assert.equal(await keys.code([bob, alice]), vc.code);
  // and bob computes the same, from his side
  const bobs = new CallKeys(fromHex(bob));
  bobs.own = { epoch: mk.epoch, key: fromHex(mk.key) };
  bobs.baseline(0);
  assert.ok(await bobs.receive(alice, keys.message()));
  assert.equal(await bobs.code([alice]), vc.code);
});

class Sim {
  keys = new Map<string, CallKeys>();
  version = 0;
  wire: [string, string, ReturnType<CallKeys["message"]>][] = [];
  async admit(): Promise<string> {
    this.version++;
    const member = toHex(await ed25519PublicKey(randomBytes(32)));
    for (const [other, k] of this.keys) {
      await k.membership(this.version, [member], []);
      this.wire.push([other, member, k.message()]);
    }
    const mine = new CallKeys(fromHex(member));
    mine.baseline(this.version);
    this.keys.set(member, mine);
    for (const other of this.keys.keys()) if (other !== member) this.wire.push([member, other, mine.message()]);
    return member;
  }
  async leave(member: string): Promise<CallKeys> {
    this.version++;
    const gone = this.keys.get(member)!;
    this.keys.delete(member);
    for (const [other, k] of this.keys) {
      await k.membership(this.version, [], [member]);
      for (const to of this.keys.keys()) if (to !== other) this.wire.push([other, to, k.message()]);
    }
    this.wire = this.wire.filter((w) => w[1] !== member);
    return gone;
  }
  async deliver(): Promise<void> {
    for (const [sender, to, message] of this.wire) {
      if (this.keys.has(to) && this.keys.has(sender)) await this.keys.get(to)!.receive(sender, message);
    }
    this.wire = [];
  }
  async codes(): Promise<Set<string | null>> {
    const everyone = [...this.keys.keys()];
    return new Set(await Promise.all([...this.keys.values()].map((k) => k.code(everyone))));
  }
}

test("codes agree through joins and leaves; a leave rekeys, a join ratchets", async () => {
  const sim = new Sim();
  await sim.admit();
  const bob = await sim.admit();
  assert.ok((await sim.codes()).has(null));
  await sim.deliver();
  const two = await sim.codes();
  assert.equal(two.size, 1);
  assert.ok(!two.has(null));
  const carol = await sim.admit();
  await sim.deliver();
  const three = await sim.codes();
  assert.equal(three.size, 1);
  assert.notDeepEqual(three, two);
  const oldBob = sim.keys.get(bob)!.own;
  await sim.leave(carol);
  assert.deepEqual(await sim.codes(), new Set([null]));
  await sim.deliver();
  const after = await sim.codes();
  assert.equal(after.size, 1);
  assert.ok(!after.has(null));
  const [code] = after;
  assert.ok(!three.has(code!) && !two.has(code!));
  const nowBob = sim.keys.get(bob)!.own;
  assert.notEqual(toHex(nowBob.key), toHex((await ratchetSenderKey(oldBob)).key)); // rekeyed, not ratcheted
});

test("a late key is ratcheted; a key from before a leave waits (kept superseded, in grace)", async () => {
  const a = "aa".repeat(32);
  const b = "bb".repeat(32);
  const c = "cc".repeat(32);
  const alice = new CallKeys(fromHex(a));
  const bob = new CallKeys(fromHex(b));
  alice.baseline(1);
  bob.baseline(1);
  let sent = bob.message();
  assert.equal(await alice.membership(2, [c], []), "join");
  await bob.membership(2, [c], []);
  assert.ok(await alice.receive(b, sent));
  assert.deepEqual(alice.currentOf(b), bob.own);
  assert.ok(!(await alice.receive(b, sent)));
  sent = bob.message();
  const changed: string[] = [];
  alice.onChange((m) => changed.push(m));
  assert.equal(await alice.membership(3, [], [c]), "leave");
  await bob.membership(3, [], [c]);
  assert.ok(changed.includes(a) && changed.includes(b)); // ours moved, bob's went stale
  assert.equal(alice.currentOf(b), null);
  assert.ok(!(await alice.receive(b, sent))); // from before the leave: not good enough
  assert.equal(alice.usable(b).length, 1); // …but kept to decrypt what bob sent meanwhile
  assert.ok(await alice.receive(b, bob.message()));
  assert.deepEqual(alice.currentOf(b), bob.own);
  assert.notEqual(alice.keyFor(b, bob.own.epoch - 1), null);
  assert.deepEqual(alice.usable(b).map((k) => k.epoch), [bob.own.epoch, bob.own.epoch - 1]);
  assert.deepEqual(alice.usable(a).map((k) => k.epoch), [alice.own.epoch, alice.own.epoch - 1]);
});

test("a joiner cannot derive earlier keys; a removed participant holds nothing new", async () => {
  const sim = new Sim();
  const alice = await sim.admit();
  await sim.admit();
  await sim.deliver();
  const before = sim.keys.get(alice)!.own;
  const carol = await sim.admit();
  await sim.deliver();
  const held = sim.keys.get(carol)!.currentOf(alice);
  assert.equal(held!.epoch, before.epoch + 1);
  assert.equal(sim.keys.get(carol)!.keyFor(alice, before.epoch), null);
  const gone = await sim.leave(carol);
  await sim.deliver();
  for (const [member, k] of sim.keys) {
    const kept = gone.currentOf(member)!;
    assert.notEqual(toHex(kept.key), toHex(k.own.key));
    assert.notEqual(toHex((await ratchetSenderKey(kept)).key), toHex(k.own.key));
  }
});

test("key ids never wrap: our key stops at max epoch (exhausted); others' beyond are refused", async () => {
  const k = new CallKeys(randomBytes(32), undefined, 2);
  k.baseline(0);
  await k.membership(1, ["11".repeat(32)], []);
  await k.membership(2, ["22".repeat(32)], []);
  assert.equal(k.own.epoch, 2);
  assert.equal(await k.membership(3, ["33".repeat(32)], []), null);
  assert.ok(k.exhausted);
  assert.ok(!(await k.receive("44".repeat(32), { epoch: 3, key: randomBytes(32), atVersion: 3 })));
  assert.ok(!(await k.receive("44".repeat(32), { epoch: 1, key: randomBytes(16), atVersion: 3 })));
});
