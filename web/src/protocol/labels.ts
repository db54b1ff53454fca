/**
 * Domain-separation labels (PROTOCOL.md §3), byte for byte. The `Uint8Array` constants are
 * shared: read them, never write into them (concat copies).
 * HKDF labels are strings without the NUL: `hkdf` appends 0x00 itself (§1).
 */
const text = (s: string): Uint8Array => new TextEncoder().encode(s);
const domain = (s: string): Uint8Array => text(`${s}\x00`);

export const AUTH_DOMAIN = domain("salon/auth/v1");
export const RECORD_DOMAIN = domain("salon/record/v1");
export const JOIN_DOMAIN = domain("salon/join/v1");
export const CALL_ACTION_DOMAIN = domain("salon/call-action/v1");
export const CALL_SIGNAL_DOMAIN = domain("salon/call-signal/v1");
export const MESSAGE_SIG = domain("salon/message-sig/v1");
export const MESSAGE_AD = domain("salon/message-ad/v1");
export const STORY_SIG = domain("salon/story-sig/v1");
export const STORY_AD = domain("salon/story-ad/v1");
export const FINGERPRINT_DOMAIN = domain("salon/fingerprint/v1");
export const CALL_KEY_COMMITMENT_DOMAIN = domain("salon/call-key-commitment/v1");
export const CALL_CODE_DOMAIN = domain("salon/call-verification-code/v1");
/** BLAKE2b personalization of a pair link (§14): 15 bytes, no NUL (BLAKE2b pads it to 16). */
export const CALL_LINK_PERSON = text("salon-call-link");
export const ROOM_KEY_COMMIT_DOMAIN = domain("salon/room-key-commit/v1");
/** A string: the first element of a sealed key's array (§10.1). */
export const SEALED_KEY_DOMAIN = "salon/sealed-key/v1";
export const INVITE_SIGN_LABEL = "salon/invite/sign/v1";
export const INVITE_SEAL_LABEL = "salon/invite/seal/v1";
export const INVITE_PREVIEW_LABEL = "salon/invite/preview/v1";
export const MESSAGE_LABEL = "salon/room-message/v1";
export const STORY_LABEL = "salon/room-story/v1";
export const CALL_MEDIA_RATCHET_LABEL = "salon/call-media-ratchet/v1";
export const ROOM_KEY_RATCHET_LABEL = "salon/room-key-ratchet/v1";
export const SFRAME_KEY_LABEL = text("SFrame 1.0 Secret key ");
export const SFRAME_SALT_LABEL = text("SFrame 1.0 Secret salt ");
/** Server ↔ SFU node channel only (not used by clients). */
export const SFU_NODE_DOMAIN = domain("salon/sfu-node/v1");
