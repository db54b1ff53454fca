"""Every domain-separation label of the protocol, in one place (docs/PROTOCOL.md §Labels).

Each signature, hash and derived key is bound to its purpose by one of these, so a value made
for one purpose is never accepted for another. They are part of the wire contract: a second
implementation must use the very same bytes, and changing one is a protocol version change.

Two shapes:

- ``*_DOMAIN``, ``*_AD``, ``*_SIG`` (bytes, ending in NUL): prefixed to the message that is
  signed, hashed or used as associated data.
- ``*_LABEL`` (str, no NUL): HKDF-SHA256 ``info`` labels for ``client.core.crypto.hkdf``, which
  uses ``label || 0x00 || context`` as info (empty salt).

The device keystore's own labels are local, not protocol, and stay in ``client.core.keystore``.
"""

from __future__ import annotations

from typing import Final

# -- signatures (Ed25519 over DOMAIN || msgpack(...)) -----------------------------------------
AUTH_DOMAIN: Final = b"salon/auth/v1\x00"  # answer to the server's challenge
RECORD_DOMAIN: Final = b"salon/record/v1\x00"  # a record of the membership chain
JOIN_DOMAIN: Final = b"salon/join/v1\x00"  # an invite key admitting one member key
CALL_ACTION_DOMAIN: Final = b"salon/call-action/v1\x00"  # a signed call action
CALL_SIGNAL_DOMAIN: Final = b"salon/call-signal/v1\x00"  # a sealed call signal's body
MESSAGE_SIG: Final = b"salon/message-sig/v1\x00"  # a chat message, inside its encryption
STORY_SIG: Final = b"salon/story-sig/v1\x00"  # a story's meta block, inside its encryption

# -- sealed plaintexts (the first element of a MessagePack array, so a str) --------------------
SEALED_KEY_DOMAIN: Final = "salon/sealed-key/v1"  # a key inside an envelope (protocol.roomkeys)

# -- associated data (XChaCha20-Poly1305) -----------------------------------------------------
MESSAGE_AD: Final = b"salon/message-ad/v1\x00"
STORY_AD: Final = b"salon/story-ad/v1\x00"

# -- hashes -----------------------------------------------------------------------------------
FINGERPRINT_DOMAIN: Final = b"salon/fingerprint/v1\x00"  # SHA-256, first 8 bytes as hex
CALL_KEY_COMMITMENT_DOMAIN: Final = b"salon/call-key-commitment/v1\x00"  # SHA-256[:16]
CALL_CODE_DOMAIN: Final = b"salon/call-verification-code/v1\x00"  # SHA-256
CALL_LINK_PERSON: Final = b"salon-call-link"  # BLAKE2b-128 personalization of a pair link
ROOM_KEY_COMMIT_DOMAIN: Final = b"salon/room-key-commit/v1\x00"  # SHA-256 (protocol.roomkeys)

# -- HKDF-SHA256 info labels ------------------------------------------------------------------
INVITE_SIGN_LABEL: Final = "salon/invite/sign/v1"  # link secret -> invite Ed25519 seed
INVITE_SEAL_LABEL: Final = "salon/invite/seal/v1"  # link secret -> secretbox key of the seal
INVITE_PREVIEW_LABEL: Final = "salon/invite/preview/v1"  # link secret -> key of the preview
MESSAGE_LABEL: Final = "salon/room-message/v1"  # room key -> message key
STORY_LABEL: Final = "salon/room-story/v1"  # room key -> story key
CALL_MEDIA_RATCHET_LABEL: Final = "salon/call-media-ratchet/v1"  # media key -> next epoch
# room key of one generation -> the next (context: msgpack([space, room, epoch, generation]))
ROOM_KEY_RATCHET_LABEL: Final = "salon/room-key-ratchet/v1"

# -- SFrame (RFC 9605 §4.4.2, verbatim: note the trailing space) ------------------------------
SFRAME_KEY_LABEL: Final = b"SFrame 1.0 Secret key "
SFRAME_SALT_LABEL: Final = b"SFrame 1.0 Secret salt "

# -- server <-> SFU node control channel (HMAC-SHA256; not seen by clients) --------------------
SFU_NODE_DOMAIN: Final = b"salon/sfu-node/v1\x00"
