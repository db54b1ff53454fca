"""The ``salon`` command line (PRODUCT.md is the contract for names and JSON shapes).

Every command turns a user mistake into ``error: <one line>`` on stderr and a non-zero exit
(:class:`client.core.errors.ExitCode`); ``--json`` prints exactly one JSON document on stdout,
and under ``--json`` an error is that document: ``{"error": {"code", "message"}}``.
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
from typing import Any

from client.core.dates import iso
from client.core.errors import ClientCode, ClientError, ExitCode, UsageError
from client.core.keystore import Keystore, SpaceMembership
from protocol.records import MAX_PROFILE_BOX

DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
BARE_SECONDS = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_DURATION = 10 * 365 * 86400  # ten years: anything longer is a typo
DEFAULT_INVITE_USES = 25
DEFAULT_INVITE_EXPIRY = "7d"


def parse_duration(text: str, bare_seconds: bool = False) -> int:
    """``30s``, ``10m``, ``1h``, ``7d``, ``2w`` → seconds (> 0): the one duration grammar of
    every option. ``bare_seconds`` also takes a plain number of seconds (``call --duration
    60``, as scripts wrote it before units); elsewhere ``7`` is refused as ambiguous."""
    return round(parse_seconds(text, bare_seconds))


def parse_seconds(text: str, bare_seconds: bool = False) -> float:
    """:func:`parse_duration`, keeping a bare number's fraction (``2.5`` → 2.5)."""
    match = DURATION.match(text)
    bare = BARE_SECONDS.match(text) if bare_seconds and not match else None
    if match:
        seconds = float(int(match.group(1)) * UNIT_SECONDS[match.group(2)])
    elif bare:
        seconds = float(bare.group(1))
    else:
        seconds = 0.0
    if not 0 < seconds <= MAX_DURATION or (bare and seconds < 0.001):
        also = " (or a positive number of seconds)" if bare_seconds else ""
        raise UsageError(
            f"bad duration {text!r}: use a number and s, m, h, d or w, like 30s, 10m, 1h or 7d"
            f"{also}"
        )
    return seconds


def version() -> str:
    """This installation's version, from the package metadata."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("salon")
    except PackageNotFoundError:
        return "unknown (not installed)"


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False) + "\n")


def print_table(
    title: str, columns: Sequence[str], rows: Sequence[Sequence[str]], whole: Sequence[str] = ()
) -> None:
    """A table for people. Columns named in ``whole`` (links, ids) are never elided: folded
    on a terminal. Off a terminal (a pipe, a file) nothing is cut to a terminal width at
    all: every cell is printed whole, one row per line."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, pad_edge=False)
    for column in columns:
        if column in whole:
            table.add_column(column, overflow="fold", min_width=16)
        else:
            table.add_column(column)
    for row in rows:
        table.add_row(*row)
    width = None  # a terminal's own width
    if not sys.stdout.isatty():
        # Wide enough for the widest row (in terminal cells: CJK and emoji count two).
        from rich.cells import cell_len

        widest = max(sum(cell_len(c) for c in row) for row in [columns, *rows])
        width = max(widest + 2 * len(columns) + 8, cell_len(title), 80)
    Console(highlight=False, soft_wrap=True, width=width).print(table)


def confirm(args: argparse.Namespace, message: str, document: dict[str, Any]) -> None:
    """A command that changes something: one line for people on stderr, or under
    ``--json`` the one JSON document on stdout."""
    if getattr(args, "json", False):
        emit_json(document)
    else:
        print(message, file=sys.stderr)


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
    from client.core.space import open_space

    keystore = Keystore()
    membership = find_membership(keystore, args.space)
    async with open_space(keystore, membership) as session:
        yield session


# -- commands ----------------------------------------------------------------------------------


async def cmd_space_create(args: argparse.Namespace) -> int:
    from client.core.space import create_space, default_display_name

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
        print_table("Your spaces", ["name", "space id", "server"], table, whole=("space id",))
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
    columns = ["id", "role", "uses left", "expires", "", "link"]
    print_table("Invites", columns, table, whole=("id", "link"))
    return 0


async def cmd_invite_revoke(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        await session.revoke_invite(args.invite_id)
    message = f"Revoked invite {args.invite_id}."
    confirm(args, message, {"invite_id": args.invite_id, "revoked": True})
    return 0


async def cmd_join(args: argparse.Namespace) -> int:
    from client.core.space import default_display_name, join_space, preview_invite

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
    print_table("Members", ["name", "fingerprint", "role"], table, whole=("fingerprint",))
    return 0


async def cmd_role(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        await session.set_role(member, args.role)
    message = f"{member.display_name} ({member.fingerprint}) is now {args.role}."
    confirm(args, message, {**member_json(member), "role": args.role})
    return 0


def member_json(member: Any) -> dict[str, Any]:
    return {"display_name": member.display_name, "fingerprint": member.fingerprint}


async def cmd_kick(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        if member.key == session.member_key:
            raise UsageError("you cannot kick yourself; use 'salon leave'")
        revoked = await session.kick(member, args.ban, keep_links=args.keep_links)
    if args.json:
        emit_json({**member_json(member), "banned": args.ban, "revoked_invites": list(revoked)})
        return 0
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

    from client.core.images import bounded_jpeg, decode_image

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
        me = next(v for v in session.members() if v.key == session.member_key)
    changed = "set" if args.avatar else "removed" if args.no_avatar else "unchanged"
    name = args.display_name.strip() if args.display_name else me.display_name
    document = {"display_name": name, "fingerprint": me.fingerprint, "avatar": changed}
    confirm(args, "Profile updated.", document)
    return 0


async def cmd_avatar(args: argparse.Namespace) -> int:
    from pathlib import Path

    async with session_for(args) as session:
        member = session.resolve_member(args.member)
        avatar = session.profile(member.key).avatar
    if not avatar:
        raise UsageError(f"{member.display_name} has no avatar")
    Path(args.out).write_bytes(avatar)
    message = f"Saved {member.display_name}'s avatar to {args.out}."
    confirm(args, message, {**member_json(member), "out": args.out, "bytes": len(avatar)})
    return 0


async def cmd_leave(args: argparse.Namespace) -> int:
    async with session_for(args) as session:
        name, space_id = session.m.name, session.m.space_id
        await session.leave()
    message = f"Left {name!r}; this identity is forgotten."
    confirm(args, message, {"space_id": space_id, "name": name, "left": True})
    return 0


async def cmd_room_create(args: argparse.Namespace) -> int:
    from client.core.rooms import create_room

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
    from client.core.rooms import rooms

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
    print_table("Rooms", ["name", "kind", "room id", ""], table, whole=("room id",))
    return 0


async def cmd_room_publisher(args: argparse.Namespace) -> int:
    from client.core.rooms import resolve_room, set_publisher

    async with session_for(args) as session:
        room = resolve_room(session, args.room, ("channel",))
        member = session.resolve_member(args.member)
        await set_publisher(session, room, member.key, args.grant)
    verb = "may now publish in" if args.grant else "may no longer publish in"
    document = {"room_id": room.room_id, **member_json(member), "publisher": args.grant}
    confirm(args, f"{member.display_name} {verb} {room.name!r}.", document)
    return 0


async def cmd_web_verify(args: argparse.Namespace) -> int:
    """Exit 0: the server serves exactly the local build; 1: it does not (files named)."""
    from pathlib import Path

    from client.core import webverify

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


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (examples, tables); arguments wrapped."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=100)


CLIENT_ENV = """\
environment:
  SALON_HOME             the keystore's directory (default: the platform's user data directory)
  SALON_PASSPHRASE       the keystore passphrase
  SALON_PASSPHRASE_FILE  a file whose first line is the passphrase (its line ending stripped);
                         used when SALON_PASSPHRASE is unset; neither set: a prompt on a
                         terminal, else an error"""

SERVER_ENV = """\
environment:
  SALON_ICE_HOSTS        the addresses the SFU offers for media (overrides [sfu] ice_hosts)"""

EXIT_CODES = f"""\
exit codes:
  {ExitCode.OK:<3}  done
  {ExitCode.FAILED:<3}  refused: by the server (no permission, expired link, rate limited...),
       the keystore (wrong passphrase) or a bad link; web verify: the files differ
  {ExitCode.USAGE:<3}  a bad command line, or it names a space, room or member you do not have
  {ExitCode.UNREACHABLE:<3}  the server cannot be reached, or went away
  {ExitCode.UNVERIFIED:<3}  the server sent something that fails the end-to-end checks
  {ExitCode.ENDED:<3}  call: a host removed, banned or denied you, or the call is locked or
       full; web verify: the local build failed
  {ExitCode.INTERRUPTED:<3}  interrupted (Ctrl-C)

With --json, an error is one JSON object on stdout, {{"error": {{"code": ..., "message": ...}}}}
(codes: README, "The command line"); without it, one 'error:' line on stderr.
DURATION everywhere is a number and a unit: 30s, 10m, 1h, 7d, 2w.
SPACE is a space's name or id; ROOM a room's name or id; MEMBER a display name or a
fingerprint prefix (4+ hex digits)."""

SPACE_HELP = "the space: its name or id (see 'salon space list')"
ROOM_HELP = "the room: its name or id (see 'salon room list SPACE')"
MEMBER_HELP = "a display name or fingerprint prefix (see 'salon member list SPACE')"


def purpose(text: str) -> str:
    """A subcommand's one-line help as the first line of its --help."""
    return text[:1].upper() + text[1:] + "."


def epilog(example: str | Sequence[str], env: str = CLIENT_ENV) -> str:
    lines = [example] if isinstance(example, str) else list(example)
    out = "example:\n" + "\n".join(f"  {line}" for line in lines)
    return out + ("\n\n" + env if env else "")


CommandAdder = Callable[..., argparse.ArgumentParser]


def make_command_adder(default_parent: Any) -> CommandAdder:
    """``command(name, handler, parent, help=..., example=..., env=..., aliases=...)``: a
    subcommand with its one-line purpose, an example and the environment it reads."""

    def command(
        name: str,
        handler: Callable[..., Any] | None,
        parent: Any = default_parent,
        *,
        help: str,
        example: str | Sequence[str],
        env: str = CLIENT_ENV,
        **kw: Any,
    ) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = parent.add_parser(
            name,
            help=help,
            description=purpose(help),
            epilog=epilog(example, env),
            formatter_class=HelpFormatter,
            **kw,
        )
        if handler is not None:
            p.set_defaults(handler=handler)
        return p

    return command


def with_json(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--json",
        action="store_true",
        help='print one JSON document; a failure is {"error": {"code": ..., "message": ...}}',
    )
    return p


def group(command: CommandAdder, name: str, help: str, example: Sequence[str], **kw: Any) -> Any:
    """A command with subcommands (``salon space ...``); returns its subparsers."""
    p = command(name, None, help=help, example=example, **kw)
    return p.add_subparsers(
        dest=f"{name}_command", required=True, parser_class=Parser, metavar="COMMAND"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="salon",
        description="Salon: private spaces and calls, no accounts.",
        epilog=f"{CLIENT_ENV}\n\n{EXIT_CODES}\n\n'salon COMMAND --help' describes each.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--version", action="version", version=f"salon {version()}", help="print the version"
    )
    sub = parser.add_subparsers(
        dest="command", required=True, parser_class=Parser, metavar="COMMAND"
    )
    command = make_command_adder(sub)

    # The server, the SFU node and the server's admin commands, not a client:
    from client.cli.launch import cmd_migrate_storage, cmd_serve, cmd_sfu

    p = command(
        "serve",
        cmd_serve,
        help="run the spaces server",
        example="salon serve --config configs/default.toml --port 8080",
        env=SERVER_ENV,
    )
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("--host", help="address to listen on (overrides [server] host)")
    p.add_argument("--port", type=int, help="port to listen on; 0 picks a free one")
    p.add_argument("--data", help="data directory (SQLite; overrides [server] data_dir)")

    p = command(
        "sfu",
        cmd_sfu,
        help="run a standalone SFU node for a spaces server (or each of its instances)",
        example="salon sfu --config sfu-node.toml",
        env=SERVER_ENV,
    )
    p.add_argument(
        "--config", help="TOML config with [sfu] server_url (or server_urls) and node_secret"
    )
    p.add_argument("--host", help="address of the node's /health endpoint")
    p.add_argument("--port", type=int, help="its port (0: any free port)")

    admin_sub = group(
        command,
        "admin",
        "operate a server's storage",
        ["salon admin migrate-storage --from sqlite:/var/lib/salon/salon.db --to postgresql://…"],
        env="",
    )
    p = with_json(
        command(
            "migrate-storage",
            cmd_migrate_storage,
            admin_sub,
            help="copy a SQLite deployment into an empty PostgreSQL database, then verify it",
            example=[
                "salon admin migrate-storage --from sqlite:/var/lib/salon/salon.db \\",
                "    --to postgresql://salon:PASSWORD@db.internal/salon",
            ],
            env="",
        )
    )
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        help="sqlite:PATH of the salon.db (read-only, one snapshot)",
    )
    p.add_argument("--to", dest="target", required=True, help="postgresql://user:pw@host/db")
    p.add_argument(
        "--verify-only",
        action="store_true",
        help="copy nothing: compare the two (right after a migration, before serving)",
    )

    space_sub = group(
        command,
        "space",
        "create and list spaces",
        ['salon space create "Town hall" --server http://127.0.0.1:8080', "salon space list"],
    )
    p = with_json(
        command(
            "create",
            cmd_space_create,
            space_sub,
            help="create a space; you are its owner and get a first invite link",
            example='salon space create "Town hall" --server http://127.0.0.1:8080 --as Alice',
        )
    )
    p.add_argument("name", help="the space's name, as members see it")
    p.add_argument("--server", required=True, help="server URL, like http://127.0.0.1:8080")
    p.add_argument("--as", dest="display_name", help="your display name in this space")
    p.add_argument("--creation-token", help="token, if the server restricts creation")
    with_json(
        command(
            "list",
            cmd_space_list,
            space_sub,
            help="list the spaces this keystore belongs to",
            example="salon space list --json",
        )
    )

    invite_sub = group(
        command,
        "invite",
        "create, list and revoke invite links",
        ['salon invite create "Town hall" --uses 50 --expires 7d', 'salon invite list "Town hall"'],
    )
    p = with_json(
        command(
            "create",
            cmd_invite_create,
            invite_sub,
            help="make an invite link (owners and moderators)",
            example='salon invite create "Town hall" --uses 50 --expires 7d --qr',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument(
        "--uses",
        type=int,
        default=DEFAULT_INVITE_USES,
        help=f"how many people may join with it (default {DEFAULT_INVITE_USES})",
    )
    p.add_argument(
        "--expires",
        default=DEFAULT_INVITE_EXPIRY,
        metavar="DURATION",
        help=f"lifetime, like 30m, 12h, 7d (default {DEFAULT_INVITE_EXPIRY})",
    )
    p.add_argument(
        "--role",
        choices=["member", "moderator"],
        default="member",
        help="the role joiners get (default member)",
    )
    p.add_argument("--qr", action="store_true", help="also show a QR code")
    p = with_json(
        command(
            "list",
            cmd_invite_list,
            invite_sub,
            help="list a space's invites, with the links this keystore made (never cut short)",
            example='salon invite list "Town hall" | grep -o "http[^ ]*"',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p = with_json(
        command(
            "revoke",
            cmd_invite_revoke,
            invite_sub,
            help="revoke an invite link",
            example='salon invite revoke "Town hall" INVITE_ID',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("invite_id", help="the invite's id (see 'salon invite list SPACE')")

    p = with_json(
        command(
            "join",
            cmd_join,
            help="join a space through an invite link, with a fresh identity",
            example="salon join 'http://127.0.0.1:8080/join/ID#SECRET' --as Bob",
        )
    )
    p.add_argument("link", help="the invite link (quote it: it contains '#')")
    p.add_argument("--as", dest="display_name", help="your display name in this space")
    p.add_argument(
        "--preview", action="store_true", help="only show what the link is for; do not join"
    )

    member_sub = group(
        command,
        "member",
        "list a space's members",
        ['salon member list "Town hall"'],
    )
    for name, parent, extra in (
        ("list", member_sub, {}),
        ("members", sub, {"help": "list a space's members (the same as 'member list')"}),
    ):
        p = with_json(
            command(
                name,
                cmd_members,
                parent,
                **{
                    "help": "list a space's members: display name, fingerprint, role",
                    "example": f'salon {"member list" if name == "list" else name} "Town hall"',
                    **extra,
                },
            )
        )
        p.add_argument("space", help=SPACE_HELP)

    p = with_json(
        command(
            "role",
            cmd_role,
            help="change a member's role (owners; moderators for members)",
            example='salon role "Town hall" Bob moderator',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("member", help=MEMBER_HELP)
    p.add_argument("role", choices=["owner", "moderator", "member"], help="the new role")
    p = with_json(
        command(
            "kick",
            cmd_kick,
            help="remove a member (rotates the keys)",
            example='salon kick "Town hall" Bob --ban',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("member", help=MEMBER_HELP)
    p.add_argument("--ban", action="store_true", help="also refuse this member's return")
    p.add_argument(
        "--keep-links",
        action="store_true",
        help="with --ban: keep the multi-use invite links the banned member may know",
    )
    p = with_json(
        command(
            "leave",
            cmd_leave,
            help="leave a space and forget this identity",
            example='salon leave "Town hall"',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p = with_json(
        command(
            "profile",
            cmd_profile,
            help="change your display name or avatar in a space",
            example='salon profile "Town hall" --as "Alice B." --avatar me.jpg',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("--as", dest="display_name", help="new display name")
    avatar = p.add_mutually_exclusive_group()
    avatar.add_argument("--avatar", help="image file (re-encoded, metadata stripped)")
    avatar.add_argument("--no-avatar", action="store_true", help="remove your avatar")
    p = with_json(
        command(
            "avatar",
            cmd_avatar,
            help="save a member's avatar to a file",
            example='salon avatar "Town hall" Bob --out bob.jpg',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("member", help=MEMBER_HELP)
    p.add_argument("--out", required=True, help="the file to write (JPEG)")

    room_sub = group(
        command,
        "room",
        "create and list rooms, manage channel publishers",
        ['salon room create "Town hall" general --kind chat', 'salon room list "Town hall"'],
    )
    p = with_json(
        command(
            "create",
            cmd_room_create,
            room_sub,
            help="create a chat room, a channel or a conference",
            example='salon room create "Town hall" townhall --kind conference --lobby',
        )
    )
    p.add_argument("space", help=SPACE_HELP)
    p.add_argument("name", help="the room's name")
    p.add_argument(
        "--kind",
        choices=["chat", "channel", "conference"],
        required=True,
        help="chat: everyone posts; channel: publishers post, everyone reads; conference: calls",
    )
    p.add_argument("--lobby", action="store_true", help="conference: hosts admit joiners")
    p.add_argument("--stage", action="store_true", help="conference: only speakers send")
    p.add_argument(
        "--topology",
        choices=["auto", "mesh", "sfu"],
        default="auto",
        help="conference: peer-to-peer (mesh), through the SFU, or auto (default)",
    )
    p.add_argument("--ttl", metavar="DURATION", help="default message lifetime, like 1h")
    p.add_argument(
        "--history",
        choices=["since-join", "shared"],
        help="what a later joiner reads: only what is sent after they join (since-join, the "
        "default), or also what was sent earlier in the current key epoch (shared)",
    )
    for name, parent, extra in (
        ("list", room_sub, {}),
        ("rooms", sub, {"help": "list a space's rooms (the same as 'room list')"}),
    ):
        p = with_json(
            command(
                name,
                cmd_rooms,
                parent,
                **{
                    "help": "list a space's rooms with their kind",
                    "example": f'salon {"room list" if name == "list" else name} "Town hall"',
                    **extra,
                },
            )
        )
        p.add_argument("space", help=SPACE_HELP)
    for name, grant in (("grant", True), ("ungrant", False)):
        p = with_json(
            command(
                name,
                cmd_room_publisher,
                room_sub,
                help=f"{'let a member' if grant else 'stop a member'} publish in a channel",
                example=f'salon room {name} "Town hall" news Bob',
            )
        )
        p.add_argument("space", help=SPACE_HELP)
        p.add_argument("room", help="the channel: its name or id")
        p.add_argument("member", help=MEMBER_HELP)
        p.set_defaults(grant=grant)

    web_sub = group(
        command,
        "web",
        "check the web app a server serves",
        ["salon web verify https://salon.example.org/"],
    )
    p = with_json(
        command(
            "verify",
            cmd_web_verify,
            web_sub,
            help="compare what a server serves with the web app your checkout builds",
            example="salon web verify https://salon.example.org/ --checkout ~/src/salon",
            env="",
        )
    )
    p.add_argument("url", help="the server's address (or any link into its web app)")
    p.add_argument("--checkout", help="the Salon source checkout to build (default: this one)")

    from client.cli.chat import add_chat_commands  # send, read, story

    add_chat_commands(sub, command, with_json, group)

    from client.cli.call import add_call_commands  # call, mod, hand, mic, camera

    add_call_commands(sub, command)

    p = command(
        "completion",
        cmd_completion,
        help="print a shell completion script",
        example=['eval "$(salon completion bash)"    # in ~/.bashrc', "salon completion zsh"],
        env="",
    )
    p.add_argument("shell", choices=["bash", "zsh"], help="the shell to complete in")
    return parser


def cmd_completion(args: argparse.Namespace) -> int:
    from client.cli.completion import script

    sys.stdout.write(script(build_parser(), args.shell))
    return 0


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


def wants_json(argv: Sequence[str]) -> bool:
    """``--json`` among the options (before any ``--``), even on a line that fails to parse."""
    args = list(argv)
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def report_error(code: str, message: str, as_json: bool) -> None:
    """The one shape of a failure: ``error: MESSAGE`` on stderr, or under ``--json`` one
    JSON object on stdout (where the command's document would have been)."""
    if as_json:
        emit_json({"error": {"code": code, "message": message}})
        sys.stdout.flush()
    else:
        print(f"error: {message}", file=sys.stderr)


# What `pip install 'salon[client]'` adds: calls' media and story images (pyproject.toml).
CLIENT_EXTRAS = ("cv2", "numpy", "av")


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    as_json = wants_json(given)
    try:
        try:
            args = build_parser().parse_args(given)
        except UsageError as exc:
            raise UsageError(f"{exc}{dash_hint(given)}") from None
        from client.cli.launch import cmd_migrate_storage, cmd_serve, cmd_sfu

        if args.handler not in (cmd_serve, cmd_sfu, cmd_migrate_storage):
            show_client_warnings()
        result = args.handler(args)
        if asyncio.iscoroutine(result):
            result = run(result)
        return int(result or 0)
    except ClientError as exc:
        report_error(str(exc.code), str(exc), as_json)
        return int(exc.exit_code)
    except ModuleNotFoundError as exc:
        if exc.name not in CLIENT_EXTRAS:
            raise
        message = "this command needs the client extras: pip install 'salon[client]'"
        report_error(ClientCode.ERROR, f"{message} (no module {exc.name!r})", as_json)
        return ExitCode.FAILED
    except KeyboardInterrupt:
        if as_json:
            report_error(ClientCode.INTERRUPTED, "interrupted", as_json)
        else:
            print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except Exception as exc:  # the server's config errors and the like, still one line
        from protocol.errors import ProtocolError

        if isinstance(exc, ProtocolError):
            report_error(str(exc.code), str(exc), as_json)
            return ExitCode.FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
