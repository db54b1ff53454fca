"""Calls on a lossy link: what one participant on a bad network sees, and what others see of it.

Everything is real: a ``salon serve`` (SFU in-process) and ``salon call`` processes (aiortc
peers, 320x240 test pattern + Opus tone), an SFU room of ``--people`` participants. One of
them, "Lossy", runs inside a network namespace (``tests/support/lossy_net.py``) whose link
drops a given % of UDP packets at random in each direction; the others are on the root
namespace's clean path. The server and SFU listen on the root end of the veth.

For each loss level (0/2/5/10/20 %) and each SFU mode (retransmission on, off: the SFU's
``SALON_SFU_RETRANSMIT``; two servers, measured in the same run), one call:

* ``connected``: Lossy's SFU link came up and it decoded video from everyone;
* ``down_ratio``: video frames Lossy decoded per second from each clean publisher, over what
  the clean participants decoded from that publisher (mean over publishers): 1.0 is "as
  good as a clean link";
* ``up_ratio``: what clean participants decoded per second from Lossy, over what they decoded
  from each other;
* ``down_freezes`` / ``up_freezes``: video freezes (``--stats`` ``video_freezes``: a gap over
  max(3 × mean interval, mean + 150 ms)) Lossy saw per clean publisher, and clean
  participants saw of Lossy, per minute;
* ``retransmits``: packets the SFU retransmitted during the call, and ``sfu``: its NACK
  counters (``/metrics``);
* ``connects``: with retransmission on, Lossy joins a call with Alice ``--connects`` times
  (10; a fresh process each) at 10 % loss: how many decoded her video within 40 s.
* ``blackouts``: Alice and Lossy in an SFU call and in a mesh call; Lossy's link goes dark
  (every packet dropped both ways) for 5 s (and 10 s): how long after it came back both
  decode each other again, and whether Lossy stayed in the same call (no leave, no join);
* ``cap``: a Chromium page ("Pub", fake camera, simulcast layers) publishes to two receiving
  pages (camera off): Clean on the root namespace's path and Capped, a Chromium inside the
  namespace with its downlink capped at ``--cap-kbit`` (500) kbit/s (``tc … tbf``), no loss.
  With the SFU's bandwidth adaptation on, and off (``SALON_SFU_ADAPT=0``: always the top
  layer), in the same run: each one's decoded frames per second of Pub, the height it
  decoded (the layer), the longest gap between decoded frames, Chromium's freezes per
  minute and video kbit/s (``getStats()``, sampled every 0.2 s as
  ``tests/test_web_call_bandwidth.py`` does), what Capped's link carried (kbit/s, the veth's
  byte counter) and the SFU's layer switches in the window (``/metrics``).

Rates come from the calls' status lines (every 5 s, with counts per peer) over a common window
once everyone is in and has video, so joins and leaves do not skew them. Frames decoded with a
lost reference still count as decoded (what a person sees is worse than the ratio).

Needs root, ``ip``, ``nft`` and ``tc``. ``make bench-network`` (``--quick``: 0 and 10 % only,
shorter window). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from _harness import SALON, Server, emit, percentile  # run as a script: bench/ is on sys.path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the packages (conftest imports)
from support.lossy_net import LossyNet, unavailable

PASSPHRASE = "bench"
LOSSES = (0, 2, 5, 10, 20)
WINDOW = 20.0  # seconds of status lines the rates are measured over
CONNECT_WAIT = 40.0
CLEAN = ("Alice", "Bob", "Carol", "Dave")
LOSSY = "Lossy"
STATUS = re.compile(r"^status: ")
PEER = re.compile(r"(\w+) \(([^()]*?)(\d+) video / (\d+) audio frames\)")
METRICS_TOKEN = "bench-network-reads-the-sfu-counters"


class Call:
    """One ``salon call`` process whose stdout lines are kept with their arrival time."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, stats: Path) -> None:
        self.name = name
        self.proc = proc
        self.stats = stats
        self.lines: list[tuple[float, str]] = []
        self.reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls, name: str, home: Path, room: str, stats: Path, seconds: float, *,
        space: str, ice_host: str, prefix: list[str], env_extra: dict[str, str] | None = None,
    ) -> Call:  # fmt: skip
        env = dict(os.environ)
        env.update(SALON_HOME=str(home), SALON_PASSPHRASE=PASSPHRASE, SALON_ICE_HOSTS=ice_host)
        env.update(env_extra or {})
        proc = await asyncio.create_subprocess_exec(
            *prefix, str(SALON), "call", space, room, "--duration", str(seconds),
            "--stats", str(stats),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        return cls(name, proc, stats)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append((time.monotonic(), line.decode(errors="replace").rstrip("\n")))

    def seen(self, pattern: str) -> bool:
        regex = re.compile(pattern)
        return any(regex.search(line) for _, line in self.lines)

    def counts_at(self, when: float) -> tuple[float, dict[str, int]] | None:
        """The last status line at or before ``when``: (its time, video frames per peer)."""
        found = None
        for at, line in self.lines:
            if at > when:
                break
            if STATUS.search(line):
                found = (at, {m[1]: int(m[3]) for m in PEER.finditer(line)})
        return found

    async def stop(self) -> dict[str, Any]:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self.reader
        try:
            return dict(json.loads(self.stats.read_text()))
        except (OSError, ValueError):
            return {}


def salon(home: Path, *args: str) -> str:
    env = dict(os.environ, SALON_HOME=str(home), SALON_PASSPHRASE=PASSPHRASE)
    done = subprocess.run([str(SALON), *args], env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise SystemExit(f"salon {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def rate(call: Call, peer: str, start: float, end: float) -> float | None:
    """Video frames per second ``call`` decoded from ``peer`` between two status lines."""
    first, last = call.counts_at(start), call.counts_at(end)
    if first is None or last is None or last[0] - first[0] < 1.0:
        return None
    return (last[1].get(peer, 0) - first[1].get(peer, 0)) / (last[0] - first[0])


SFU_COUNTERS = ("nacks_received", "retransmits", "nacks_upstream", "recovered")


def sfu_counters(url: str) -> dict[str, int]:
    """The SFU's retransmission counters so far (``/metrics``); {} if unreadable."""
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return {}
    found = {}
    for name in SFU_COUNTERS:
        hit = re.search(rf"^salon_sfu_{name}_total (\d+(?:\.\d+)?)", text, re.M)
        if hit:
            found[name] = int(float(hit[1]))
    return found


async def one_call(
    root: Path, net: LossyNet, server: Server, space: str, homes: dict[str, Path],
    mode: str, loss: int, people: int,
) -> dict[str, Any]:  # fmt: skip
    room = f"net-{mode}-{loss}"
    salon(homes["Alice"], "room", "create", space, room, "--kind", "conference",
          "--topology", "sfu")  # fmt: skip
    net.set_loss(loss)
    before = sfu_counters(server.url)
    clean = list(CLEAN[: people - 1])
    seconds = CONNECT_WAIT + WINDOW + 30
    calls: list[Call] = []
    began = time.monotonic()
    for name in [*clean, LOSSY]:
        lossy = name == LOSSY
        calls.append(
            await Call.start(
                name, homes[name], room, root / f"{room}-{name}.json", seconds, space=space,
                ice_host=net.ns_addr if lossy else net.host_addr,
                prefix=net.exec_prefix() if lossy else [],
            )
        )  # fmt: skip
    by_name = {c.name: c for c in calls}
    names = [c.name for c in calls]
    deadline = time.monotonic() + CONNECT_WAIT
    while time.monotonic() < deadline:
        if all(
            c.seen(f"first video from {other}") for c in calls for other in names if other != c.name
        ):
            break
        await asyncio.sleep(0.2)
    connected = all(by_name[LOSSY].seen(f"first video from {n}") for n in clean) and all(
        by_name[n].seen(f"first video from {LOSSY}") for n in clean
    )
    start = time.monotonic() + 1.0
    await asyncio.sleep(1.0 + WINDOW)
    end = time.monotonic()
    stats = {c.name: await c.stop() for c in calls}
    after = sfu_counters(server.url)

    def decoded(viewer: str, publisher: str) -> float | None:
        return rate(by_name[viewer], publisher, start, end)

    down, up = [], []
    for pub in clean:
        theirs = [decoded(v, pub) for v in clean if v != pub]
        clean_rate = statistics.mean([r for r in theirs if r is not None] or [0.0])
        mine = decoded(LOSSY, pub) or 0.0
        if clean_rate:
            down.append(mine / clean_rate)
    for viewer in clean:
        others = [decoded(viewer, p) for p in clean if p != viewer]
        clean_rate = statistics.mean([r for r in others if r is not None] or [0.0])
        of_lossy = decoded(viewer, LOSSY) or 0.0
        if clean_rate:
            up.append(of_lossy / clean_rate)

    def freezes(viewer: str, publisher: str) -> int:
        found = [p for p in stats[viewer].get("participants", []) if p["display_name"] == publisher]
        return int(found[0].get("video_freezes", 0)) if found else 0

    minutes = (end - began) / 60
    result = {
        "mode": mode,
        "loss_pct": loss,
        "connected": connected,
        "down_ratio": round(statistics.mean(down), 3) if down else 0.0,
        "up_ratio": round(statistics.mean(up), 3) if up else 0.0,
        "down_freezes_per_min": round(
            statistics.mean(freezes(LOSSY, p) for p in clean) / minutes, 2
        ),
        "up_freezes_per_min": round(statistics.mean(freezes(v, LOSSY) for v in clean) / minutes, 2),
        "clean_freezes_per_min": round(
            statistics.mean(freezes(v, p) for v in clean for p in clean if p != v) / minutes, 2
        ),
        "retransmits": after.get("retransmits", 0) - before.get("retransmits", 0),
        "sfu": {k: after.get(k, 0) - before.get(k, 0) for k in SFU_COUNTERS},
        "dropped": net.counters(),
    }
    print(
        f"{mode:>4} {loss:3d} % loss: connected {connected!s:5}  Lossy decoded "
        f"{result['down_ratio']:.3f} of clean (freezes/min {result['down_freezes_per_min']}), "
        f"others decoded of Lossy {result['up_ratio']:.3f} "
        f"(freezes/min {result['up_freezes_per_min']}; clean pairs "
        f"{result['clean_freezes_per_min']}), SFU {result['sfu']}",
        flush=True,
    )
    return result


async def connects(
    root: Path, net: LossyNet, space: str, homes: dict[str, Path], tries: int, loss: int
) -> dict[str, Any]:
    """Lossy joins a call with Alice ``tries`` times (a fresh process each): how often it
    decodes her video within CONNECT_WAIT seconds."""
    salon(homes["Alice"], "room", "create", space, "connects", "--kind", "conference",
          "--topology", "sfu")  # fmt: skip
    net.set_loss(loss)
    host = await Call.start(
        "Alice", homes["Alice"], "connects", root / "connects-Alice.json", 3600, space=space,
        ice_host=net.host_addr, prefix=[],
    )  # fmt: skip
    ok = 0
    took: list[float] = []
    try:
        for i in range(tries):
            began = time.monotonic()
            joiner = await Call.start(
                LOSSY, homes[LOSSY], "connects", root / f"connects-{i}.json", CONNECT_WAIT + 10,
                space=space, ice_host=net.ns_addr, prefix=net.exec_prefix(),
            )  # fmt: skip
            while time.monotonic() - began < CONNECT_WAIT and not joiner.seen(
                "first video from Alice"
            ):
                await asyncio.sleep(0.1)
            if joiner.seen("first video from Alice"):
                ok += 1
                took.append(time.monotonic() - began)
            await joiner.stop()
    finally:
        await host.stop()
    print(
        f"connects at {loss} % loss: {ok} of {tries} decoded Alice's video within "
        f"{CONNECT_WAIT:.0f} s (median {percentile(took, 0.5) if took else 0:.1f} s from "
        "process start)",
        flush=True,
    )
    return {"loss_pct": loss, "tries": tries, "connected": ok,
            "median_s": round(percentile(took, 0.5), 2) if took else None}  # fmt: skip


async def blackout(
    root: Path, net: LossyNet, space: str, homes: dict[str, Path], topology: str, seconds: int
) -> dict[str, Any]:
    """Alice and Lossy in a call; Lossy's link goes dark for ``seconds``: how long after the
    link came back each decodes the other again (status lines every 0.5 s), and whether
    Lossy stayed in the call (no leave, no join) or had to make its media link again."""
    room = f"blackout-{topology}-{seconds}"
    salon(homes["Alice"], "room", "create", space, room, "--kind", "conference",
          "--topology", topology)  # fmt: skip
    net.set_loss(0)
    fast = {"SALON_STATUS_SECONDS": "0.5"}
    calls = []
    for name in ("Alice", LOSSY):
        inside = name == LOSSY
        calls.append(
            await Call.start(
                name, homes[name], room, root / f"{room}-{name}.json", CONNECT_WAIT + seconds + 90,
                space=space, ice_host=net.ns_addr if inside else net.host_addr,
                prefix=net.exec_prefix() if inside else [], env_extra=fast,
            )
        )  # fmt: skip
    alice, lossy = calls
    pairs = ((alice, LOSSY), (lossy, "Alice"))
    back: dict[str, float | None] = {}
    try:
        deadline = time.monotonic() + CONNECT_WAIT
        while time.monotonic() < deadline and not all(
            c.seen(f"first video from {other}") for c, other in pairs
        ):
            await asyncio.sleep(0.2)
        await asyncio.sleep(3.0)
        net.blackout(True)
        began, began_unix = time.monotonic(), time.time()
        await asyncio.sleep(seconds)
        net.blackout(False)
        ended = time.monotonic()
        frozen = {c.name: (c.counts_at(ended) or (0.0, {}))[1].get(other, 0) for c, other in pairs}
        limit = ended + 60
        while time.monotonic() < limit and len(back) < 2:
            for c, other in pairs:
                if c.name in back:
                    continue
                for at, line in c.lines:
                    if at > ended and STATUS.search(line):
                        counts = {m[1]: int(m[3]) for m in PEER.finditer(line)}
                        if counts.get(other, 0) > frozen[c.name] + 5:
                            back[c.name] = at - ended
                            break
            await asyncio.sleep(0.2)
    finally:
        stats = {c.name: await c.stop() for c in calls}
    # A rejoin is a leave and a join, and moves every media key on: none may follow the dark.
    rejoined = any(
        change.get("seen_at", 0) >= began_unix
        for change in stats.get("Alice", {}).get("key_changes", [])
    )
    mine = stats.get(LOSSY, {})
    remade = (mine.get("sfu") or {}).get("reconnected", 0) + sum(
        p.get("reconnects", 0) for p in mine.get("participants", [])
    )
    waits = [back.get(c.name) for c, _ in pairs]
    recovered = max(w for w in waits if w is not None) if None not in waits else None
    result = {
        "topology": topology,
        "blackout_s": seconds,
        "back_after_s": round(recovered, 2) if recovered is not None else None,
        "from_start_s": round(recovered + (ended - began), 2) if recovered is not None else None,
        "stayed_in_call": not rejoined,
        "links_made_again": remade,
    }
    print(
        f"blackout {seconds} s ({topology}): both decode each other again "
        f"{result['back_after_s']} s after the link came back "
        f"({result['from_start_s']} s after it went dark), stayed in the call: "
        f"{result['stayed_in_call']}, media links made again {result['links_made_again']}",
        flush=True,
    )
    return result


CAP_SETTLE = 10.0  # seconds after both receivers decode Pub before the window starts


def metric(url: str, name: str) -> float | None:
    request = urllib.request.Request(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return None
    hit = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(hit[1]) if hit else None


def cap_run(root: Path, net: LossyNet, dist: Path, adapt: bool, kbit: int) -> dict[str, Any]:
    """One call under the cap (see the module doc): Pub's page publishing, Clean's and
    Capped's pages receiving (camera off), Capped's inside the namespace."""
    from types import SimpleNamespace

    from browser_support import WebPage
    from conftest import TEST_LIMITS, user_factory
    from playwright.sync_api import sync_playwright
    from test_web_call_bandwidth import TOP_LAYER, inbound, sample, summary
    from test_web_call_lossy import KEEP_PCS, launch
    from test_web_call_ui import CALL_VIEW, JOIN_CALL, open_room

    mode = "on" if adapt else "off"
    home = root / f"cap-{mode}"
    config = {
        "server": {"host": net.host_addr, "web_dir": str(dist)},
        "metrics": {"enabled": True, "token": METRICS_TOKEN},
        "limits": TEST_LIMITS,
    }
    env = {"SALON_ICE_HOSTS": net.host_addr, "SALON_SFU_ADAPT": "1" if adapt else "0"}
    net.set_loss(0)
    net.set_rate(down_kbit=kbit)
    browsers: list[Any] = []
    result: dict[str, Any] = {"adapt": mode, "cap_kbit": kbit}
    with Server(home / "server", config, env=env) as server, sync_playwright() as pw:
        people = user_factory(home / "people")
        alice = people("alice")
        made = alice.json("space", "create", "Cap", "--server", server.url, "--as", "Alice")
        alice.run(
            "room", "create", made["space_id"], "cap", "--kind", "conference", "--topology", "sfu"
        )
        chromium = SimpleNamespace(browser_type=pw.chromium)
        pages: dict[str, WebPage] = {}
        try:
            for name, where in (("Pub", None), ("Clean", None), ("Capped", net)):
                browser = launch(chromium, where, server.url, home, name)
                browsers.append(browser)
                context = browser.new_context(
                    viewport={"width": 1280, "height": 800}, device_scale_factor=2
                )
                # Tiles ~300 CSS px high at 2 device px each: a view the top layer (720p) fits,
                # so only the bandwidth holds a subscriber below it.
                context.add_init_script(KEEP_PCS)
                pages[name] = WebPage(context.new_page(), name)
                open_room(pages[name], made["link"], name, "cap")
            for name, web in pages.items():
                if name != "Pub":
                    web.page.check("[data-testid=join-camera-off]")
                web.page.click(JOIN_CALL)
                web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=60_000)
            receivers = {n: pages[n] for n in ("Clean", "Capped")}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not all(
                inbound(w)["framesDecoded"] > 0 for w in receivers.values()
            ):
                time.sleep(0.5)
            result["connected"] = all(inbound(w)["framesDecoded"] > 0 for w in receivers.values())
            time.sleep(CAP_SETTLE)  # the layers settle (Chromium ramps up, the SFU adapts)
            switches = metric(server.url, "salon_sfu_layer_switches_total")
            moved = net.bytes_moved()["down"]
            start = time.monotonic()
            samples = sample(receivers, WINDOW)
            link_kbit = (net.bytes_moved()["down"] - moved) * 8 / 1000 / (time.monotonic() - start)
            switches_after = metric(server.url, "salon_sfu_layer_switches_total")
            result["pub_top_height"] = pages["Pub"].page.evaluate(TOP_LAYER)
            for web in pages.values():
                web.screenshot(f"bench-network-cap-{mode}")
            problems = {n: w.problems() for n, w in pages.items() if w.problems()}
            if problems:
                print(f"page problems: {problems}", flush=True)
        finally:
            for browser in browsers:
                browser.close()
    net.set_rate(None)
    for name, got in samples.items():
        got_summary = summary(got)
        minutes = (got[-1][0] - got[0][0]) / 60
        result[name.lower()] = {
            "fps": round(got_summary["fps"], 2),
            "height": got_summary["height"],
            "max_gap_s": got_summary["max_gap_s"],
            "freezes_per_min": round(got_summary["freezes"] / minutes, 2),
            "video_kbit_s": round(got_summary["kbit_s"]),
        }
    result["capped_link_kbit_s"] = round(link_kbit)
    result["layer_switches"] = (
        None if switches is None or switches_after is None else int(switches_after - switches)
    )
    print(
        f"cap {kbit} kbit/s, adaptation {mode}: Capped {result['capped']}, Clean "
        f"{result['clean']}, Capped's link {result['capped_link_kbit_s']} kbit/s, layer "
        f"switches {result['layer_switches']}",
        flush=True,
    )
    return result


async def main() -> None:
    global WINDOW
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="0 and 10 %% only, 10 s windows")
    parser.add_argument("--losses", help="comma-separated loss percentages (default 0,2,5,10,20)")
    parser.add_argument("--people", type=int, default=4, help="participants, 3-5 (default 4)")
    parser.add_argument("--modes", default="on,off", help="SFU retransmission modes: on,off")
    parser.add_argument("--keep", action="store_true", help="keep the calls' --stats files")
    parser.add_argument("--connects", type=int, help="join tries at 10 %% loss (default 10)")
    parser.add_argument(
        "--cap-kbit", type=int, default=500, help="the capped downlink, kbit/s (0: no cap run)"
    )
    parser.add_argument(
        "--no-blackouts", dest="blackouts", action="store_false", help="skip the blackouts"
    )
    args = parser.parse_args()
    reason = unavailable()
    if reason:
        raise SystemExit(f"bench-network needs a network namespace: {reason}")
    losses = [0, 10] if args.quick else list(LOSSES)
    if args.losses:
        losses = [int(x) for x in args.losses.split(",")]
    if args.quick:
        WINDOW = 10.0
    people = max(3, min(5, args.people))
    modes = [m for m in args.modes.split(",") if m in ("on", "off")]
    root = Path(tempfile.mkdtemp(prefix="bench-network-"))
    results: list[dict[str, Any]] = []
    joins: dict[str, Any] = {}
    caps: list[dict[str, Any]] = []
    blackouts: list[dict[str, Any]] = []
    tries = args.connects if args.connects is not None else (3 if args.quick else 10)
    with LossyNet() as net:
        try:
            for mode in modes:
                home = root / mode
                config: dict[str, dict[str, Any]] = {
                    "server": {"host": net.host_addr},
                    "metrics": {"enabled": True, "token": METRICS_TOKEN},
                }
                env = {"SALON_ICE_HOSTS": net.host_addr,
                       "SALON_SFU_RETRANSMIT": "1" if mode == "on" else "0"}  # fmt: skip
                with Server(home / "server", config, env=env) as server:
                    homes = {n: home / n.lower() for n in (*CLEAN, LOSSY)}
                    created = json.loads(
                        salon(homes["Alice"], "space", "create", "Bench", "--server", server.url,
                              "--as", "Alice", "--json")
                    )  # fmt: skip
                    for name in (*CLEAN[1:], LOSSY):
                        salon(homes[name], "join", created["link"], "--as", name)
                    for loss in losses:
                        results.append(
                            await one_call(
                                root, net, server, created["space_id"], homes, mode, loss, people
                            )
                        )
                    if mode == "on" and tries:
                        joins = await connects(home, net, created["space_id"], homes, tries, 10)
                    if mode == "on" and args.blackouts:
                        for topology in ("sfu", "mesh"):
                            for seconds in (5,) if args.quick else (5, 10):
                                blackouts.append(
                                    await blackout(
                                        home, net, created["space_id"], homes, topology, seconds
                                    )
                                )
            if args.cap_kbit:
                from browser_support import build_web

                dist = build_web(root / "web-dist")
                for adapt in (True, False):
                    caps.append(
                        await asyncio.to_thread(cap_run, root, net, dist, adapt, args.cap_kbit)
                    )
        finally:
            if args.keep:
                print(f"kept {root}", flush=True)
            else:
                shutil.rmtree(root, ignore_errors=True)
    emit(
        {
            "people": people,
            "window_s": WINDOW,
            "cores": os.cpu_count(),
            "calls": results,
            "connects": joins,
            "cap": caps,
            "blackouts": blackouts,
        }
    )


if __name__ == "__main__":
    asyncio.run(main())
