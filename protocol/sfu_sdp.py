"""Which media sections of an SFU offer are screen share (docs/PROTOCOL.md §15.6).

A participant's SFU offer has a published camera, a published screen share and video slots
of both kinds, all VP8 video: RFC 4796's ``a=content:slides`` attribute, right after the
section's ``a=mid`` line, marks the screen-share ones (the published track and the screen
slots). The client writes it into the offer text it sends (:func:`mark_screen_sections`);
the SFU node reads it back (:func:`screen_mids`). A browser can do the same to its offer.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

SCREEN_CONTENT: Final = "a=content:slides"


def _sections(sdp: str) -> list[list[str]]:
    """The session part, then each media section, as lists of lines (CRLF or LF)."""
    sections: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return sections


def screen_mids(sdp: str) -> set[str]:
    """The mids of the video sections marked as screen share."""
    found: set[str] = set()
    for lines in _sections(sdp)[1:]:
        if lines[0].startswith("m=video ") and SCREEN_CONTENT in lines:
            found.update(line[len("a=mid:") :] for line in lines if line.startswith("a=mid:"))
    return found


def mark_screen_sections(sdp: str, mids: Collection[str]) -> str:
    """``sdp`` (CRLF) with ``a=content:slides`` after the ``a=mid`` line of each of ``mids``."""
    out: list[str] = []
    for line in sdp.replace("\r\n", "\n").split("\n"):
        out.append(line)
        if line.startswith("a=mid:") and line[len("a=mid:") :] in mids:
            out.append(SCREEN_CONTENT)
    return "\r\n".join(out)
