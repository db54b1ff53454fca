"""``salon send``, ``salon read`` and ``salon story post|list|get`` (PRODUCT.md).

:func:`add_chat_commands` adds them to the ``salon`` parser. JSON shapes (a contract):

- ``read --json``: a list of ``{"seq", "sent_at", "sender", "fingerprint", "text",
  "expires_at"}`` (times ISO 8601 UTC, ``expires_at`` null when kept); with ``--follow``,
  one such object per line as messages arrive (JSON Lines);
- ``send --json``: ``{"room_id", "seq", "sent_at", "expires_at", "duplicate"}``;
- ``story list --json``: a list of ``{"story_id", "author", "caption", "posted_at",
  "expires_at"}``, newest first;
- ``story post --json``: ``{"story_id", "posted_at", "expires_at", "width", "height"}``;
- ``story get --json``: the ``story list`` object plus ``"out"`` and ``"bytes"``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import unicodedata
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from client.cli.main import emit_json, find_membership, parse_duration, session_for
from client.core.dates import iso
from client.core.errors import UsageError
from client.core.keystore import Keystore

CHAT_KINDS = ("chat", "channel")


def printable(text: str) -> str:
    """Text from other members with control characters (terminal escapes) made visible."""
    out = []
    for ch in text:
        if ch in "\n\t" or unicodedata.category(ch)[0] != "C":
            out.append(ch)
        else:
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}")
    return "".join(out)


def time_left(until: float, now: float | None = None) -> str:
    left = int(until - (time.time() if now is None else now))
    if left <= 0:
        return "expired"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {seconds}s"
    return f"{seconds}s"


def local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def short_time(ts: float) -> str:
    """``14:05`` today, ``11-26 14:05`` on another day (local time)."""
    when = datetime.fromtimestamp(ts)
    return when.strftime("%H:%M" if when.date() == datetime.now().date() else "%m-%d %H:%M")


def _message_line(message: Any) -> str:
    head = f"#{message.seq}  {local_time(message.sent_at)}  "
    head += f"{printable(message.sender_name)} ({message.fingerprint[:8]})"
    text = printable(message.text).replace("\n", "\n    ")
    line = f"{head}: {text}"
    if message.expires_at is not None:
        line += f"  [expires in {time_left(message.expires_at)}]"
    return line


def _report(stats: Any) -> None:
    if stats.unreadable:
        print(
            f"note: {stats.unreadable} message(s) are not readable on this device "
            "(sent before you joined, or no member has shared that key with you)",
            file=sys.stderr,
        )
    for seq, why in stats.rejected:
        print(f"warning: message #{seq} is not shown: {why}", file=sys.stderr)
    if stats.forked:
        _fork_warning()


def _fork_warning() -> None:
    from protocol.forks import FORK_WARNING

    print(
        f"warning: {FORK_WARNING} (other members signed a membership history this server "
        "does not show you); compare 'salon members' with them out of band",
        file=sys.stderr,
    )


# -- commands ----------------------------------------------------------------------------------


async def cmd_send(args: argparse.Namespace) -> int:
    from client.core.chat import send_message
    from client.core.rooms import resolve_room

    text = sys.stdin.read() if args.text == "-" else args.text
    if not text.strip():
        raise UsageError("nothing to send: the message is empty")
    ttl = parse_duration(args.ttl) if args.ttl else 0
    async with session_for(args) as session:
        room = resolve_room(session, args.room, CHAT_KINDS)
        sent = await send_message(session, room, text, ttl)
    expires = None if sent.expires_at is None else iso(sent.expires_at)
    if args.json:
        emit_json(
            {
                "room_id": room.room_id,
                "seq": sent.seq,
                "sent_at": iso(sent.sent_at),
                "expires_at": expires,
                "duplicate": sent.duplicate,
            }
        )
    else:
        note = f", expires {expires}" if expires else ""
        print(f"Sent #{sent.seq} to {room.name!r}{note}.", file=sys.stderr)
    return 0


async def cmd_read(args: argparse.Namespace) -> int:
    from client.core.chat import read_messages
    from client.core.rooms import resolve_room

    if args.since < 0:
        raise UsageError("--since takes a sequence number (0 or more)")
    if args.follow:
        return await _follow(args)
    async with session_for(args) as session:
        room = resolve_room(session, args.room, CHAT_KINDS)
        shown, stats = await read_messages(session, room, args.since, args.last)
    _report(stats)
    if args.json:
        emit_json([m.as_json() for m in shown])
    elif not shown:
        print(f"No messages in {room.name!r}" + (f" after #{args.since}." if args.since else "."))
    else:
        for message in shown:
            print(_message_line(message))
    return 0


async def _follow(args: argparse.Namespace) -> int:
    from client.core.chat import Follower
    from client.core.space import SpaceSession, open_space

    keystore = Keystore()
    space = args.space

    @contextlib.asynccontextmanager
    async def open_session() -> AsyncIterator[SpaceSession]:
        # Re-read the membership each time: keys other commands stored meanwhile count.
        async with open_space(keystore, find_membership(keystore, space)) as session:
            yield session

    def show(message: Any) -> None:
        if args.json:
            emit_json(message.as_json())
        else:
            print(_message_line(message))
        sys.stdout.flush()

    def reconnecting(why: str) -> None:
        if not args.quiet:
            print(f"note: {why}", file=sys.stderr, flush=True)

    follower = Follower(open_session, args.room, args.since, show, _report, reconnecting)
    await follower.run()
    return 0


async def cmd_story_post(args: argparse.Namespace) -> int:
    from client.core.rooms import resolve_room
    from client.core.stories import DEFAULT_STORY_TTL, post_story

    ttl = parse_duration(args.ttl) if args.ttl else DEFAULT_STORY_TTL
    path = Path(args.image)
    if not path.is_file():
        raise UsageError(f"no image file {args.image!r}")
    async with session_for(args) as session:
        room = resolve_room(session, args.channel, ("channel",))
        posted, image = await post_story(session, room, path, args.caption or "", ttl)
    if args.json:
        emit_json(
            {
                "story_id": posted.story_id,
                "posted_at": iso(posted.posted_at),
                "expires_at": iso(posted.expires_at),
                "width": image.width,
                "height": image.height,
            }
        )
    else:
        print(
            f"Posted story {posted.story_id} to {room.name!r} ({image.width}x{image.height},"
            f" metadata stripped); expires {iso(posted.expires_at)}.",
            file=sys.stderr,
        )
    return 0


async def cmd_story_list(args: argparse.Namespace) -> int:
    from client.core.rooms import resolve_room
    from client.core.stories import list_stories

    async with session_for(args) as session:
        room = resolve_room(session, args.channel, ("channel",))
        views, skipped = await list_stories(session, room)
    from protocol.forks import FORK_WARNING

    for story_id, why in skipped:
        print(f"warning: story {story_id} is not shown: {why}", file=sys.stderr)
    if any(FORK_WARNING in why for _, why in skipped):
        _fork_warning()
    if args.json:
        emit_json([v.as_json() for v in views])
        return 0
    if not views:
        print(f"No stories in {room.name!r}.")
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Stories in {room.name}", title_justify="left", box=None, pad_edge=False)
    table.add_column("id", overflow="fold", min_width=16)  # never elided: story get needs it
    for column in ("author", "caption", "posted", "left"):
        table.add_column(column)
    for v in views:
        table.add_row(
            v.story_id,
            f"{printable(v.author)} ({v.fingerprint[:8]})",
            printable(v.caption),
            short_time(v.posted_at),
            time_left(v.expires_at),
        )
    Console(highlight=False, soft_wrap=True).print(table)
    return 0


async def cmd_story_get(args: argparse.Namespace) -> int:
    from client.core.stories import get_story

    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {args.out!r} is a directory; name a file")
    async with session_for(args) as session:
        view, data = await get_story(session, args.story_id, args.thumbnail)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise UsageError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    if args.json:
        emit_json({**view.as_json(), "out": str(out), "bytes": len(data)})
    else:
        what = "thumbnail" if args.thumbnail else f"image ({view.width}x{view.height})"
        print(f"Saved the {what} of story {view.story_id} to {out}.", file=sys.stderr)
    return 0


# -- the parser --------------------------------------------------------------------------------


def add_chat_commands(
    sub: Any,
    command: Callable[..., argparse.ArgumentParser],
    with_json: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    group: Callable[..., Any],
) -> None:
    from client.cli.main import ROOM_HELP, SPACE_HELP

    p = with_json(
        command(
            "send",
            cmd_send,
            help="post an encrypted message to a room (channels: publishers only)",
            example=['salon send "Town hall" general "Hello, town!"', "echo hi | salon send S R -"],
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("room", help=ROOM_HELP)
    p.add_argument("text", help="the message ('-' reads it from standard input)")
    p.add_argument("--ttl", metavar="DURATION", help="delete it after this long, like 30s, 1h, 7d")

    p = with_json(
        command(
            "read",
            cmd_read,
            help="print a room's messages: sequence, time, sender, text",
            example=[
                'salon read "Town hall" general --last 20',
                'salon read "Town hall" general --follow --json',
            ],
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("room", help=ROOM_HELP)
    p.add_argument(
        "--since", type=int, default=0, metavar="SEQ", help="only messages after this sequence"
    )
    p.add_argument("--last", type=int, metavar="N", help="only the last N messages")
    p.add_argument(
        "--follow",
        action="store_true",
        help="keep printing new messages live, reconnecting (jittered back-off) if the "
        "server goes away; with --json, one object per line",
    )
    p.add_argument("--quiet", action="store_true", help="with --follow: no reconnect notes")

    story_sub = group(
        command,
        "story",
        "post, list and fetch stories in channels",
        ['salon story post "Town hall" news photo.jpg', 'salon story list "Town hall" news'],
    )
    p = with_json(
        command(
            "post",
            cmd_story_post,
            story_sub,
            help="post an image to a channel as a story (default lifetime 24h)",
            example='salon story post "Town hall" news photo.jpg --caption "Market day"',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("channel", help="the channel: its name or id")
    p.add_argument("image", help="a photo (JPEG, PNG, WebP, ...); metadata is stripped")
    p.add_argument("--caption", help="text shown with the story")
    p.add_argument("--ttl", metavar="DURATION", help="lifetime, like 12h (default 24h, at most 7d)")
    p = with_json(
        command(
            "list",
            cmd_story_list,
            story_sub,
            help="list a channel's stories, newest first",
            example='salon story list "Town hall" news',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("channel", help="the channel: its name or id")
    p = with_json(
        command(
            "get",
            cmd_story_get,
            story_sub,
            help="fetch and decrypt a story's image",
            example='salon story get "Town hall" STORY_ID --out market.jpg',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("story_id", help="the story's id (see 'salon story list')")
    p.add_argument("--out", required=True, help="file to write the image to")
    p.add_argument("--thumbnail", action="store_true", help="fetch the thumbnail instead")
