import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { base32Lower, base64urlDecode, base64urlEncode, ed25519Sign, ed25519Verify } from "../src/protocol/crypto.ts";
import { boxKey, fingerprint, memberKey, newMembership } from "../src/protocol/identities.ts";
import { flip, loadVectors } from "./vectors.ts";

const vectors = loadVectors("identities");

test("identities.json: member key, box key, fingerprint", async () => {
  for (const person of Object.values(vectors.people) as Record<string, string>[]) {
    assert.equal(toHex(await memberKey(fromHex(person["signing_seed"]!))), person["member_key"]);
    assert.equal(toHex(await boxKey(fromHex(person["box_secret"]!))), person["box_key"]);
    assert.equal(await fingerprint(fromHex(person["member_key"]!)), person["fingerprint"]);
  }
});

test("Ed25519 sign/verify; wrong lengths and flipped bits refused", async () => {
  const alice = vectors.people.alice;
  const message = new TextEncoder().encode("hello");
  const sig = await ed25519Sign(fromHex(alice.signing_seed), message);
  const key = fromHex(alice.member_key);
  assert.ok(await ed25519Verify(key, message, sig));
  assert.ok(!(await ed25519Verify(key, message, flip(sig, 10))));
  assert.ok(!(await ed25519Verify(key, flip(message, 0), sig)));
  assert.ok(!(await ed25519Verify(key.subarray(0, 31), message, sig)));
  assert.ok(!(await ed25519Verify(key, message, sig.subarray(0, 63))));
  const fresh = await newMembership();
  assert.equal(fresh.memberKey.length, 32);
});

test("base32 and base64url", () => {
  assert.equal(base32Lower(new TextEncoder().encode("foobar")), "mzxw6ytboi"); // RFC 4648 §10, lowercased
  assert.equal(base64urlEncode(new Uint8Array([251, 255])), "-_8");
  assert.deepEqual(base64urlDecode("-_8"), new Uint8Array([251, 255]));
  assert.throws(() => base64urlDecode("-_8="));
  assert.throws(() => base64urlDecode("-_9")); // leftover bits
  assert.throws(() => base64urlDecode("+/8"));
});
