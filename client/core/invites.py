"""Invite links: ``http(s)://HOST/join/<invite_id>#<secret>`` (DESIGN §4).

The secret lives in the URL fragment, which HTTP clients never send. From it the client
derives, bound to the invite id, an Ed25519 *invite key* (its public half is all the server
stores), a *seal key* that encrypts the space key for joiners (released only with a recorded
join) and a *preview key* that encrypts what the join screen shows (released on opening the
link). Pure functions only.
"""

from __future__ import annotations

import base64
import binascii
import secrets
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from client.core.crypto import hkdf, public_signing_key
from client.core.errors import LinkError
from protocol.ids import is_valid_id, new_id
from protocol.labels import INVITE_PREVIEW_LABEL, INVITE_SEAL_LABEL, INVITE_SIGN_LABEL

SECRET_LEN: Final = 32


@dataclass(frozen=True)
class InviteLink:
    server: str  # scheme://host[:port][/prefix]
    invite_id: str
    secret: bytes

    def __str__(self) -> str:
        fragment = base64.urlsafe_b64encode(self.secret).rstrip(b"=").decode()
        return f"{self.server}/join/{self.invite_id}#{fragment}"

    @property
    def signing_seed(self) -> bytes:
        return invite_signing_seed(self.secret, self.invite_id)

    @property
    def invite_key(self) -> bytes:
        return public_signing_key(self.signing_seed)

    @property
    def seal_key(self) -> bytes:
        return invite_seal_key(self.secret, self.invite_id)

    @property
    def preview_key(self) -> bytes:
        return invite_preview_key(self.secret, self.invite_id)


def new_invite_link(server: str) -> InviteLink:
    return InviteLink(server.rstrip("/"), new_id(), secrets.token_bytes(SECRET_LEN))


def invite_signing_seed(secret: bytes, invite_id: str) -> bytes:
    return hkdf(secret, INVITE_SIGN_LABEL, invite_id.encode())


def invite_seal_key(secret: bytes, invite_id: str) -> bytes:
    return hkdf(secret, INVITE_SEAL_LABEL, invite_id.encode())


def invite_preview_key(secret: bytes, invite_id: str) -> bytes:
    return hkdf(secret, INVITE_PREVIEW_LABEL, invite_id.encode())


def parse_invite_link(text: str) -> InviteLink:
    """Parse a link; raises LinkError with a reason a person can act on."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError on a malformed host:port
    except ValueError:
        raise LinkError("not an invite link: its address is malformed") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise LinkError("not an invite link: expected http(s)://HOST/join/ID#SECRET")
    prefix, sep, invite_id = parts.path.rpartition("/join/")
    if not sep or not is_valid_id(invite_id):
        raise LinkError("not an invite link: the path must be /join/ID")
    if not parts.fragment:
        raise LinkError("the invite link is missing its secret (the part after #)")
    try:
        padded = parts.fragment + "=" * (-len(parts.fragment) % 4)
        secret = base64.urlsafe_b64decode(padded.encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise LinkError("the invite link's secret is damaged") from None
    if len(secret) != SECRET_LEN:
        raise LinkError("the invite link's secret is damaged (wrong length)")
    return InviteLink(f"{parts.scheme}://{parts.netloc}{prefix}", invite_id, secret)
