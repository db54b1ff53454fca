"""Standalone SFU nodes and SFU-less servers, with real processes.

- Two ``salon sfu`` nodes register with a ``salon serve`` that runs no SFU of its own;
  several conferences are spread across both (each node's ``/health`` shows its share),
  media flows through a standalone node, and a node with the wrong secret is refused.
  When the node carrying a call dies, the server tells its participants, they reconnect,
  and the other node carries the call on.
- A server with ``[sfu] enabled = false`` and no node is mesh-only: a call that would grow
  past the mesh size is refused with a clear "this server has no SFU" message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls, make_town
from conftest import SALON, toml_text

from client.call.media import colour_distance, name_colour

SECRET = "n0de-secret-for-tests-0123456789abcdef"
pytestmark = pytest.mark.timeout(150)


class NodeProcess:
    """``salon sfu`` in the background, its output collected line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read())
        self.url = ""

    @classmethod
    async def start(cls, root: Path, server_url: str, secret: str) -> NodeProcess:
        root.mkdir(parents=True, exist_ok=True)
        config = root / "node.toml"
        config.write_text(
            toml_text({"sfu": {"server_url": server_url, "node_secret": secret, "port": 0}})
        )
        proc = await asyncio.create_subprocess_exec(
            str(SALON),
            "sfu",
            "--config",
            str(config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "SALON_ICE_HOSTS": "127.0.0.1"},
        )
        node = cls(proc)
        line = await node.wait_for(r"listening on (http://\S+)")
        found = re.search(r"listening on (http://\S+)", line)
        assert found
        node.url = found.group(1)
        return node

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))

    async def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in self.lines if regex.search(line)), None)
            if found is not None:
                return found
            await asyncio.sleep(0.1)
        raise AssertionError(f"node: no {pattern!r} within {timeout} s:\n" + "\n".join(self.lines))

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
            result: dict[str, Any] = json.load(response)
            return result

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._reader, 5)


@contextlib.asynccontextmanager
async def nodes() -> AsyncIterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for node in started:
            await node.stop()


async def test_conferences_spread_across_two_standalone_nodes(
    make_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = make_server({"sfu": {"enabled": False, "node_secret": SECRET}})
    town = make_town(srv.url, user, ("Bob", "Carol", "Dave"))
    for name in ("s1", "s2", "s3"):
        town["Alice"].run(
            "room", "create", town.space, name, "--kind", "conference", "--topology", "sfu"
        )
    quiet = ("--video", "none", "--audio", "none")
    async with nodes() as running_nodes, calls() as running:
        intruder = await NodeProcess.start(tmp_path / "intruder", srv.url, "x" * 40)
        running_nodes.append(intruder)
        await intruder.wait_for("refused this node: the node's proof does not verify")
        await intruder.stop()
        for n in range(2):
            node = await NodeProcess.start(tmp_path / f"node{n}", srv.url, SECRET)
            running_nodes.append(node)
            await node.wait_for("registered with ws://")
        a, b = running_nodes[1:]

        async def call(room_name: str, person: str, *extra: str) -> CallProcess:
            stats = tmp_path / f"{room_name}-{person}.json"
            started = await CallProcess.start(
                town[person], town.space, room_name, stats, 40, *extra
            )
            running.append(started)
            return started

        # A call with media (Alice and Bob), then two with a single listener each.
        alice, bob = await call("s1", "Alice"), await call("s1", "Bob")
        await alice.wait_for("first video from Bob", 30)
        for room_name, person in (("s2", "Carol"), ("s3", "Dave")):
            await (await call(room_name, person, *quiet)).wait_for("topology sfu")

        def spread() -> tuple[int, int]:
            return a.health()["conferences"], b.health()["conferences"]

        deadline = time.monotonic() + 20
        while sum(spread()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        counts = spread()
        assert sum(counts) == 3 and min(counts) >= 1, counts
        health = [a.health(), b.health()]
        assert all(h["registered"] for h in health)
        assert sum(h["participants"] for h in health) == 4

        # The node carrying Alice and Bob (the one forwarding anything) dies: the server
        # tells them, they reconnect, and the other node carries their call on.
        busy, spare = (a, b) if health[0]["load"] > 0 else (b, a)
        forwarding = busy.health()["load"]  # Alice's audio and video to Bob, and back
        assert forwarding == 4 and spare.health()["load"] == 0
        before = spare.health()["participants"]
        busy.proc.kill()
        for person in (alice, bob):
            await person.wait_for("reconnecting to the SFU: the SFU node carrying this call")
        deadline = time.monotonic() + 20
        while spare.health()["load"] < forwarding and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert spare.health()["participants"] == before + 2
        sent = spare.health()["packets_out"]
        await asyncio.sleep(3)
        assert spare.health()["packets_out"] > sent + 200  # their media flows through it
        results = [await alice.stop(), await bob.stop()]

    for result, other in zip(results, ("Bob", "Alice"), strict=True):
        assert result.stats["topology"] == "sfu"
        peer = result.peer(other)
        assert peer["video_frames_decoded"] > 15 and peer["decrypt_failures"] == 0
        assert colour_distance(tuple(peer["dominant_colour"]), name_colour(other)) < 40
    log = srv.log_text()
    assert "SFU node" in log and "registered" in log and "refused an SFU node" in log


async def test_a_server_without_an_sfu_says_the_call_is_full(
    make_server: Any, user: Any, tmp_path: Path
) -> None:
    srv = make_server(
        {"sfu": {"enabled": False}, "conference": {"mesh_max": 2, "mesh_return_max": 1}}
    )
    town = make_town(srv.url, user, ("Bob", "Carol"))
    town["Alice"].run("room", "create", town.space, "small", "--kind", "conference")
    quiet = ("--video", "none", "--audio", "none")
    async with calls() as running:
        for name in ("Alice", "Bob"):
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "small", stats, 30, *quiet)
            )
        for call in running:
            await call.wait_for(r"verification code .* \(2 in the call")
        third = await CallProcess.start(
            town["Carol"], town.space, "small", tmp_path / "c.json", 30, *quiet
        )
        running.append(third)
        refused = await third.finish()
        for call in running[:2]:
            await call.stop()
    assert refused.returncode == 5
    assert refused.stderr.strip() == (
        "error: cannot join: this server has no SFU; the call is full "
        "(a mesh call holds at most 2 participants)"
    )
    assert refused.stats["ended_reason"] == "denied"
