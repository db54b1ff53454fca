"""Random ids chosen by one side and named on command lines: rooms, stories, invites, calls.

An id is URL-safe base64 text (``A-Z a-z 0-9 _ -``), 8 to 64 characters, that never begins
with ``-``: people paste ids into ``salon`` commands, and a leading ``-`` reads as an option
(it used to break one command in 64). :func:`new_id` is the only generator of such ids on
either side; :func:`is_valid_id` is what receivers (the server, the roster rules) accept.
Space ids are not made here: they are derived from the genesis record (lower-case base32).
"""

from __future__ import annotations

import re
import secrets
from typing import Final

ID_BYTES: Final = 12  # 96 random bits, 16 characters
MIN_ID_LEN: Final = 8
MAX_ID_LEN: Final = 64
ID_PATTERN: Final = re.compile(rf"[A-Za-z0-9_][A-Za-z0-9_-]{{{MIN_ID_LEN - 1},{MAX_ID_LEN - 1}}}")


def new_id(nbytes: int = ID_BYTES) -> str:
    """A fresh random id of ``nbytes`` random bytes that does not begin with ``-``.

    Drawing again when the first character is ``-`` keeps every other id equally likely
    (it costs log2(64/63), about 0.02 bits, of the 96)."""
    while True:
        candidate = secrets.token_urlsafe(nbytes)
        if not candidate.startswith("-"):
            return candidate


def is_valid_id(text: str) -> bool:
    """Whether ``text`` is an id a peer may send: 8 to 64 URL-safe characters, no leading ``-``."""
    return ID_PATTERN.fullmatch(text) is not None


__all__ = ["ID_BYTES", "ID_PATTERN", "MAX_ID_LEN", "MIN_ID_LEN", "is_valid_id", "new_id"]
