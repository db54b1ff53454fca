"""Errors of the spaces server.

Hierarchy::

    SpacesError                  root; carries a stable ``code`` sent to clients
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
    └── TooLarge                 message or field above its limit         too_large

The codes are part of the wire contract: clients switch on them, so never rename one.
"""

from __future__ import annotations


class SpacesError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidMessage(SpacesError):
    code = "invalid_message"


class Unauthenticated(SpacesError):
    code = "unauthenticated"


class Forbidden(SpacesError):
    code = "forbidden"


class NotFound(SpacesError):
    code = "not_found"


class Conflict(SpacesError):
    code = "conflict"


class Expired(SpacesError):
    code = "expired"


class Revoked(SpacesError):
    code = "revoked"


class UsedUp(SpacesError):
    code = "used_up"


class Banned(SpacesError):
    code = "banned"


class RateLimited(SpacesError):
    code = "rate_limited"


class TooLarge(SpacesError):
    code = "too_large"
