"""Six people in one SFU call: three Chromium pages and three ``salon call`` CLIs (issue 10).

Each page is its own Chromium process whose fake camera is a Y4M of its own colour; each CLI
publishes its test pattern (its name's colour) and a tone. Checked, with everything real (the
server, its SFU node, the browsers, the CLIs): every participant decodes every other one's
video (the colour it shows / its ``--stats`` dominant colour) and audio (WebAudio level on the
pages, decoded audio frames in the CLIs); the verification code on every page equals the one
each CLI prints; no SFrame frame fails to decrypt (the pages' worker counters, the CLIs'
stats). Then the host page (Bob) removes Erin's page: it says so, and Erin's page receives no
media key after her removal while the others re-key; then the host on the CLI (Alice) turns
Carol's microphone off: her sound stops arriving at Bob's page and the CLIs see her muted.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, WebPage
from conftest import SalonServer
from media_page_support import chromium_args, write_y4m
from support import until_sync
from test_web_call_ui import (
    CALL_VIEW,
    CODE_SHOWN,
    REMOTE_PLAYING,
    TILE_COLOUR,
    CliCall,
    cli_calls,
    join_call,
    open_room,
)

from client.call.media import colour_distance, name_colour

pytestmark = pytest.mark.timeout(420)
SERVER_CONFIG = {"conference": {"max_participants": 8}}

# Each page's camera colour (RGB); the CLIs show their names' colours
# (client.call.media.name_colour).
PAGES = {"Bob": (20, 200, 200), "Carol": (210, 40, 200), "Erin": (128, 128, 128)}
CLIS = ("Alice", "Dave", "Hana")
ROOM = "agora"

# The loudest level (RMS, 0..1) heard over ~1.5 s from each named participant's <audio>.
AUDIO_BY_NAME = """async () => {
  const ctx = new AudioContext();
  await ctx.resume();
  // An element whose stream is being replaced (a track re-attached) has none for a moment.
  const playing = [...document.querySelectorAll("[data-testid=call-audio]")].filter(
    (el) => el.srcObject instanceof MediaStream,
  );
  const meters = playing.map((el) => {
    const an = ctx.createAnalyser();
    ctx.createMediaStreamSource(el.srcObject).connect(an);
    return { name: el.dataset.name, an, max: 0, buf: new Float32Array(an.fftSize) };
  });
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 50));
    for (const m of meters) {
      m.an.getFloatTimeDomainData(m.buf);
      let sum = 0;
      for (const x of m.buf) sum += x * x;
      m.max = Math.max(m.max, Math.sqrt(sum / m.buf.length));
    }
  }
  await ctx.close();
  return Object.fromEntries(meters.map((m) => [m.name, m.max]));
}"""
STATS = "() => window.salonCallStats ? window.salonCallStats() : null"


def yuv(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """BT.601 limited range, as Chromium's fake capture reads a Y4M."""
    r, g, b = rgb
    return (
        round(16 + 0.257 * r + 0.504 * g + 0.098 * b),
        round(128 - 0.148 * r - 0.291 * g + 0.439 * b),
        round(128 + 0.439 * r - 0.368 * g - 0.071 * b),
    )


def rgb_of(name: str) -> tuple[int, int, int]:
    if name in PAGES:
        return PAGES[name]
    b, g, r = name_colour(name)
    return (r, g, b)


def poll(check: Any, timeout: float, what: str) -> Any:
    return until_sync(check, what, timeout, interval=0.5)


def page_failures(stats: dict[str, Any]) -> tuple[int, int]:
    tracks = [t for t in (stats["tracks"] or {}).values() if t["side"] == "receive"]
    return sum(t["decrypted"] for t in tracks), sum(t["failures"] for t in tracks)


def test_three_pages_and_three_clis_on_the_sfu(
    web_server: SalonServer, module_user: Any, chromium: Any, tmp_path: Path
) -> None:
    everyone = [*PAGES, *CLIS]
    colours = [rgb_of(n) for n in everyone]
    assert min(colour_distance(a, b) for i, a in enumerate(colours) for b in colours[i + 1 :]) > 80

    alice = module_user("alice")
    made = alice.json("space", "create", "Agora", "--server", web_server.url, "--as", "Alice")
    space, link = made["space_id"], made["link"]
    alice.run("room", "create", space, ROOM, "--kind", "conference", "--topology", "sfu")
    clis = {"Alice": alice}
    for name in CLIS[1:]:
        clis[name] = module_user(name.lower())
        clis[name].run("join", link, "--as", name)

    browsers: list[Any] = []
    pages: dict[str, WebPage] = {}
    try:
        for name, rgb in PAGES.items():
            y4m = write_y4m(tmp_path / f"{name}.y4m", yuv(rgb), 160, 120)
            browser = chromium.browser_type.launch(
                executable_path=CHROMIUM, headless=True, args=chromium_args(y4m)
            )
            browsers.append(browser)
            context = browser.new_context(viewport={"width": 960, "height": 720})
            pages[name] = WebPage(context.new_page(), name)
            open_room(pages[name], link, name, ROOM)
        alice.run("role", space, "Bob", "moderator")

        with cli_calls() as running:
            calls: dict[str, CliCall] = {}
            calls["Alice"] = CliCall(alice, space, ROOM, tmp_path / "Alice.json", 150)
            running.append(calls["Alice"])
            calls["Alice"].wait_for(r"joined call")
            for web in pages.values():
                join_call(web)
                web.page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=45_000)
            for name in CLIS[1:]:
                calls[name] = CliCall(clis[name], space, ROOM, tmp_path / f"{name}.json", 150)
                running.append(calls[name])
            codes = {
                n: c.wait_for(r"verification code ([\d ]+) \(6 in the call", 90).group(1)
                for n, c in calls.items()
            }
            assert len(set(codes.values())) == 1, codes
            code = codes["Alice"]

            # Every page decodes the five others: their colour, their sound, the same code.
            for name, web in pages.items():
                web.page.wait_for_function(REMOTE_PLAYING, arg=5, timeout=90_000)
                web.page.wait_for_function(CODE_SHOWN, arg=code, timeout=30_000)
                for other in everyone:
                    if other == name:
                        continue

                    def seen(web: WebPage = web, other: str = other) -> Any:
                        rgb = web.page.evaluate(TILE_COLOUR, other)
                        close = rgb and colour_distance(tuple(rgb), rgb_of(other)) < 60
                        return rgb if close else None

                    poll(seen, 30, f"{name}'s page does not show {other}'s colour")

                def heard(name: str = name) -> Any:
                    levels = pages[name].page.evaluate(AUDIO_BY_NAME)
                    loud = {n for n, v in levels.items() if v > 0.005}
                    return loud >= set(everyone) - {name}

                poll(heard, 45, f"{name}'s page does not hear everyone")
            before_kick = {n: w.page.evaluate(STATS) for n, w in pages.items()}
            for name, stats in before_kick.items():
                decrypted, failures = page_failures(stats)
                assert decrypted > 100 and failures == 0, (name, stats)
            pages["Bob"].screenshot("call-sfu6-grid")

            # Bob (a host, in a page) removes Erin: her page says so, and no key reaches it
            # afterwards while Bob's and Carol's pages take the new keys of the others.
            bob = pages["Bob"].page
            bob.click("[data-testid=call-people]")
            bob.click("button[aria-label='Manage Erin']")
            bob.click("dialog[open] button:has-text('Remove from the call')")
            bob.click("dialog[open] button:has-text('Remove')")
            erin = pages["Erin"].page
            erin.wait_for_selector("[data-testid=call-over][data-phase=removed]", timeout=30_000)
            assert "Bob" in erin.inner_text("[data-testid=call-reason]")
            erin_keys = erin.evaluate(STATS)["keyEvents"]
            bob.keyboard.press("Escape")
            for name in ("Bob", "Carol"):
                poll(
                    lambda name=name: (
                        pages[name].page.evaluate(STATS)["keyEvents"]
                        >= before_kick[name]["keyEvents"] + 4
                    ),
                    45,
                    f"{name}'s page took no new keys after Erin left",
                )
            for call in calls.values():
                call.wait_for(r"verification code ([\d ]+) \(5 in the call", 45)
            assert erin.evaluate(STATS)["keyEvents"] == erin_keys

            # Alice (a host, on the CLI) turns Carol's microphone off: Bob stops hearing her.
            alice.run("mod", space, ROOM, "mute", "Carol")
            pages["Carol"].page.wait_for_selector(
                "[data-testid=call-mic][aria-label='Turn on your microphone']", timeout=30_000
            )

            def carol_silent() -> bool:
                levels = bob.evaluate(AUDIO_BY_NAME)
                return levels.get("Carol", 0.0) < 0.002 and levels.get("Alice", 0.0) > 0.005

            poll(carol_silent, 30, "Bob's page still hears Carol after Alice muted her")
            after = {n: pages[n].page.evaluate(STATS) for n in ("Bob", "Carol")}
            for name, stats in after.items():
                assert page_failures(stats)[1] == 0, (name, stats)
            for call in calls.values():
                call.stop()
            results = {n: json.loads((tmp_path / f"{n}.json").read_text()) for n in CLIS}
    finally:
        for browser in browsers:
            browser.close()

    for name, stats in results.items():
        assert stats["topology"] == "sfu" and stats["e2ee"] is True, stats
        assert code in stats["verification_codes"], stats
        assert stats["sfu"]["unattributed_decrypt_failures"] == 0, stats["sfu"]
        seen = {p["display_name"]: p for p in stats["participants"]}
        for other in everyone:
            if other == name:
                continue
            peer = seen[other]
            assert peer["video_frames_decoded"] > 0 and peer["audio_frames_decoded"] > 0, peer
            assert peer["decrypt_failures"] == 0, peer
            b, g, r = peer["dominant_colour"]
            assert colour_distance((r, g, b), rgb_of(other)) < 60, (name, other, peer)
        assert seen["Carol"]["muted"] is True, seen["Carol"]
    for web in pages.values():
        assert [p for p in web.problems() if "favicon" not in p] == [], web.problems()
