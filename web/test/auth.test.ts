import { test } from "node:test";
import assert from "node:assert/strict";
import { fromHex, toHex } from "../src/protocol/bytes.ts";
import { authStatement, challengeOriginMatches, dialledOrigin, signAuth, verifyAuth, type AuthPurpose } from "../src/protocol/auth.ts";
import { ed25519PublicKey } from "../src/protocol/crypto.ts";
import { flip, loadVectors } from "./vectors.ts";

const vectors = loadVectors("auth");
const invites = loadVectors("invites");

test("auth.json: statements and signatures (create, member, invite)", async () => {
  const nonce = fromHex(vectors.nonce);
  for (const s of vectors.statements) {
    const purpose = s.purpose as AuthPurpose;
    assert.equal(toHex(authStatement(vectors.origin, purpose, s.subject, nonce)), s.statement);
    const seed = fromHex(s.signing_seed);
    assert.equal(toHex(await ed25519PublicKey(seed)), s.public_key);
    assert.equal(toHex(await signAuth(seed, vectors.origin, purpose, s.subject, nonce)), s.signature);
    const key = fromHex(s.public_key);
    const sig = fromHex(s.signature);
    assert.ok(await verifyAuth(key, sig, vectors.origin, purpose, s.subject, nonce));
    assert.ok(!(await verifyAuth(key, flip(sig, 5), vectors.origin, purpose, s.subject, nonce)));
    assert.ok(!(await verifyAuth(key, sig, vectors.origin, purpose, s.subject, flip(nonce, 0))));
    assert.ok(!(await verifyAuth(key, sig, "other.example", purpose, s.subject, nonce)));
    const other: AuthPurpose = purpose === "member" ? "create" : "member";
    assert.ok(!(await verifyAuth(key, sig, vectors.origin, other, s.subject, nonce)));
  }
});

test("invites.json join flow: the invite and member statements", () => {
  const flow = invites.join_flow;
  const nonce = fromHex(flow.nonce);
  assert.equal(toHex(authStatement(flow.origin, "invite", invites.invite_id, nonce)), flow.invite_statement);
  assert.equal(toHex(authStatement(flow.origin, "member", invites.seal.space_id, nonce)), flow.member_statement);
});

test("challenge origin is scheme://netloc of the dialled URL", () => {
  assert.equal(dialledOrigin("https://salon.example/prefix/"), "https://salon.example");
  assert.equal(dialledOrigin("http://localhost:8080"), "http://localhost:8080");
  assert.ok(challengeOriginMatches("https://salon.example", "https://salon.example/x"));
  assert.ok(!challengeOriginMatches("https://evil.example", "https://salon.example"));
  assert.ok(!challengeOriginMatches("https://salon.example/x", "https://salon.example/x"));
});
