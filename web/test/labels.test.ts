import { test } from "node:test";
import assert from "node:assert/strict";
import { toHex, utf8 } from "../src/protocol/bytes.ts";
import * as L from "../src/protocol/labels.ts";
import { loadVectors } from "./vectors.ts";

test("labels are the bytes of PROTOCOL.md §3", () => {
  const table: [Uint8Array | string, string][] = [
    [L.AUTH_DOMAIN, "salon/auth/v1\0"], [L.RECORD_DOMAIN, "salon/record/v1\0"], [L.JOIN_DOMAIN, "salon/join/v1\0"],
    [L.CALL_ACTION_DOMAIN, "salon/call-action/v1\0"], [L.CALL_SIGNAL_DOMAIN, "salon/call-signal/v1\0"],
    [L.MESSAGE_SIG, "salon/message-sig/v1\0"], [L.MESSAGE_AD, "salon/message-ad/v1\0"],
    [L.STORY_SIG, "salon/story-sig/v1\0"], [L.STORY_AD, "salon/story-ad/v1\0"],
    [L.FINGERPRINT_DOMAIN, "salon/fingerprint/v1\0"],
    [L.CALL_KEY_COMMITMENT_DOMAIN, "salon/call-key-commitment/v1\0"],
    [L.CALL_CODE_DOMAIN, "salon/call-verification-code/v1\0"], [L.CALL_LINK_PERSON, "salon-call-link"],
    [L.ROOM_KEY_COMMIT_DOMAIN, "salon/room-key-commit/v1\0"], [L.SEALED_KEY_DOMAIN, "salon/sealed-key/v1"],
    [L.INVITE_SIGN_LABEL, "salon/invite/sign/v1"], [L.INVITE_SEAL_LABEL, "salon/invite/seal/v1"],
    [L.INVITE_PREVIEW_LABEL, "salon/invite/preview/v1"], [L.MESSAGE_LABEL, "salon/room-message/v1"],
    [L.STORY_LABEL, "salon/room-story/v1"], [L.CALL_MEDIA_RATCHET_LABEL, "salon/call-media-ratchet/v1"],
    [L.ROOM_KEY_RATCHET_LABEL, "salon/room-key-ratchet/v1"], [L.SFRAME_KEY_LABEL, "SFrame 1.0 Secret key "],
    [L.SFRAME_SALT_LABEL, "SFrame 1.0 Secret salt "], [L.SFU_NODE_DOMAIN, "salon/sfu-node/v1\0"],
  ];
  for (const [value, expected] of table) {
    if (typeof value === "string") assert.equal(value, expected);
    else assert.equal(toHex(value), toHex(utf8(expected)));
  }
});

test("labels agree with the vectors", () => {
  assert.equal(toHex(L.AUTH_DOMAIN), loadVectors("auth").auth_domain);
  const records = loadVectors("records");
  assert.equal(toHex(L.RECORD_DOMAIN), records.record_domain);
  assert.equal(toHex(L.JOIN_DOMAIN), records.join_domain);
  assert.equal(toHex(L.FINGERPRINT_DOMAIN), loadVectors("identities").fingerprint_domain);
  const invites = loadVectors("invites");
  assert.equal(L.INVITE_SIGN_LABEL, invites.sign_label);
  assert.equal(L.INVITE_SEAL_LABEL, invites.seal_label);
  assert.equal(L.INVITE_PREVIEW_LABEL, invites.preview_label);
});
