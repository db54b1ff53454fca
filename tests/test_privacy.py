"""The server is blind (DESIGN §1.2, issue 2): after a busy scenario, no file the server
wrote — its SQLite database, WAL and shared-memory files (or a pg_dump of its PostgreSQL
database), its log — holds a space name, a display name, an invite secret or any key a
client keeps; and the keystores hold none of them in clear either.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

from conftest import SalonServer, SalonUser

from client.core.invites import parse_invite_link

STORAGE_ENGINES = ("sqlite", "postgresql")  # on PostgreSQL, the greps search a pg_dump

SPACE_NAME = "Zebra Conspiracy 7731"
NAMES = {
    "alice": "Alicia Quasar",
    "bob": "Bobbington Vex",
    "carol": "Cordelia Nightjar",
    "dave": "Dorian Flintlock",
}


def needles_for_link(link: str) -> dict[str, bytes]:
    """What must never reach the server from one invite link."""
    parsed = parse_invite_link(link)
    fragment = link.partition("#")[2]
    return {
        f"secret (base64url) of {parsed.invite_id}": fragment.encode(),
        f"secret (bytes) of {parsed.invite_id}": parsed.secret,
        f"invite signing seed of {parsed.invite_id}": parsed.signing_seed,
        f"invite seal key of {parsed.invite_id}": parsed.seal_key,
    }


def needles_for_keystore(person: SalonUser) -> dict[str, bytes]:
    """Every secret a person's keystore holds."""
    found: dict[str, bytes] = {}
    for m in person.keystore().load().memberships:
        found[f"{person.name}'s signing seed"] = m.signing_seed
        found[f"{person.name}'s box secret"] = m.box_secret
        for epoch, key in m.space_keys.items():
            found[f"space key {epoch} (from {person.name})"] = key
    return found


def text_needles() -> dict[str, bytes]:
    needles = {"space name": SPACE_NAME.encode()}
    for name in [SPACE_NAME, *NAMES.values()]:
        needles[name] = name.encode()
        needles[f"{name} (lower case)"] = name.lower().encode()
        needles[f"{name} (UTF-16)"] = name.encode("utf-16-le")
    return needles


def leaks(path: Path, needles: dict[str, bytes]) -> list[str]:
    blob = path.read_bytes()
    return [f"{label} in {path.name}" for label, needle in needles.items() if needle in blob]


def files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file())


def test_server_files_and_log_hold_no_names_or_secrets(make_server, user):
    srv: SalonServer = make_server()  # the default config, log level info
    people = {key: user(key) for key in NAMES}
    alice, bob, carol, dave = people.values()

    created = alice.json("space", "create", SPACE_NAME, "--server", srv.url, "--as", NAMES["alice"])
    space_id = created["space_id"]
    links = [created["link"]]
    member_invite = alice.json("invite", "create", space_id, "--uses", "50", "--expires", "7d")
    mod_invite = alice.json("invite", "create", space_id, "--role", "moderator", "--uses", "2")
    single = alice.json("invite", "create", space_id, "--uses", "1")
    doomed = alice.json("invite", "create", space_id, "--expires", "1h")
    links += [i["link"] for i in (member_invite, mod_invite, single, doomed)]

    # Someone opens a link in a browser: the page is served, the fragment never sent.
    with urllib.request.urlopen(links[1].partition("#")[0], timeout=10) as page:
        assert page.status == 200

    bob.json("join", member_invite["link"], "--as", NAMES["bob"])
    carol.json("join", mod_invite["link"], "--as", NAMES["carol"])
    dave.json("join", single["link"], "--as", NAMES["dave"])
    alice.run("invite", "revoke", space_id, doomed["invite_id"])
    alice.run("role", space_id, NAMES["bob"], "moderator")
    carol_invite = carol.json("invite", "create", space_id, "--uses", "3")
    links.append(carol_invite["link"])
    alice.run("kick", space_id, NAMES["dave"])
    for person in (bob, carol):  # they fetch the new space key
        names = {row["display_name"] for row in person.json("members", space_id)}
        assert names == {NAMES["alice"], NAMES["bob"], NAMES["carol"]}
    assert bob.json("invite", "list", space_id)

    needles = text_needles()
    for link in links:
        needles.update(needles_for_link(link))
    for person in people.values():
        needles.update(needles_for_keystore(person))

    # While the server runs (the WAL holds the recent writes)...
    running_files = srv.stored_files()
    assert srv.db_file in running_files
    found = [leak for path in running_files for leak in leaks(path, needles)]
    assert not found, found

    # ...and after it stopped (checkpointed into the main file).
    srv.stop()
    stopped_files = srv.stored_files()
    assert srv.db_file in stopped_files
    found = [leak for path in stopped_files for leak in leaks(path, needles)]
    assert not found, found

    # The log: none of that, nor the invite ids of the links (no paths are logged).
    log_needles = dict(needles)
    for link in links:
        invite_id = parse_invite_link(link).invite_id
        log_needles[f"invite id {invite_id}"] = invite_id.encode()
    assert srv.log_path.stat().st_size > 0
    found = leaks(srv.log_path, log_needles)
    assert not found, found

    # The keystores are encrypted at rest: no names, space name or link secrets in clear.
    clear_needles = text_needles()
    for link in links:
        fragment = link.partition("#")[2]
        clear_needles[f"link secret {fragment}"] = fragment.encode()
        clear_needles[f"raw link secret {fragment}"] = parse_invite_link(link).secret
    for person in people.values():
        store_files = files_under(person.home)
        assert person.home / "keystore.salon" in store_files
        found = [leak for path in store_files for leak in leaks(path, clear_needles)]
        assert not found, found


def test_debug_log_holds_no_invite_ids(make_server, user):
    srv = make_server({"server": {"log_level": "debug"}})
    alice, bob = user("alice"), user("bob")
    created = alice.json("space", "create", SPACE_NAME, "--server", srv.url, "--as", NAMES["alice"])
    bob.json("join", created["link"], "--as", NAMES["bob"])
    srv.stop()
    invite_id = parse_invite_link(created["link"]).invite_id
    needles = {**text_needles(), **needles_for_link(created["link"])}
    assert not leaks(srv.log_path, needles)  # never the names or secrets: it cannot see them
    assert not leaks(srv.log_path, {"invite id": invite_id.encode()})
