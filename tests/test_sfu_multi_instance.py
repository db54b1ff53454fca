"""One standalone SFU node serving two ``salon serve`` instances on one PostgreSQL (issue 11).

Real components only: a PostgreSQL cluster started by the suite, two servers A and B on it
(no in-process SFU, ``[conference] mesh_max = 1`` so a call of two runs on the SFU), real
``salon sfu`` nodes registered (``[sfu] server_urls``) and real ``salon call`` processes.

- Alice (the host) calls through B, Bob and Carol through A: both instances put the call on
  the same node under one conference id (the node shows one conference of three), media is
  decoded both ways. A is then killed with SIGKILL: the node keeps Alice, keeps Bob and
  Carol (orphans) while Bob's media still flows through it to Alice, stops Bob's audio when
  Alice mutes him through B, drops Carol at once when Alice kicks her through B, and lets
  Bob go only after ``[sfu] orphan_grace_seconds``; Alice's call is never disturbed.
  (Bob's and Carol's control connections go through a relay that holds their side open
  when A dies, as a client that is rejoining elsewhere keeps its media running: rejoining
  itself is the client's side, not tested here.)
- An instance never places a call on a node it lost, even one that is idle and would be
  preferred; the other instance, which has that node, still carries the call where the
  ordered log placed it. An instance that must serve a call placed on a node it lacks waits
  for it, then moves the call to a node it has (every participant follows).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls
from conftest import SALON, SalonServer, toml_text, until
from postgres_support import PostgresServer
from test_sfu_nodes import NodeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
SECRET = "n0de-secret-for-tests-0123456789abcdef"
GRACE = 30.0
CONFIG = {
    "limits": {"join_attempts_per_minute_per_address": 1000},
    "sfu": {"enabled": False, "node_secret": SECRET},
    # Seats of a dead instance's members are freed after seat_grace_seconds (they did not
    # come back); held longer here, so that the node's own orphan grace is what is tested.
    "conference": {"mesh_max": 1, "mesh_return_max": 0, "seat_grace_seconds": 120},
}
QUIET = ("--video", "none", "--audio", "none")


@dataclass
class Pair:
    a: SalonServer
    b: SalonServer


@pytest.fixture
def pair(postgres: PostgresServer, tmp_path: Path) -> Iterator[Pair]:
    url = postgres.create_database()
    a = SalonServer(tmp_path / "a", CONFIG, url)
    b = SalonServer(tmp_path / "b", CONFIG, url)
    a.start()
    try:
        b.start()
        yield Pair(a, b)
    finally:
        b.stop()
        a.stop()


def health(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=10) as response:
            return int(response.status), json.load(response)
    except urllib.error.HTTPError as error:
        return int(error.code), json.load(error)


async def start_node(root: Path, name: str, urls: list[str]) -> NodeProcess:
    """``salon sfu`` registered with every server in ``urls``; waits until it is with all."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "node.toml"
    node_config = {
        "server_urls": urls,
        "node_secret": SECRET,
        "node_name": name,
        "port": 0,
        "orphan_grace_seconds": GRACE,
    }
    config.write_text(toml_text({"sfu": node_config}))
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
    node = NodeProcess(proc)
    found = re.search(r"listening on (http://\S+)", await node.wait_for(r"listening on http://"))
    assert found
    node.url = found.group(1)
    await until(
        lambda: all(s["registered"] for s in node.health()["servers"]),
        f"{name} registered with {urls}",
        timeout=30,
    )
    return node


@contextlib.asynccontextmanager
async def nodes() -> AsyncIterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    try:
        yield started
    finally:
        for node in started:
            await node.stop()


class HoldingRelay:
    """A TCP relay to ``127.0.0.1:port`` (on a thread of its own) that, once told to
    :attr:`hold`, keeps its clients' ends open when the server's end closes."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.hold = False
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.writers: set[asyncio.StreamWriter] = set()
        started = asyncio.start_server(self._client, "127.0.0.1", 0)
        self.server = asyncio.run_coroutine_threadsafe(started, self.loop).result(10)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65_536):
                    dst.write(data)
                    await dst.drain()

        down = asyncio.create_task(pump(up_reader, writer))
        up = asyncio.create_task(pump(reader, up_writer))
        done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        if up in done or not self.hold:  # pass the close on
            for task in (down, up):
                task.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
            up_writer.close()
            writer.close()
            return
        up.cancel()  # the server is gone: the client hears nothing more, and no close
        await asyncio.gather(up, return_exceptions=True)
        up_writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            while await reader.read(65_536):
                pass
        writer.close()

    def close(self) -> None:
        async def stop() -> None:
            self.server.close()
            for writer in list(self.writers):
                writer.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@contextlib.contextmanager
def relay_to(server: SalonServer) -> Iterator[HoldingRelay]:
    relay = HoldingRelay(server.port)
    try:
        yield relay
    finally:
        relay.close()


def through(link: str, origin: str, server: SalonServer) -> str:
    """The invite link, through ``server`` instead of ``origin``."""
    assert link.startswith(origin + "/"), link
    return server.url + link[len(origin) :]


def frames_from(call: CallProcess, name: str) -> int:
    """The video frames ``call`` had decoded from ``name`` at its latest status line."""
    pattern = re.compile(rf"{name} \(\w+, [^|]*?(\d+) video / \d+ audio frames\)")
    found = [int(m.group(1)) for line in call.lines if (m := pattern.search(line))]
    return found[-1] if found else 0


async def test_one_node_carries_a_call_across_instances_and_outlives_one(
    pair: Pair, user: Any, tmp_path: Path
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    with relay_to(pair.a) as relay:
        async with nodes() as running_nodes, calls() as running:
            node = await start_node(tmp_path / "node", "n1", [pair.a.url, pair.b.url])
            running_nodes.append(node)
            assert node.health()["registrations"] == 2
            for server in (pair.a, pair.b):  # each instance has the node
                assert health(server.url) == (200, {"status": "ok", "sfu_nodes": 1})

            # Alice (the host) is on B; Bob and Carol on A, through the relay.
            made = await alice.ajson(
                "space", "create", "Two doors", "--server", pair.b.url, "--as", "Alice"
            )
            space = made["space_id"]
            for person, name in ((bob, "Bob"), (carol, "Carol")):
                await person.arun("join", through(made["link"], pair.b.url, relay), "--as", name)
            await alice.arun("room", "create", space, "hall", "--kind", "conference")

            a = await CallProcess.start(alice, space, "hall", tmp_path / "a.json", 120)
            running.append(a)
            await a.wait_for("topology mesh")
            b = await CallProcess.start(bob, space, "hall", tmp_path / "b.json", 120)
            running.append(b)
            for call in (a, b):
                await call.wait_for(r"topology (moved from mesh to )?sfu \(")
            await a.wait_for("first video from Bob", 40)
            await b.wait_for("first video from Alice", 40)
            c = await CallProcess.start(carol, space, "hall", tmp_path / "c.json", 120, *QUIET)
            running.append(c)
            await a.wait_for(r"verification code .* \(3 in the call", 40)
            # One conference: both instances put the call on this node, under one id.
            await until(lambda: node.health()["participants"] == 3, "Carol on the node too")
            seen = node.health()
            assert (seen["conferences"], seen["orphans"]) == (1, 0), seen

            relay.hold = True
            pair.a.proc.kill()  # type: ignore[union-attr]  # SIGKILL: nothing said to anyone
            pair.a.proc.wait()  # type: ignore[union-attr]
            killed = time.monotonic()
            await until(
                lambda: [s["registered"] for s in node.health()["servers"]] == [False, True],
                "the node's channel to A gone, to B still up",
                timeout=30,
            )
            seen = node.health()
            assert (seen["participants"], seen["orphans"]) == (3, 2), seen
            assert health(pair.b.url) == (200, {"status": "ok", "sfu_nodes": 1})
            # Bob's media still flows through the node to Alice (and hers to him).
            forwarded, decoded = seen["packets_out"], frames_from(a, "Bob")
            await until(
                lambda: frames_from(a, "Bob") > decoded + 20,
                "Alice decoding Bob's video after A died",
                timeout=GRACE - 5,
            )
            assert node.health()["packets_out"] > forwarded + 100

            # Alice mutes Bob through B: the node stops forwarding his audio (A's orphan,
            # whom only B can moderate now). Her client drops a muted sender's audio anyway,
            # and counts what it drops: next to nothing, if the node enforces the mute.
            await alice.arun("mod", space, "hall", "mute", "Bob")
            await a.wait_for("muted Bob")
            video = frames_from(a, "Bob")
            await until(
                lambda: frames_from(a, "Bob") > video + 30,
                "Bob's video still flowing while his audio is held back",
                timeout=10,
            )

            # Alice kicks Carol through B: the node drops A's orphan at once, not at the grace.
            await alice.arun("mod", space, "hall", "kick", "Carol")
            await until(
                lambda: node.health()["participants"] == 2, "Carol kicked off the node", timeout=10
            )
            assert time.monotonic() - killed < GRACE
            assert node.health()["orphans"] == 1

            # After the grace, Bob (who did not rejoin) is let go; Alice stays.
            await until(
                lambda: node.health()["participants"] == 1,
                "A's participant let go after the grace",
                timeout=GRACE + 20,
            )
            assert time.monotonic() - killed >= GRACE - 1
            seen = node.health()
            assert (seen["conferences"], seen["orphans"]) == (1, 0)
            host = await a.stop()
            for call in (b, c):
                await call.kill()

    assert host.stats["topology"] == "sfu"
    assert not any("reconnecting to the SFU" in line for line in host.stdout)
    # (After Carol's kick Alice rekeys and refuses Bob's frames under the key Carol knew;
    # Bob, cut off from every server, cannot hear of the new epoch: decrypt failures then.)
    assert host.peer("Bob")["video_frames_decoded"] > 30
    assert host.peer("Bob")["audio_frames_dropped"] < 40  # ~100 in those 2 s if forwarded
    node_log = "\n".join(node.lines)
    assert "registered with ws://" in node_log and "Traceback" not in node_log
    assert "Traceback" not in pair.b.log_text()


async def test_an_instance_places_calls_only_on_nodes_it_has(
    pair: Pair, user: Any, tmp_path: Path
) -> None:
    alice, bob, carol = user("alice"), user("bob"), user("carol")
    made = await alice.ajson("space", "create", "Nodes", "--server", pair.a.url, "--as", "Alice")
    space = made["space_id"]
    for person, name in ((bob, "Bob"), (carol, "Carol")):
        await person.arun("join", through(made["link"], pair.a.url, pair.b), "--as", name)
    for room in ("x", "y", "z"):
        await alice.arun("room", "create", space, room, "--kind", "conference", "--topology", "sfu")
    async with nodes() as running_nodes, calls() as running:
        # n0 registers with both, then A loses it (it comes back registered with B only);
        # n1 is with both. Idle and tied, n0 would be chosen first (by name).
        n0 = await start_node(tmp_path / "n0", "n0", [pair.a.url, pair.b.url])
        running_nodes.append(n0)
        n1 = await start_node(tmp_path / "n1", "n1", [pair.a.url, pair.b.url])
        running_nodes.append(n1)
        await until(lambda: health(pair.a.url)[1].get("sfu_nodes") == 2, "A has both nodes")
        await n0.stop()
        await until(lambda: health(pair.a.url)[1].get("sfu_nodes") == 1, "A lost n0")
        n0 = await start_node(tmp_path / "n0-again", "n0", [pair.b.url])
        running_nodes.append(n0)
        await until(lambda: health(pair.b.url)[1].get("sfu_nodes") == 2, "B has both nodes")
        assert health(pair.a.url)[1]["sfu_nodes"] == 1

        async def call(person: Any, room: str, name: str) -> CallProcess:
            started = await CallProcess.start(
                person, space, room, tmp_path / f"{name}.json", 60, *QUIET
            )
            running.append(started)
            await started.wait_for("topology sfu")
            return started

        def counts() -> tuple[int, int, int, int]:
            h0, h1 = n0.health(), n1.health()
            return h0["conferences"], h0["participants"], h1["conferences"], h1["participants"]

        await call(alice, "x", "alice")  # through A, which has only n1
        await until(lambda: counts() == (0, 0, 1, 1), "x on n1", timeout=30)
        await call(carol, "y", "carol")  # through B, which prefers the idle n0
        await until(lambda: counts() == (1, 1, 1, 1), "y on n0", timeout=30)
        # Bob joins x through B: the log placed x on n1, and B follows it (not its n0).
        await call(bob, "x", "bob")
        await until(lambda: counts() == (1, 1, 1, 2), "Bob on n1 with Alice", timeout=30)
        for started in running:
            await started.stop()
        running.clear()
        await until(lambda: counts() == (0, 0, 0, 0), "every call over")

        # Carol (B) starts a call in z: B places it on n0. Alice joins it through A, which
        # lacks n0: A waits for n0 to register, then moves the call (through the log) to
        # n1, and Carol follows: one conference, on the node both instances have.
        carols = await call(carol, "z", "z-carol")
        await until(lambda: counts() == (1, 1, 0, 0), "z on n0", timeout=30)
        await call(alice, "z", "z-alice")
        await until(lambda: counts() == (0, 0, 1, 2), "z on n1 for both", timeout=60)
        await carols.wait_for("reconnecting to the SFU")
        for started in running:
            await started.stop()
    assert "not registered here: moving the call" in pair.a.log_text()
