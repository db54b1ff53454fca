import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { advance, unframe } from "../src/protocol/roomkeys.ts";
import { pack } from "./kat.ts";
import {
  MessageError, type MessageHeader, type StoryHeader, decodeMessageContent, encodeStoryMeta, messageAd, messageKey,
  messageStatement, openMessage, openStoryMeta, openStoryPart, pad, sealMessage, sealStory, storyAd, storyKey,
  storyStatement, unpad,
} from "../src/protocol/messages.ts";
import { flip, vectors } from "./kat.ts";

const v = vectors("messages.json");
const rk = vectors("room_keys.json");
const people = vectors("identities.json").people;
const headHash = fromHex(v.head_hash);

test("the room key of generation 2 is the ratchet's", async () => {
  const k = await advance(fromHex(rk.room_key), v.space_id, v.room_id, v.epoch, 0, v.generation);
  assert.equal(toHex(k), v.room_key);
});

test("pad / unpad", () => {
  assert.equal(pad(new Uint8Array(252)).length, 256);
  assert.equal(pad(new Uint8Array(253)).length, 512);
  assert.equal(pad(new Uint8Array(0)).length, 256);
  assert.equal(unpad(pad(new Uint8Array([1, 2, 3]))).length, 3);
  const bad = pad(new Uint8Array(3));
  bad[3] = 253;
  assert.throws(() => unpad(bad), MessageError);
});

const m = v.message;
const [spaceId, roomId, epoch, sender, clientId, ttl] = m.header;
const header: MessageHeader = { spaceId, roomId, epoch, sender: fromHex(sender), clientId: fromHex(clientId), ttl };
const bob = people.bob;

test("message: key, ad, statement, sealed bytes", async () => {
  assert.equal(sender, bob.member_key);
  const roomKey = fromHex(v.room_key);
  assert.equal(toHex(await messageKey(roomKey, roomId)), m.message_key);
  assert.equal(toHex(messageAd(header)), m.ad);
  assert.equal(toHex(messageStatement(header, m.text, m.created_at, v.head, headHash)), m.statement);
  const framed = await sealMessage(
    { header, text: m.text, createdAt: m.created_at, head: v.head, headHash },
    fromHex(bob.signing_seed), roomKey, v.generation, fromHex(m.nonce),
  );
  assert.equal(toHex(framed), m.framed);
  const { generation, box } = unframe(framed);
  assert.equal(generation, v.generation);
  assert.equal(toHex(box), m.box);
  // the SendMessage frame (a map, "type" first; wire encoding lives with web1's wire.ts)
  const frame = pack({ type: "send_message", id: 7, room_id: roomId, client_id: header.clientId, epoch, ttl, box: framed });
  assert.equal(toHex(frame), m.send_message_msgpack);
});

test("message: open and verify; refuse flipped bits and a changed header", async () => {
  const roomKey = fromHex(v.room_key);
  const { box } = unframe(fromHex(m.framed));
  const content = await openMessage(box, header, roomKey);
  assert.equal(content.text, m.text);
  assert.equal(content.createdAt, m.created_at);
  assert.equal(content.head, v.head);
  assert.equal(toHex(content.headHash), v.head_hash);
  assert.equal(toHex(content.sig), m.sig);
  assert.equal(toHex(pad(pack([m.text, m.created_at, v.head, headHash, content.sig]))), m.padded_plaintext);
  assert.equal(decodeMessageContent(unpad(fromHex(m.padded_plaintext))).text, m.text);
  for (const at of [0, 30, box.length - 1]) await assert.rejects(openMessage(flip(box, at), header, roomKey), MessageError);
  await assert.rejects(openMessage(box, { ...header, ttl: 1 }, roomKey), MessageError);
  await assert.rejects(openMessage(box, { ...header, epoch: 1 }, roomKey), MessageError);
  await assert.rejects(openMessage(box, header, fromHex(rk.room_key)), MessageError); // generation 0's key
  // a box that opens but is signed by someone else than the claimed sender
  const forged = unframe(await sealMessage(
    { header, text: m.text, createdAt: m.created_at, head: v.head, headHash },
    fromHex(people.carol.signing_seed), roomKey, v.generation,
  )).box;
  await assert.rejects(openMessage(forged, header, roomKey), /bad signature/);
});

const s = v.story;
const [sSpace, sRoom, sEpoch, sSender, storyId, sTtl] = s.header;
const sHeader: StoryHeader = { spaceId: sSpace, roomId: sRoom, epoch: sEpoch, sender: fromHex(sSender), storyId, ttl: sTtl };

test("story: key, ads, statement, sealed bytes", async () => {
  const alice = people.alice;
  assert.equal(sSender, alice.member_key);
  const roomKey = fromHex(v.room_key);
  assert.equal(toHex(await storyKey(roomKey, sRoom)), s.story_key);
  for (const part of ["meta", "image", "thumb"] as const) assert.equal(toHex(storyAd(sHeader, part)), s.ad[part]);
  const sealed = await sealStory(
    sHeader, { caption: s.caption, createdAt: s.created_at, head: v.head, headHash, width: s.size[0], height: s.size[1] },
    fromHex(s.image), fromHex(s.thumb), fromHex(alice.signing_seed), roomKey, v.generation,
    { meta: fromHex(s.nonces.meta), image: fromHex(s.nonces.image), thumb: fromHex(s.nonces.thumb) },
  );
  assert.equal(toHex(storyStatement(sHeader, sealed.meta)), s.statement);
  assert.equal(toHex(sealed.meta.sig), s.sig);
  assert.equal(toHex(encodeStoryMeta(sealed.meta)), s.meta_plaintext_msgpack);
  assert.equal(toHex(sealed.metaFramed), s.meta_framed);
  assert.equal(toHex(unframe(sealed.metaFramed).box), s.meta_box);
  assert.equal(toHex(sealed.imageBox), s.image_box);
  assert.equal(toHex(sealed.thumbBox), s.thumb_box);
  const frame = pack({
    type: "post_story", id: 8, room_id: sRoom, story_id: storyId, epoch: sEpoch, ttl: sTtl, meta: sealed.metaFramed,
    thumb: sealed.thumbBox, image_size: sealed.imageBox.length,
  });
  assert.equal(toHex(frame), s.post_story_msgpack);
});

test("story: open meta and parts; refuse flipped bits and swapped parts", async () => {
  const roomKey = fromHex(v.room_key);
  const metaBox = fromHex(s.meta_box);
  const meta = await openStoryMeta(metaBox, sHeader, roomKey);
  assert.equal(meta.caption, s.caption);
  assert.deepEqual([meta.width, meta.height], s.size);
  assert.equal(toHex(await openStoryPart(fromHex(s.image_box), "image", sHeader, roomKey, meta)), s.image);
  assert.equal(toHex(await openStoryPart(fromHex(s.thumb_box), "thumb", sHeader, roomKey, meta)), s.thumb);
  await assert.rejects(openStoryMeta(flip(metaBox, 40), sHeader, roomKey), MessageError);
  await assert.rejects(openStoryMeta(metaBox, { ...sHeader, storyId: "storyBBBBBBBBBBB" }, roomKey), MessageError);
  await assert.rejects(openStoryPart(flip(fromHex(s.image_box), 30), "image", sHeader, roomKey, meta), MessageError);
  await assert.rejects(openStoryPart(fromHex(s.thumb_box), "image", sHeader, roomKey, meta), MessageError);
  await assert.rejects(openStoryPart(fromHex(s.image_box), "image", sHeader, roomKey, { ...meta, imageSha256: meta.thumbSha256 }), /signed hash/);
});
