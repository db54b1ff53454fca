import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import {
  WireError, decodeClientMessage, decodeServerMessage, encodeClientMessage, encodeServerMessage,
} from "../src/protocol/wire.ts";
import type { Messages, StoryPart } from "../src/protocol/chat_wire.ts";
import { vectors } from "./kat.ts";

// Frames made by the reference (msgspec, protocol/chat_wire.py) — floats as float64, every
// field present, "type" first.
const FRAMES: readonly (readonly [side: "client" | "server", name: string, hex: string])[] = [
  ["server", "MessageSent", "87a474797065ac6d6573736167655f73656e74a2696403a7726f6f6d5f6964b0726f6f6d414141414141414141414141a373657109a773656e745f6174cb41d954fc40080000aa657870697265735f6174c0a96475706c6963617465c2"],
  ["server", "MessageSent", "87a474797065ac6d6573736167655f73656e74a2696404a7726f6f6d5f6964b0726f6f6d414141414141414141414141a373657109a773656e745f6174cb41d954fc40080000aa657870697265735f6174cb41d954fc4f080000a96475706c6963617465c3"],
  ["server", "Messages", "85a474797065a86d65737361676573a2696405a7726f6f6d5f6964b0726f6f6d414141414141414141414141a86d657373616765739288a373657105a673656e646572c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa9636c69656e745f6964c410000102030405060708090a0b0c0d0e0fa565706f636801a374746c3ca773656e745f6174cb41d954fc40100000aa657870697265735f6174c0a3626f78c40700000002626f7888a373657106a673656e646572c4200000000000000000000000000000000000000000000000000000000000000000a9636c69656e745f6964c41000000000000000000000000000000000a565706f636801a374746c00a773656e745f6174cb41d954fc40400000aa657870697265735f6174cb41d954fc4f600000a3626f78c406000000027878a86c6173745f73657106"],
  ["server", "MessagesAdded", "83a474797065ae6d657373616765735f6164646564a7726f6f6d5f6964b0726f6f6d414141414141414141414141a86d657373616765739188a373657105a673656e646572c420000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1fa9636c69656e745f6964c410000102030405060708090a0b0c0d0e0fa565706f636801a374746c3ca773656e745f6174cb41d954fc40100000aa657870697265735f6174c0a3626f78c40700000002626f78"],
  ["server", "StoryChunkStored", "84a474797065b273746f72795f6368756e6b5f73746f726564a2696406a873746f72795f6964b073746f72794141414141414141414141a473697a65ce00020000"],
  ["server", "StoryPosted", "86a474797065ac73746f72795f706f73746564a2696407a873746f72795f6964b073746f72794141414141414141414141a9706f737465645f6174cb41d954fc40200000aa657870697265735f6174cb41d95550a0200000a96475706c6963617465c2"],
  ["server", "Stories", "84a474797065a773746f72696573a2696408a7726f6f6d5f6964b0726f6f6d414141414141414141414141a773746f72696573918aa873746f72795f6964b073746f72794141414141414141414141a7726f6f6d5f6964b0726f6f6d414141414141414141414141a673656e646572c4200000000000000000000000000000000000000000000000000000000000000000a565706f636800a374746cce00015180a9706f737465645f6174cb41d954fc40200000aa657870697265735f6174cb41d95550a0200000a46d657461c4046d657461aa696d6167655f73697a65cd03e8aa7468756d625f73697a6564"],
  ["server", "StoryPart", "87a474797065aa73746f72795f70617274a2696409a573746f72798aa873746f72795f6964b073746f72794141414141414141414141a7726f6f6d5f6964b0726f6f6d414141414141414141414141a673656e646572c4200000000000000000000000000000000000000000000000000000000000000000a565706f636800a374746cce00015180a9706f737465645f6174cb41d954fc40200000aa657870697265735f6174cb41d95550a0200000a46d657461c4046d657461aa696d6167655f73697a65cd03e8aa7468756d625f73697a6564a470617274a57468756d62a66f666673657400a5746f74616c64a464617461c4097468756d6264617461"],
  ["client", "FetchMessages", "86a474797065ae66657463685f6d65737361676573a269640aa7726f6f6d5f6964b0726f6f6d414141414141414141414141a5616674657204a56c696d6974cd01f4a6666f6c6c6f77c3"],
  ["client", "FetchMessages", "86a474797065ae66657463685f6d65737361676573a269640ba7726f6f6d5f6964b0726f6f6d414141414141414141414141a5616674657200a56c696d6974cd01f4a6666f6c6c6f77c2"],
  ["client", "UploadStoryChunk", "85a474797065b275706c6f61645f73746f72795f6368756e6ba269640ca873746f72795f6964b073746f72794141414141414141414141a66f666673657400a464617461c403616263"],
  ["client", "ListStories", "83a474797065ac6c6973745f73746f72696573a269640da7726f6f6d5f6964b0726f6f6d414141414141414141414141"],
  ["client", "FetchStoryPart", "85a474797065b066657463685f73746f72795f70617274a269640ea873746f72795f6964b073746f72794141414141414141414141a470617274a5696d616765a66f666673657400"],
  ["client", "FetchStoryPart", "85a474797065b066657463685f73746f72795f70617274a269640fa873746f72795f6964b073746f72794141414141414141414141a470617274a57468756d62a66f666673657407"],
];

test("chat frames of the reference decode and re-encode byte for byte", () => {
  for (const [side, name, hex] of FRAMES) {
    const bytes = fromHex(hex);
    const again = side === "client"
      ? encodeClientMessage(decodeClientMessage(bytes))
      : encodeServerMessage(decodeServerMessage(bytes));
    assert.equal(toHex(again), hex, name);
  }
});

test("decoded chat frames carry the reference's values", () => {
  const messages = decodeServerMessage(fromHex(FRAMES.find(([, n]) => n === "Messages")![2])) as Messages;
  assert.equal(messages.type, "messages");
  assert.equal(messages.messages.length, 2);
  assert.equal(messages.messages[0]!.sent_at, 1700000000.25);
  assert.equal(messages.messages[0]!.expires_at, null);
  assert.equal(messages.messages[1]!.expires_at, 1700000061.5);
  assert.equal(messages.messages[1]!.sent_at, 1700000001);
  assert.equal(messages.last_seq, 6);
  const part = decodeServerMessage(fromHex(FRAMES.find(([, n]) => n === "StoryPart")![2])) as StoryPart;
  assert.equal(part.part, "thumb");
  assert.equal(part.story.story_id, "storyAAAAAAAAAAA");
  assert.equal(part.story.image_size, 1000);
});

test("a fetch with defaults encodes every field (limit 500, follow false)", () => {
  const frame = encodeClientMessage({ type: "fetch_messages", id: 11, room_id: "roomAAAAAAAAAAAA", after: 0, limit: 500, follow: false });
  assert.equal(toHex(frame), FRAMES.find(([, n, h]) => n === "FetchMessages" && h.includes("a269640b"))![2]);
});

test("messages.json: the send_message and post_story frames of the vectors", () => {
  const v = vectors("messages.json");
  const m = v.message;
  const [, roomId, epoch, , clientId, ttl] = m.header;
  const send = encodeClientMessage({
    type: "send_message", id: 7, room_id: roomId, client_id: fromHex(clientId), epoch, ttl, box: fromHex(m.framed),
  });
  assert.equal(toHex(send), m.send_message_msgpack);
  assert.deepEqual(decodeClientMessage(send), {
    type: "send_message", id: 7, room_id: roomId, client_id: fromHex(clientId), epoch, ttl, box: fromHex(m.framed),
  });
  const s = v.story;
  const [, sRoom, sEpoch, , storyId, sTtl] = s.header;
  const post = encodeClientMessage({
    type: "post_story", id: 8, room_id: sRoom, story_id: storyId, epoch: sEpoch, ttl: sTtl, meta: fromHex(s.meta_framed),
    thumb: fromHex(s.thumb_box), image_size: fromHex(s.image_box).length,
  });
  assert.equal(toHex(post), s.post_story_msgpack);
});

test("bad chat frames are WireErrors: a part outside the literal set, a missing field", () => {
  const hex = FRAMES.find(([, n, h]) => n === "FetchStoryPart" && h.endsWith("07"))![2];
  assert.equal(decodeClientMessage(fromHex(hex)).type, "fetch_story_part");
  assert.throws(() => decodeClientMessage(fromHex(hex.replace("a57468756d62", "a57878787878"))), WireError); // "xxxxx"
  assert.throws(() => decodeServerMessage(fromHex("82a474797065ac6d6573736167655f73656e74a2696403")), WireError);
});
