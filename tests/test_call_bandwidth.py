"""Bandwidth adaptation of a CLI publisher (issue 13), everything real: ``salon serve`` with
its SFU on the root end of a veth pair, ``salon call`` processes, one of them ("Capped")
inside a network namespace whose uplink is capped (tests/support/lossy_net.py: ``tc tbf``).

Capped's test pattern plus its audio need about 200 kbit/s; its uplink carries 150. The SFU
sees the loss on what Capped publishes, reports it (RTCP RR) and announces a lower estimate
(REMB) once a second; Capped's encoder follows the REMB down, below the cap, while the clean
publishers' encoders stay higher, and everyone keeps seeing Capped's video.

Needs root, ``ip``, ``nft`` and ``tc``: skipped with the reason otherwise (failed under
``CI=true``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from call_helpers import CallProcess, calls, make_town
from support import until
from support.lossy_net import LossyNet

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

CLEAN = ("Alice", "Bob")
CAPPED = "Capped"
UPLINK_KBIT = 150
PEER = re.compile(r"(\w+) \(([^()]*?)(\d+) video / (\d+) audio frames\)")


def video_from(call: CallProcess, peer: str) -> int:
    """Video frames ``call`` decoded of ``peer``, per its last status line."""
    for line in reversed(call.lines):
        if line.startswith("status: "):
            found = {m[1]: int(m[3]) for m in PEER.finditer(line)}
            return found.get(peer, 0)
    return 0


async def test_a_publisher_on_a_capped_uplink_lowers_its_encoder_below_the_cap(
    net: LossyNet, make_server: Callable[..., Any], user: Callable[..., Any], tmp_path: Path
) -> None:
    srv = make_server({"server": {"host": net.host_addr}}, start=False)
    srv.ice_hosts = net.host_addr
    srv.start()
    town = make_town(srv.url, user, ("Bob", CAPPED))
    town["Alice"].run("room", "create", town.space, "hall", "--kind", "conference",
                      "--topology", "sfu")  # fmt: skip
    net.set_rate(up_kbit=UPLINK_KBIT)
    async with calls() as running:
        by_name: dict[str, CallProcess] = {}
        for name in (*CLEAN, CAPPED):
            capped = name == CAPPED
            call = await CallProcess.start(
                town[name], town.space, "hall", tmp_path / f"{name}.json", 120,
                env={"SALON_ICE_HOSTS": net.ns_addr if capped else net.host_addr},
                prefix=net.exec_prefix() if capped else (),
            )  # fmt: skip
            running.append(call)
            by_name[name] = call
        for name, call in by_name.items():
            for other in by_name:
                if other != name:
                    await call.wait_for(f"first video from {other}", 60)
        flowing = time.monotonic()
        seen = {name: video_from(by_name[name], CAPPED) for name in CLEAN}
        # Video from Capped keeps coming to the others while its encoder adapts.
        await until(
            lambda: all(video_from(by_name[n], CAPPED) >= seen[n] + 60 for n in CLEAN),
            "60 more frames of Capped's video at both clean participants",
            timeout=60,
        )
        await until(lambda: time.monotonic() - flowing > 15, "15 s of video", timeout=30)
        results = {name: await call.stop(60) for name, call in by_name.items()}
    bitrate = {name: r.stats["sfu"]["video_bitrate"] for name, r in results.items()}
    print("video bitrate:", bitrate)
    capped = bitrate[CAPPED]
    assert capped["estimate_kbps"] is not None and capped["retargets"] >= 1, bitrate
    # Down from its 300 kbit/s ceiling to within the cap (the REMB less audio once the
    # encoder's once-a-second, >15 % re-target catches up with the last REMB).
    assert capped["estimate_kbps"] <= UPLINK_KBIT * 1.1, bitrate
    assert capped["target_kbps"] <= UPLINK_KBIT, bitrate
    for name in CLEAN:
        assert bitrate[name]["target_kbps"] > capped["target_kbps"] * 1.5, bitrate
        assert bitrate[name]["estimate_kbps"] > capped["estimate_kbps"], bitrate
        assert results[name].peer(CAPPED)["video_frames_decoded"] > 0
