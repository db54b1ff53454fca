"""What a participant saw in a call: counters per remote participant, and the ``--stats``
JSON (PRODUCT.md / issue 4)::

    {"topology": "mesh"|"sfu", "e2ee": true|false,
     "verification_codes": [every code shown, in order],
     "ended_reason": "duration"|"removed"|"ended"|"denied"|"interrupted"|"key-ids-exhausted",
     "participants": [{"display_name", "fingerprint", "video_frames_decoded",
                       "audio_frames_decoded", "decrypt_failures", "muted", "hand_raised",
                       "mic_off", "camera_off",
                       ...}, ...one per remote participant seen]}

Each participant entry also has: ``role`` (host, speaker or listener), ``connection`` (the
pair's last state: connected, failed, refused, ...) with ``connection_detail``,
``dominant_colour`` (the median BGR colour of the last sampled decoded frame, to check a
test pattern's colour), ``video_height`` (the last decoded video frame's height: which
simulcast layer arrives), ``video_frames_dropped`` and ``audio_frames_dropped`` (frames that
arrived from a muted or non-speaking sender and were discarded), and
``first_video_frame_ms`` (from our join request to the first frame decoded from them),
``video_freezes`` and ``video_freeze_ms`` (gaps between decoded video frames longer than
max(3 × the mean frame interval, the mean + 150 ms), WebRTC's freeze definition, and their
total length), ``reconnects`` (how often a lost mesh pair was connected again; the SFU
link's are under ``sfu``), ``video_send`` (mesh: ``estimate_kbps``, the last REMB they
sent for our camera, and ``target_kbps``, where our encoder follows it to; the SFU link's
are under ``sfu.video_bitrate``) and, in a mesh, ``packets_nacked`` (packets we asked them to
resend, summed over our RTCP NACKs: a packet asked for twice counts twice) and
``packets_resent`` (packets we resent to them on their NACKs).
``muted`` is a host's signed mute; ``mic_off`` and ``camera_off`` are the participant's own
signed word ("mic-off", "camera-off": muted by themselves, camera off).
The top level also has ``call_id``, ``self`` (our own muted / hand / mic_off / camera_off / role /
admitted),
``rejected_actions`` and ``rejected_signals`` (messages that failed end-to-end checks),
``topologies`` (every topology the call ran on, in order: ``["mesh", "sfu", "mesh"]``),
``key_changes`` (each membership change that moved the media keys on: ``kind`` join or
leave, our new ``epoch``, and unix times ``seen_at``, ``keys_at`` — every sender's new key
held — and ``sending_at`` — our media under the new key, SFU only) and ``sfu`` (the SFU
connection's counters, when the call used one: connects, reconnects (attempts), reconnected
(lost connections made again), last_outage_ms,
unattributed_decrypt_failures, send_key_switches, connected_ms, and ``video_bitrate``:
our camera encoder's ``target_kbps`` following the SFU's REMB (less what audio needs) between
50 and ``ceiling_kbps``, the last REMB as ``estimate_kbps`` (all our media), how many
``retargets``, ...).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

FREEZE_EXTRA_S = 0.15  # a freeze: a video gap over max(3 × mean, mean + this)
EndedReason = str  # duration | removed | ended | denied | interrupted | key-ids-exhausted


@dataclass
class ScreenStats:
    """A participant's shared screen as received: encrypted frames that arrived (decrypted
    or not), decoded, dropped (not a speaker now), and failed to decrypt."""

    frames_received: int = 0
    frames_decoded: int = 0
    frames_dropped: int = 0
    decrypt_failures: int = 0
    dominant_colour: tuple[int, int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "frames_received": self.frames_received,
            "frames_decoded": self.frames_decoded,
            "frames_dropped": self.frames_dropped,
            "decrypt_failures": self.decrypt_failures,
            "dominant_colour": list(self.dominant_colour) if self.dominant_colour else None,
        }


@dataclass
class PeerStats:
    member: bytes
    display_name: str
    fingerprint: str
    video_frames_decoded: int = 0
    audio_frames_decoded: int = 0
    video_frames_dropped: int = 0
    audio_frames_dropped: int = 0
    decrypt_failures: int = 0
    muted: bool = False  # by a host (signed "mute")
    hand_raised: bool = False
    mic_off: bool = False  # their own word (a signed "mic-off" by them)
    camera_off: bool = False
    role: str = "speaker"
    connection: str = "waiting"
    connection_detail: str = ""
    dominant_colour: tuple[int, int, int] | None = None
    video_height: int = 0  # of the last video frame decoded from them (a simulcast layer's)
    first_video_frame_ms: float | None = None
    reconnects: int = 0  # the pair's connection made again after it was lost (mesh)
    packets_nacked: int = 0  # mesh: packets we asked them to resend (summed over our NACKs)
    packets_resent: int = 0  # mesh: packets we resent to them on their NACKs
    video_send: dict[str, int | None] | None = None  # mesh: our camera to them, kbit/s
    audio_level_dbfs: float = -math.inf
    audio_level_at: float = 0.0
    screen: ScreenStats = field(default_factory=ScreenStats)
    video_freezes: int = 0
    video_freeze_ms: float = 0.0
    _last_video_at: float | None = None
    _mean_interval: float | None = None

    def video_frame_at(self, now: float) -> None:
        """Count a decoded video frame shown at ``now`` (seconds): freezes and their length.

        A gap longer than max(3 × mean interval, mean + 150 ms) is a freeze (the WebRTC
        stats definition); the mean is a moving average of the gaps that were not freezes.
        """
        last, self._last_video_at = self._last_video_at, now
        if last is None:
            return
        gap = now - last
        mean = self._mean_interval
        if mean is not None and gap > max(3 * mean, mean + FREEZE_EXTRA_S):
            self.video_freezes += 1
            self.video_freeze_ms += gap * 1000
            return
        self._mean_interval = gap if mean is None else mean + 0.1 * (gap - mean)

    def to_json(self) -> dict[str, Any]:
        return {
            "display_name": self.display_name,
            "fingerprint": self.fingerprint,
            "video_frames_decoded": self.video_frames_decoded,
            "audio_frames_decoded": self.audio_frames_decoded,
            "decrypt_failures": self.decrypt_failures,
            "muted": self.muted,
            "hand_raised": self.hand_raised,
            "mic_off": self.mic_off,
            "camera_off": self.camera_off,
            "role": self.role,
            "connection": self.connection,
            "connection_detail": self.connection_detail,
            "dominant_colour": list(self.dominant_colour) if self.dominant_colour else None,
            "video_height": self.video_height,
            "video_frames_dropped": self.video_frames_dropped,
            "audio_frames_dropped": self.audio_frames_dropped,
            "first_video_frame_ms": (
                round(self.first_video_frame_ms, 1)
                if self.first_video_frame_ms is not None
                else None
            ),
            "screen": self.screen.to_json(),
            "video_freezes": self.video_freezes,
            "video_freeze_ms": round(self.video_freeze_ms, 1),
            "reconnects": self.reconnects,
            "packets_nacked": self.packets_nacked,
            "packets_resent": self.packets_resent,
            "video_send": self.video_send,
        }


@dataclass
class CallStats:
    topology: str = "mesh"
    e2ee: bool = True
    call_id: str = ""
    verification_codes: list[str] = field(default_factory=list)
    ended_reason: EndedReason = "interrupted"
    peers: dict[bytes, PeerStats] = field(default_factory=dict)
    rejected_actions: int = 0
    rejected_signals: int = 0
    muted: bool = False
    hand_raised: bool = False
    mic_off: bool = False
    camera_off: bool = False
    role: str = "speaker"
    admitted: bool = False
    topologies: list[str] = field(default_factory=list)
    key_changes: list[dict[str, Any]] = field(default_factory=list)
    sfu: dict[str, Any] | None = None
    server_reconnects: list[float] = field(default_factory=list)  # seconds each took

    def add_code(self, code: str) -> bool:
        """Record a code as shown; True if it differs from the last one shown."""
        if self.verification_codes and self.verification_codes[-1] == code:
            return False
        self.verification_codes.append(code)
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "e2ee": self.e2ee,
            "verification_codes": list(self.verification_codes),
            "ended_reason": self.ended_reason,
            "participants": [p.to_json() for p in self.peers.values()],
            "call_id": self.call_id,
            "self": {
                "muted": self.muted,
                "hand_raised": self.hand_raised,
                "mic_off": self.mic_off,
                "camera_off": self.camera_off,
                "role": self.role,
                "admitted": self.admitted,
            },
            "rejected_actions": self.rejected_actions,
            "rejected_signals": self.rejected_signals,
            "topologies": list(self.topologies),
            "key_changes": list(self.key_changes),
            "sfu": self.sfu,
            "server_reconnects": list(self.server_reconnects),
        }

    def write(self, path: str) -> None:
        """Write the JSON atomically (a reader never sees half a file)."""
        tmp = f"{path}.tmp"
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(self.to_json(), out, indent=2)
            out.write("\n")
        os.replace(tmp, path)
