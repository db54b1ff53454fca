import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { ed25519Verify } from "../src/protocol/crypto.ts";
import { isValidId, newId } from "../src/protocol/ids.ts";
import {
  LinkError, SEALED_SPACE_KEY, INVITE_PREVIEW, SealError, encodeInviteSeal, formatInviteLink, inviteKey,
  invitePreviewKey, inviteSealKey, inviteSigningSeed, openPreview, openSeal, parseInviteLink, sealPreview, sealSpaceKey,
} from "../src/protocol/invites.ts";
import { encodeStruct } from "../src/protocol/schema.ts";
import { authStatement } from "../src/protocol/auth.ts";
import { flip, loadVectors } from "./vectors.ts";

const v = loadVectors("invites");
const secret = fromHex(v.secret);

test("ids.json", () => {
  for (const example of loadVectors("ids").examples) assert.equal(isValidId(example.id), example.valid, example.id);
  for (let i = 0; i < 50; i++) assert.ok(isValidId(newId()));
});

test("invites.json: link format and parsing", () => {
  const link = { server: v.server, inviteId: v.invite_id, secret };
  assert.equal(formatInviteLink(link), v.link);
  assert.deepEqual(parseInviteLink(v.link), link);
  assert.deepEqual(parseInviteLink(`  ${v.link}\n`), link);
  const prefixed = parseInviteLink("http://host:8080/a/join/b/join/inviteAAAAAAAAAA#" + v.link.split("#")[1]);
  assert.equal(prefixed.server, "http://host:8080/a/join/b");
  const fragment = v.link.split("#")[1];
  for (const bad of [
    "ftp://salon.example/join/inviteAAAAAAAAAA#" + fragment,
    "https://salon.example/joins/inviteAAAAAAAAAA#" + fragment,
    "https://salon.example/join/-nviteAAAAAAAAAA#" + fragment,
    "https://salon.example/join/inviteAAAAAAAAAA",
    "https://salon.example/join/inviteAAAAAAAAAA#" + fragment.slice(0, 40),
    "https://salon.example/join/inviteAAAAAAAAAA#" + fragment + "AAAA",
    "https://salon.example/join/inviteAAAAAAAAAA#" + fragment.slice(0, 42) + "+",
  ]) assert.throws(() => parseInviteLink(bad), LinkError, bad);
});

test("invites.json: HKDF derivations", async () => {
  assert.equal(toHex(await inviteSigningSeed(secret, v.invite_id)), v.signing_seed);
  assert.equal(toHex(await inviteKey(secret, v.invite_id)), v.invite_key);
  assert.equal(toHex(await inviteSealKey(secret, v.invite_id)), v.seal_key);
  assert.equal(toHex(await invitePreviewKey(secret, v.invite_id)), v.preview_key);
});

test("invites.json: seal and preview, made and opened", async () => {
  const seal = v.seal;
  const sealKey = fromHex(v.seal_key);
  const previewKey = fromHex(v.preview_key);
  const spaceKey = { space_id: seal.space_id, epoch: seal.epoch, key: fromHex(seal.space_key) };
  assert.equal(toHex(encodeStruct(SEALED_SPACE_KEY, spaceKey)), seal.plaintext_msgpack);
  assert.equal(toHex(await sealSpaceKey(sealKey, spaceKey, fromHex(seal.nonce))), seal.sealed);
  assert.deepEqual(await openSeal(sealKey, fromHex(seal.sealed), seal.space_id), spaceKey);
  assert.equal(toHex(encodeStruct(INVITE_PREVIEW, seal.preview)), seal.preview_plaintext_msgpack);
  assert.equal(toHex(await sealPreview(previewKey, seal.preview, fromHex(seal.preview_nonce))), seal.preview_box);
  assert.deepEqual(await openPreview(previewKey, fromHex(seal.preview_box), seal.space_id), seal.preview);
  const inviteSeal = { invite_id: v.invite_id, epoch: seal.epoch, sealed: fromHex(seal.sealed), preview: fromHex(seal.preview_box) };
  assert.equal(toHex(encodeInviteSeal(inviteSeal)), seal.invite_seal_msgpack);
  // refusals: a flipped bit, the wrong key, another space
  const sealed = fromHex(seal.sealed);
  for (const at of [0, 24, 30, sealed.length - 1]) await assert.rejects(openSeal(sealKey, flip(sealed, at), seal.space_id), SealError);
  await assert.rejects(openSeal(previewKey, sealed, seal.space_id), SealError);
  await assert.rejects(openSeal(sealKey, sealed, "aaaaaaaaaaaaaaaaaaaaaaaa"), SealError);
  await assert.rejects(openPreview(previewKey, flip(fromHex(seal.preview_box), 50), seal.space_id), SealError);
  await assert.rejects(openPreview(previewKey, fromHex(seal.preview_box), "aaaaaaaaaaaaaaaaaaaaaaaa"), SealError);
});

test("invites.json join flow: the invite signature verifies under the invite key", async () => {
  const flow = v.join_flow;
  const open = flow.frames[0].message;
  const statement = authStatement(flow.origin, "invite", v.invite_id, fromHex(flow.nonce));
  assert.ok(await ed25519Verify(fromHex(v.invite_key), statement, fromHex(open.signature)));
  assert.ok(!(await ed25519Verify(fromHex(v.invite_key), statement, flip(fromHex(open.signature), 3))));
});

test("invites.json join flow: the joiner's member signature and the join record", async () => {
  const flow = v.join_flow;
  const join = flow.frames[2].message;
  assert.equal(join.invite_signature, flow.frames[0].message.signature);
  const member = authStatement(flow.origin, "member", v.seal.space_id, fromHex(flow.nonce));
  assert.equal(toHex(member), flow.member_statement);
  assert.ok(await ed25519Verify(fromHex(join.record.author), member, fromHex(join.signature)));
  assert.ok(!(await ed25519Verify(fromHex(join.record.author), member, flip(fromHex(join.signature), 63, 7))));
});
