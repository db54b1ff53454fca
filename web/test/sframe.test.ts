import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { fromHex, toHex, concat } from "../src/protocol/bytes.ts";
import {
  CIPHER_SUITE, KeyIdExhausted, MAX_EPOCH, SFRAME_KEY_LABEL, SFRAME_SALT_LABEL, SFrameError, decodeHeader, decryptFrame,
  deriveKeySalt, encodeHeader, encryptFrame, kidEpoch, kidIndex, makeNonce, mediaKid, protectFrame, sframeKey,
  unprotectFrame,
} from "../src/protocol/sframe.ts";
import { type Json, flip, vectors } from "./kat.ts";

const v = vectors("sframe.json");
const rfc = JSON.parse(readFileSync(join(process.cwd(), "..", "tests", "data", "sframe-rfc9605.json"), "utf8"));

test("key ids and the epoch limit", () => {
  assert.equal(v.cipher_suite, CIPHER_SUITE);
  assert.equal(v.max_epoch, MAX_EPOCH);
  for (const k of v.kids) {
    assert.equal(mediaKid(k.index, k.epoch), k.kid);
    assert.equal(kidIndex(k.kid), k.index);
    assert.equal(kidEpoch(k.kid), k.epoch);
  }
  for (const r of v.refused) assert.throws(() => mediaKid(r.index, r.epoch), KeyIdExhausted);
});

test("key schedule", async () => {
  const k = v.key;
  assert.equal(mediaKid(k.index, k.epoch), k.kid);
  const { key, salt } = await deriveKeySalt(fromHex(k.base_key), k.kid);
  assert.equal(toHex(key), k.sframe_key);
  assert.equal(toHex(salt), k.sframe_salt);
});

test("protected frames: reproduce, unprotect, refuse flipped bits and other keys", async () => {
  const k = await sframeKey(fromHex(v.key.base_key), v.key.kid);
  const other = await sframeKey(fromHex(v.key.base_key), v.key.kid + 1);
  const keys = (kid: number) => (kid === k.kid ? k : undefined);
  for (const f of v.frames as Json[]) {
    assert.equal(toHex(encodeHeader(v.key.kid, f.ctr)), f.sframe_header);
    assert.equal(toHex(makeNonce(k.salt, f.ctr)), f.nonce);
    const protectedFrame = await protectFrame(k, f.ctr, f.codec, fromHex(f.frame));
    assert.equal(toHex(protectedFrame), f.protected, f.name);
    const out = await unprotectFrame(f.codec, fromHex(f.protected), keys);
    assert.deepEqual([out.kid, out.ctr, toHex(out.frame)], [v.key.kid, f.ctr, f.frame]);
    const p = fromHex(f.protected);
    for (const at of [0, p.length - 20, p.length - 1]) await assert.rejects(unprotectFrame(f.codec, flip(p, at), keys), SFrameError);
    await assert.rejects(unprotectFrame(f.codec, p, () => other), SFrameError);
  }
});

test("short frames go in clear with an empty payload and come back", async () => {
  const k = await sframeKey(fromHex(v.key.base_key), v.key.kid);
  for (const [codec, frame] of [["vp8", "5015"], ["vp8", ""], ["opus", ""], ["vp8", "500102030405"]] as const) {
    const p = await protectFrame(k, 9, codec, fromHex(frame));
    const out = await unprotectFrame(codec, p, () => k);
    assert.equal(toHex(out.frame), frame);
  }
});

test("header encoding (RFC 9605 vectors) and non-minimal refusal", () => {
  for (const h of rfc.header as Json[]) {
    if (BigInt(h.kid) > BigInt(Number.MAX_SAFE_INTEGER) || BigInt(h.ctr) > BigInt(Number.MAX_SAFE_INTEGER)) {
      assert.throws(() => decodeHeader(fromHex(h.encoded)), /too large/); // beyond this implementation's 2^53
      continue;
    }
    assert.equal(toHex(encodeHeader(h.kid, h.ctr)), h.encoded);
    const d = decodeHeader(fromHex(h.encoded));
    assert.deepEqual([d.kid, d.ctr, d.length], [h.kid, h.ctr, h.encoded.length / 2]);
  }
  assert.throws(() => decodeHeader(fromHex("8805")), SFrameError); // KID 5 in a byte: non-minimal
  assert.throws(() => decodeHeader(fromHex("90000a")), SFrameError); // KID 10 in two bytes
  assert.throws(() => decodeHeader(fromHex("0900")), SFrameError); // truncated CTR
});

test("RFC 9605 suite 4 vector", async () => {
  const r = (rfc.sframe as Json[]).find((x) => x.cipher_suite === 4);
  const ctx = toHex(concat(fromHex("0000000000000123"), fromHex("0004")));
  assert.equal(r.kid, 0x123);
  assert.equal(toHex(SFRAME_KEY_LABEL) + ctx, r.sframe_key_label);
  assert.equal(toHex(SFRAME_SALT_LABEL) + ctx, r.sframe_salt_label);
  const { key, salt } = await deriveKeySalt(fromHex(r.base_key), r.kid);
  assert.equal(toHex(key), r.sframe_key);
  assert.equal(toHex(salt), r.sframe_salt);
  const k = await sframeKey(fromHex(r.base_key), r.kid);
  assert.equal(toHex(makeNonce(k.salt, r.ctr)), r.nonce);
  const ct = await encryptFrame(k, r.ctr, fromHex(r.metadata), fromHex(r.pt));
  assert.equal(toHex(ct), r.ct);
  assert.equal(toHex(concat(encodeHeader(r.kid, r.ctr), fromHex(r.metadata))), r.aad);
  const out = await decryptFrame(fromHex(r.ct), fromHex(r.metadata), () => k);
  assert.equal(toHex(out.payload), r.pt);
  await assert.rejects(decryptFrame(fromHex(r.ct), flip(fromHex(r.metadata), 0), () => k), SFrameError);
});
