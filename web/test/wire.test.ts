import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { MsgFloat, MsgpackError, decode, encode } from "../src/protocol/msgpack.ts";
import {
  CLIENT_MESSAGE, SERVER_MESSAGE, WireError, decodeClientMessage, decodeServerMessage, encodeClientMessage,
  encodeServerMessage, type ClientMessage, type ServerMessage,
} from "../src/protocol/wire.ts";
import { fromJsonUnion, loadVectors } from "./vectors.ts";

const wire = loadVectors("wire");
const auth = loadVectors("auth");
const invites = loadVectors("invites");

test("msgpack: shortest ints, float64, bin, str (§2)", () => {
  const cases: [Parameters<typeof encode>[0], string][] = [
    [300, "cd012c"], [-1, "ff"], [0, "00"], [127, "7f"], [128, "cc80"], [255, "ccff"], [256, "cd0100"],
    [65536, "ce00010000"], [2 ** 32, "cf0000000100000000"], [-32, "e0"], [-33, "d0df"], [-128, "d080"],
    [-129, "d1ff7f"], [-32769, "d2ffff7fff"], [-(2 ** 31) - 1, "d3ffffffff7fffffff"],
    [new MsgFloat(1), "cb3ff0000000000000"], [new Uint8Array(0), "c400"], ["", "a0"], [null, "c0"],
    [true, "c3"], [false, "c2"], ["a".repeat(32), "d920" + "61".repeat(32)],
  ];
  for (const [value, hex] of cases) {
    assert.equal(toHex(encode(value)), hex);
    assert.deepEqual(decode(fromHex(hex)), value);
  }
  assert.throws(() => decode(fromHex("c0c0")), MsgpackError);
  assert.throws(() => decode(fromHex("a2ff")), MsgpackError); // bad UTF-8 / truncated
  assert.throws(() => decode(fromHex("a1ff")), MsgpackError);
});

test("GetRecords example of §2", () => {
  const frame = encodeClientMessage({ type: "get_records", id: 3, after: -1 });
  assert.equal(toHex(frame), "83a474797065ab6765745f7265636f726473a2696403a56166746572ff");
});

function roundTripClient(json: unknown, hex: string): void {
  const message = fromJsonUnion(CLIENT_MESSAGE, json) as ClientMessage;
  assert.equal(toHex(encodeClientMessage(message)), hex);
  const decoded = decodeClientMessage(fromHex(hex));
  assert.deepEqual(decoded, message);
  assert.equal(toHex(encodeClientMessage(decoded)), hex);
}

function roundTripServer(json: unknown, hex: string): void {
  const message = fromJsonUnion(SERVER_MESSAGE, json) as ServerMessage;
  assert.equal(toHex(encodeServerMessage(message)), hex);
  const decoded = decodeServerMessage(fromHex(hex));
  assert.deepEqual(decoded, message);
  assert.equal(toHex(encodeServerMessage(decoded)), hex);
}

test("wire.json frames encode byte for byte and decode back", () => {
  for (const item of wire.client) roundTripClient(item.message, item.msgpack);
  for (const item of wire.server) roundTripServer(item.message, item.msgpack);
});

test("wire.json paging frames re-encode byte for byte", () => {
  for (const item of wire.paging.frames) {
    const bytes = fromHex(item.msgpack);
    const encoded = item.frame === "get_records"
      ? encodeClientMessage(decodeClientMessage(bytes))
      : encodeServerMessage(decodeServerMessage(bytes));
    assert.equal(toHex(encoded), item.msgpack);
  }
});

test("auth.json challenge frame", () => {
  const challenge: ServerMessage = { type: "challenge", nonce: fromHex(auth.nonce), origin: auth.origin, version: 1 };
  assert.equal(toHex(encodeServerMessage(challenge)), auth.challenge_msgpack);
  assert.deepEqual(decodeServerMessage(fromHex(auth.challenge_msgpack)), challenge);
});

test("invites.json join flow frames", () => {
  const frames = invites.join_flow.frames;
  assert.deepEqual(frames.map((x: { frame: string }) => x.frame), ["open_invite", "invite_opened", "join_space", "joined"]);
  for (const item of frames) {
    if (item.frame === "open_invite" || item.frame === "join_space") roundTripClient(item.message, item.msgpack);
    else roundTripServer(item.message, item.msgpack);
  }
});

test("decoding: keys in any order, unknown keys ignored, defaults filled", () => {
  const reordered = encode(new Map<string, never>([["id", 7 as never], ["unknown", "x" as never], ["type", "get_records" as never]]));
  assert.deepEqual(decodeClientMessage(reordered), { type: "get_records", id: 7, after: -1 });
});

test("decoding refuses unknown tags, wrong types, bad literals, str for bytes", () => {
  const bad = [
    new Map<string, unknown>([["type", "nope"], ["id", 1]]),
    new Map<string, unknown>([["type", "get_records"], ["id", "1"]]),
    new Map<string, unknown>([["type", "get_records"]]),
    new Map<string, unknown>([["type", "get_records"], ["id", new MsgFloat(1)]]),
    new Map<string, unknown>([["type", "auth"], ["id", 1], ["space_id", "s"], ["member_key", "k"], ["signature", new Uint8Array(64)]]),
    [1, 2],
  ];
  for (const value of bad) {
    assert.throws(() => decodeClientMessage(encode(value as never)), WireError);
  }
  assert.throws(() => decodeServerMessage(fromHex("c1")), WireError);
  // a record body with a bad literal
  const joinFrame = invites.join_flow.frames[2];
  const message = decodeClientMessage(fromHex(joinFrame.msgpack));
  assert.equal(message.type, "join_space");
  const broken = structuredClone(fromJsonUnion(CLIENT_MESSAGE, joinFrame.message));
  broken.record.body = { type: "role", member: new Uint8Array(32), role: "king" };
  assert.throws(() => encodeClientMessage(broken), WireError);
});
