"""Errors of the protocol, shared by the server (which raises them) and clients (which switch
on :class:`ErrorCode`).

Hierarchy::

    ProtocolError                root; carries a stable ``code`` sent to clients
    ├── InvalidMessage           malformed or unexpected message          invalid_message
    ├── Unauthenticated          no session, or a bad challenge signature unauthenticated
    ├── Forbidden                the member may not do this               forbidden
    ├── NotFound                 unknown space, invite, member            not_found
    ├── Conflict                 stale chain head, duplicate              conflict
    ├── Expired                  expired invite                           expired
    ├── Revoked                  revoked invite                           revoked
    ├── UsedUp                   invite has no uses left                  used_up
    ├── Banned                   this member key is banned                banned
    ├── RateLimited              too many requests                        rate_limited
    ├── TooLarge                 message or field above its limit         too_large
    ├── Stale                    an invite's seal predates the current key stale
    ├── CallLocked               the call is locked                       locked
    ├── CallFull                 the call cannot take more participants   call_full
    └── StaleCall                the call id moved on                     stale_call

The codes are part of the wire contract: clients switch on them, so never rename one.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Every stable error code on the wire. Never rename one: both sides switch on them."""

    INTERNAL = "internal"
    INVALID_MESSAGE = "invalid_message"
    UNAUTHENTICATED = "unauthenticated"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    EXPIRED = "expired"
    REVOKED = "revoked"
    USED_UP = "used_up"
    BANNED = "banned"
    RATE_LIMITED = "rate_limited"
    TOO_LARGE = "too_large"
    STALE = "stale"
    LOCKED = "locked"
    CALL_FULL = "call_full"
    STALE_CALL = "stale_call"
    INVALID_SDP = "invalid_sdp"
    UNAVAILABLE = "unavailable"
    STORAGE = "storage"
    CONFIG = "config"
    SFU_UNAVAILABLE = "sfu_unavailable"


class ProtocolError(Exception):
    code: ErrorCode = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMessage(ProtocolError):
    code = ErrorCode.INVALID_MESSAGE


class Unauthenticated(ProtocolError):
    code = ErrorCode.UNAUTHENTICATED


class Forbidden(ProtocolError):
    code = ErrorCode.FORBIDDEN


class NotFound(ProtocolError):
    code = ErrorCode.NOT_FOUND


class Conflict(ProtocolError):
    code = ErrorCode.CONFLICT


class Expired(ProtocolError):
    code = ErrorCode.EXPIRED


class Revoked(ProtocolError):
    code = ErrorCode.REVOKED


class UsedUp(ProtocolError):
    code = ErrorCode.USED_UP


class Banned(ProtocolError):
    code = ErrorCode.BANNED


class RateLimited(ProtocolError):
    code = ErrorCode.RATE_LIMITED


class TooLarge(ProtocolError):
    code = ErrorCode.TOO_LARGE


class Stale(ProtocolError):
    code = ErrorCode.STALE


class CallLocked(ProtocolError):
    code = ErrorCode.LOCKED


class CallFull(ProtocolError):
    code = ErrorCode.CALL_FULL


class StaleCall(ProtocolError):
    code = ErrorCode.STALE_CALL
