"""``salon call``, ``salon mod``, ``salon hand``, ``salon mic`` and ``salon camera`` (PRODUCT.md
is the contract).
:func:`add_call_commands` adds them to the ``salon`` parser. Like every command, a user
mistake or a refusal ends with ``error: <one line>`` on stderr and a non-zero exit:
``salon call`` exits 5 when a host removed, banned or denied you (or the call is locked or
full), 3 when the server went away, and writes ``--stats`` however the call ended.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from typing import Any, get_args

from protocol.conference_rules import SELF_ACTIONS
from protocol.conference_wire import ActionName

# Every signed action but the ones a participant makes about itself.
MOD_ACTIONS = tuple(a for a in get_args(ActionName) if a not in SELF_ACTIONS)


async def cmd_call(args: argparse.Namespace) -> int:
    from client.call.client import CallClient, CallError, CallOptions, MediaUnavailable
    from client.call.media import MediaError
    from client.call.recorder import pick_codec
    from client.call.view import make_display
    from client.cli.main import session_for
    from client.core.rooms import resolve_room

    # Media libraries log noisily (and with tracebacks) about things the call handles and
    # reports itself; the terminal shows the call's own one-line notes instead.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("aiortc", "aioice", "av", "libav"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    from client.cli.main import parse_seconds

    # The one duration grammar (1m, 30s, 2h, 1d); a bare number of seconds is still taken.
    duration = parse_seconds(args.duration, bare_seconds=True) if args.duration else None
    if args.record:
        try:
            pick_codec(args.record)  # a bad extension fails now, not after joining
        except MediaError as exc:
            raise MediaUnavailable(str(exc)) from None
    options = CallOptions(
        args.video,
        args.audio,
        duration,
        args.record,
        relay_only=args.relay_only,
        screen=args.screen,
        muted=args.muted,
    )
    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("conference",))
        display = make_display()
        client = CallClient(session, room, options, display)
        display.start()
        try:
            outcome = await client.run()
        finally:
            display.stop()
            if args.stats:
                client.stats.write(args.stats)
    if outcome.exit_code:
        raise CallError(outcome.message, outcome.exit_code)
    print(outcome.message, flush=True)
    return 0


async def cmd_mod(args: argparse.Namespace) -> int:
    from client.call.client import moderate
    from client.cli.main import emit_json, session_for
    from client.core.rooms import resolve_room

    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("conference",))
        done = await moderate(session, room, args.action, args.member)
    if args.json:
        emit_json({"room_id": room.room_id, "action": args.action, "done": done})
    else:
        print(done, file=sys.stderr)
    return 0


async def cmd_device(args: argparse.Namespace) -> int:
    """``salon mic`` / ``salon camera``: turn your own microphone or camera on or off in the
    call you are in (your running ``salon call`` follows; everyone sees it)."""
    from client.call.client import say_self_state
    from client.cli.main import emit_json, session_for
    from client.core.rooms import resolve_room

    device = args.device
    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("conference",))
        await say_self_state(session, room, f"{device}-{args.state}")  # type: ignore[arg-type]
    done = f"{'microphone' if device == 'mic' else 'camera'} {args.state} in {room.name!r}."
    if args.json:
        emit_json({"room_id": room.room_id, device: args.state, "done": done})
    else:
        print(done, file=sys.stderr)
    return 0


async def cmd_hand(args: argparse.Namespace) -> int:
    from client.call.client import raise_hand
    from client.cli.main import emit_json, session_for
    from client.core.rooms import resolve_room

    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("conference",))
        done = await raise_hand(session, room, args.direction == "up")
    if args.json:
        emit_json({"room_id": room.room_id, "hand": args.direction, "done": done})
    else:
        print(done, file=sys.stderr)
    return 0


def add_call_commands(sub: Any, command: Callable[..., argparse.ArgumentParser]) -> None:
    """Add ``call``, ``mod``, ``hand``, ``mic`` and ``camera`` to the ``salon`` subcommands
    (``call`` has no ``--json``: its live view is for people, ``--stats`` writes the JSON)."""
    from client.cli.main import MEMBER_HELP, SPACE_HELP, with_json

    conference = "the conference room: its name or id"
    p = command(
        "call",
        cmd_call,
        help="join a conference call (until --duration, Ctrl-C, the end, or removal)",
        example=[
            'salon call "Town hall" townhall --video camera --duration 1h',
            'salon call "Town hall" townhall --video test --duration 30s --stats stats.json',
        ],
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("room", help=conference)
    p.add_argument(
        "--video", default="test", help="test (default), camera[:N], a media file, or none"
    )
    p.add_argument("--audio", default="test", help="test (default), a media file, or none")
    p.add_argument(
        "--duration",
        metavar="DURATION",
        help="leave after this long, like 30s, 10m, 1h (a bare number is seconds; default: stay)",
    )
    p.add_argument("--record", metavar="FILE", help="record what you receive (.mp4, .webm)")
    p.add_argument("--stats", metavar="FILE", help="write call statistics as JSON at the end")
    p.add_argument(
        "--screen",
        metavar="SOURCE",
        help="share a screen too: test (a test pattern) or a media file",
    )
    p.add_argument(
        "--relay-only",
        action="store_true",
        help="send all media through the server's TURN relay (ICE policy 'relay')",
    )
    p.add_argument(
        "--muted",
        action="store_true",
        help="join with your microphone off (others see you muted; 'salon mic ... on' unmutes)",
    )

    p = with_json(
        command(
            "mod",
            cmd_mod,
            help="moderate a call (owners and moderators)",
            example=[
                'salon mod "Town hall" townhall admit Bob',
                'salon mod "Town hall" townhall lock',
            ],
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("room", help=conference)
    p.add_argument("action", choices=MOD_ACTIONS, help="what to do: " + ", ".join(MOD_ACTIONS))
    p.add_argument("member", nargs="?", help=MEMBER_HELP + "; for actions on one member")

    p = with_json(
        command(
            "hand",
            cmd_hand,
            help="raise or lower your hand in a call",
            example='salon hand "Town hall" townhall up',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("room", help=conference)
    p.add_argument("direction", choices=["up", "down"], help="raise (up) or lower (down)")

    for device, what in (("mic", "microphone"), ("camera", "camera")):
        p = with_json(
            command(
                device,
                cmd_device,
                help=f"turn your {what} off or on in a call (everyone sees it)",
                example=f'salon {device} "Town hall" townhall off',
            )
        )
        p.add_argument("space", help=SPACE_HELP)
        p.add_argument("room", help=conference)
        p.add_argument("state", choices=["off", "on"], help=f"your {what}: off or on")
        p.set_defaults(device=device)
