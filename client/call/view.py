"""What ``salon call`` shows in the terminal: a live view on a TTY, plain lines otherwise.

The call client builds a :class:`CallPicture` (who is there, who speaks, muted, hands,
topology, encryption, verification code) and reports events as one-line notes. On a TTY
:class:`LiveDisplay` redraws a table a few times a second (rich ``Live``); elsewhere (pipes,
logs, tests) :class:`PlainDisplay` prints each note as a line and a status line every few
seconds.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

SPEAKING_DBFS = -45.0
# How often a plain (non-terminal) display prints its status line. Benches that time a
# recovery to the half second set SALON_STATUS_SECONDS lower.
PLAIN_STATUS_SECONDS = float(os.environ.get("SALON_STATUS_SECONDS") or 5.0)


@dataclass(frozen=True)
class Row:
    name: str
    fingerprint: str
    role: str
    connection: str
    level_dbfs: float
    muted: bool  # by a host
    hand_raised: bool
    video_frames: int
    audio_frames: int
    active_speaker: bool = False  # the SFU's pick, from audio levels
    mic_off: bool = False  # muted by themselves (their signed "mic-off")
    camera_off: bool = False

    @property
    def speaking(self) -> bool:
        return not (self.muted or self.mic_off) and self.level_dbfs > SPEAKING_DBFS


@dataclass
class CallPicture:
    room: str
    status: str = "joining"
    topology: str = "mesh"
    topology_note: str = ""
    encryption: str = ""
    code: str | None = None
    locked: bool = False
    me_muted: bool = False
    me_mic_off: bool = False
    me_camera_off: bool = False
    me_hand: bool = False
    me_role: str = "speaker"
    rows: list[Row] = field(default_factory=list)
    lobby: list[str] = field(default_factory=list)


class PlainDisplay:
    def __init__(self, out: Any = None) -> None:
        self.out = out or sys.stdout
        self._last_status = 0.0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def note(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def refresh(self, picture: CallPicture) -> None:
        now = time.monotonic()
        if now - self._last_status < PLAIN_STATUS_SECONDS:
            return
        self._last_status = now
        people = "; ".join(_row_text(r) for r in picture.rows) or "nobody else yet"
        self.note(
            f"status: {picture.status}, {picture.topology}, code {picture.code or '-'} | {people}"
        )


def _row_text(row: Row) -> str:
    flags = [row.connection]
    if row.active_speaker:
        flags.append("active speaker")
    if row.speaking:
        flags.append("speaking")
    if row.muted:
        flags.append("muted")
    elif row.mic_off:
        flags.append("muted (self)")
    if row.camera_off:
        flags.append("camera off")
    if row.hand_raised:
        flags.append("hand raised")
    flags.append(f"{row.video_frames} video / {row.audio_frames} audio frames")
    return f"{row.name} ({', '.join(flags)})"


class LiveDisplay:
    """A rich ``Live`` view; notes scroll under the table."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(highlight=False)
        self._notes: deque[str] = deque(maxlen=8)
        self._picture: CallPicture | None = None
        self._live: Any = None

    def start(self) -> None:
        from rich.live import Live

        self._live = Live(self._render(), console=self.console, refresh_per_second=4)
        self._live.start()

    def stop(self) -> None:
        if self._live is not None:
            self._live.update(self._render(), refresh=True)
            self._live.stop()
            self._live = None

    def note(self, text: str) -> None:
        self._notes.append(f"{time.strftime('%H:%M:%S')} {text}")
        if self._live is not None:
            self._live.update(self._render())
        else:
            self.console.print(text)

    def refresh(self, picture: CallPicture) -> None:
        self._picture = picture
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.table import Table
        from rich.text import Text

        p = self._picture
        if p is None:
            return Text("joining…")
        header = Text()
        header.append(f"{p.room}", style="bold")
        header.append(f"  {p.status}")
        header.append(f"\ntopology {p.topology}")
        if p.topology_note:
            header.append(f" ({p.topology_note})", style="dim")
        header.append(f"\nencryption: {p.encryption}")
        header.append("\nverification code: ")
        header.append(p.code or "waiting for everyone's keys", style="bold cyan")
        mic = "muted" if p.me_muted else "mic off" if p.me_mic_off else "mic on"
        you = [p.me_role, mic] + (["camera off"] if p.me_camera_off else [])
        if p.me_hand:
            you.append("hand raised")
        if p.locked:
            you.append("call locked")
        header.append(f"\nyou: {', '.join(you)}")
        table = Table(box=None, pad_edge=False)
        for column in ("participant", "fingerprint", "role", "link", "audio", "", "video"):
            table.add_column(column)
        for row in p.rows:
            level = (
                "muted" if row.muted else "muted (self)" if row.mic_off else _meter(row.level_dbfs)
            )
            table.add_row(
                f"▶ {row.name}" if row.active_speaker else row.name,
                row.fingerprint,
                row.role,
                row.connection,
                level,
                "✋" if row.hand_raised else "",
                "camera off" if row.camera_off else str(row.video_frames),
            )
        parts: list[Any] = [header, table]
        if p.lobby:
            parts.append(Text("waiting in the lobby: " + ", ".join(p.lobby), style="yellow"))
        parts.extend(Text(n, style="dim") for n in self._notes)
        return Group(*parts)


def _meter(dbfs: float) -> str:
    if dbfs <= -60:
        return "·"
    bars = max(1, min(8, int((dbfs + 60) / 7.5)))
    return "▮" * bars + (" speaking" if dbfs > SPEAKING_DBFS else "")


def make_display() -> PlainDisplay | LiveDisplay:
    return LiveDisplay() if sys.stdout.isatty() else PlainDisplay()
