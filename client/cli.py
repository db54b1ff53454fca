"""The ``salon`` command line (PRODUCT.md is the contract for names and JSON shapes).

Every command turns a user mistake into ``error: <one line>`` on stderr and a non-zero exit;
``--json`` prints exactly one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import UTC, datetime
from typing import Any

from client.errors import ClientError, UsageError
from client.keystore import Keystore, SpaceMembership
from protocol.records import MAX_PROFILE_BOX

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
DEFAULT_INVITE_USES = 25
DEFAULT_INVITE_EXPIRY = "7d"


def parse_duration(text: str) -> int:
    """``30s``, ``10m``, ``1h``, ``7d``, ``2w`` → seconds (> 0)."""
    match = DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise UsageError(f"bad duration {text!r}: use a number and s, m, h, d or w, like 7d")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(highlight=False, soft_wrap=True).print(table)


# -- finding a membership ----------------------------------------------------------------------


def find_membership(keystore: Keystore, query: str) -> SpaceMembership:
    """A membership by space id (or its prefix) or by the space's name."""
    memberships = keystore.load().memberships
    q = query.strip()
    exact = [m for m in memberships if m.space_id == q]
    if exact:
        return exact[0]
    named = [m for m in memberships if m.name.lower() == q.lower()]
    prefixed = [m for m in memberships if len(q) >= 4 and m.space_id.startswith(q.lower())]
    matches = named or prefixed
    if not matches:
        raise UsageError(f"you are not in a space called {query!r} (see 'salon space list')")
    if len(matches) > 1:
        raise UsageError(f"several of your spaces match {query!r}; use the space id")
    return matches[0]


@contextlib.asynccontextmanager
async def session_for(args: argparse.Namespace) -> AsyncIterator[Any]:
    from client.space import open_space

    keystore = Keystore()
    membership = find_membership(keystore, args.space)
    async with open_space(keystore, membership) as session:
        yield session


# -- commands ----------------------------------------------------------------------------------


async def cmd_space_create(args: argparse.Namespace) -> int:
    from client.space import create_space, default_display_name

    if not args.name.strip():
        raise UsageError("the space needs a name")
    membership, link = await create_space(
        Keystore(),
        args.server,
        args.name.strip(),
        args.display_name or default_display_name(),
        DEFAULT_INVITE_USES,
        parse_duration(DEFAULT_INVITE_EXPIRY),
        args.creation_token or "",
    )
    if args.json:
        emit_json({"space_id": membership.space_id, "name": membership.name, "link": str(link)})
    else:
        print(f"Created space {membership.name!r} ({membership.space_id}); you are its owner.")
        print(f"Invite link ({DEFAULT_INVITE_USES} uses, {DEFAULT_INVITE_EXPIRY}):")
        print(str(link))
    return 0


async def cmd_space_list(args: argparse.Namespace) -> int:
    memberships = Keystore().load().memberships
    rows = [{"space_id": m.space_id, "name": m.name, "server": m.server} for m in memberships]
    if args.json:
        emit_json(rows)
    elif not rows:
        print("You are in no spaces yet: 'salon space create' or 'salon join LINK'.")
    else:
        table = [(r["name"], r["space_id"], r["server"]) for r in rows]
        print_table("Your spaces", ["name", "space id", "server"], table)
    return 0


def invite_json(
    invite_id: str, link: str | None, expires_at: int, uses_left: int, role: str
) -> dict[str, Any]:
    return {
        "invite_id": invite_id,
        "link": link,
        "expires_at": iso(expires_at),
        "uses_left": uses_left,
        "role": role,
    }


async def cmd_invite_create(args: argparse.Namespace) -> int:
    if args.uses < 1:
        raise UsageError("--uses must be at least 1")
    expires_in = parse_duration(args.expires)
    async with session_for(args) as session:
        link = await session.create_invite(args.uses, expires_in, args.role)
        invite = session.verified.invites[link.invite_id]
    if args.json:
        emit_json(invite_json(link.invite_id, str(link), invite.expires_at, args.uses, args.role))
        return 0
    print(
        f"Invite {link.invite_id}: {args.uses} uses as {args.role},"
        f" expires {iso(invite.expires_at)}"
    )
    print(str(link))
    if args.qr:
        import segno

        segno.make(str(link), error="m").terminal(compact=True)
    return 0


async def cmd_invite_list(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        views = await session.invites()
    rows = []
    for view in views:
        s = view.status
        row = invite_json(s.invite_id, view.link, s.expires_at, max(0, s.max_uses - s.uses), s.role)
        row["revoked"] = s.revoked
        rows.append(row)
    if args.json:
        emit_json(rows)
        return 0
    table = [
        (
            r["invite_id"],
            r["role"],
            str(r["uses_left"]),
            r["expires_at"],
            "revoked" if r["revoked"] else "",
            r["link"] or "(created by someone else)",
        )
        for r in rows
    ]
    print_table("Invites", ["id", "role", "uses left", "expires", "", "link"], table)
    return 0


async def cmd_invite_revoke(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        await session.revoke_invite(args.invite_id)
    print(f"Revoked invite {args.invite_id}.", file=sys.stderr)
    return 0


async def cmd_join(args: argparse.Namespace) -> int:
    from client.space import default_display_name, join_space, preview_invite

    if args.preview:
        preview, opened = await preview_invite(args.link)
        shown = {
            "space_id": opened.space_id,
            "name": preview.name,
            "description": preview.description,
            "inviter": preview.inviter,
            "role": opened.role,
            "expires_at": iso(opened.expires_at),
        }
        if args.json:
            emit_json(shown)
        else:
            print(f"{preview.name!r} ({opened.space_id}), invited by {preview.inviter}.")
            if preview.description:
                print(preview.description)
            print(f"You would join as {opened.role}; the link expires {shown['expires_at']}.")
        return 0
    membership = await join_space(
        Keystore(), args.link, args.display_name or default_display_name()
    )
    if args.json:
        emit_json({"space_id": membership.space_id, "name": membership.name})
    else:
        print(f"Joined {membership.name!r} ({membership.space_id}) as {membership.display_name}.")
    return 0


async def cmd_members(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        members = session.members()
        me = session.member_key
    rows = [
        {"display_name": v.display_name, "fingerprint": v.fingerprint, "role": v.role}
        for v in members
    ]
    if args.json:
        emit_json(rows)
        return 0
    table = [
        (v.display_name + (" (you)" if v.key == me else ""), v.fingerprint, v.role) for v in members
    ]
    print_table("Members", ["name", "fingerprint", "role"], table)
    return 0


async def cmd_role(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        await session.set_role(member, args.role)
    print(f"{member.display_name} ({member.fingerprint}) is now {args.role}.", file=sys.stderr)
    return 0


async def cmd_kick(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        if member.key == session.member_key:
            raise UsageError("you cannot kick yourself; use 'salon leave'")
        revoked = await session.kick(member, args.ban, keep_links=args.keep_links)
    verb = "Banned" if args.ban else "Removed"
    print(f"{verb} {member.display_name} ({member.fingerprint}); keys rotated.", file=sys.stderr)
    for invite_id in revoked:
        print(f"Revoked invite link {invite_id}.", file=sys.stderr)
    if args.ban and not args.keep_links and not revoked:
        print("No live multi-use invite links to revoke.", file=sys.stderr)
    return 0


AVATAR_SIDE = 128  # pixels; keeps a profile record well under the record size limit
MAX_AVATAR_BYTES = MAX_PROFILE_BOX - 1024  # room for the name and the encryption


async def cmd_profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from client.images import bounded_jpeg, decode_image

    avatar: bytes | bool | None = True
    if args.avatar:
        try:
            raw = Path(args.avatar).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.avatar}: {exc.strerror}") from None
        pixels = decode_image(raw, "avatar")
        # A profile record has a size cap (a roster rule): lower the quality until it fits.
        for quality in (80, 65, 50, 35):
            avatar = bounded_jpeg(pixels, AVATAR_SIDE, quality=quality).jpeg
            if len(avatar) <= MAX_AVATAR_BYTES:
                break
        else:
            raise UsageError("the avatar does not fit in a profile even at low quality")
    elif args.no_avatar:
        avatar = None
    if args.display_name is not None and not args.display_name.strip():
        raise UsageError("the display name cannot be empty")
    async with session_for(args) as session:
        await session.set_profile(args.display_name and args.display_name.strip(), avatar)
    print("Profile updated.", file=sys.stderr)
    return 0


async def cmd_avatar(args: argparse.Namespace) -> int:
    from pathlib import Path

    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        avatar = session.profile(member.key).avatar
    if not avatar:
        raise UsageError(f"{member.display_name} has no avatar")
    Path(args.out).write_bytes(avatar)
    print(f"Saved {member.display_name}'s avatar to {args.out}.", file=sys.stderr)
    return 0


async def cmd_leave(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        name = session.m.name
        await session.leave()
    print(f"Left {name!r}; this identity is forgotten.", file=sys.stderr)
    return 0


async def cmd_room_create(args: argparse.Namespace) -> int:
    from client.rooms import create_room

    if args.kind != "conference" and (args.lobby or args.stage or args.topology != "auto"):
        raise UsageError("--lobby, --stage and --topology are for conference rooms")
    if args.kind == "conference" and args.history:
        raise UsageError("--history is for chat rooms and channels (calls have their own keys)")
    ttl = parse_duration(args.ttl) if args.ttl else 0
    async with session_for(args) as session:
        room = await create_room(
            session,
            args.name,
            args.kind,
            lobby=args.lobby,
            stage=args.stage,
            topology=args.topology,
            ttl=ttl,
            history=args.history or ("shared" if args.kind == "conference" else "since-join"),
        )
    if args.json:
        emit_json(
            {
                "room_id": room.room_id,
                "name": room.name,
                "kind": room.kind,
                "history": room.spec.history,
            }
        )
    else:
        print(f"Created {room.kind} room {room.name!r} ({room.room_id}).")
    return 0


async def cmd_rooms(args: argparse.Namespace) -> int:
    from client.rooms import rooms

    async with session_for(args) as session:
        found = rooms(session)
    if args.json:
        emit_json([{"room_id": r.room_id, "name": r.name, "kind": r.kind} for r in found])
        return 0
    if not found:
        print("No rooms yet: 'salon room create SPACE NAME --kind chat'.")
        return 0
    table = []
    for r in found:
        notes = []
        if r.spec.ttl:
            notes.append(f"messages last {r.spec.ttl}s")
        if r.kind == "conference":
            notes.append(f"topology {r.spec.topology}")
            notes += [n for n, on in (("lobby", r.spec.lobby), ("stage", r.spec.stage)) if on]
        table.append((r.name, r.kind, r.room_id, ", ".join(notes)))
    print_table("Rooms", ["name", "kind", "room id", ""], table)
    return 0


async def cmd_room_publisher(args: argparse.Namespace) -> int:
    from client.rooms import resolve_room, set_publisher

    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("channel",))
        member = session.resolve_member(args.member)
        await set_publisher(session, room, member.key, args.grant)
    verb = "may now publish in" if args.grant else "may no longer publish in"
    print(f"{member.display_name} {verb} {room.name!r}.", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from spaces.app import serve
    from spaces.config import load_config

    config = load_config(args.config)
    if args.host is not None:
        config.server.host = args.host
    if args.port is not None:
        config.server.port = args.port
    if args.data is not None:
        config.server.data_dir = args.data
    # Only our own packages log at the configured level: libraries such as aiosqlite log
    # SQL parameters (invite ids, records) at debug, which must never reach the log.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for package in ("spaces", "sfu"):
        logging.getLogger(package).setLevel(config.server.log_level.upper())
    use_ice_hosts(config.sfu.ice_hosts)
    run(serve(config))
    return 0


def use_ice_hosts(addresses: list[str]) -> None:
    """Media addresses an SFU node offers: the config's, unless $SALON_ICE_HOSTS says."""
    from sfu.aiortc_adapter import apply_ice_env, restrict_ice_host_addresses

    if addresses:
        restrict_ice_host_addresses(addresses)
    apply_ice_env()


def cmd_sfu(args: argparse.Namespace) -> int:
    from sfu.standalone import NodeConfigError, run_standalone
    from spaces.config import load_config

    config = load_config(args.config)
    sfu = config.sfu
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("sfu").setLevel(config.server.log_level.upper())
    try:
        run(
            run_standalone(
                sfu.server_url,
                sfu.node_secret,
                args.host if args.host is not None else sfu.host,
                args.port if args.port is not None else sfu.port,
                sfu.node_name,
                sfu.ice_hosts,
                sfu.load_report_seconds,
                sfu.public_address,
            )
        )
    except NodeConfigError as exc:
        raise UsageError(str(exc)) from None
    except OSError as exc:
        raise UsageError(f"cannot start the SFU node: {exc.strerror or exc}") from None
    return 0


async def cmd_web_verify(args: argparse.Namespace) -> int:
    """Exit 0: the server serves exactly the local build; 1: it does not (files named)."""
    from pathlib import Path

    from client import webverify

    checkout = Path(args.checkout) if args.checkout else webverify.default_checkout()
    outcome = await webverify.verify(args.url, checkout)
    if args.json:
        print(json.dumps(outcome.as_json()))
    else:
        print(outcome.text())
        print(webverify.CANNOT_CHECK)
    return webverify.MATCHES if outcome.matches else webverify.DIFFERS


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


# -- argument parsing --------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="salon", description="Salon: private spaces and calls, no accounts.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(
        name: str, handler: Callable[..., Any], parent: Any = sub, **kw: Any
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(name, **kw)
        p.set_defaults(handler=handler)
        return p

    def with_json(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--json", action="store_true", help="print one JSON document")
        return p

    p = command("serve", cmd_serve, help="run the spaces server")
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--data", help="data directory (SQLite)")

    p = command("sfu", cmd_sfu, help="run a standalone SFU node for a spaces server")
    p.add_argument("--config", help="TOML config with [sfu] server_url and node_secret")
    p.add_argument("--host", help="address of the node's /health endpoint")
    p.add_argument("--port", type=int, help="its port (0: any free port)")

    space = sub.add_parser("space", help="create and list spaces")
    space_sub = space.add_subparsers(dest="space_command", required=True, parser_class=Parser)
    p = with_json(command("create", cmd_space_create, space_sub, help="create a space"))
    p.add_argument("name")
    p.add_argument("--server", required=True, help="server URL, like http://127.0.0.1:8080")
    p.add_argument("--as", dest="display_name", help="your display name in this space")
    p.add_argument("--creation-token", help="token, if the server restricts creation")
    with_json(command("list", cmd_space_list, space_sub, help="spaces you belong to"))

    invite = sub.add_parser("invite", help="manage invite links")
    invite_sub = invite.add_subparsers(dest="invite_command", required=True, parser_class=Parser)
    p = with_json(command("create", cmd_invite_create, invite_sub, help="make an invite link"))
    p.add_argument("space")
    p.add_argument("--uses", type=int, default=DEFAULT_INVITE_USES)
    p.add_argument("--expires", default=DEFAULT_INVITE_EXPIRY, help="like 30m, 12h, 7d")
    p.add_argument("--role", choices=["member", "moderator"], default="member")
    p.add_argument("--qr", action="store_true", help="also show a QR code")
    p = with_json(command("list", cmd_invite_list, invite_sub, help="list invites"))
    p.add_argument("space")
    p = command("revoke", cmd_invite_revoke, invite_sub, help="revoke an invite")
    p.add_argument("space")
    p.add_argument("invite_id")

    p = with_json(command("join", cmd_join, help="join a space through an invite link"))
    p.add_argument("link")
    p.add_argument("--as", dest="display_name", help="your display name in this space")
    p.add_argument(
        "--preview", action="store_true", help="only show what the link is for; do not join"
    )

    p = with_json(command("members", cmd_members, help="list a space's members"))
    p.add_argument("space")
    p = command("role", cmd_role, help="change a member's role")
    p.add_argument("space")
    p.add_argument("member", help="fingerprint prefix or display name")
    p.add_argument("role", choices=["owner", "moderator", "member"])
    p = command("kick", cmd_kick, help="remove a member")
    p.add_argument("space")
    p.add_argument("member", help="fingerprint prefix or display name")
    p.add_argument("--ban", action="store_true", help="also refuse this member's return")
    p.add_argument(
        "--keep-links",
        action="store_true",
        help="with --ban: keep the multi-use invite links the banned member may know",
    )
    p = command("leave", cmd_leave, help="leave a space and forget this identity")
    p.add_argument("space")
    p = command("profile", cmd_profile, help="change your display name or avatar")
    p.add_argument("space")
    p.add_argument("--as", dest="display_name", help="new display name")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--avatar", help="image file (re-encoded, metadata stripped)")
    group.add_argument("--no-avatar", action="store_true", help="remove your avatar")
    p = command("avatar", cmd_avatar, help="save a member's avatar to a file")
    p.add_argument("space")
    p.add_argument("member")
    p.add_argument("--out", required=True)

    room = sub.add_parser("room", help="create rooms and manage channel publishers")
    room_sub = room.add_subparsers(dest="room_command", required=True, parser_class=Parser)
    p = with_json(command("create", cmd_room_create, room_sub, help="create a room"))
    p.add_argument("space")
    p.add_argument("name")
    p.add_argument("--kind", choices=["chat", "channel", "conference"], required=True)
    p.add_argument("--lobby", action="store_true", help="conference: hosts admit joiners")
    p.add_argument("--stage", action="store_true", help="conference: only speakers send")
    p.add_argument("--topology", choices=["auto", "mesh", "sfu"], default="auto")
    p.add_argument("--ttl", help="default message lifetime, like 1h")
    p.add_argument(
        "--history",
        choices=["since-join", "shared"],
        help="what a later joiner reads: only what is sent after they join (since-join, the "
        "default), or also what was sent earlier in the current key epoch (shared)",
    )
    for name, grant in (("grant", True), ("ungrant", False)):
        p = command(name, cmd_room_publisher, room_sub, help=f"{name} publishing in a channel")
        p.add_argument("space")
        p.add_argument("room")
        p.add_argument("member")
        p.set_defaults(grant=grant)
    p = with_json(command("rooms", cmd_rooms, help="list a space's rooms"))
    p.add_argument("space")

    webapp = sub.add_parser("web", help="the web app a server serves")
    web_sub = webapp.add_subparsers(dest="web_command", required=True, parser_class=Parser)
    p = with_json(
        command(
            "verify",
            cmd_web_verify,
            web_sub,
            help="compare what a server serves with the web app your checkout builds",
        )
    )
    p.add_argument("url", help="the server's address (or any link into its web app)")
    p.add_argument("--checkout", help="the Salon source checkout to build (default: this one)")

    from client.cli_chat import add_chat_commands  # send, read, story

    add_chat_commands(sub, command, with_json, Parser)

    from client.cli_call import add_call_commands  # call, mod, hand

    add_call_commands(sub)
    return parser


def dash_hint(argv: Sequence[str]) -> str:
    """A hint for a command line that failed to parse because a value (a room name, a
    message) begins with ``-`` and was read as an option; "" if none does. Ids never begin
    with ``-`` (protocol/ids.py); anything else can, after ``--``."""
    before_dashes = list(argv)[: list(argv).index("--")] if "--" in argv else list(argv)
    if any(re.match(r"^-[^-]", arg) and arg != "-h" for arg in before_dashes):
        return (
            "; a value beginning with '-' goes after '--', after the options, "
            "like: salon send SPACE ROOM -- '-text'"
        )
    return ""


def show_client_warnings() -> None:
    """The SDK logs what it skipped as bad (a bad key, a bad record); a command shows each
    as one ``warning:`` line on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warning: %(message)s"))
    client_log = logging.getLogger("client")
    client_log.addHandler(handler)
    client_log.setLevel(logging.WARNING)
    client_log.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    try:
        given = sys.argv[1:] if argv is None else list(argv)
        try:
            args = build_parser().parse_args(given)
        except UsageError as exc:
            raise UsageError(f"{exc}{dash_hint(given)}") from None
        if args.handler not in (cmd_serve, cmd_sfu):
            show_client_warnings()
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = run(result)
        return int(result or 0)
    except ClientError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the server's config errors and the like, still one line
        from protocol.errors import ProtocolError

        if isinstance(exc, ProtocolError):
            print(f"error: {exc}", file=sys.stderr)
            return 1
        raise


if __name__ == "__main__":
    sys.exit(main())
