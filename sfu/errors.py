"""Errors of the SFU package.

Hierarchy::

    SfuError                     root; carries a stable ``code`` the control plane relays
    ├── InvalidOffer             unparsable SDP, unsupported media or codec   invalid_sdp
    ├── OfferTooLarge            SDP, m-line or candidate count over limits   too_large
    └── NotFound                 unknown conference or participant            not_found

The codes match the spaces server's (``spaces/errors.py``) where they mean the same thing.
"""

from __future__ import annotations


class SfuError(Exception):
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidOffer(SfuError):
    code = "invalid_sdp"


class OfferTooLarge(SfuError):
    code = "too_large"


class NotFound(SfuError):
    code = "not_found"
