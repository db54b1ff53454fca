"""A call with one participant on a lossy link (issue 13), everything real: ``salon
serve`` with its SFU on the root end of a veth pair, ``salon call`` processes, one of them
("Lossy") inside a network namespace whose link drops 10 % of UDP packets at random each way
(tests/support/lossy_net.py: nftables).

- it connects, and the video it decodes from each clean publisher, per second over a common
  window, is at least 95 % of what the clean participants decode from that publisher — and
  what they decode of Lossy at least 95 % of what they decode of each other: the SFU answers
  NACKs from its packet history and asks the publisher for what it never got, the receivers
  wait for retransmissions before giving a frame up. The link's drop counters show it
  really lost packets (``make bench-network`` has the same measure with retransmission off).
- in a mesh (3 CLIs, one lossy) the pairs retransmit end to end: Lossy NACKed packets of
  each clean peer and each resent packets to it (``--stats`` ``packets_nacked`` /
  ``packets_resent``), and the decoded-frame ratios hold :data:`MESH_FLOOR` both ways.
- it connects in 10 of 10 tries: ten fresh receiving-only processes join one after another
  from the lossy namespace, and each decodes Alice's video.

Needs root, ``ip`` and ``nft``: skipped with the reason otherwise (failed under ``CI=true``).
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, CallResult, calls, make_town
from support.lossy_net import LossyNet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

TOKEN = "metrics-token-for-the-lossy-test-0123"
WINDOW = 20.0  # seconds the decoded-frame rates are measured over
CLEAN = ("Alice", "Bob")
LOSSY = "Lossy"
PEER = re.compile(r"(\w+) \(([^()]*?)(\d+) video / (\d+) audio frames\)")


def status_counts(call: CallProcess) -> list[tuple[float, dict[str, int]]]:
    """Each status line (every 5 s): when it came, video frames decoded per peer so far."""
    return [
        (at, {m[1]: int(m[3]) for m in PEER.finditer(line)})
        for at, line in zip(call.times, call.lines, strict=False)
        if line.startswith("status: ")
    ]


def rate(call: CallProcess, peer: str, start: float, end: float) -> float:
    """Video frames per second ``call`` decoded from ``peer`` between its first status line
    at or after ``start`` and its last at or before ``end``: only the steady window, once
    everyone decoded everyone (a line from before that would count the join's silence)."""
    inside = [s for s in status_counts(call) if start <= s[0] <= end]
    assert len(inside) >= 2 and inside[-1][0] - inside[0][0] > WINDOW / 2, call.lines
    (t0, first), (t1, last) = inside[0], inside[-1]
    return (last.get(peer, 0) - first.get(peer, 0)) / (t1 - t0)


def sfu_counter(url: str, name: str) -> float:
    """One of the SFU's retransmission counters, from the server's /metrics."""
    request = urllib.request.Request(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith(f"salon_sfu_{name}_total "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no salon_sfu_{name}_total in /metrics")


@dataclass
class Outcome:
    down: float  # what Lossy decoded per second of each clean publisher, vs clean viewers
    up: float  # what clean viewers decoded per second of Lossy, vs of each other
    results: dict[str, CallResult]
    sfu: dict[str, float]  # the SFU's retransmission counters (SFU calls)


async def lossy_call(
    net: LossyNet,
    make_server: Callable[..., Any],
    user: Callable[..., Any],
    tmp_path: Path,
    topology: str = "sfu",
) -> Outcome:
    srv = make_server(
        {"server": {"host": net.host_addr}, "metrics": {"enabled": True, "token": TOKEN}},
        start=False,
    )
    srv.ice_hosts = net.host_addr  # the SFU's media address: reachable from the namespace
    srv.start()
    town = make_town(srv.url, user, ("Bob", LOSSY))
    town["Alice"].run("room", "create", town.space, "hall", "--kind", "conference",
                      "--topology", topology)  # fmt: skip
    net.set_loss(10)
    async with calls() as running:
        by_name: dict[str, CallProcess] = {}
        for name in (*CLEAN, LOSSY):
            lossy = name == LOSSY
            call = await CallProcess.start(
                town[name], town.space, "hall", tmp_path / f"{name}.json", 120,
                env={"SALON_ICE_HOSTS": net.ns_addr if lossy else net.host_addr},
                prefix=net.exec_prefix() if lossy else (),
            )  # fmt: skip
            running.append(call)
            by_name[name] = call
        names = list(by_name)
        for name, call in by_name.items():
            for other in names:
                if other != name:
                    await call.wait_for(f"first video from {other}", 60)
        start = time.monotonic()
        # Holds for the measuring window: the rates are over WINDOW seconds of the call.
        await asyncio.sleep(WINDOW)
        end = time.monotonic()
        results = {name: await call.stop(60) for name, call in by_name.items()}
    assert net.counters()["down"] > 50 and net.counters()["up"] > 20, net.counters()
    lossy_call_ = by_name[LOSSY]
    down = statistics.mean(
        rate(lossy_call_, pub, start, end) / rate(by_name[other], pub, start, end)
        for pub in CLEAN
        for other in CLEAN
        if other != pub
    )
    up = statistics.mean(
        rate(by_name[viewer], LOSSY, start, end) / rate(by_name[viewer], other, start, end)
        for viewer in CLEAN
        for other in CLEAN
        if other != viewer
    )
    counters = (
        {n: sfu_counter(srv.url, n) for n in ("retransmits", "recovered")}
        if topology == "sfu"
        else {}
    )
    return Outcome(down, up, results, counters)


# The bar: ≥ 0.95 both ways. Measured over the steady window only (status lines once
# everyone decodes everyone), runs read 0.99-1.03 both ways under a load average of 9-19 on
# this 2-core machine; an earlier measure that began with the status line *before* that
# moment counted the join's silence and read 0.85-0.93 under load.
async def test_a_participant_on_a_10_percent_lossy_link_sees_and_is_seen_as_well_as_others(
    net: LossyNet, make_server: Callable[..., Any], user: Callable[..., Any], tmp_path: Path
) -> None:
    got = await lossy_call(net, make_server, user, tmp_path)
    down, up, counters = got.down, got.up, got.sfu
    print(f"SFU, 10 % loss: down {down:.3f}, up {up:.3f}, SFU {counters}")
    assert any("first video from Alice" in line for line in got.results[LOSSY].stdout)
    assert counters["retransmits"] > 0 and counters["recovered"] > 0, counters
    assert down >= 0.95, (down, up)
    assert up >= 0.95, (down, up)


# In a mesh every CLI encodes and decodes one VP8 stream per pair in Python: under the load of
# a shared 2-core machine (load average 11-20) runs read 0.80-0.86 both ways with retransmission
# (against 0.70 / 0.77 with aiortc's own jitter buffer, which holds every frame behind a lost
# packet until it comes: 30-70 freezes a minute instead of 11-16); the SFU's CLIs, which do not
# decode, read 0.99-1.0 under the same load.
MESH_FLOOR = 0.75


async def test_in_a_mesh_a_participant_on_a_10_percent_lossy_link_is_retransmitted_to(
    net: LossyNet, make_server: Callable[..., Any], user: Callable[..., Any], tmp_path: Path
) -> None:
    """Mesh: each pair retransmits end to end (aiortc's NACK and RTX, counted in --stats)."""
    got = await lossy_call(net, make_server, user, tmp_path, "mesh")
    lossy = got.results[LOSSY]
    nacked = {p: lossy.peer(p)["packets_nacked"] for p in CLEAN}
    resent = {p: got.results[p].peer(LOSSY)["packets_resent"] for p in CLEAN}
    freezes = {
        f"{viewer}<-{pub}": got.results[viewer].peer(pub)["video_freezes"]
        for viewer in got.results
        for pub in got.results
        if pub != viewer
    }
    print(f"mesh, 10 % loss: down {got.down:.3f}, up {got.up:.3f}, Lossy NACKed {nacked}, "
          f"resent to Lossy {resent}, freezes {freezes}")  # fmt: skip
    assert all(n > 0 for n in nacked.values()), nacked
    assert all(n > 0 for n in resent.values()), resent
    assert got.down >= MESH_FLOOR, (got.down, got.up)
    assert got.up >= MESH_FLOOR, (got.down, got.up)


TRIES = 10
TRY_WAIT = 60.0  # seconds one try may take to decode Alice's video (28 s seen at load 22)


async def test_a_participant_on_a_10_percent_lossy_link_connects_in_10_of_10_tries(
    net: LossyNet, make_server: Callable[..., Any], user: Callable[..., Any], tmp_path: Path
) -> None:
    """Ten fresh ``salon call`` processes, one after another, join from the lossy namespace
    (receiving only: the join, ICE, DTLS and the first keyframe all cross the lossy link) and
    each decodes Alice's video."""
    srv = make_server({"server": {"host": net.host_addr}}, start=False)
    srv.ice_hosts = net.host_addr
    srv.start()
    town = make_town(srv.url, user, (LOSSY,))
    town["Alice"].run("room", "create", town.space, "hall", "--kind", "conference",
                      "--topology", "sfu")  # fmt: skip
    net.set_loss(10)
    took: list[float] = []
    async with calls() as running:
        alice = await CallProcess.start(
            town["Alice"], town.space, "hall", tmp_path / "Alice.json", 600,
            env={"SALON_ICE_HOSTS": net.host_addr},
        )  # fmt: skip
        running.append(alice)
        await alice.wait_for(r"^status: in the call", 60)
        for i in range(TRIES):
            began = time.monotonic()
            joiner = await CallProcess.start(
                town[LOSSY], town.space, "hall", tmp_path / f"try{i}.json", 120,
                "--video", "none", "--audio", "none",
                env={"SALON_ICE_HOSTS": net.ns_addr}, prefix=net.exec_prefix(),
            )  # fmt: skip
            running.append(joiner)
            await joiner.wait_for("first video from Alice", TRY_WAIT)
            took.append(time.monotonic() - began)
            result = await joiner.stop(60)
            assert result.peer("Alice")["video_frames_decoded"] > 0, result.stats
        await alice.stop(60)
    dropped = net.counters()
    print(
        f"10 % loss: {len(took)} of {TRIES} joins decoded video, seconds from process start "
        f"{[round(t, 1) for t in took]}; dropped {dropped}"
    )
    assert len(took) == TRIES
    assert dropped["down"] > 10 and dropped["up"] > 0, dropped  # receiving only: little goes up
