"""The web client's call core (web/src/call/call.ts) beside real ``salon call`` participants.

``web/scripts/run_ts.mjs call_e2e`` runs the browser's CallClient under Node (its global WebSocket),
one JSON command per stdin line. Node has no WebRTC, so its topology only records what the
call client tells it (peers, verified signals, what may be sent): this checks the signalling,
the signed moderation and the media keys end to end against the real server and CLI; the media
itself is checked in the browser tests (tests/test_web_call*.py).

- Bob (web) knocks in a lobby room; Alice (CLI, owner) admits him with ``salon mod``; both
  show the same verification code; Alice mutes Bob (his view says muted, his topology is told
  to send no audio, and he cannot unmute himself); a forged mute "from the server" is refused;
  Alice kicks Bob (his call says removed, and no media key reaches him after).
- The reverse: Bob, a moderator, hosts a lobby room from the web; Carol (CLI) knocks and Bob
  admits her by a signed action her CLI verifies; Bob mutes her; their codes match.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls, code_for

from tests.conftest import SalonServer, SalonUser

pytestmark = pytest.mark.timeout(240)

WEB = Path(__file__).resolve().parent.parent / "web"
ANSWER_TIMEOUT = 60.0


class NodeCall:
    """The web call client in a Node process, driven line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> NodeCall:
        proc = await asyncio.create_subprocess_exec(
            "node",
            "scripts/run_ts.mjs",
            "call_e2e",
            cwd=WEB,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        return cls(proc)

    async def ask(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), ANSWER_TIMEOUT)
        except TimeoutError:
            raise AssertionError(f"no answer to {op}") from None
        if not line:
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode(errors="replace")
            raise AssertionError(f"the Node client exited during {op}: {err[-3000:]}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    async def ok(self, op: str, **args: Any) -> Any:
        answer = await self.ask(op, **args)
        assert "ok" in answer, f"{op} failed: {answer}"
        return answer["ok"]

    async def error(self, op: str, **args: Any) -> dict[str, Any]:
        answer = await self.ask(op, **args)
        assert "error" in answer, f"{op} should have failed: {answer}"
        return answer

    async def close(self) -> None:
        if self.proc.returncode is None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b'{"op": "quit"}\n')
            await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


def ensure_node() -> None:
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


NO_MEDIA = ("--video", "none", "--audio", "none")


async def test_web_call_signalling_with_cli(server: SalonServer, user: Any, tmp_path: Path) -> None:
    ensure_node()
    alice: SalonUser = user("alice")
    carol: SalonUser = user("carol")
    created = await alice.ajson(
        "space", "create", "Town hall", "--server", server.url, "--as", "Alice"
    )
    space = created["space_id"]
    await carol.arun("join", created["link"], "--as", "Carol")
    invite = await alice.ajson("invite", "create", space)
    await alice.arun("room", "create", space, "knock", "--kind", "conference", "--lobby")

    bob = await NodeCall.start()
    try:
        await bob.ok("join", link=invite["link"], name="Bob")
        async with calls() as running:
            # -- Bob knocks, Alice (CLI) admits him ---------------------------------------
            host = await CallProcess.start(
                alice, space, "knock", tmp_path / "a.json", 90, *NO_MEDIA
            )
            running.append(host)
            await host.wait_for("topology mesh")
            view = await bob.ok("call", room="knock")
            assert view["phase"] == "lobby", view
            await host.wait_for(r"Bob \(\w+\) is waiting in the lobby")
            await asyncio.sleep(1.0)  # in the lobby a while: no key may reach Bob meanwhile
            stats = await bob.ok("stats")
            assert stats["key_log"] == [] and stats["codes"] == []
            await alice.arun("mod", space, "knock", "admit", "Bob")
            await bob.ok("wait_phase", phase="in-call")
            view = await bob.ok("wait_code", people=2)
            await host.wait_for(r"verification code .* \(2 in the call")
            names = {p["name"]: p for p in view["participants"]}
            assert set(names) == {"Alice", "Bob"} and names["Alice"]["seat"] == "host"
            assert view["topology"] == "mesh" and view["mayModerate"] is False

            # -- a forged mute "from the server" is refused -------------------------------
            forged = await bob.ok("inject_forged_mute", actor="Alice")
            assert forged["rejected"] == 1
            me = next(p for p in forged["view"]["participants"] if p["me"])
            assert me["muted"] is False
            assert any("ignored an unverifiable 'mute'" in n for n in forged["notes"]), forged

            # -- Alice mutes Bob: he sends no audio and cannot unmute himself -------------
            await alice.arun("mod", space, "knock", "mute", "Bob")
            await bob.ok("wait_muted", muted=True)
            recorded = await bob.ok("recorded")
            assert recorded[-1]["topology"] == "mesh"
            assert recorded[-1]["sending"][-1]["audio"] is False
            assert recorded[-1]["sending"][-1]["camera"] is True
            refused = await bob.error("intent", name="set_muted", muted=False)
            assert refused["kind"] == "refused" and "A host muted you" in refused["error"]
            # Bob's hand goes up by his own signed action, which the CLI verifies.
            await bob.ok("intent", name="hand", up=True)
            await host.wait_for(r"Bob \(\w+\) raised a hand")

            # -- Alice kicks Bob: removed, and no key reaches him after --------------------
            keys_before = len((await bob.ok("stats"))["key_log"])
            await alice.arun("mod", space, "knock", "kick", "Bob")
            view = await bob.ok("wait_phase", phase="removed")
            assert view["reason"] == "Alice removed you from the call.", view
            await host.wait_for(r"removed Bob")
            await asyncio.sleep(1.0)
            stats = await bob.ok("stats")
            assert len(stats["key_log"]) == keys_before
            assert stats["counters"]["signalsAfterEnd"] == 0
            assert stats["counters"]["rejectedSignals"] == 0
            assert (await bob.ok("recorded"))[-1]["closed"] is True
            result = await host.stop()
            assert result.returncode == 0
            assert stats["codes"][-1] == code_for(result, 2)
            assert stats["codes"][-1] in result.stats["verification_codes"]
            bob_hex = next(p["member"] for p in names.values() if p["me"])
            assert all(k["from"] != bob_hex for k in stats["key_log"])

        # -- the reverse: Bob hosts from the web and admits a CLI knocker -----------------
        await alice.arun("role", space, "Bob", "moderator")
        await alice.arun("room", "create", space, "desk", "--kind", "conference", "--lobby")
        bob2 = bob
        view = await bob2.ok("call", room="desk")
        assert view["phase"] == "in-call" and view["mayModerate"] is True, view
        async with calls() as running:
            knocker = await CallProcess.start(
                carol, space, "desk", tmp_path / "c.json", 60, *NO_MEDIA
            )
            running.append(knocker)
            await knocker.wait_for("waiting in the lobby until a host admits you")
            await bob2.ok("wait_lobby", name="Carol")
            await bob2.ok("intent", name="admit", member="Carol")
            await knocker.wait_for(r"Bob \(\w+\) admitted you")
            view = await bob2.ok("wait_code", people=2)
            await knocker.wait_for(r"verification code .* \(2 in the call")
            first_code = view["code"]

            # -- Bob's connection drops: he says so, comes back, joins again (new keys) ---
            await bob2.ok("drop_connection")
            await bob2.ok("wait_reason", reason="Connection to the server lost. Reconnecting…")
            await knocker.wait_for(r"Bob \(\w+\) left")
            await bob2.ok("wait_reason", reason="")
            view = await bob2.ok("wait_code", people=2, **{"not": first_code})
            assert view["phase"] == "in-call" and view["reason"] == "", view
            assert view["code"] != first_code  # everyone rekeyed
            await asyncio.sleep(0.5)
            await bob2.ok("intent", name="mute", member="Carol")
            await knocker.wait_for(r"muted you")
            await bob2.ok("wait_participant", name="Carol", muted=True)
            result = await knocker.stop()
            assert result.returncode == 0
            assert result.stats["self"]["admitted"] is True
            assert view["code"] == code_for(result, 2)
    finally:
        await bob.close()
