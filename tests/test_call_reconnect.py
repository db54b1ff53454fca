"""A participant whose network drops comes back into the same call (issue 13, reconnection).

Real components: a ``salon serve`` (SFU in-process) listening on the root end of a veth pair,
two clean ``salon call`` processes, and Carol's ``salon call`` inside a network namespace
(``tests/support/lossy_net.py``) whose link is blacked out — every packet dropped both ways,
TCP too — for 5 s, and once for 10 s. Afterwards, without any rejoin:

- everyone decodes everyone's video again (the frame counts in the status lines rise);
- the call's verification code never changed and no key change happened after the
  blackout (a rejoin is a leave and a join: both would show);
- the server still has Carol's one join (her seat's nonce is the same).

A 10 s blackout outlasts the silence a link may heal from by itself, so there the link is
made again (``reconnected to …`` note, ``reconnects`` in ``--stats``). The recovery time
is printed (``-s``) for the report.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CALL_ENV, CallProcess, Town, calls, code_for, make_town
from conftest import SALON, SalonServer, SalonUser
from support.lossy_net import LossyNet, unavailable
from support.poll import until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

PEER = re.compile(r"(\w+) \(([^()]*?)(\d+) video / (\d+) audio frames\)")
STATUS = re.compile(r"^status: ")
CLEAN = ("Alice", "Bob")
LOSSY = "Carol"


@pytest.fixture(scope="module")
def net() -> Iterator[LossyNet]:
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    with LossyNet() as made:
        yield made


@pytest.fixture(scope="module")
def lan_server(net: LossyNet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SalonServer]:
    """The server (and its SFU) on the veth's root end: reached from inside the namespace."""
    config = {"server": {"host": net.host_addr}}
    srv = SalonServer(tmp_path_factory.mktemp("server"), config)
    srv.ice_hosts = net.host_addr
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def town(lan_server: SalonServer, module_user: Any) -> Town:
    return make_town(lan_server.url, module_user, (*CLEAN[1:], LOSSY))


async def start_call(
    user: SalonUser, town: Town, room: str, stats: Path, ice_host: str, prefix: list[str]
) -> CallProcess:
    args = [str(SALON), "call", town.space, room, "--duration", "120", "--stats", str(stats)]
    proc = await asyncio.create_subprocess_exec(
        *prefix,
        *args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=user.env({**CALL_ENV, "SALON_ICE_HOSTS": ice_host}),
    )
    return CallProcess(user, proc, stats)


def frames(call: CallProcess, since: int = 0) -> dict[str, int]:
    """Video frames per peer in ``call``'s last status line (from line ``since`` on)."""
    for line in reversed(call.lines[since:]):
        if STATUS.search(line):
            return {m[1]: int(m[3]) for m in PEER.finditer(line)}
    return {}


def rising(running: dict[str, CallProcess], before: dict[str, dict[str, int]], since: int) -> bool:
    """Has everyone decoded at least 10 more frames of everyone since the blackout?"""
    for name, call in running.items():
        now = frames(call, since)
        for other in running:
            if other != name and now.get(other, 0) < before[name].get(other, 0) + 10:
                return False
    return True


async def blackout_call(
    town: Town, net: LossyNet, tmp_path: Path, topology: str, seconds: float
) -> dict[str, Any]:
    room = f"{topology}-{int(seconds)}"
    town["Alice"].run("room", "create", town.space, room, "--kind", "conference",
                      "--topology", topology)  # fmt: skip
    async with calls() as started:
        running: dict[str, CallProcess] = {}
        for name in (*CLEAN, LOSSY):
            lossy = name == LOSSY
            call = await start_call(
                town[name], town, room, tmp_path / f"{name}.json",
                net.ns_addr if lossy else net.host_addr, net.exec_prefix() if lossy else [],
            )  # fmt: skip
            started.append(call)
            running[name] = call
        for call in running.values():
            await call.wait_for(r"verification code .* \(3 in the call", 60)
        # Everyone decodes everyone before the lights go out.
        await until(lambda: rising(running, {n: {} for n in running}, 0), "media", 60, 0.2)
        marks = {name: len(call.lines) for name, call in running.items()}
        dark = time.time()
        net.blackout(True)
        await asyncio.sleep(seconds)  # the outage itself (its length is what is tested)
        net.blackout(False)
        back = time.monotonic()
        since = max(marks.values())
        before = {name: frames(call) for name, call in running.items()}
        await until(lambda: rising(running, before, since), "media after the blackout", 60, 0.2)
        recovered = time.monotonic() - back  # at most one status interval (5 s) late
        ends = {name: len(call.lines) for name, call in running.items()}
        window = (dark, time.time())
        results = {name: await call.stop(60) for name, call in running.items()}
    return {
        "results": results,
        "recovered": recovered,
        "marks": marks,
        "ends": ends,
        "window": window,
    }


def check_same_call(outcome: dict[str, Any], topology: str) -> None:
    results = outcome["results"]
    for name, result in results.items():
        stats = result.stats
        assert stats["topology"] == topology, (name, stats["topology"])
        assert stats["rejected_actions"] == 0 and stats["rejected_signals"] == 0
        # No key change from the blackout to the recovery (a rejoin moves every key on).
        start, end = outcome["window"]
        moved = [c for c in stats["key_changes"] if start <= c["seen_at"] <= end]
        assert not moved, (name, moved)
        # Nobody left or joined after it: a rejoin would show a new verification code.
        changes_after = [
            line
            for line in result.stdout[outcome["marks"][name] : outcome["ends"][name]]
            if re.search(r"verification code|joined|left|rejoin", line)
        ]
        assert not changes_after, (name, changes_after)
        for peer in stats["participants"]:
            assert peer["decrypt_failures"] == 0, (name, peer)
    codes = {code_for(r, 3) for r in results.values()}
    assert len(codes) == 1, codes


@pytest.mark.parametrize("topology", ["mesh", "sfu"])
@pytest.mark.parametrize("seconds", [5, 10])
async def test_a_blackout_ends_with_the_participant_back_in_the_same_call(
    town: Town, net: LossyNet, tmp_path: Path, topology: str, seconds: int
) -> None:
    outcome = await blackout_call(town, net, tmp_path, topology, seconds)
    carol = outcome["results"][LOSSY]
    notes = [line for line in carol.stdout if "reconnected to" in line]
    if topology == "mesh":
        reconnects = sum(p["reconnects"] for p in carol.stats["participants"])
    else:
        reconnects = carol.stats["sfu"]["reconnected"]
    for name, result in outcome["results"].items():
        lines = result.stdout[outcome["marks"][name] : outcome["ends"][name]]
        print(f"--- {name}", *lines, sep="\n")
    print(
        f"\n{topology} blackout {seconds} s: media back within {outcome['recovered']:.1f} s "
        f"of the link's return; Carol's reconnects {reconnects}; notes {notes}"
    )
    check_same_call(outcome, topology)
    if seconds >= 10:  # long enough that the link is made again, not just resumed
        assert reconnects >= 1 and notes, carol.stdout
