"""Errors of the SFU package.

Hierarchy::

    SfuError                     root; carries a stable ``code`` the control plane relays
    ├── InvalidOffer             unparsable SDP, unsupported media or codec   invalid_sdp
    ├── OfferTooLarge            SDP, m-line or candidate count over limits   too_large
    ├── InvalidView              a view naming a slot the participant lacks   invalid_message
    └── NotFound                 unknown conference or participant            not_found

The codes match the spaces server's (``protocol/errors.py``) where they mean the same thing.
"""

from __future__ import annotations

from protocol.errors import ErrorCode


class SfuError(Exception):
    code = ErrorCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidOffer(SfuError):
    code = ErrorCode.INVALID_SDP


class OfferTooLarge(SfuError):
    code = ErrorCode.TOO_LARGE


class InvalidView(SfuError):
    code = ErrorCode.INVALID_MESSAGE


class NotFound(SfuError):
    code = ErrorCode.NOT_FOUND
