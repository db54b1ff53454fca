/**
 * The SFrame worker's frame logic (src/media/frames.ts) against the shared vectors:
 * sframe.json (protected VP8 keyframe, VP8 delta, Opus frames) and sfu_rtp.json (what the SFU
 * forwards, with the CSRC a receiver takes as the frame's source).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { ratchetSenderKey } from "../src/protocol/calls.ts";
import { decodeHeader } from "../src/protocol/sframe.ts";
import {
  FrameQueue, HOLD_MAX_FRAMES, HOLD_MS, KeyIdExhausted, MediaKeyError, MediaReceivers, MediaSender, OVERLAP_MS, SUPERSEDED_MAX_MS, SlotPicture, ratchetKey,
  REPLAY_WINDOW, ReplayWindow, countDrop, newCounters,
} from "../src/media/frames.ts";
import { type Json, flip, vectors } from "./kat.ts";

const sf = vectors("sframe.json");
const rtp = vectors("sfu_rtp.json");
const base = fromHex(sf.key.base_key);
const clearOf = (codec: string, frame: Uint8Array): number => (codec === "opus" ? 1 : ((frame[0] ?? 0) & 1) === 0 ? 10 : 3);

test("a receiver opens the vector frames (VP8 keyframe, delta, Opus) of its source only", async () => {
  const r = new MediaReceivers();
  assert.equal(await r.setKey(sf.key.index, sf.key.epoch, base, 0), sf.key.kid);
  for (const f of sf.frames as Json[]) {
    const got = await r.open(sf.key.index, f.codec, fromHex(f.protected), 1);
    assert.ok(got.ok, f.name);
    assert.equal(toHex(got.frame), f.frame);
    // the same frame again: a replay, dropped
    const again = await r.open(sf.key.index, f.codec, fromHex(f.protected), 1);
    assert.deepEqual(again.ok ? "opened" : again.drop, "replay");
    // another source (bound publisher or CSRC): refused before any key is touched
    for (const source of [sf.key.index + 1, null]) {
      const other = await r.open(source, f.codec, fromHex(f.protected), 1);
      assert.deepEqual(other.ok ? "opened" : other.drop, "foreign-kid");
    }
  }
});

test("flipped bits and wrong keys are failures, never frames", async () => {
  const r = new MediaReceivers();
  await r.setKey(sf.key.index, sf.key.epoch, new Uint8Array(32).fill(7), 0); // the wrong key
  const good = new MediaReceivers();
  for (const f of sf.frames as Json[]) {
    const p = fromHex(f.protected);
    const got = await r.open(sf.key.index, f.codec, p, 1);
    assert.deepEqual(got.ok ? "opened" : got.drop, "failure");
    await good.setKey(sf.key.index, sf.key.epoch, base, 0);
    for (const at of [0, clearOf(f.codec, p) + 7, p.length - 1]) {
      const bad = await good.open(sf.key.index, f.codec, flip(p, at), 1);
      assert.equal(bad.ok, false, `${f.name} flipped at ${at}`);
    }
  }
});

test("the sender protects with the clear codec bytes, one counter for all its tracks, and no key means no frame", async () => {
  const s = new MediaSender();
  assert.equal(await s.protect("vp8", new Uint8Array([0x50, 1, 2])), null); // no key: dropped, never in clear
  assert.equal(await s.setKey(sf.key.index, sf.key.epoch, base), sf.key.kid);
  const r = new MediaReceivers();
  await r.setKey(sf.key.index, sf.key.epoch, base, 0);
  const frames = [...(sf.frames as Json[]), ...(sf.frames as Json[])];
  for (const [ctr, f] of frames.entries()) {
    const frame = fromHex(f.frame);
    const p = await s.protect(f.codec, frame);
    assert.ok(p !== null);
    const clear = clearOf(f.codec, frame);
    assert.equal(toHex(p.subarray(0, clear)), toHex(frame.subarray(0, clear)), "codec header bytes in clear");
    assert.deepEqual(decodeHeader(p.subarray(clear)), { kid: sf.key.kid, ctr, length: decodeHeader(p.subarray(clear)).length });
    const got = await r.open(sf.key.index, f.codec, p, 1);
    assert.ok(got.ok && toHex(got.frame) === f.frame);
  }
});

test("sender key ids: epochs forward only, never past MAX_EPOCH, one key per key id, counters never reused", async () => {
  const s = new MediaSender();
  await assert.rejects(s.setKey(1, 65536, base), KeyIdExhausted);
  await assert.rejects(s.setKey(1, -1, base), KeyIdExhausted);
  await assert.rejects(s.setKey(1, 0, new Uint8Array(16)), MediaKeyError);
  await s.setKey(1, 3, base);
  const first = await s.protect("opus", new Uint8Array([0x78, 1]));
  await assert.rejects(s.setKey(1, 2, base), MediaKeyError); // backwards
  await s.setKey(1, 4, new Uint8Array(32).fill(1));
  await assert.rejects(s.setKey(1, 3, new Uint8Array(32).fill(2)), MediaKeyError);
  const again = new MediaSender();
  await again.setKey(1, 3, base);
  await again.protect("opus", new Uint8Array([0x78, 1]));
  await assert.rejects(again.setKey(1, 3, new Uint8Array(32).fill(9)), KeyIdExhausted); // same kid, another key
  assert.ok(first !== null && decodeHeader(first.subarray(1)).ctr === 0);
});

test("make-before-break: a superseded key decrypts until OVERLAP_MS after its newer one does (SUPERSEDED_MAX_MS at most); a ratchet chain stays", async () => {
  const old = new Uint8Array(32).fill(1);
  const fresh = new Uint8Array(32).fill(2);
  const s0 = new MediaSender();
  await s0.setKey(4, 0, old);
  const s1 = new MediaSender();
  await s1.setKey(4, 1, fresh);
  const r = new MediaReceivers();
  await r.setKey(4, 0, old, 0);
  const frameOld = await s0.protect("opus", new Uint8Array([0x78, 9, 9]));
  const frameOld2 = await s0.protect("opus", new Uint8Array([0x78, 9, 8]));
  const frameNew = await s1.protect("opus", new Uint8Array([0x78, 7, 7]));
  assert.ok(frameOld && frameOld2 && frameNew);
  assert.deepEqual(await r.open(4, "opus", frameNew, 10).then((o) => (o.ok ? "ok" : o.drop)), "no-key");
  await r.setKey(4, 1, fresh, 1000); // a fresh key (a leave): the old one is superseded
  assert.deepEqual(r.kids(1000), [4 << 16, (4 << 16) | 1]);
  assert.ok((await r.open(4, "opus", frameOld, 1500)).ok, "the previous key while nothing newer came");
  assert.ok((await r.open(4, "opus", frameNew, 1500)).ok); // the newer key in use: OVERLAP_MS left
  const late = await r.open(4, "opus", frameOld2, 1500 + OVERLAP_MS);
  assert.deepEqual(late.ok ? "ok" : late.drop, "no-key");
  assert.deepEqual(r.kids(1500 + OVERLAP_MS), [(4 << 16) | 1]);
  // a leave elsewhere: the current key is superseded, SUPERSEDED_MAX_MS at most
  r.supersede(4, 5000);
  assert.deepEqual(r.kids(5000 + SUPERSEDED_MAX_MS - 1), [(4 << 16) | 1]);
  assert.deepEqual(r.kids(5000 + SUPERSEDED_MAX_MS), []);
  // the publisher itself leaves: everything goes after the overlap
  await r.setKey(4, 2, new Uint8Array(32).fill(3), 11000);
  r.remove(4, 11000);
  assert.deepEqual(r.kids(11000 + OVERLAP_MS), []);
  // a late, older key only comes in as a superseded key
  const q = new MediaReceivers();
  await q.setKey(5, 7, fresh, 0);
  await q.setKey(5, 6, old, 0);
  assert.deepEqual(q.kids(SUPERSEDED_MAX_MS - 1), [(5 << 16) | 6, (5 << 16) | 7]);
  assert.deepEqual(q.kids(SUPERSEDED_MAX_MS), [(5 << 16) | 7]);
  // a join ratchets: the sender's earlier epochs stay (it may still send under them)
  const c = new MediaReceivers();
  const k1 = await ratchetKey(old);
  assert.deepEqual(k1, (await ratchetSenderKey({ epoch: 0, key: old })).key); // §14.3, as calls.ts
  await c.setKey(3, 0, old, 0);
  await c.setKey(3, 1, k1, 10);
  await c.setKey(3, 2, await ratchetKey(k1), 20);
  assert.deepEqual(c.kids(60_000), [3 << 16, (3 << 16) | 1, (3 << 16) | 2]);
  c.supersede(3, 60_000); // until a leave: then the whole chain goes
  assert.deepEqual(c.kids(60_000 + SUPERSEDED_MAX_MS), []);
  // one key id, one key; one's own index is never a receiving context
  await assert.rejects(q.setKey(5, 7, old, 0), MediaKeyError);
  q.self = 6;
  await assert.rejects(q.setKey(6, 0, old, 0), MediaKeyError);
  assert.deepEqual(await q.open(6, "opus", frameNew, 1).then((o) => (o.ok ? "ok" : o.drop)), "foreign-kid");
});

test("replay window of 1,024 per key id", () => {
  const w = new ReplayWindow();
  assert.ok(w.accept(5));
  assert.ok(!w.accept(5));
  assert.ok(w.accept(3));
  assert.ok(w.accept(5 + REPLAY_WINDOW - 1));
  assert.ok(!w.accept(5 + REPLAY_WINDOW - 1 - REPLAY_WINDOW)); // out of the window now
  assert.ok(w.accept(6));
  assert.ok(w.accept(2 ** 40));
  assert.ok(!w.accept(6));
  assert.ok(w.accept(2 ** 40 - 1));
});

/** The payload of an RTP packet (RFC 3550) and its CSRCs. */
function parseRtp(p: Uint8Array): { csrcs: number[]; payload: Uint8Array } {
  const cc = (p[0] ?? 0) & 0x0f;
  const view = new DataView(p.buffer, p.byteOffset, p.byteLength);
  const csrcs = Array.from({ length: cc }, (_, i) => view.getUint32(12 + 4 * i));
  let at = 12 + 4 * cc;
  if ((p[0] ?? 0) & 0x10) at += 4 + 4 * view.getUint16(at + 2);
  let end = p.length;
  if ((p[0] ?? 0) & 0x20) end -= p[p.length - 1] ?? 0;
  return { csrcs, payload: p.subarray(at, end) };
}

/** Strips the RFC 7741 descriptor: the VP8 frame part of one packet and whether it starts a frame. */
function vp8Part(payload: Uint8Array): { start: boolean; part: Uint8Array } {
  const b0 = payload[0] ?? 0;
  let at = 1;
  if (b0 & 0x80) {
    const x = payload[at++] ?? 0;
    if (x & 0x80) at += (payload[at] ?? 0) & 0x80 ? 2 : 1;
    if (x & 0x40) at += 1;
    if (x & 0x30) at += 1;
  }
  return { start: (b0 & 0x17) === 0x10, part: payload.subarray(at) };
}

test("what the SFU forwards opens under the CSRC's context; a forged key id on that slot does not", async () => {
  // the vectors' publisher key (tests/vectors_gen.py: fixed("media-key/2"))
  const pubKey = new Uint8Array(createHash("sha256").update("salon-vector/media-key/2").digest());
  const r = new MediaReceivers();
  r.self = rtp.subscriber_index;
  await r.setKey(rtp.publisher_index, 5, pubKey, 0);
  await r.setKey(3, 0, new Uint8Array(32).fill(3), 0); // another publisher, known to the receiver
  const c = newCounters("receive");
  for (const item of rtp.receiver as Json[]) {
    const got = await r.open(item.slot_source, item.codec, fromHex(item.protected), 1);
    assert.equal(got.ok, item.accepted, item.frame);
    if (!got.ok) {
      assert.equal(got.drop, "foreign-kid");
      countDrop(c, got.drop);
    }
  }
  assert.equal(c.droppedForeignKid, 1);
  assert.equal(c.failures, 0, "refused frames are not the named sender's failures");
  // reassemble the forwarded packets as a receiver does: the frame's source is its one CSRC
  // (the vectors set the RTP marker on every packet, so a frame ends where the next starts);
  // a fresh receiver: the same frames were just opened above and would be replays
  const r2 = new MediaReceivers();
  await r2.setKey(rtp.publisher_index, 5, pubKey, 0);
  let frame: Uint8Array[] = [];
  let sources: number[][] = [];
  let opened = 0;
  const flush = async (): Promise<void> => {
    if (frame.length === 0) return;
    const all = sources.flat();
    const source = sources.every((s) => s.length === 1 && s[0] === all[0]) ? (all[0] ?? null) : null;
    const data = new Uint8Array(frame.reduce((n, f) => n + f.length, 0));
    frame.reduce((at, f) => (data.set(f, at), at + f.length), 0);
    const got = await r2.open(source, "vp8", data, 1);
    assert.ok(got.ok, `frame of ${frame.length} packets`);
    opened++;
    frame = [];
    sources = [];
  };
  for (const pkt of rtp.packets as Json[]) {
    for (const fwd of pkt.forwarded as string[]) {
      const { csrcs, payload } = parseRtp(fromHex(fwd));
      if (pkt.kind === "audio") {
        const got = await r2.open(csrcs.length === 1 ? (csrcs[0] ?? null) : null, "opus", payload, 1);
        assert.ok(got.ok);
        opened++;
        continue;
      }
      const { start, part } = vp8Part(payload);
      if (start) await flush();
      frame.push(part);
      sources.push(csrcs);
    }
  }
  await flush();
  assert.equal(opened, 4); // the keyframe (two packets), two delta frames, the Opus frame
});

test("frames wait up to 1 s for a key on its way, in order; then they are dropped", async () => {
  const k0 = new Uint8Array(32).fill(1);
  const k1 = new Uint8Array(32).fill(2);
  const s = new MediaSender();
  await s.setKey(4, 0, k0);
  const early = await s.protect("opus", new Uint8Array([0x78, 1]));
  await s.setKey(4, 1, k1);
  const a = await s.protect("opus", new Uint8Array([0x78, 2]));
  const b = await s.protect("opus", new Uint8Array([0x78, 3]));
  assert.ok(early && a && b);
  const r = new MediaReceivers();
  // no key yet for an expected publisher: its first frames may wait
  r.expect(4);
  const first = await r.open(4, "opus", early, 0);
  assert.ok(!first.ok && first.drop === "no-key" && first.hold === true);
  await r.setKey(4, 0, k0, 0);
  // a later epoch than the newest installed: may wait; an unknown publisher: refused at once
  const later = await r.open(4, "opus", a, 0);
  assert.ok(!later.ok && later.hold === true);
  const unknown = await r.open(5, "opus", a, 0);
  assert.ok(!unknown.ok && unknown.drop === "foreign-kid");

  const emitted: string[] = [];
  const dropped: string[] = [];
  const q = new FrameQueue<Uint8Array>(
    (f) => r.open(4, "opus", f, 0),
    (_f, o) => emitted.push(toHex(o.frame)),
    (_f, o) => dropped.push(o.drop),
  );
  await q.push(a, 0);
  await q.push(b, 10);
  assert.deepEqual([q.waiting, q.waited, emitted.length], [2, 1, 0]);
  await r.setKey(4, 1, k1, 300);
  await q.retry(300);
  assert.deepEqual(emitted, ["7802", "7803"], "opened in order once the key came");
  assert.equal(q.waiting, 0);

  // a key that never comes: the frame goes after HOLD_MS
  const s2 = new MediaSender();
  await s2.setKey(4, 2, new Uint8Array(32).fill(3));
  const c = await s2.protect("opus", new Uint8Array([0x78, 4]));
  assert.ok(c);
  await q.push(c, 1000);
  await q.retry(1000 + HOLD_MS - 1);
  assert.equal(q.waiting, 1);
  await q.retry(1000 + HOLD_MS);
  assert.deepEqual([q.waiting, dropped], [0, ["no-key"]]);
  // no more than HOLD_MAX_FRAMES wait
  for (let i = 0; i <= HOLD_MAX_FRAMES; i++) await q.push(c, 5000);
  assert.deepEqual([q.waiting, dropped.length], [HOLD_MAX_FRAMES, 2]);
  // a publisher that left: nothing waits for it
  r.remove(4, 6000);
  const gone = await r.open(4, "opus", c, 6000);
  assert.ok(!gone.ok && gone.hold === false);
});

test("redteam: a hostile SFU interleaving two publishers in one slot never puts one's frames on the other's picture", () => {
  const slot = new SlotPicture();
  const key = new Uint8Array([0x10, 1, 2]); // VP8 keyframe (frame[0] & 1 == 0)
  const delta = new Uint8Array([0x11, 1, 2]);
  const bob = 2 << 16;
  const mallory = 3 << 16;
  assert.equal(slot.admit(bob, delta), true); // the first picture: the decoder waits for its keyframe itself
  assert.equal(slot.admit(bob, key), true);
  assert.equal(slot.admit(bob, delta), true);
  assert.equal(slot.admit(mallory, delta), false, "Mallory's delta on Bob's picture");
  assert.equal(slot.admit(mallory, key), true); // a new picture: Mallory's
  assert.equal(slot.admit(bob, delta), false, "Bob's delta on Mallory's picture");
  assert.equal(slot.admit(mallory, delta), true);
  assert.equal(slot.admit(bob | 1, key), true); // Bob again, from his keyframe (any epoch)
  assert.equal(slot.of, 2);
});
