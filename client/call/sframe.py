"""SFrame (RFC 9605): end-to-end encryption of media frames, sans-I/O.

This module implements the Secure Frame format of RFC 9605 with no I/O and no
global state.  Section references below are to RFC 9605.

* §4.3   SFrame header: a config byte ``|X|K(3)|Y|C(3)|`` followed by the
  optional big-endian KID and CTR.  Values 0-7 live in the config byte; larger
  values are appended in the minimum number of bytes (a MUST), so non-minimal
  encodings are rejected on decode.  KID and CTR are unsigned 64-bit integers.
* §4.4.2 Key schedule: ``sframe_secret = HKDF-Extract("", base_key)``, then
  ``HKDF-Expand`` with the labels ``"SFrame 1.0 Secret key " || KID || suite``
  and ``"SFrame 1.0 Secret salt " || KID || suite`` (KID as 8 bytes BE, cipher
  suite as 2 bytes BE; note the single space before KID).
* §4.4.3 Nonce = ``sframe_salt XOR CTR`` (CTR as an Nn-byte big-endian
  integer); AAD = ``header || metadata``; output = ``header || AEAD output``.
* §4.5   Cipher suites 1-5 (see :class:`CipherSuite`).
* §4.5.1 AES-CTR + HMAC AEAD: the AEAD key is split (no KDF) into the first
  Nka bytes (AES key) and the remaining Nh bytes (HMAC key); the CTR initial
  counter block is ``nonce || 0x00000000``; the tag is
  ``HMAC(auth_key, len(aad)_8 || len(ct)_8 || Nt_8 || nonce || aad || ct)``
  truncated to Nt bytes.
* §7.4 / §9.1 Senders never reuse a (key, CTR) pair; §9.3 receiver-side
  anti-replay is optional and implemented here as a sliding window per KID.
* §4.4.1 A base_key is usable for encryption or decryption, never both.

Exception hierarchy (every failure raised by this module is an ``SFrameError``)::

    SFrameError                      root; catch this on the media path
    +-- HeaderError                  malformed/truncated/non-minimal header, KID/CTR out of range
    +-- AuthenticationError          tag mismatch or ciphertext shorter than the tag
    +-- UnknownKeyError              no usable key for this KID (RFC §4.4.4: MAY buffer and retry)
    +-- CounterExhaustedError        the sender's CTR space for a KID is used up
    +-- ReplayError                  authentic frame whose CTR was already accepted
    +-- UnsupportedCipherSuiteError  cipher suite not in RFC 9605 §4.5

Public API: :func:`encrypt` / :func:`decrypt` (one-shot, derive keys per call),
:class:`SFrameContext` (media path: cached keys, counters, replay windows), the
codec helpers :func:`split_vp8`, :func:`split_opus`, :func:`protect_frame`,
:func:`unprotect_frame`, plus the building blocks used by the test vectors
(:func:`encode_header`, :func:`decode_header`, :func:`derive_key_salt`,
:func:`make_nonce`, :func:`new_aead`, :class:`AesCtrHmac`).
"""

from __future__ import annotations

import enum
import hmac as _stdlib_hmac
import threading
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from protocol.labels import SFRAME_KEY_LABEL as _KEY_LABEL
from protocol.labels import SFRAME_SALT_LABEL as _SALT_LABEL

__all__ = [
    "Aead",
    "AesCtrHmac",
    "AuthenticationError",
    "CipherSuite",
    "CounterExhaustedError",
    "Header",
    "HeaderError",
    "KeyUsage",
    "ReplayError",
    "SFrameContext",
    "SFrameError",
    "UnknownKeyError",
    "UnsupportedCipherSuiteError",
    "decode_header",
    "decrypt",
    "derive_key_salt",
    "encode_header",
    "encrypt",
    "header_length",
    "make_nonce",
    "new_aead",
    "protect_frame",
    "split_opus",
    "split_vp8",
    "unprotect_frame",
]

MAX_KID = 2**64 - 1
MAX_CTR = 2**64 - 1
DEFAULT_REPLAY_WINDOW = 128

_CTR_BLOCK_SUFFIX = b"\x00\x00\x00\x00"


# --------------------------------------------------------------------------- errors


class SFrameError(Exception):
    """Root of every error raised by this module."""


class HeaderError(SFrameError):
    """The SFrame header is malformed, truncated, non-minimal, or out of range."""


class AuthenticationError(SFrameError):
    """The ciphertext did not authenticate (or is too short to carry a tag)."""


class UnknownKeyError(SFrameError):
    """No key usable for this operation is registered under the KID."""


class CounterExhaustedError(SFrameError):
    """Every CTR value for this KID has been used; a new key is required."""


class ReplayError(SFrameError):
    """The frame authenticated but its CTR was already accepted (or is too old)."""


class UnsupportedCipherSuiteError(SFrameError):
    """The cipher suite identifier is not one of RFC 9605 §4.5."""


# --------------------------------------------------------------------------- suites


@dataclass(frozen=True, slots=True)
class _SuiteParams:
    nh: int  # hash output size
    nka: int | None  # AES key size inside the CTR+HMAC compound key; None for GCM
    nk: int  # AEAD key size
    nn: int  # nonce size
    nt: int  # tag size (AEAD overhead)
    hash_name: Literal["SHA256", "SHA512"]


_SUITE_PARAMS: dict[int, _SuiteParams] = {
    1: _SuiteParams(nh=32, nka=16, nk=48, nn=12, nt=10, hash_name="SHA256"),
    2: _SuiteParams(nh=32, nka=16, nk=48, nn=12, nt=8, hash_name="SHA256"),
    3: _SuiteParams(nh=32, nka=16, nk=48, nn=12, nt=4, hash_name="SHA256"),
    4: _SuiteParams(nh=32, nka=None, nk=16, nn=12, nt=16, hash_name="SHA256"),
    5: _SuiteParams(nh=64, nka=None, nk=32, nn=12, nt=16, hash_name="SHA512"),
}


class CipherSuite(enum.IntEnum):
    """RFC 9605 §4.5 / §8.1 cipher suites with their Table 1 constants."""

    AES_128_CTR_HMAC_SHA256_80 = 1
    AES_128_CTR_HMAC_SHA256_64 = 2
    AES_128_CTR_HMAC_SHA256_32 = 3
    AES_128_GCM_SHA256_128 = 4
    AES_256_GCM_SHA512_128 = 5

    @property
    def _params(self) -> _SuiteParams:
        return _SUITE_PARAMS[self.value]

    @property
    def nh(self) -> int:
        """Hash output size in bytes."""
        return self._params.nh

    @property
    def nka(self) -> int | None:
        """AES key size of the CTR+HMAC compound key (None for GCM suites)."""
        return self._params.nka

    @property
    def nk(self) -> int:
        """AEAD key size in bytes (sframe_key length)."""
        return self._params.nk

    @property
    def nn(self) -> int:
        """AEAD nonce size in bytes (sframe_salt length)."""
        return self._params.nn

    @property
    def nt(self) -> int:
        """Authentication tag size in bytes."""
        return self._params.nt

    @property
    def hash_name(self) -> str:
        """Name of the suite's hash function ("SHA256" or "SHA512")."""
        return self._params.hash_name

    @property
    def hash(self) -> hashes.HashAlgorithm:
        """A fresh ``cryptography`` hash object for HKDF/HMAC."""
        return hashes.SHA256() if self._params.hash_name == "SHA256" else hashes.SHA512()

    @property
    def is_ctr_hmac(self) -> bool:
        """True for the §4.5.1 AES-CTR + HMAC suites."""
        return self._params.nka is not None


def _suite(cipher_suite: int) -> CipherSuite:
    try:
        return CipherSuite(cipher_suite)
    except ValueError:
        raise UnsupportedCipherSuiteError(f"unsupported cipher suite {cipher_suite!r}") from None


# --------------------------------------------------------------------------- header (§4.3)


class Header(NamedTuple):
    """A decoded SFrame header; ``length`` is its encoded size in bytes."""

    kid: int
    ctr: int
    length: int


def _encode_field(value: int) -> tuple[int, int, bytes]:
    """Return (flag, 3-bit field, trailing bytes) for one compact header value."""
    if value < 8:
        return 0, value, b""
    size = (value.bit_length() + 7) // 8
    return 1, size - 1, value.to_bytes(size, "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """Encode KID and CTR into the minimal SFrame header (RFC 9605 §4.3)."""
    if not 0 <= kid <= MAX_KID:
        raise HeaderError(f"KID out of range: {kid}")
    if not 0 <= ctr <= MAX_CTR:
        raise HeaderError(f"CTR out of range: {ctr}")
    x, k, kid_bytes = _encode_field(kid)
    y, c, ctr_bytes = _encode_field(ctr)
    config = (x << 7) | (k << 4) | (y << 3) | c
    return bytes((config,)) + kid_bytes + ctr_bytes


def header_length(config: int) -> int:
    """Total header size implied by a config byte."""
    size = 1
    if config & 0x80:
        size += ((config >> 4) & 0x07) + 1
    if config & 0x08:
        size += (config & 0x07) + 1
    return size


def _decode_field(data: bytes, pos: int, size: int, what: str) -> int:
    if len(data) < pos + size:
        raise HeaderError(f"truncated SFrame header ({what})")
    value = int.from_bytes(data[pos : pos + size], "big")
    # §4.3: values 0-7 MUST use the config byte, larger ones the minimal length.
    if value < 8 or (value.bit_length() + 7) // 8 != size:
        raise HeaderError(f"non-minimal {what} encoding")
    return value


def decode_header(data: bytes) -> Header:
    """Parse the SFrame header at the start of ``data`` (trailing bytes ignored)."""
    if not data:
        raise HeaderError("empty SFrame ciphertext")
    config = data[0]
    pos = 1
    if config & 0x80:
        klen = ((config >> 4) & 0x07) + 1
        kid = _decode_field(data, pos, klen, "KID")
        pos += klen
    else:
        kid = (config >> 4) & 0x07
    if config & 0x08:
        clen = (config & 0x07) + 1
        ctr = _decode_field(data, pos, clen, "CTR")
        pos += clen
    else:
        ctr = config & 0x07
    return Header(kid, ctr, pos)


# --------------------------------------------------------------------------- keys (§4.4.2)


def derive_key_salt(cipher_suite: int, kid: int, base_key: bytes) -> tuple[bytes, bytes]:
    """Derive ``(sframe_key, sframe_salt)`` for a KID (RFC 9605 §4.4.2)."""
    suite = _suite(cipher_suite)
    if not 0 <= kid <= MAX_KID:
        raise HeaderError(f"KID out of range: {kid}")
    context = kid.to_bytes(8, "big") + suite.value.to_bytes(2, "big")
    secret = HKDF.extract(suite.hash, b"", bytes(base_key))
    key = HKDFExpand(suite.hash, suite.nk, _KEY_LABEL + context).derive(secret)
    salt = HKDFExpand(suite.hash, suite.nn, _SALT_LABEL + context).derive(secret)
    return key, salt


def make_nonce(salt: bytes, ctr: int) -> bytes:
    """``sframe_salt XOR CTR``, CTR encoded big-endian to the salt's length (§4.4.3)."""
    if not 0 <= ctr <= MAX_CTR:
        raise HeaderError(f"CTR out of range: {ctr}")
    return (int.from_bytes(salt, "big") ^ ctr).to_bytes(len(salt), "big")


# --------------------------------------------------------------------------- AEADs


class Aead(Protocol):
    """The RFC 5116 shape shared by AESGCM and :class:`AesCtrHmac` (tag appended)."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


class AesCtrHmac:
    """The AES-CTR + HMAC encrypt-then-MAC AEAD of RFC 9605 §4.5.1.

    ``key`` is the compound AEAD key: the first ``nka`` bytes key AES-CTR, the
    rest keys HMAC.  Raises :class:`AuthenticationError` on a bad tag.
    """

    __slots__ = ("_aes", "_mac", "_nonce_size", "auth_key", "enc_key", "nt")

    def __init__(
        self, key: bytes, *, nka: int, hash_algorithm: hashes.HashAlgorithm, nt: int
    ) -> None:
        if nka not in (16, 24, 32) or len(key) != nka + hash_algorithm.digest_size:
            raise ValueError("compound key must be Nka + Nh bytes")
        if not 1 <= nt <= hash_algorithm.digest_size:
            raise ValueError("tag length out of range")
        self.enc_key = bytes(key[:nka])
        self.auth_key = bytes(key[nka:])
        self.nt = nt
        self._aes = algorithms.AES(self.enc_key)
        # Keyed once; each frame works on a copy so HMAC is not re-keyed per frame.
        self._mac = crypto_hmac.HMAC(self.auth_key, hash_algorithm)
        self._nonce_size = 12

    def _ctr(self, nonce: bytes, data: bytes) -> bytes:
        cipher = Cipher(self._aes, modes.CTR(nonce + _CTR_BLOCK_SUFFIX)).encryptor()
        return cipher.update(data) + cipher.finalize()

    def _tag(self, nonce: bytes, aad: bytes, ct: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(
            len(aad).to_bytes(8, "big")
            + len(ct).to_bytes(8, "big")
            + self.nt.to_bytes(8, "big")
            + nonce
            + aad
            + ct
        )
        return mac.finalize()[: self.nt]

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(nonce) != self._nonce_size:
            raise ValueError("nonce must be 12 bytes")
        aad = associated_data or b""
        ct = self._ctr(nonce, data)
        return ct + self._tag(nonce, aad, ct)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(nonce) != self._nonce_size:
            raise ValueError("nonce must be 12 bytes")
        if len(data) < self.nt:
            raise AuthenticationError("ciphertext shorter than the tag")
        aad = associated_data or b""
        ct, tag = data[: -self.nt], data[-self.nt :]
        # Verify before decrypting (encrypt-then-MAC); compare in constant time.
        if not _stdlib_hmac.compare_digest(self._tag(nonce, aad, ct), tag):
            raise AuthenticationError("authentication tag mismatch")
        return self._ctr(nonce, ct)


def new_aead(cipher_suite: int, sframe_key: bytes) -> Aead:
    """Build the AEAD for a suite from an Nk-byte ``sframe_key``."""
    suite = _suite(cipher_suite)
    if len(sframe_key) != suite.nk:
        raise ValueError(f"sframe_key must be {suite.nk} bytes for {suite.name}")
    if suite.nka is not None:
        return AesCtrHmac(sframe_key, nka=suite.nka, hash_algorithm=suite.hash, nt=suite.nt)
    return AESGCM(sframe_key)


def _open(aead: Aead, nonce: bytes, data: bytes, aad: bytes, nt: int) -> bytes:
    if len(data) < nt:
        raise AuthenticationError("ciphertext shorter than the tag")
    try:
        return aead.decrypt(nonce, data, aad)
    except InvalidTag:
        raise AuthenticationError("authentication tag mismatch") from None


# --------------------------------------------------------------------------- one-shot API


def encrypt(
    cipher_suite: int, base_key: bytes, kid: int, ctr: int, metadata: bytes, plaintext: bytes
) -> bytes:
    """Return the SFrame ciphertext ``header || ct || tag`` (RFC 9605 §4.4.3).

    Derives the keys on every call; use :class:`SFrameContext` on the media path.
    The caller is responsible for never reusing (base_key, KID, CTR).
    """
    suite = _suite(cipher_suite)
    header = encode_header(kid, ctr)
    key, salt = derive_key_salt(suite, kid, base_key)
    return header + new_aead(suite, key).encrypt(
        make_nonce(salt, ctr), plaintext, header + metadata
    )


def decrypt(cipher_suite: int, base_key: bytes, metadata: bytes, sframe_ciphertext: bytes) -> bytes:
    """Authenticate and decrypt an SFrame ciphertext (RFC 9605 §4.4.4).

    Raises an :class:`SFrameError` subclass on any failure.
    """
    suite = _suite(cipher_suite)
    data = bytes(sframe_ciphertext)
    header = decode_header(data)
    key, salt = derive_key_salt(suite, header.kid, base_key)
    aad = data[: header.length] + metadata
    return _open(
        new_aead(suite, key), make_nonce(salt, header.ctr), data[header.length :], aad, suite.nt
    )


# --------------------------------------------------------------------------- context


class KeyUsage(enum.Enum):
    """RFC 9605 §4.4.1: a base_key is for encryption or decryption, never both."""

    ENCRYPT = "encrypt"
    DECRYPT = "decrypt"


class _KeyState:
    """Per-KID cached material: derived once, reused for every frame."""

    __slots__ = ("aead", "next_ctr", "replay_bitmap", "replay_top", "salt", "usage")

    def __init__(self, aead: Aead, salt: int, usage: KeyUsage | None, next_ctr: int) -> None:
        self.aead = aead
        self.salt = salt
        self.usage = usage
        self.next_ctr = next_ctr
        self.replay_top = -1  # highest accepted CTR; -1 = nothing accepted yet
        self.replay_bitmap = 0  # bit i set <=> CTR (replay_top - i) was accepted


def _is_encrypt_only(state: _KeyState) -> bool:
    return state.usage is KeyUsage.ENCRYPT


class SFrameContext:
    """Keys, send counters and replay windows for one cipher suite.

    * ``add_key`` derives ``sframe_key``/``sframe_salt`` and builds the AEAD once
      per KID; per-frame work is one AEAD call plus header/nonce arithmetic.
    * ``encrypt`` takes the next CTR of the KID (starting at ``next_ctr``, by
      default 0) and never hands out a CTR twice under one key; past 2**64-1 it
      raises :class:`CounterExhaustedError`.
    * ``decrypt`` changes no state unless the frame authenticates; with
      ``replay_window`` > 0 an authentic frame whose CTR was already accepted, or
      is ``replay_window`` or more below the highest accepted CTR, raises
      :class:`ReplayError`.
    * A key added with ``usage=None`` becomes encrypt-only or decrypt-only on its
      first successful use (RFC §4.4.1), so use separate sender and receiver
      contexts.
    """

    def __init__(
        self, cipher_suite: int, *, replay_window: int | None = DEFAULT_REPLAY_WINDOW
    ) -> None:
        self.cipher_suite = _suite(cipher_suite)
        if replay_window is not None and replay_window < 0:
            raise ValueError("replay_window must be >= 0")
        self.replay_window = replay_window or 0
        self._keys: dict[int, _KeyState] = {}
        # Guards CTR reservation and replay bookkeeping if frames race across threads.
        self._lock = threading.Lock()

    def add_key(
        self,
        kid: int,
        base_key: bytes,
        *,
        usage: KeyUsage | None = None,
        next_ctr: int = 0,
    ) -> None:
        """Register ``base_key`` under ``kid``.

        ``next_ctr`` resumes a persisted sender (RFC §9.1).  Re-adding a KID
        raises ``ValueError``: call :meth:`remove_key` first, and never re-add
        the same (KID, base_key) with an old counter.
        """
        if not 0 <= next_ctr <= MAX_CTR + 1:
            raise ValueError("next_ctr out of range")
        key, salt = derive_key_salt(self.cipher_suite, kid, base_key)
        state = _KeyState(
            new_aead(self.cipher_suite, key), int.from_bytes(salt, "big"), usage, next_ctr
        )
        with self._lock:
            if kid in self._keys:
                raise ValueError(f"KID {kid} already has a key; remove it first")
            self._keys[kid] = state

    def remove_key(self, kid: int) -> None:
        """Forget the key (and its counter and replay window) for ``kid``."""
        with self._lock:
            if self._keys.pop(kid, None) is None:
                raise UnknownKeyError(f"no key for KID {kid}")

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def kids(self) -> list[int]:
        """The registered KIDs."""
        return list(self._keys)

    def next_counter(self, kid: int) -> int:
        """The CTR the next :meth:`encrypt` under ``kid`` will use (to persist, §9.1)."""
        state = self._keys.get(kid)
        if state is None:
            raise UnknownKeyError(f"no key for KID {kid}")
        return state.next_ctr

    def encrypt(self, kid: int, metadata: bytes, plaintext: bytes) -> bytes:
        """Encrypt one frame under ``kid`` with its next counter."""
        with self._lock:
            state = self._keys.get(kid)
            if state is None:
                raise UnknownKeyError(f"no key for KID {kid}")
            if state.usage is KeyUsage.DECRYPT:
                raise UnknownKeyError(f"KID {kid} is a decryption-only key")
            ctr = state.next_ctr
            if ctr > MAX_CTR:
                raise CounterExhaustedError(f"CTR space exhausted for KID {kid}")
            # Reserve the CTR before using it so it can never be handed out twice.
            state.next_ctr = ctr + 1
            state.usage = KeyUsage.ENCRYPT
        header = encode_header(kid, ctr)
        nonce = (state.salt ^ ctr).to_bytes(12, "big")
        return header + state.aead.encrypt(nonce, plaintext, header + metadata)

    def decrypt(self, metadata: bytes, data: bytes) -> tuple[int, bytes]:
        """Authenticate and decrypt one SFrame ciphertext; return ``(kid, plaintext)``."""
        data = bytes(data)
        kid, ctr, hlen = decode_header(data)
        state = self._keys.get(kid)
        if state is None:
            raise UnknownKeyError(f"no key for KID {kid}")
        if _is_encrypt_only(state):
            raise UnknownKeyError(f"KID {kid} is an encryption-only key")
        nonce = (state.salt ^ ctr).to_bytes(12, "big")
        plaintext = _open(
            state.aead, nonce, data[hlen:], data[:hlen] + metadata, self.cipher_suite.nt
        )
        # Only an authentic frame may touch receiver state.
        with self._lock:
            if self._keys.get(kid) is not state:
                raise UnknownKeyError(f"key for KID {kid} was removed")
            # Re-checked under the lock: a concurrent encrypt may have claimed the key.
            if _is_encrypt_only(state):
                raise UnknownKeyError(f"KID {kid} is an encryption-only key")
            if self.replay_window:
                self._check_and_record(state, kid, ctr)
            state.usage = KeyUsage.DECRYPT
        return kid, plaintext

    def _check_and_record(self, state: _KeyState, kid: int, ctr: int) -> None:
        window = self.replay_window
        top = state.replay_top
        if ctr > top:
            shift = ctr - top
            # Guard the shift: CTR jumps can be ~2**64 and must not build a huge int.
            bitmap = state.replay_bitmap << shift if shift < window else 0
            state.replay_bitmap = (bitmap | 1) & ((1 << window) - 1)
            state.replay_top = ctr
            return
        age = top - ctr
        if age >= window:
            raise ReplayError(f"CTR {ctr} for KID {kid} is outside the replay window")
        if state.replay_bitmap >> age & 1:
            raise ReplayError(f"CTR {ctr} for KID {kid} was already received")
        state.replay_bitmap |= 1 << age


# --------------------------------------------------------------------------- codecs

Codec = Literal["vp8", "opus"]

_VP8_KEYFRAME_CLEAR = 10  # 3-byte frame tag + 7-byte keyframe start code and dimensions
_VP8_DELTA_CLEAR = 3  # 3-byte frame tag
_OPUS_CLEAR = 1  # TOC byte


def _vp8_clear_size(first_byte: int) -> int:
    # VP8 frame tag bit 0 is the inverse keyframe flag (RFC 6386 §9.1).
    return _VP8_KEYFRAME_CLEAR if first_byte & 0x01 == 0 else _VP8_DELTA_CLEAR


def split_vp8(frame: bytes) -> tuple[bytes, bytes]:
    """Split a VP8 frame into (clear header bytes, rest): 10 for keyframes, 3 otherwise."""
    if not frame:
        return b"", b""
    size = _vp8_clear_size(frame[0])
    return bytes(frame[:size]), bytes(frame[size:])


def split_opus(frame: bytes) -> tuple[bytes, bytes]:
    """Split an Opus frame into (TOC byte, rest)."""
    return bytes(frame[:_OPUS_CLEAR]), bytes(frame[_OPUS_CLEAR:])


def _clear_size(codec: str, data: bytes) -> int:
    if codec == "vp8":
        return _vp8_clear_size(data[0])
    if codec == "opus":
        return _OPUS_CLEAR
    raise ValueError(f"unsupported codec {codec!r}")


def protect_frame(ctx: SFrameContext, kid: int, codec: Codec | str, frame: bytes) -> bytes:
    """Return ``clear codec header || SFrame(header || ct || tag)``.

    The clear bytes stay readable for the SFU/packetizer and are authenticated
    as the SFrame metadata.
    """
    if codec == "vp8":
        clear, rest = split_vp8(frame)
    elif codec == "opus":
        clear, rest = split_opus(frame)
    else:
        raise ValueError(f"unsupported codec {codec!r}")
    return clear + ctx.encrypt(kid, clear, rest)


def _split_candidates(codec: str, data: bytes, nt: int) -> list[int]:
    """Possible lengths of the clear prefix, most likely first.

    A normal frame has the full codec prefix.  A frame shorter than that was sent
    entirely in clear with an empty payload, so the SFrame part is exactly
    header + tag; those shorter splits are only tried if the normal one fails.
    """
    full = _clear_size(codec, data)
    candidates: list[int] = []
    if len(data) > full and len(data) - full >= header_length(data[full]) + nt:
        candidates.append(full)
    for size in range(min(full, len(data)) - 1, -1, -1):
        if size + header_length(data[size]) + nt == len(data):
            candidates.append(size)
    return candidates


def unprotect_frame(ctx: SFrameContext, codec: Codec | str, data: bytes) -> tuple[int, bytes]:
    """Invert :func:`protect_frame`: return ``(kid, original frame)``."""
    data = bytes(data)
    if not data:
        raise HeaderError("empty protected frame")
    candidates = _split_candidates(codec, data, ctx.cipher_suite.nt)
    if not candidates:
        raise HeaderError("protected frame too short")
    errors: list[SFrameError] = []
    for size in candidates:
        clear = data[:size]
        try:
            kid, rest = ctx.decrypt(clear, data[size:])
        except (HeaderError, AuthenticationError, UnknownKeyError) as exc:
            # A wrong split cannot authenticate: try the next, report the first failure.
            errors.append(exc)
            continue
        return kid, clear + rest
    raise errors[0]
