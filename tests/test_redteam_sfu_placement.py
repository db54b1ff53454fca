"""Red team on SFU placement (issue 11): the node must keep enforcing moderation for a call
whose media left the SFU and came back.

Since calls are placed through the ordered log, an offer no longer assigns the call's node in
the instance's registry; the assignment is made once, when the ``place`` input is applied.
When an auto call goes back to a mesh, the instance forgets the call's SFU side (and with it
that assignment) after ``[sfu] mesh_grace_seconds``; when it grows past ``mesh_max`` again,
the log's placement is unchanged, so nothing assigned the node again: every later kick, mute
or stage change found no node and was silently not enforced. A participant running a
modified client (here: one that stops on the kick instead of closing its SFU connection)
went on receiving and sending media through the node.

The server is the real spaces app in the test's event loop (so the test can look at its
in-process node), the participants real ``salon call`` processes.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, amake_town, calls
from support import until

from spaces.handlers.conference import CONFERENCES
from spaces.sfu_registry import LOCAL_NAME, REGISTRY

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
CONFIG = {
    "conference": {"mesh_max": 2, "mesh_return_max": 1},
    "sfu": {"mesh_grace_seconds": 0.5},
}


def on_node(srv: Any) -> dict[str, list[str]]:
    """conference id -> participants the server's in-process node carries."""
    node = srv.app[REGISTRY].handle(LOCAL_NAME).node
    return {cid: list(c["participants"]) for cid, c in node.stats()["conferences"].items()}


def participants(srv: Any) -> int:
    return sum(len(p) for p in on_node(srv).values())


async def test_a_kick_reaches_the_node_after_the_call_came_back_from_a_mesh(
    app_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = await app_server(CONFIG)
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    await town["Alice"].arun("room", "create", town.space, "lounge", "--kind", "conference")
    conferences = srv.app[CONFERENCES]
    async with calls() as running:

        async def start(name: str) -> CallProcess:
            stats = tmp_path / f"{name}-{len(running)}.json"
            call = await CallProcess.start(town[name], town.space, "lounge", stats, 120)
            running.append(call)
            return call

        alice = await start("Alice")
        await alice.wait_for("joined call")
        bob, carol = await start("Bob"), await start("Carol")
        await alice.wait_for("topology moved from mesh to sfu", 40)
        await until(lambda: participants(srv) == 3, "three on the node", timeout=40)
        # Back to a mesh (one left), past the grace: the call's SFU side is forgotten.
        await bob.stop()
        await carol.stop()
        await alice.wait_for("topology moved from sfu to mesh", 40)
        await until(lambda: participants(srv) == 0, "none on the node", timeout=40)
        # Past mesh_max again: the same call, the same placement, back on the node.
        bob, carol = await start("Bob"), await start("Carol")
        await until(lambda: participants(srv) == 3, "three back on the node", timeout=60)
        (key,) = [k for k, r in conferences._replicas.items() if r.conference.joined]
        carol_key = town.member_key("Carol")
        index = str(conferences.call(key).seats[carol_key].index)
        placed = conferences.placement(key)
        assert placed is not None and index in on_node(srv)[placed.conference]
        # Carol's client ignores the kick: it keeps its SFU connection as it is.
        assert carol.proc.pid is not None
        os.kill(carol.proc.pid, signal.SIGSTOP)
        try:
            await town["Alice"].arun("mod", town.space, "lounge", "kick", "Carol")
            await until(lambda: carol_key not in conferences.call(key).seats, "kicked", timeout=20)
            # The server drops her connection at the node at once (well before ICE consent
            # would lapse on its own, ~30 s).
            await until(
                lambda: index not in on_node(srv).get(placed.conference, []),
                "her connection dropped at the node",
                timeout=5,
            )
        finally:
            os.kill(carol.proc.pid, signal.SIGCONT)
