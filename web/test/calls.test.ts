import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import {
  CALL_LINK_PERSON, CALL_MEDIA_RATCHET_LABEL, blake2bPersonal, CallError, type CallAction, actionSignatureProblem, actionSigningBytes, decodeMediaKeyMessage,
  decodeSignalBody, encodeCallAction, encodeMediaKeyMessage, encodeSignalBody, keyCommitment, linkId, openSignal,
  pairLink, ratchetSenderKey, sealSignal, signAction, verificationCode,
} from "../src/protocol/calls.ts";
import { type Json, flip, vectors } from "./kat.ts";

const v = vectors("calls.json");
const HASHLIB_ABC = "1525d65a75314259c6a5465e6a668bad";
const people = vectors("identities.json").people;
const byKey = (hex: string) => Object.values(people as Record<string, Json>).find((p) => p.member_key === hex);

function action(j: Json): CallAction {
  return {
    spaceId: j.space_id, roomId: j.room_id, callId: j.call_id, actor: fromHex(j.actor), action: j.action,
    target: fromHex(j.target), issuedAt: j.issued_at, nonce: fromHex(j.nonce), headSeq: j.head_seq,
    headHash: fromHex(j.head_hash), joinRef: fromHex(j.join_ref), sig: fromHex(j.sig),
  };
}

test("call actions: signing bytes, signature, encoding, refusals", async () => {
  for (const name of ["action", "join", "seat_action"]) {
    const c = v[name];
    const a = action(c.action);
    assert.equal(a.headSeq, v.head_seq);
    assert.equal(toHex(actionSigningBytes(a)), c.signing_bytes, name);
    const signed = await signAction(a, fromHex(byKey(c.action.actor).signing_seed));
    assert.equal(toHex(signed.sig), c.sig);
    assert.equal(toHex(encodeCallAction(signed)), c.action_msgpack);
    assert.equal(await actionSignatureProblem(a), null);
    assert.equal(await actionSignatureProblem({ ...a, sig: flip(a.sig, 5) }), "its signature does not verify");
    assert.equal(await actionSignatureProblem({ ...a, issuedAt: a.issuedAt + 1 }), "its signature does not verify");
  }
  assert.equal(toHex(action(v.seat_action.action).joinRef), v.join.action.nonce);
  // join_ref iff a seat action (checked on validly signed actions)
  const alice = fromHex(people.alice.signing_seed);
  const kick = await signAction({ ...action(v.seat_action.action), joinRef: new Uint8Array(0) }, alice);
  assert.equal(await actionSignatureProblem(kick), "it names no join");
  const mute = await signAction({ ...action(v.action.action), joinRef: fromHex(v.join.action.nonce) }, alice);
  assert.equal(await actionSignatureProblem(mute), "it names a join it should not");
});

test("BLAKE2b with a personalization (against hashlib)", async () => {
  const sodium = (await import("libsodium-wrappers-sumo")).default;
  await sodium.ready;
  const msg = new TextEncoder().encode("abc");
  assert.equal(toHex(await blake2bPersonal(32, msg, new Uint8Array(0))), toHex(sodium.crypto_generichash(32, msg, null)));
  // hashlib.blake2b(b"abc", digest_size=16, person=b"salon-call-link").hexdigest()
  assert.equal(toHex(await blake2bPersonal(16, msg, CALL_LINK_PERSON)), HASHLIB_ABC);
});

test("pair links", async () => {
  const l = v.link_id;
  assert.equal(toHex(await linkId(fromHex(l.offerer_join_nonce), fromHex(l.answerer_join_nonce))), l.link);
  const s = v.signal;
  const bob = people[s.sender];
  const alice = people[s.recipient];
  const link = await pairLink(fromHex(bob.member_key), fromHex(s.sender_join_nonce), fromHex(alice.member_key), fromHex(s.recipient_join_nonce));
  assert.equal(toHex(link), s.body.link);
  const other = await pairLink(fromHex(alice.member_key), fromHex(s.recipient_join_nonce), fromHex(bob.member_key), fromHex(s.sender_join_nonce));
  assert.equal(toHex(other), s.body.link);
});

test("sealed signal: reproduce, open, refuse", async () => {
  const s = v.signal;
  const bob = people[s.sender];
  const alice = people[s.recipient];
  const b = s.body;
  const body = {
    spaceId: b.space_id, roomId: b.room_id, callId: b.call_id, sender: fromHex(b.sender), recipient: fromHex(b.recipient),
    kind: b.kind, link: fromHex(b.link), attempt: b.attempt, payload: fromHex(b.payload),
  };
  assert.equal(toHex(encodeSignalBody(body)), s.body_msgpack);
  assert.equal(toHex(encodeSignalBody(decodeSignalBody(fromHex(s.body_msgpack)))), s.body_msgpack);
  const box = await sealSignal(body, fromHex(bob.signing_seed), fromHex(bob.box_secret), fromHex(alice.box_key), fromHex(s.nonce));
  assert.equal(toHex(box), s.box);
  const call = { spaceId: b.space_id, roomId: b.room_id, callId: b.call_id };
  const me = { memberKey: fromHex(alice.member_key), boxSecret: fromHex(alice.box_secret) };
  const from = { memberKey: fromHex(bob.member_key), boxKey: fromHex(bob.box_key) };
  const opened = await openSignal(fromHex(s.box), me, from, call);
  assert.equal(toHex(opened.payload), b.payload);
  const mk = decodeMediaKeyMessage(opened.payload);
  assert.equal(toHex(mk.key), v.media_keys.ratcheted.key);
  await assert.rejects(openSignal(flip(fromHex(s.box), 40), me, from, call), CallError);
  await assert.rejects(openSignal(fromHex(s.box), me, from, { ...call, callId: "callBBBBBBBBBBBB" }), /another call/);
  await assert.rejects(openSignal(fromHex(s.box), me, { ...from, memberKey: fromHex(people.carol.member_key) }, call), CallError);
  // a body naming Carol as recipient, sealed to Alice, is refused
  const misdirected = await sealSignal({ ...body, recipient: fromHex(people.carol.member_key) }, fromHex(bob.signing_seed), fromHex(bob.box_secret), fromHex(alice.box_key));
  await assert.rejects(openSignal(misdirected, me, from, call), /someone else/);
});

test("media keys: ratchet, commitments, key message", async () => {
  const m = v.media_keys;
  assert.equal(m.ratchet_label, CALL_MEDIA_RATCHET_LABEL);
  const base = { epoch: m.base.epoch, key: fromHex(m.base.key) };
  assert.equal(toHex(await keyCommitment(base.key)), m.base.commitment);
  const next = await ratchetSenderKey(base);
  assert.equal(next.epoch, m.ratcheted.epoch);
  assert.equal(toHex(next.key), m.ratcheted.key);
  assert.equal(toHex(await keyCommitment(next.key)), m.ratcheted.commitment);
  const msg = decodeMediaKeyMessage(fromHex(m.media_key_message_msgpack));
  assert.equal(msg.epoch, 1);
  assert.equal(toHex(encodeMediaKeyMessage(msg)), m.media_key_message_msgpack);
  assert.throws(() => decodeMediaKeyMessage(fromHex("80")), CallError);
});

test("verification code", async () => {
  const c = v.verification_code;
  assert.equal(toHex(await keyCommitment(fromHex(c.alice_key.key))), c.pairs[0][1]);
  const pairs = (c.pairs as [string, string][]).map(([k, x]) => [fromHex(k), fromHex(x)] as const);
  assert.equal(await verificationCode(pairs), c.code);
  assert.equal(await verificationCode([...pairs].reverse()), c.code);
  assert.notEqual(await verificationCode([pairs[0]!, [pairs[1]![0], flip(pairs[1]![1], 0)]]), c.code);
});
