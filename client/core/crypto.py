"""Small, named wrappers over libsodium (PyNaCl) and HKDF, so key use is explicit.

Every derived key has its own label (``salon/<purpose>/v1``). ``secretbox`` seals with a
random nonce; ``seal_to``/``open_from`` are crypto_box (X25519, authenticated sender).
"""

from __future__ import annotations

import secrets
from typing import Final

import nacl.exceptions
import nacl.public
import nacl.secret
import nacl.signing
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from client.core.errors import VerificationError
from protocol.roomkeys import KeyBindingError, SealedKey, open_sealed_key, sealed_key

KEY_LEN: Final = 32


def random_key() -> bytes:
    return secrets.token_bytes(KEY_LEN)


def hkdf(secret: bytes, label: str, context: bytes = b"", length: int = KEY_LEN) -> bytes:
    """HKDF-SHA256 with an empty salt and ``label || context`` as info."""
    info = label.encode() + b"\x00" + context
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(secret)


def secretbox(key: bytes, plaintext: bytes, nonce: bytes | None = None) -> bytes:
    """``nonce || XSalsa20-Poly1305``; the nonce is random unless given (test vectors)."""
    return bytes(nacl.secret.SecretBox(key).encrypt(plaintext, nonce))


def secretbox_open(key: bytes, ciphertext: bytes, what: str = "data") -> bytes:
    try:
        return bytes(nacl.secret.SecretBox(key).decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerificationError(f"cannot decrypt {what}: wrong key or altered data") from None


def seal_to(
    sender_secret: bytes, recipient_public: bytes, plaintext: bytes, nonce: bytes | None = None
) -> bytes:
    """crypto_box: ``nonce || ciphertext``; the nonce is random unless given (test vectors)."""
    box = nacl.public.Box(
        nacl.public.PrivateKey(sender_secret), nacl.public.PublicKey(recipient_public)
    )
    return bytes(box.encrypt(plaintext, nonce))


def open_from(recipient_secret: bytes, sender_public: bytes, ciphertext: bytes) -> bytes:
    try:
        box = nacl.public.Box(
            nacl.public.PrivateKey(recipient_secret), nacl.public.PublicKey(sender_public)
        )
        return bytes(box.decrypt(ciphertext))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise VerificationError("cannot open a sealed key: wrong sender or altered data") from None


def seal_key(
    sender_secret: bytes,
    recipient_public: bytes,
    space_id: str,
    scope: str,
    epoch: int,
    generation: int,
    key: bytes,
    nonce: bytes | None = None,
) -> bytes:
    """An envelope's box: ``key`` sealed together with what it is for (protocol.roomkeys).
    ``nonce`` is for known-answer vectors only (random if None)."""
    return seal_to(
        sender_secret, recipient_public, sealed_key(space_id, scope, epoch, generation, key), nonce
    )


def open_key(
    recipient_secret: bytes,
    sender_public: bytes,
    box: bytes,
    space_id: str,
    scope: str,
    epoch: int,
) -> SealedKey:
    """Open an envelope's box and check it is for (space, scope, epoch)."""
    try:
        return open_sealed_key(
            open_from(recipient_secret, sender_public, box), space_id, scope, epoch
        )
    except KeyBindingError as exc:
        raise VerificationError(exc.message) from None


def signing_key(seed: bytes) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(seed)


def sign(seed: bytes, message: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).sign(message).signature)


def public_signing_key(seed: bytes) -> bytes:
    return bytes(nacl.signing.SigningKey(seed).verify_key)


def public_box_key(secret: bytes) -> bytes:
    return bytes(nacl.public.PrivateKey(secret).public_key)
