"""What an SFU offer says that aiortc's SDP parser does not read (docs/PROTOCOL.md §15.6).

Screen share. A participant's SFU offer has a published camera, a published screen share
and video slots of both kinds, all VP8 video: RFC 4796's ``a=content:slides`` attribute,
right after the section's ``a=mid`` line, marks the screen-share ones (the published track
and the screen slots). The client writes it into the offer text it sends
(:func:`mark_screen_sections`); the SFU node reads it back (:func:`screen_mids`). A browser
can do the same to its offer.

Simulcast (RFC 8853, RFC 8851). A browser publishes its camera as several encodings of one
track, each RTP stream naming its layer in the rtp-stream-id header extension (RFC 8852):
``a=rid:<id> send`` per layer and ``a=simulcast:send q;h;f``, layers listed lowest resolution
first (our web client's order; the SFU relies on it). :func:`simulcast_sections` reads and
checks them (:class:`SimulcastError` otherwise); :func:`answer_simulcast` writes the answer's
side — ``a=rid:<id> recv``, ``a=simulcast:recv …`` and the two RID extmap lines, same ids as
offered — which a browser needs to keep sending every layer. Sections without ``a=simulcast``
are left as they are.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Final

SCREEN_CONTENT: Final = "a=content:slides"
RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
MAX_LAYERS: Final = 3
_RID = re.compile(r"[A-Za-z0-9]{1,16}")
_EXTMAP = re.compile(r"a=extmap:([0-9]{1,3})(?:/[a-z]+)? (\S+)")


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


class SimulcastError(ValueError):
    """An offer's simulcast attributes that the SFU will not serve (the message says why)."""


@dataclass(frozen=True, slots=True)
class Simulcast:
    """One published video section's simulcast, as offered."""

    mid: str
    rids: tuple[str, ...]  # lowest resolution first
    rid_ext_id: int  # rtp-stream-id extension: each layer's packets name their RID
    repaired_rid_ext_id: int | None  # repaired-rtp-stream-id: RTX packets name their layer


def simulcast_sections(sdp: str) -> dict[str, Simulcast]:
    """The offer's simulcast video sections by mid; raises :class:`SimulcastError` for one
    the SFU cannot forward (more than MAX_LAYERS layers, RIDs that are not 1-16 letters or
    digits, alternatives or paused layers, a RID without its ``a=rid`` line, no
    rtp-stream-id extension, ``a=rid`` lines without ``a=simulcast``)."""
    found: dict[str, Simulcast] = {}
    for lines in _sections(sdp)[1:]:
        mid = next((line[len("a=mid:") :] for line in lines if line.startswith("a=mid:")), "")
        simulcast = [line for line in lines if line.startswith("a=simulcast:")]
        rid_lines = [line[len("a=rid:") :].split() for line in lines if line.startswith("a=rid:")]
        if not simulcast:
            if rid_lines:
                raise SimulcastError(f"section {mid!r} has a=rid lines but no a=simulcast")
            continue
        if not lines[0].startswith("m=video "):
            raise SimulcastError(f"simulcast on section {mid!r}, which is not video")
        if len(simulcast) > 1:
            raise SimulcastError(f"section {mid!r} has more than one a=simulcast line")
        rids = _simulcast_send(simulcast[0][len("a=simulcast:") :], mid)
        sending = set()
        for fields in rid_lines:
            if len(fields) < 2 or fields[1] != "send" or not _RID.fullmatch(fields[0]):
                raise SimulcastError(f"section {mid!r}: a=rid must be '<1-16 letters/digits> send'")
            if fields[0] in sending:
                raise SimulcastError(f"section {mid!r}: RID {fields[0]!r} declared twice")
            sending.add(fields[0])
        if sending != set(rids):
            raise SimulcastError(f"section {mid!r}: a=simulcast and a=rid name different layers")
        extmaps: dict[str, int] = {}
        for line in lines:
            match = _EXTMAP.match(line)
            if match is not None:
                extmaps[match.group(2)] = int(match.group(1))
        rid_ext = extmaps.get(RID_URI)
        if rid_ext is None:
            raise SimulcastError(f"section {mid!r}: simulcast without the rtp-stream-id extension")
        found[mid] = Simulcast(mid, rids, rid_ext, extmaps.get(REPAIRED_RID_URI))
    return found


def _simulcast_send(value: str, mid: str) -> tuple[str, ...]:
    """The RIDs of ``send <rid>;<rid>…`` (RFC 8853 §5.1), none paused, no alternatives."""
    fields = value.split()
    if len(fields) != 2 or fields[0] != "send":
        raise SimulcastError(f"section {mid!r}: only 'a=simulcast:send <rids>' is served")
    rids = tuple(fields[1].split(";"))
    if len(rids) > MAX_LAYERS:
        raise SimulcastError(f"section {mid!r}: more than {MAX_LAYERS} simulcast layers")
    for rid in rids:
        if not _RID.fullmatch(rid):  # also refuses "~paused" and "a,b" alternatives
            raise SimulcastError(f"section {mid!r}: RID {rid!r} is not 1-16 letters or digits")
    if len(set(rids)) != len(rids):
        raise SimulcastError(f"section {mid!r}: a layer is listed twice in a=simulcast")
    return rids


def answer_simulcast(sdp: str, offered: Mapping[str, Simulcast]) -> str:
    """``sdp`` (an answer, CRLF) with each offered simulcast section's receive side added
    at the end of its section: ``a=rid:<id> recv`` per layer, ``a=simulcast:recv …`` and
    the RID extmap lines with the offered ids (an answerer must not renumber them)."""
    if not offered:
        return sdp
    sections = _sections(sdp)
    for lines in sections[1:]:
        mid = next((line[len("a=mid:") :] for line in lines if line.startswith("a=mid:")), "")
        sim = offered.get(mid)
        if sim is None:
            continue
        while lines and lines[-1] == "":
            lines.pop()
        lines.append(f"a=extmap:{sim.rid_ext_id} {RID_URI}")
        if sim.repaired_rid_ext_id is not None:
            lines.append(f"a=extmap:{sim.repaired_rid_ext_id} {REPAIRED_RID_URI}")
        lines.extend(f"a=rid:{rid} recv" for rid in sim.rids)
        lines.append("a=simulcast:recv " + ";".join(sim.rids))
    return "\r\n".join(line for lines in sections for line in lines if line) + "\r\n"
