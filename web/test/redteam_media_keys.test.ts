/**
 * Red team: media keys of the page's SFU receivers (src/call/keys.ts, src/media/frames.ts)
 * against a hostile server that withholds a sender's fresh key after a leave (PROTOCOL.md
 * §14.3, §15.5). The removed member holds the sender's old key; nothing derived from it, and
 * not that key itself, may decrypt on this page past SUPERSEDED_MAX_MS after the leave.
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { toHex } from "../src/protocol/bytes.ts";
import { ratchetSenderKey } from "../src/protocol/calls.ts";
import { CHANGES_KEPT, CallKeys } from "../src/call/keys.ts";
import { SfuTopology } from "../src/call/sfu.ts";
import type { Peer, TopologyContext } from "../src/call/topology.ts";
import type { MediaKeys } from "../src/media/media_keys.ts";
import { FrameQueue, HOLD_MS, MediaReceivers, MediaSender, SUPERSEDED_MAX_MS } from "../src/media/frames.ts";

const member = (n: number): Uint8Array => new Uint8Array(32).fill(n);
const opened = (o: { ok: boolean; drop?: string }): string => (o.ok ? "opened" : (o.drop ?? ""));

test("redteam: joins after a leave whose fresh key the server withholds derive nothing from the key the leaver holds", async () => {
  const [me, sender, leaver, joiner1, joiner2] = [1, 2, 3, 4, 5].map(member) as [Uint8Array, Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  const keys = new CallKeys(me);
  keys.baseline(0);
  const old = { epoch: 0, key: new Uint8Array(32).fill(9) }; // the leaver holds it
  assert.ok(await keys.receive(toHex(sender), { ...old, atVersion: 0 }));
  await keys.membership(1, [], [toHex(leaver)]); // kicked: the sender's fresh key is withheld
  await keys.membership(2, [toHex(joiner1)], []);
  await keys.membership(3, [toHex(joiner2)], []);
  const derived1 = (await ratchetSenderKey(old)).key;
  const derived2 = (await ratchetSenderKey(await ratchetSenderKey(old))).key;
  for (const k of keys.usable(toHex(sender))) {
    assert.notDeepEqual(k.key, derived1, "a ratchet of the leaver's key is not the sender's key");
    assert.notDeepEqual(k.key, derived2, "a ratchet of the leaver's key is not the sender's key");
  }
  assert.equal(keys.currentOf(toHex(sender)), null);
  // the fresh key the sender sealed at the leave, released late: taken, ratcheted over both joins
  const fresh = { epoch: 1, key: new Uint8Array(32).fill(7) };
  assert.ok(await keys.receive(toHex(sender), { ...fresh, atVersion: 1 }));
  const expected = await ratchetSenderKey(await ratchetSenderKey(fresh));
  assert.deepEqual(keys.currentOf(toHex(sender)), expected);
  for (const k of keys.usable(toHex(sender))) {
    assert.notDeepEqual(k.key, derived1);
    assert.notDeepEqual(k.key, derived2);
  }
});

test("redteam: a superseded key posted again after it expired (the page re-posting usable keys) never decrypts again", async () => {
  const old = new Uint8Array(32).fill(1);
  const s = new MediaSender();
  await s.setKey(4, 0, old);
  const r = new MediaReceivers();
  await r.setKey(4, 0, old, 0);
  r.supersede(4, 1000); // a leave: the sender's fresh key is withheld by the server
  assert.deepEqual(r.kids(1000 + SUPERSEDED_MAX_MS), []);
  // a later change (a join) makes the page post the sender's usable keys again: the old one among them
  await r.setKey(4, 0, old, 60_000);
  const forged = await s.protect("opus", new Uint8Array([0x78, 1, 2, 3])); // the leaver, through a hostile SFU
  assert.ok(forged);
  assert.equal(opened(await r.open(4, "opus", forged, 60_001)), "no-key");
  assert.deepEqual(r.kids(60_001), []);
});

test("redteam: a key the page posts as superseded (sealed before a leave it saw) is never current, even as the sender's only key", async () => {
  const early = new Uint8Array(32).fill(5); // the leaver held it too
  const s = new MediaSender();
  await s.setKey(6, 3, early);
  const r = new MediaReceivers();
  r.expect(6);
  await r.setKey(6, 3, early, 0, true);
  const frame = await s.protect("opus", new Uint8Array([0x78, 4, 4]));
  const frame2 = await s.protect("opus", new Uint8Array([0x78, 4, 5]));
  assert.ok(frame && frame2);
  assert.equal(opened(await r.open(6, "opus", frame, 10)), "opened"); // what the sender sent meanwhile
  assert.equal(opened(await r.open(6, "opus", frame2, SUPERSEDED_MAX_MS)), "no-key");
  assert.deepEqual(r.kids(SUPERSEDED_MAX_MS), []);
});

test("redteam: a frame the receiving code cannot handle (it throws) costs that frame, never the track", async () => {
  const emitted: number[] = [];
  const dropped: string[] = [];
  const q = new FrameQueue<number>(
    async (f) => {
      if (f === 1) throw new RangeError("a frame crafted to break the parser");
      return { ok: true, kid: 2 << 16, frame: new Uint8Array([f]) };
    },
    (f) => {
      if (f === 3) throw new TypeError("the decoder side refused it");
      emitted.push(f);
    },
    (_f, o) => dropped.push(o.drop),
  );
  for (const f of [0, 1, 2, 3, 4]) await q.push(f, 0);
  assert.deepEqual(emitted, [0, 2, 4]);
  assert.deepEqual(dropped, ["malformed"]);
  assert.equal(q.waiting, 0);
});

test("redteam: a kick of someone this newcomer never connected to still retires, within SUPERSEDED_MAX_MS, the keys the kicked member holds", async () => {
  (globalThis as { RTCPeerConnection?: unknown }).RTCPeerConnection = class {
    constructor() {
      throw new Error("no WebRTC in this test");
    }
  };
  // The page's SFU topology with the real call keys and the worker's real receivers (no WebRTC).
  const receivers = new MediaReceivers();
  let now = 0;
  const worker = {
    setSendKey: async () => 0,
    stopSending: async () => {},
    setReceiveKey: (i: number, e: number, k: Uint8Array, superseded = false) => receivers.setKey(i, e, k, now, superseded),
    supersede: async (i: number) => receivers.supersede(i, now),
    removePublisher: async (i: number) => receivers.remove(i, now),
    attachSender: () => {},
    attachReceiver: () => {},
  };
  const [me, sender, kicked] = [1, 2, 3].map(member) as [Uint8Array, Uint8Array, Uint8Array];
  const keys = new CallKeys(me);
  keys.baseline(10);
  const links: string[] = [];
  const ctx: TopologyContext = {
    me, keys, signaller: { send: async () => {} }, media: { audio: null, camera: null, screen: null },
    sink: { onTrack: () => {}, onLink: (m, state, detail) => links.push(`${m.slice(0, 2)} ${state} ${detail ?? ""}`) },
    sfu: { myIndex: 1, sfuOffer: async () => { throw new Error("no SFU here"); } }, iceServers: [], relayOnly: false,
  };
  const topology = new SfuTopology(ctx, worker as unknown as MediaKeys);
  const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 20));
  const held = new Uint8Array(32).fill(8); // the sender's key, which the kicked member holds too
  assert.ok(await keys.receive(toHex(sender), { epoch: 1, key: held, atVersion: 10 }));
  const peer: Peer = { member: sender, memberHex: toHex(sender), index: 2, link: new Uint8Array(16), offerer: false, label: "sender" };
  await topology.setPeers(new Map([[toHex(sender), peer]]));
  await tick();
  assert.deepEqual(receivers.kids(0), [(2 << 16) | 1]);
  // the kicked member never sealed this newcomer a signal: it was never one of its live peers
  now = 1000;
  await keys.membership(11, [], [toHex(kicked)]); // the sender's fresh key is withheld
  await topology.setPeers(new Map([[toHex(sender), peer]]));
  await tick();
  const s = new MediaSender();
  await s.setKey(2, 1, held);
  const forged = await s.protect("opus", new Uint8Array([0x78, 6, 6])); // the kicked member, through a hostile SFU
  assert.ok(forged);
  assert.equal(opened(await receivers.open(2, "opus", forged, 1000 + SUPERSEDED_MAX_MS)), "no-key");
  await topology.close();
});

test("redteam: a key sealed before the changes the page keeps is refused (a leave may have superseded it)", async () => {
  const keys = new CallKeys(member(1));
  keys.baseline(0);
  const sender = toHex(member(2));
  await keys.membership(1, [], [toHex(member(3))]);
  for (let v = 2; v < CHANGES_KEPT + 3; v++) await keys.membership(v, [toHex(new Uint8Array(32).fill((v % 250) + 6))], []);
  assert.equal(await keys.receive(sender, { epoch: 0, key: new Uint8Array(32).fill(5), atVersion: 0 }), false);
  assert.deepEqual(keys.usable(sender), []);
  assert.ok(await keys.receive(sender, { epoch: 1001, key: new Uint8Array(32).fill(6), atVersion: CHANGES_KEPT + 2 }));
});

test("redteam: a leave or join in a call state no newer than the last still moves every key", async () => {
  const keys = new CallKeys(member(1));
  keys.baseline(0);
  const sender = toHex(member(2));
  const bobs = { epoch: 0, key: new Uint8Array(32).fill(2) };
  assert.ok(await keys.receive(sender, { ...bobs, atVersion: 0 }));
  await keys.membership(5, [toHex(member(4))], []);
  const ours = keys.own;
  await keys.membership(5, [], [toHex(member(3))]); // a kick shown at the same (or an older) version
  assert.equal(keys.own.epoch, ours.epoch + 1);
  assert.notDeepEqual(keys.own.key, ours.key);
  assert.equal(keys.currentOf(sender), null, "superseded: the leaver held it");
  const fresh = { epoch: 2, key: new Uint8Array(32).fill(4) };
  assert.ok(await keys.receive(sender, { ...fresh, atVersion: 5 }));
  const before = keys.own;
  await keys.membership(3, [toHex(member(5))], []); // a joiner shown in an older state
  assert.deepEqual(keys.own, await ratchetSenderKey(before));
  assert.deepEqual(keys.currentOf(sender), await ratchetSenderKey(fresh));
});

test("redteam: a publisher's frames under an epoch whose key never comes do not hold up another publisher's in the same slot", async () => {
  const r = new MediaReceivers();
  const bobKey = new Uint8Array(32).fill(2);
  const malloryKey = new Uint8Array(32).fill(3);
  await r.setKey(2, 0, bobKey, 0);
  await r.setKey(3, 0, malloryKey, 0);
  const bob = new MediaSender();
  await bob.setKey(2, 0, bobKey);
  const mallory = new MediaSender();
  await mallory.setKey(3, 5, new Uint8Array(32).fill(9)); // an epoch whose key she never sends
  const mallory0 = new MediaSender();
  await mallory0.setKey(3, 0, malloryKey);
  type F = { source: number; data: Uint8Array };
  const emitted: string[] = [];
  const q = new FrameQueue<F>(
    (f) => r.open(f.source, "opus", f.data, 0),
    (f, o) => emitted.push(`${f.source}:${toHex(o.frame)}`),
    () => {},
    (f) => f.source,
  );
  await q.push({ source: 3, data: (await mallory.protect("opus", new Uint8Array([0x78, 1])))! }, 0);
  await q.push({ source: 3, data: (await mallory0.protect("opus", new Uint8Array([0x78, 2])))! }, 1);
  await q.push({ source: 2, data: (await bob.protect("opus", new Uint8Array([0x78, 3])))! }, 2);
  assert.deepEqual(emitted, ["2:7803"], "Bob's frame at once");
  assert.equal(q.waiting, 2, "Mallory's frames wait, in order");
  await q.retry(HOLD_MS);
  assert.deepEqual(emitted, ["2:7803", "3:7802"]);
  assert.equal(q.waiting, 0);
});

test("redteam: copies of an old key message (a flood) are judged before any key is derived", async () => {
  const keys = new CallKeys(member(1));
  keys.baseline(0);
  for (let v = 1; v <= 500; v++) await keys.membership(v, [toHex(new Uint8Array(32).fill((v % 250) + 6))], []);
  const sender = toHex(member(2));
  const old = { epoch: 0, key: new Uint8Array(32).fill(7), atVersion: 0 };
  let start = performance.now();
  assert.ok(await keys.receive(sender, old)); // news: ratcheted over 500 joins
  const once = performance.now() - start;
  start = performance.now();
  for (let i = 0; i < 100; i++) assert.equal(await keys.receive(sender, old), false);
  const flood = performance.now() - start;
  // (before, each copy derived over every join again: 100 copies took ~30 times one derivation)
  assert.ok(flood < 5 * once, `100 copies took ${flood.toFixed(1)} ms, one derivation over the joins ${once.toFixed(1)} ms`);
});
