import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import {
  ROOM_KEY_COMMIT_DOMAIN, ROOM_KEY_RATCHET_LABEL, advance, frame, ratchetContext, ratchetStep,
  roomKeyCommit, roomKeyCommitInput, unframe,
} from "../src/protocol/roomkeys.ts";
import { vectors } from "./kat.ts";

const v = vectors("room_keys.json");

test("room-key labels", () => {
  assert.equal(toHex(ROOM_KEY_COMMIT_DOMAIN), v.commit_domain);
  assert.equal(ROOM_KEY_RATCHET_LABEL, v.ratchet_label);
});

test("generation ratchet: three steps with their info", async () => {
  let key = fromHex(v.room_key);
  let g = 0;
  for (const step of v.ratchet) {
    const info = new TextEncoder().encode(v.ratchet_label + "\x00");
    assert.equal(
      toHex(info) + toHex(ratchetContext(v.space_id, v.room_id, v.epoch, step.generation)),
      step.info,
    );
    key = await ratchetStep(key, v.space_id, v.room_id, v.epoch, step.generation);
    assert.equal(toHex(key), step.key);
    assert.equal(
      toHex(await advance(fromHex(v.room_key), v.space_id, v.room_id, v.epoch, 0, step.generation)),
      step.key,
    );
    g = step.generation;
  }
  assert.equal(g, 3);
  const k1 = fromHex(v.ratchet[0].key);
  assert.equal(toHex(await advance(k1, v.space_id, v.room_id, v.epoch, 1, 3)), v.ratchet[2].key);
  await assert.rejects(advance(k1, v.space_id, v.room_id, v.epoch, 1, 0));
});

test("commitments", async () => {
  for (const c of v.commitments) {
    const key = fromHex(c.key);
    assert.equal(toHex(roomKeyCommitInput(v.space_id, v.room_id, v.epoch, c.generation, key)), c.input);
    assert.equal(toHex(await roomKeyCommit(v.space_id, v.room_id, v.epoch, c.generation, key)), c.commit);
  }
  const other = fromHex(v.commitments[0].key);
  other[0] = (other[0] ?? 0) ^ 1;
  assert.notEqual(toHex(await roomKeyCommit(v.space_id, v.room_id, v.epoch, 2, other)), v.commitments[0].commit);
});

test("framing", () => {
  const f = v.framing;
  assert.equal(toHex(frame(f.generation, fromHex(f.box))), f.framed);
  const { generation, box } = unframe(fromHex(f.framed));
  assert.equal(generation, f.generation);
  assert.equal(toHex(box), f.box);
  assert.throws(() => unframe(fromHex("000000")));
  assert.equal(unframe(fromHex("00000007")).box.length, 0);
});
