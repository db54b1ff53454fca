"""Calls in the browser, measured (issue 10's figures): `make bench-web-call`. Last line: JSON.

Usage: python bench/web_call.py [--joins 5] [--window 15]

Real components: ``salon serve`` (its SFU node) serving the built web app, Debian's Chromium
through Playwright (one browser process per page, each with a fake camera of its own colour,
160x120), ``salon call`` CLIs. Every call is routed to the SFU (SFrame in the pages' worker).

- ``join``: Alice's CLI is in the call; Bob's page presses Join (the click's time, taken in the
  page) → the first remote video frame decoded in the page (a tile's <video> has a picture,
  polled every 5 ms in the page). ``--joins`` times, leaving in between. Target p50 ≤ 1 s.
  Beside it, the CLI's join request → first decoded frame (``first_video_frame_ms`` of its
  ``--stats``) for Dave joining the 4-way call below, per remote participant.
- ``cpu``: a 4-way call (3 pages + Alice's CLI), everyone sending camera and microphone; over
  ``--window`` seconds, the CPU time (/proc, user + system) of each page's whole Chromium
  process tree (browser, GPU, network, audio, renderer) and of its renderer processes alone,
  per page, as % of one core; the same for the CLI's process. Ratio browser / CLI.
- ``sframe``: the pages' SFrame worker time per frame (its ``cryptoMs`` / frames counters,
  over the whole 4-way call), sending and receiving, video and audio; decrypt failures (0).

The CLI sends a 320x240 test pattern, the pages a 160x120 camera: the CPU ratio is a rough one.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from _harness import Server, emit, summary  # noqa: E402
from browser_support import CHROMIUM, WebPage, build_web  # noqa: E402
from conftest import TEST_LIMITS, user_factory  # noqa: E402
from media_page_support import chromium_args, write_y4m  # noqa: E402
from test_web_call_sfu6 import STATS, yuv  # noqa: E402
from test_web_call_ui import (  # noqa: E402
    CALL_VIEW,
    JOIN_CALL,
    PLAYING,
    PREJOIN,
    REMOTE_PLAYING,
    CliCall,
    cli_calls,
    open_room,
)

ROOM = "bench"
PAGES = {"Bob": (20, 200, 200), "Carol": (210, 40, 200), "Erin": (128, 128, 128)}
TICK = os.sysconf("SC_CLK_TCK")
# The click's time and the first remote picture's time, both taken in the page.
ARM = """() => {
  window.__benchJoin = { clicked: null, frame: null };
  document.querySelector("[data-testid=call-join]").addEventListener("click", () => {
    window.__benchJoin.clicked = performance.now();
    const poll = setInterval(() => {
      const videos = [...document.querySelectorAll("[data-testid=call-tile]:not([data-me]) video")];
      if (videos.some((v) => v.readyState >= 2 && v.videoWidth > 0)) {
        window.__benchJoin.frame = performance.now();
        clearInterval(poll);
      }
    }, 5);
  }, { capture: true, once: true });
}"""


def processes() -> dict[int, tuple[int, str, float]]:
    """pid → (ppid, cmdline, CPU seconds) for every process we can read."""
    out: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry)] = (int(fields[1]), cmd, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def tree_cpu(procs: dict[int, tuple[int, str, float]], marker: str) -> tuple[float, float]:
    """(whole tree, renderers only) CPU seconds of the process trees whose root has ``marker``."""
    roots = {pid for pid, (_, cmd, _) in procs.items() if marker in cmd and "--type=" not in cmd}
    total = renderers = 0.0
    for pid, (_, cmd, cpu) in procs.items():
        p, seen = pid, 0
        while p not in roots and p in procs and seen < 50:
            p, seen = procs[p][0], seen + 1
        if p in roots:
            total += cpu
            if "--type=renderer" in cmd:
                renderers += cpu
    return total, renderers


def worker_per_frame(stats: list[dict[str, Any]]) -> dict[str, Any]:
    sums: dict[str, list[float]] = {}
    failures = 0
    for s in stats:
        for t in (s["tracks"] or {}).values():
            key = f"{t['side']}_{t['kind'] or 'video'}"
            frames = t["encrypted"] if t["side"] == "send" else t["decrypted"]
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += t["cryptoMs"]
            acc[1] += frames
            failures += t["failures"]
    out: dict[str, Any] = {
        k: {"ms_per_frame": round(ms / n, 4) if n else None, "frames": int(n)}
        for k, (ms, n) in sorted(sums.items())
    }
    out["decrypt_failures"] = failures
    return out


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--joins", type=int, default=5)
    parser.add_argument("--window", type=float, default=15.0)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp_name, sync_playwright() as pw:
        tmp = Path(tmp_name)
        dist = build_web(tmp / "dist")
        server = Server(
            tmp / "server",
            {
                "server": {"web_dir": str(dist)},
                "conference": {"max_participants": 8},
                "limits": TEST_LIMITS,
            },
            env={"SALON_ICE_HOSTS": "127.0.0.1"},
            cwd=tmp / "server",
        )
        server.start()
        browsers: list[Any] = []
        try:
            people = user_factory(tmp / "people")
            alice = people("alice")
            made = alice.json("space", "create", "Bench", "--server", server.url, "--as", "Alice")
            space, link = made["space_id"], made["link"]
            alice.run("room", "create", space, ROOM, "--kind", "conference", "--topology", "sfu")
            dave = people("dave")
            dave.run("join", link, "--as", "Dave")
            pages: dict[str, WebPage] = {}
            for name, rgb in PAGES.items():
                y4m = write_y4m(tmp / f"{name}.y4m", yuv(rgb), 160, 120)
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=chromium_args(y4m)
                )
                browsers.append(browser)
                context = browser.new_context(viewport={"width": 960, "height": 720})
                pages[name] = WebPage(context.new_page(), name)
                open_room(pages[name], link, name, ROOM)

            with cli_calls() as running:
                host = CliCall(alice, space, ROOM, tmp / "alice.json", 600)
                running.append(host)
                host.wait_for(r"joined call")
                # Join click → first remote frame, Bob's page, --joins times.
                bob = pages["Bob"].page
                joins: list[float] = []
                for _ in range(args.joins):
                    bob.evaluate(ARM)
                    bob.click(JOIN_CALL)
                    bob.wait_for_function("() => window.__benchJoin.frame !== null", timeout=60_000)
                    t = bob.evaluate("window.__benchJoin")
                    joins.append(t["frame"] - t["clicked"])
                    bob.click("[data-testid=call-leave]")
                    bob.wait_for_selector(PREJOIN, timeout=30_000)
                    bob.wait_for_function(PLAYING, timeout=15_000)
                print(f"join click → first remote frame (page): {[round(j) for j in joins]} ms")

                # The 4-way call: three pages and Alice's CLI.
                for web in pages.values():
                    web.page.click(JOIN_CALL)
                for web in pages.values():
                    web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=60_000)
                    web.page.wait_for_function(REMOTE_PLAYING, arg=3, timeout=60_000)
                time.sleep(3)  # past the joins' bursts (keyframes, key exchange)
                before = processes()
                t0 = time.monotonic()
                time.sleep(args.window)
                after = processes()
                elapsed = time.monotonic() - t0
                end_stats = [w.page.evaluate(STATS) for w in pages.values()]
                page_cpu = []
                for name in PAGES:
                    marker = str(tmp / f"{name}.y4m")
                    a, b = tree_cpu(after, marker), tree_cpu(before, marker)
                    page_cpu.append(((a[0] - b[0]) / elapsed, (a[1] - b[1]) / elapsed))
                cli_pid = host.proc.pid
                cli_cpu = (after[cli_pid][2] - before[cli_pid][2]) / elapsed

                # Dave (CLI) joins the call: his join request → first frame from each.
                late = CliCall(dave, space, ROOM, tmp / "dave.json", 12)
                running.append(late)
                late.wait_for(r"\(5 in the call", 60)
                late.proc.wait(timeout=60)
                dave_stats = json.loads((tmp / "dave.json").read_text())
                cli_first = [
                    p["first_video_frame_ms"]
                    for p in dave_stats["participants"]
                    if p["first_video_frame_ms"] is not None
                ]
                host.stop()
        finally:
            for browser in browsers:
                browser.close()
            server.stop()

    browser_pct = statistics.mean(c[0] for c in page_cpu) * 100
    renderer_pct = statistics.mean(c[1] for c in page_cpu) * 100
    result: dict[str, Any] = {
        "join_click_to_first_remote_frame_ms": summary(joins),
        "cli_join_to_first_frame_ms": summary(cli_first),
        "cpu_4way_browser_participant_pct_core": round(browser_pct, 1),
        "cpu_4way_browser_renderers_pct_core": round(renderer_pct, 1),
        "cpu_4way_cli_participant_pct_core": round(cli_cpu * 100, 1),
        "cpu_ratio_browser_vs_cli": round(browser_pct / (cli_cpu * 100), 2) if cli_cpu else None,
        "sframe_worker": worker_per_frame(end_stats),
        "window_s": round(elapsed, 1),
        "load_average": os.getloadavg()[0],
    }
    j = result["join_click_to_first_remote_frame_ms"]
    print(f"page join → first remote frame: p50 {j['p50']} ms, p95 {j['p95']} ms (target ≤ 1000)")
    c = result["cli_join_to_first_frame_ms"]
    print(f"CLI join → first frame (per remote): p50 {c['p50']} ms, p95 {c['p95']} ms")
    print(
        f"CPU in a 4-way SFU call: browser participant {browser_pct:.1f} % of a core "
        f"(renderers {renderer_pct:.1f} %), CLI participant {cli_cpu * 100:.1f} % "
        f"→ ratio {result['cpu_ratio_browser_vs_cli']}"
    )
    for kind, v in result["sframe_worker"].items():
        print(f"SFrame worker {kind}: {v}")
    return result


if __name__ == "__main__":
    emit(main())
