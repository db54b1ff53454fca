"""Every user mistake is one ``error:`` line on stderr, a non-zero exit, never a traceback.

(PRODUCT.md: bad link, wrong passphrase, unknown room/member/space, expired invite, no
permission, server unreachable.) The shared ``town`` has Alice (owner) and Bob (member);
nothing here changes it.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass

import pytest
from conftest import SalonServer, SalonUser, free_port

from client.core.invites import parse_invite_link
from protocol.ids import new_id


@dataclass
class Town:
    server: SalonServer
    alice: SalonUser
    bob: SalonUser
    space_id: str
    link: str


@pytest.fixture(scope="module")
def town(server: SalonServer, module_user) -> Town:
    alice, bob = module_user("alice"), module_user("bob")
    created = alice.json("space", "create", "Town hall", "--server", server.url, "--as", "Alice")
    bob.json("join", created["link"], "--as", "Bob")
    return Town(server, alice, bob, created["space_id"], created["link"])


def fresh_secret() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()


# -- links ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("link", "says"),
    [
        ("garbage", "not an invite link"),
        ("", "not an invite link"),
        ("ftp://example.org/join/abcdefghij#AAAA", "not an invite link"),
        ("http://127.0.0.1:8080/", "not an invite link"),
        ("http://127.0.0.1:8080/join/x#AAAA", "not an invite link"),  # id too short
        ("http://127.0.0.1:8080/join/abcdefghijkl", "secret"),  # no fragment
        ("http://127.0.0.1:8080/join/abcdefghijkl#", "secret"),
        ("http://127.0.0.1:8080/join/abcdefghijkl#AAAA", "damaged"),  # too short
        ("http://127.0.0.1:8080/join/abcdefghijkl#Ünïcödé", "damaged"),
    ],
)
def test_garbage_links(user, link, says):
    assert says in user("zoe").fail("join", link, "--as", "Zoe")


def test_damaged_real_link(town, user):
    zoe = user("zoe")
    base, _, secret = town.link.partition("#")
    # Truncated (a copy-paste accident), or padded with junk.
    assert "damaged" in zoe.fail("join", f"{base}#{secret[:-5]}")
    assert "damaged" in zoe.fail("join", f"{base}#{secret}AAAAAAAA")
    # The right length but other bytes: the server cannot tell, the invite key won't match.
    zoe.fail("join", f"{base}#{fresh_secret()}")
    assert zoe.json("space", "list") == []


def test_link_to_unknown_invite(town, user):
    link = f"{town.server.url}/join/{new_id()}#{fresh_secret()}"  # well formed, unknown
    assert "unknown invite" in user("zoe").fail("join", link)


def test_link_with_broken_ipv6_host(user):
    user("zoe").fail("join", f"http://[::1/join/abcdefghijkl#{fresh_secret()}")


# -- the server ----------------------------------------------------------------------------------


def test_server_unreachable(user):
    zoe = user("zoe")
    closed = f"http://127.0.0.1:{free_port()}"
    assert "cannot reach" in zoe.fail("space", "create", "Nowhere", "--server", closed)
    assert "cannot reach" in zoe.fail("join", f"{closed}/join/abcdefghijkl#{fresh_secret()}")
    assert zoe.json("space", "list") == []


def test_server_gone_after_joining(make_server, user):
    srv = make_server()
    carol = user("carol")
    space_id = carol.json("space", "create", "Island", "--server", srv.url)["space_id"]
    srv.stop()
    assert "cannot reach" in carol.fail("members", space_id)
    assert "cannot reach" in carol.fail("invite", "create", space_id)


def test_not_a_salon_server(town, user):
    # An HTTP server that answers, but with no Salon WebSocket at that address.
    zoe = user("zoe")
    zoe.fail("space", "create", "X", "--server", f"{town.server.url}/nowhere")
    zoe.fail("join", f"{town.server.url}/nowhere/join/abcdefghijkl#{fresh_secret()}")


def test_broken_server_url(user):
    user("zoe").fail("space", "create", "X", "--server", "http://[::1")


# -- the keystore --------------------------------------------------------------------------------


def test_wrong_passphrase(town):
    wrong = {"SALON_PASSPHRASE": "not the passphrase"}
    assert "passphrase" in town.alice.fail("space", "list", env=wrong)
    assert "passphrase" in town.alice.fail("members", town.space_id, env=wrong)
    assert "passphrase" in town.alice.fail("join", town.link, env=wrong)


def test_no_passphrase_and_no_terminal(town):
    # stdin is /dev/null (never a TTY) and SALON_PASSPHRASE is unset: no hanging prompt.
    assert "passphrase" in town.alice.fail("space", "list", env={"SALON_PASSPHRASE": None})
    assert "passphrase" in town.bob.fail("members", town.space_id, env={"SALON_PASSPHRASE": None})


def test_not_a_keystore(user):
    zoe = user("zoe")
    zoe.home.mkdir(parents=True)
    (zoe.home / "keystore.salon").write_bytes(os.urandom(200))
    assert "keystore" in zoe.fail("space", "list")


# -- permissions, unknown names ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("invite", "create", "{space}"), "moderators"),
        (("invite", "create", "{space}", "--role", "moderator"), "moderators"),
        (("invite", "list", "{space}"), "moderators"),
        (("kick", "{space}", "Alice"), "role"),
        (("kick", "{space}", "Alice", "--ban"), "role"),
        (("role", "{space}", "Alice", "member"), "role"),
        (("role", "{space}", "Bob", "moderator"), "your own role"),
    ],
)
def test_member_lacks_permission(town, args, says):
    args = tuple(a.format(space=town.space_id) for a in args)
    assert says in town.bob.fail(*args)


def test_member_cannot_revoke(town):
    invite_id = parse_invite_link(town.link).invite_id
    assert "moderators" in town.bob.fail("invite", "revoke", town.space_id, invite_id)
    # ... and the roster is unchanged.
    rows = town.alice.json("members", town.space_id)
    assert {r["display_name"]: r["role"] for r in rows} == {"Alice": "owner", "Bob": "member"}


def test_owner_cannot_kick_herself(town):
    town.alice.fail("kick", town.space_id, "Alice")


@pytest.mark.parametrize(
    "args",
    [
        ("kick", "{space}", "Nobody"),
        ("kick", "{space}", "ffffffffffff"),
        ("role", "{space}", "Nobody", "moderator"),
    ],
)
def test_unknown_member(town, args):
    args = tuple(a.format(space=town.space_id) for a in args)
    assert "no member" in town.alice.fail(*args)


@pytest.mark.parametrize(
    "args",
    [
        ("members", "No such space"),
        ("invite", "create", "No such space"),
        ("invite", "list", "zzzzzzzzzzzz"),
        ("kick", "No such space", "Bob"),
        ("leave", "No such space"),
    ],
)
def test_unknown_space(town, args):
    assert "not in a space" in town.alice.fail(*args)


def test_unknown_invite_to_revoke(town):
    assert "no invite" in town.alice.fail("invite", "revoke", town.space_id, "nosuchinvite")


# -- bad arguments -------------------------------------------------------------------------------


@pytest.mark.parametrize("duration", ["7x", "0s", "-1d", "1.5h", "soon", ""])
def test_bad_duration(town, duration):
    line = town.alice.fail("invite", "create", town.space_id, f"--expires={duration}")
    assert "duration" in line


@pytest.mark.parametrize("uses", ["0", "-3", "many"])
def test_bad_uses(town, uses):
    town.alice.fail("invite", "create", town.space_id, f"--uses={uses}")


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("frobnicate",),
        ("join",),
        ("space", "create", "X"),  # --server is required
        ("space", "create", "   ", "--server", "http://127.0.0.1:1"),
        ("role", "SPACE", "Bob", "king"),
        ("invite", "create", "SPACE", "--role", "owner"),
    ],
)
def test_usage_errors(user, args):
    user("zoe").fail(*args)


def test_serve_with_bad_config(tmp_path, user):
    zoe = user("zoe")
    missing = tmp_path / "missing.toml"
    assert "not found" in zoe.fail("serve", "--config", str(missing), "--port", "0")
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[server]\nport = 0\nbogus_key = 1\n")
    assert "bogus_key" in zoe.fail("serve", "--config", str(unknown))
    broken = tmp_path / "broken.toml"
    broken.write_text("[server\n")
    zoe.fail("serve", "--config", str(broken))
