"""The web client's core (session, space, join, spaces) against the real server and CLI (issue 9).

``web/scripts/run_ts.mjs core_e2e`` runs the TypeScript client modules under Node's global WebSocket
(``node --experimental-websocket``), one JSON command per stdin line, one JSON answer per
stdout line; its vault is a MemorySlotStore under a WebCrypto device key. The other people are
real ``salon`` CLI processes, all against one real ``salon serve``.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SalonServer, SalonUser

pytestmark = [pytest.mark.timeout(240), pytest.mark.e2e]

WEB = Path(__file__).resolve().parent.parent / "web"
ANSWER_TIMEOUT = 60.0


class NodeClient:
    """The web client core in a Node process, driven line by line."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            ["node", "scripts/run_ts.mjs", "core_e2e"],
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def send(self, op: str, **args: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def receive(self, op: str = "") -> dict[str, Any]:
        try:
            answer: dict[str, Any] = json.loads(self.lines.get(timeout=ANSWER_TIMEOUT))
        except queue.Empty:
            raise AssertionError(f"no answer to {op}; stderr: {self._stderr()}") from None
        return answer

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        self.send(op, **args)
        return self.receive(op)

    def ok(self, op: str, **args: Any) -> Any:
        answer = self.ask(op, **args)
        assert "ok" in answer, f"{op} failed: {answer}"
        return answer["ok"]

    def error(self, op: str, **args: Any) -> dict[str, Any]:
        answer = self.ask(op, **args)
        assert "error" in answer, f"{op} should have failed: {answer}"
        return answer

    def _stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()[-2000:]

    def close(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def node() -> Iterator[NodeClient]:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed to run the web client's modules")
    if not (WEB / "node_modules").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=WEB,
            capture_output=True,
            text=True,
            timeout=100,
        )
        if done.returncode != 0:
            pytest.fail(f"web/node_modules is missing and npm ci failed: {done.stderr[-500:]}")
    client = NodeClient()
    yield client
    client.close()


def names(rows: list[dict[str, Any]]) -> dict[str, str]:
    return {row["display_name"]: row["role"] for row in rows}


def test_web_core_with_cli(
    server: SalonServer, user: Callable[..., SalonUser], node: NodeClient
) -> None:
    alice, carol = user("alice"), user("carol")
    created = alice.json("space", "create", "Tea club", "--server", server.url, "--as", "Alice")
    space = created["space_id"]

    # A damaged link (wrong secret) and a link of an unknown invite have their own errors.
    link = created["link"]
    wrong = link[: link.index("#") + 1] + "A" * 43
    assert node.error("preview", link=wrong)["kind"] == "damaged"
    assert node.error("preview", link=link.split("#")[0] + "#short")["kind"] == "damaged"

    # Bob previews the link (sees the space and who invites), joins, sees Alice as owner.
    preview = node.ok("preview", link=link)
    assert (preview["spaceName"], preview["inviter"], preview["role"]) == (
        "Tea club",
        "Alice",
        "member",
    )
    joined = node.ok("join", link=link, name="Bob")
    assert (joined["space_id"], joined["name"]) == (space, "Tea club")
    members = node.ok("members")
    assert names(members) == {"Alice": "owner", "Bob": "member"}
    assert [m["display_name"] for m in members if m["me"]] == ["Bob"]
    assert node.ok("list")[0]["name"] == "Tea club"  # cached for the home screen
    assert node.error("join", link=link, name="Bob again")["kind"] == "already_member"

    # The CLI sees Bob (his profile, published by the web client, opens for Alice).
    assert names(alice.json("members", space)) == {"Alice": "owner", "Bob": "member"}

    # A plain member may not invite; promoted by Alice (CLI), Bob's client sees its new role.
    assert node.error("create_invite", uses=1, expires=3600, role="member")["name"] == "UsageError"
    alice.run("role", space, "Bob", "moderator")
    assert node.ok("wait_role", role="moderator") == "moderator"

    # Bob's client makes a one-use link; Carol joins it with the CLI.
    bob_link = node.ok("create_invite", uses=1, expires=3600, role="member")["link"]
    assert bob_link.startswith(server.url + "/join/")
    preview = carol.json("join", bob_link, "--preview")
    assert (preview["name"], preview["inviter"]) == ("Tea club", "Bob")
    carol.run("join", bob_link, "--as", "Carol")
    assert names(node.ok("wait_member", name="Carol")) == {
        "Alice": "owner",
        "Bob": "moderator",
        "Carol": "member",
    }
    assert names(carol.json("members", space))["Bob"] == "moderator"
    invites = {i["inviteId"]: i for i in node.ok("list_invites")}
    bob_id = bob_link.split("/join/")[1].split("#")[0]
    assert invites[bob_id]["link"] == bob_link and invites[bob_id]["usesLeft"] == 0
    assert all(i["link"] is None for k, i in invites.items() if k != bob_id)

    # The used-up link has its own error.
    assert node.error("preview", link=bob_link)["kind"] == "used_up"

    # Bob (moderator, web) removes Carol: the same append rekeys, with an envelope for every
    # member; Alice's CLI takes the new key from Bob's envelope and still reads the profiles.
    node.ok("kick", member="Carol")
    keys = node.ok("space_keys")
    assert keys == {"epoch": 1, "held": True}
    assert names(alice.json("members", space)) == {"Alice": "owner", "Bob": "moderator"}
    assert "error" in carol.run("members", space, check=False).stderr

    # Dave (CLI) joins and leaves: Bob's open web client completes the rekey the departure
    # needs (its key duty), and Alice's CLI takes the new key from Bob's envelope.
    dave, erin = user("dave"), user("erin")
    dave.run("join", alice.json("invite", "create", space)["link"], "--as", "Dave")
    node.ok("wait_member", name="Dave")
    dave.run("leave", space)
    assert node.ok("wait_epoch", epoch=2) == {"epoch": 2, "held": True, "rekey_by_me": True}
    assert names(alice.json("members", space)) == {"Alice": "owner", "Bob": "moderator"}
    # Erin (CLI) joins and Alice (CLI) removes her: Bob's client opens Alice's envelope.
    erin.run("join", alice.json("invite", "create", space)["link"], "--as", "Erin")
    node.ok("wait_member", name="Erin")
    alice.run("kick", space, "Erin")
    assert node.ok("wait_epoch", epoch=3) == {"epoch": 3, "held": True, "rekey_by_me": False}
    assert names(node.ok("members")) == {"Alice": "owner", "Bob": "moderator"}

    # A revoked link has its own error too.
    revoked = alice.json("invite", "create", space, "--uses", "3")["link"]
    alice.run("invite", "revoke", space, revoked.split("/join/")[1].split("#")[0])
    assert node.error("preview", link=revoked)["kind"] == "revoked"

    # An expired link has its own error (polled: it expires a second after it is made).
    short = alice.json("invite", "create", space, "--expires", "1s")["link"]
    deadline = time.monotonic() + 30
    while (kind := node.ask("preview", link=short).get("kind")) != "expired":
        assert time.monotonic() < deadline, f"the link never expired ({kind})"
        time.sleep(0.2)  # poll gently: previews count against the join-attempt limit

    # Alice bans Bob with the CLI: the web client reports Removed and stops. "banned" when it saw
    # the signed remove record; "unconfirmed" when its connection happened to be down and the
    # server only refuses it (the server's word is never taken for a verified removal).
    alice.run("kick", space, "Bob", "--ban")
    removed = node.ok("wait_removed")
    assert removed["how"] in ("banned", "unconfirmed") and removed["state"] == "closed"
    assert node.error("list_invites")["name"] == "Removed"


def test_web_core_reconnects(
    make_server: Callable[..., SalonServer], user: Callable[..., SalonUser], node: NodeClient
) -> None:
    srv = make_server()
    alice = user("alice")
    created = alice.json("space", "create", "Book club", "--server", srv.url, "--as", "Alice")
    node.ok("join", link=created["link"], name="Bob")
    srv.stop()
    node.ok("wait_state", state="reconnecting")
    node.send("sync")  # made while reconnecting: waits instead of failing
    srv.start(port=srv.port)
    assert names(node.receive("sync")["ok"]) == {"Alice": "owner", "Bob": "member"}
    assert node.ok("wait_state", state="online")[-2:] == ["reconnecting", "online"]
    # Events flow on the new session: Alice's role change reaches the web client.
    alice.run("role", created["space_id"], "Bob", "moderator")
    assert node.ok("wait_role", role="moderator") == "moderator"

    # A new display name from the web client reaches the CLI; then Bob leaves and is forgotten.
    node.ok("set_profile", name="Robert")
    assert names(alice.json("members", created["space_id"])) == {
        "Alice": "owner",
        "Robert": "moderator",
    }
    node.ok("leave")
    assert node.ok("list") == []
    assert names(alice.json("members", created["space_id"])) == {"Alice": "owner"}


def test_web_core_creates_a_space(
    server: SalonServer, user: Callable[..., SalonUser], node: NodeClient
) -> None:
    frank = user("frank")
    created = node.ok("create", server=server.url, name="Web club", **{"as": "Wanda"})
    assert node.ok("info")["name"] == "Web club" and node.ok("info")["role"] == "owner"
    preview = frank.json("join", created["link"], "--preview")
    assert (preview["name"], preview["inviter"]) == ("Web club", "Wanda")
    frank.run("join", created["link"], "--as", "Frank")
    assert names(node.ok("wait_member", name="Frank")) == {"Wanda": "owner", "Frank": "member"}
    assert names(frank.json("members", created["space_id"])) == {
        "Wanda": "owner",
        "Frank": "member",
    }


def test_web_core_unreachable(node: NodeClient) -> None:
    from tests.conftest import free_port

    link = f"http://127.0.0.1:{free_port()}/join/abcdefghijklmnop#" + "A" * 43
    assert node.error("preview", link=link)["kind"] == "unreachable"
