import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { pack } from "./kat.ts";
import { open, seal } from "../src/protocol/secretbox.ts";
import {
  SEALED_KEY_DOMAIN, SealedKeyError, decodeEnvelope, encodeEnvelope, openEnvelope, sealKey, sealedKeyBytes,
} from "../src/protocol/sealed.ts";
import { flip, vectors } from "./kat.ts";

const sk = vectors("space_keys.json");
const rk = vectors("room_keys.json");
const people = vectors("identities.json").people;

test("space-key boxes: reproduce, open, refuse a flipped bit", async () => {
  for (const b of sk.boxes) {
    const key = fromHex(b.key);
    assert.equal(toHex(key), sk.space_keys[String(b.epoch)]);
    assert.equal(toHex(pack(b.plaintext)), b.plaintext_msgpack);
    const box = fromHex(b.box);
    assert.equal(toHex(await open(key, box)), b.plaintext_msgpack);
    assert.equal(toHex(await seal(key, fromHex(b.plaintext_msgpack), box.slice(0, 24))), b.box);
    for (const at of [0, 30, box.length - 1]) await assert.rejects(open(key, flip(box, at)));
    await assert.rejects(open(fromHex(sk.space_keys[b.epoch === 0 ? "1" : "0"]), box)); // another epoch's key
  }
});

test("rekey prev_box carries the previous key; the repair steps over epoch 1", async () => {
  const prev = await open(fromHex(sk.space_keys["1"]), fromHex(sk.rekey.prev_box));
  assert.equal(toHex(prev), sk.space_keys["0"]);
  const repaired = await open(fromHex(sk.space_keys["2"]), fromHex(sk.repair.prev_box));
  assert.equal(toHex(repaired), sk.space_keys[String(sk.repair.prev_epoch)]);
  await assert.rejects(open(fromHex(sk.space_keys["2"]), flip(fromHex(sk.repair.prev_box), 40)));
});

async function checkEnvelope(
  e: { sender: string; recipient: string; nonce: string; sealed_key_msgpack: string; envelope: Record<string, unknown>; envelope_msgpack: string; generation?: number; key?: string },
  spaceId: string, scope: string, generation: number, key: string,
): Promise<void> {
  const alice = people[e.sender];
  const bob = people[e.recipient];
  const env = decodeEnvelope(fromHex(e.envelope_msgpack));
  assert.equal(toHex(env.recipient), bob.member_key);
  assert.equal(toHex(env.sender), alice.member_key);
  assert.equal(toHex(encodeEnvelope(env)), e.envelope_msgpack);
  const sealed = { spaceId, scope, epoch: env.epoch, generation, key: fromHex(key) };
  assert.equal(toHex(sealedKeyBytes(sealed)), e.sealed_key_msgpack);
  const box = await sealKey(fromHex(alice.box_secret), fromHex(bob.box_key), sealed, fromHex(e.nonce));
  assert.equal(toHex(box), e.envelope["box"]);
  const opened = await openEnvelope(env, spaceId, scope, fromHex(bob.box_secret), fromHex(alice.box_key));
  assert.equal(opened.generation, generation);
  assert.equal(toHex(opened.key), key);
  // only the sender's key opens it; a flipped bit does not open
  await assert.rejects(openEnvelope(env, spaceId, scope, fromHex(bob.box_secret), fromHex(people.carol.box_key)), SealedKeyError);
  await assert.rejects(openEnvelope({ ...env, box: flip(env.box, 50) }, spaceId, scope, fromHex(bob.box_secret), fromHex(alice.box_key)), SealedKeyError);
  // the binding: another space or scope is refused
  await assert.rejects(openEnvelope(env, "otherspace", scope, fromHex(bob.box_secret), fromHex(alice.box_key)), /relabelled/);
  await assert.rejects(openEnvelope(env, spaceId, "roomBBBBBBBBBBBB", fromHex(bob.box_secret), fromHex(alice.box_key)), /relabelled/);
}

test("room envelopes: Alice to Bob and to Carol", async () => {
  assert.equal(rk.sealed_key_domain, SEALED_KEY_DOMAIN);
  for (const e of rk.envelopes) {
    await checkEnvelope({ ...e, sender: rk.sender }, rk.space_id, rk.room_id, e.generation, e.key);
  }
});

test("space envelope from the rekey's author", async () => {
  await checkEnvelope(sk.envelope, sk.space_id, "space", 0, sk.space_keys["1"]);
});

test("the relabelled envelope opens but is refused", async () => {
  const env = decodeEnvelope(fromHex(rk.relabelled.envelope_msgpack));
  assert.equal(env.epoch, 1);
  await assert.rejects(
    openEnvelope(env, rk.space_id, rk.room_id, fromHex(people.bob.box_secret), fromHex(people.alice.box_key)),
    /relabelled/,
  );
});
