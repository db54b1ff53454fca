"""Red team on orphans (issue 11): a dead instance's participants kept on the SFU node must
not outlive a kick, or the end of their call, decided through a surviving instance.

Real components: PostgreSQL, two ``salon serve`` instances A and B, one ``salon sfu`` node
registered with both, real ``salon call`` processes. Bob and Carol are in a call through A
(through a relay that keeps their side open when A dies, as a client rejoining elsewhere
keeps its media running); Alice, the host, is a member connected to B who is not in the call.
A is killed with SIGKILL: Bob and Carol become orphans on the node, kept for
``[sfu] orphan_grace_seconds``. Alice kicks Carol, then ends the call, through B.

B followed the call only if one of its own sessions had connected media to it: with no
participant of its own it never learnt the orphans' node numbers, so neither the kick nor
the end reached the node, and Carol's connection (and Bob's) went on for the whole grace.
Even with a participant of its own, the end of a call let go only B's own connections.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls
from conftest import until
from test_sfu_multi_instance import (
    GRACE,
    QUIET,
    Pair,
    nodes,
    pair,
    relay_to,
    start_node,
    through,
)
from test_sfu_nodes import NodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
__all__ = ["pair"]  # the fixture


@contextlib.asynccontextmanager
async def orphaned(
    pair: Pair, user: Any, tmp_path: Path
) -> AsyncIterator[tuple[NodeProcess, Any, str, float]]:
    """Bob and Carol in a call through A, A killed: (the node, Alice, the space, when)."""
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    with relay_to(pair.a) as relay:
        async with nodes() as running_nodes, calls() as running:
            node = await start_node(tmp_path / "node", "n1", [pair.a.url, pair.b.url])
            running_nodes.append(node)
            made = await alice.ajson(
                "space", "create", "Two doors", "--server", pair.b.url, "--as", "Alice"
            )
            space = made["space_id"]
            for person, name in ((bob, "Bob"), (carol, "Carol")):
                await person.arun("join", through(made["link"], pair.b.url, relay), "--as", name)
            await alice.arun("room", "create", space, "hall", "--kind", "conference")

            b = await CallProcess.start(bob, space, "hall", tmp_path / "b.json", 120, *QUIET)
            running.append(b)
            await b.wait_for("joined call")
            c = await CallProcess.start(carol, space, "hall", tmp_path / "c.json", 120, *QUIET)
            running.append(c)
            await until(lambda: node.health()["participants"] == 2, "Bob and Carol on the node")

            relay.hold = True
            pair.a.proc.kill()  # type: ignore[union-attr]  # SIGKILL: nothing said to anyone
            pair.a.proc.wait()  # type: ignore[union-attr]
            killed = time.monotonic()
            await until(lambda: node.health()["orphans"] == 2, "Bob and Carol orphaned", timeout=30)
            yield node, alice, space, killed
            for call in (b, c):
                await call.kill()
    assert "Traceback" not in pair.b.log_text()


async def test_a_kick_and_an_end_through_a_surviving_instance_reach_the_orphans(
    pair: Pair, user: Any, tmp_path: Path
) -> None:
    async with orphaned(pair, user, tmp_path) as (node, alice, space, killed):
        # Alice kicks Carol through B: the node drops her at once, not at the grace.
        await alice.arun("mod", space, "hall", "kick", "Carol")
        await until(
            lambda: node.health()["participants"] == 1, "Carol kicked off the node", timeout=10
        )
        # Alice ends the call through B: Bob is let go too.
        await alice.arun("mod", space, "hall", "end")
        await until(
            lambda: node.health()["participants"] == 0, "the call over on the node", timeout=10
        )
        assert time.monotonic() - killed < GRACE
        assert node.health()["orphans"] == 0


async def test_a_member_removed_from_the_space_loses_their_orphan_at_once(
    pair: Pair, user: Any, tmp_path: Path
) -> None:
    """Carol is removed from the space (not only from the call) through B: her orphaned
    connection goes at once, not after the grace (nobody is left to say she left the call)."""
    async with orphaned(pair, user, tmp_path) as (node, alice, space, killed):
        await alice.arun("kick", space, "Carol")
        await until(
            lambda: node.health()["participants"] == 1, "Carol's orphan dropped", timeout=10
        )
        assert time.monotonic() - killed < GRACE
