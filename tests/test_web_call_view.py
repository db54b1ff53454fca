"""The web app tells the SFU how big it shows each slot (``SfuView``, PROTOCOL.md §15.6).

Everything real: the server (the spaces app with its in-process SFU node, on its own event
loop in a thread so the test can read the node's stats), the web app in Chromium, and a
``salon call`` publishing its test pattern. The node receives the height, in device pixels, of
the tile where the page shows the CLI's video; the height follows the layout when the window
narrows to a phone's width, and drops to 0 when the tile is hidden.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aioice.ice
import pytest
from conftest import toml_text, with_test_limits
from support import until_sync
from test_web_call_ui import CALL_VIEW, REMOTE_PLAYING, CliCall, cli_calls, join_call, open_room

from rtc import aiortc_adapter
from spaces.sfu_registry import REGISTRY, LocalNode

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
T = TypeVar("T")

# The height in device pixels at which the page shows a participant's tile video (0: none).
TILE_HEIGHT = """(name) => {
  const v = document.querySelector(`[data-testid=call-tile][data-name="${name}"] video`);
  if (v === null) return 0;
  return Math.round(v.getBoundingClientRect().height * devicePixelRatio);
}"""

# Frames the tile's <video> has decoded so far.
FRAMES = """(name) => {
  const v = document.querySelector(`[data-testid=call-tile][data-name="${name}"] video`);
  return v === null ? 0 : v.getVideoPlaybackQuality().totalVideoFrames;
}"""


@dataclass
class ThreadedServer:
    url: str
    app: Any
    run: Callable[[Coroutine[Any, Any, Any]], Any]

    def views(self) -> dict[str, dict[str, int]]:
        """participant -> its view, as the node holds it (read on the server's loop)."""

        async def read() -> dict[str, dict[str, int]]:
            local = self.app[REGISTRY].handle("local")
            assert isinstance(local, LocalNode)
            conferences = local.node.stats()["conferences"]
            return {
                pid: dict(p["view"])
                for conference in conferences.values()
                for pid, p in conference["participants"].items()
            }

        result: dict[str, dict[str, int]] = self.run(read())
        return result


@pytest.fixture(scope="module")
def threaded_server(
    tmp_path_factory: pytest.TempPathFactory, web_dist: Path
) -> Iterator[ThreadedServer]:
    """``salon serve``'s app serving the web app, on an event loop of its own thread."""
    from aiohttp import web

    from spaces.app import build_app
    from spaces.config import load_config
    from spaces.storage.sqlite.store import sqlite_stores

    root = tmp_path_factory.mktemp("view-server")
    config = root / "salon.toml"
    config.write_text(toml_text(with_test_limits({"server": {"web_dir": str(web_dist)}})))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="salon-serve", daemon=True)
    thread.start()

    def run(coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, loop).result(60)

    previous = aioice.ice.get_host_addresses
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])  # as SALON_ICE_HOSTS does
    stores = sqlite_stores(root / "data" / "salon.db")

    async def start() -> tuple[Any, Any, str]:
        app = build_app(load_config(config), stores)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        return app, runner, f"http://{host}:{port}"

    app, runner, url = run(start())
    try:
        yield ThreadedServer(url, app, run)
    finally:
        try:
            run(runner.cleanup())
            run(stores.spaces.close())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            aioice.ice.get_host_addresses = previous


def test_the_node_gets_the_pages_tile_heights_and_follows_the_layout(
    threaded_server: ThreadedServer, module_user: Any, new_page: Any, tmp_path: Path
) -> None:
    alice = module_user("alice-view")
    made = alice.json(
        "space", "create", "Gallery", "--server", threaded_server.url, "--as", "Alice"
    )
    space = made["space_id"]
    alice.run("room", "create", space, "atrium", "--kind", "conference", "--topology", "sfu")
    bob = new_page()  # 1280 × 800, one device pixel per CSS pixel
    open_room(bob, made["link"], "Bob", "atrium")
    page = bob.page

    with cli_calls() as running:
        cli = CliCall(alice, space, "atrium", tmp_path / "alice.json", 120)
        running.append(cli)
        cli.wait_for(r"joined call")
        join_call(bob)
        page.wait_for_selector(f"{CALL_VIEW}[data-topology=sfu]", timeout=45_000)
        page.wait_for_function(REMOTE_PLAYING, arg=1, timeout=60_000)

        def bobs_view() -> tuple[int, dict[str, int]] | None:
            """(what the page shows Alice at, the one non-empty view the node holds)."""
            shown = int(page.evaluate(TILE_HEIGHT, "Alice"))
            held = [v for v in threaded_server.views().values() if v]
            return (shown, held[0]) if len(held) == 1 else None

        def settled(want: Callable[[int], bool]) -> Callable[[], dict[str, int] | None]:
            def check() -> dict[str, int] | None:
                seen = bobs_view()
                if seen is None:
                    return None
                shown, view = seen
                return view if want(shown) and list(view.values()) == [shown] else None

            return check

        # The desktop grid: Alice's tile, as tall as the page shows it. Only Bob's view: the
        # CLI shows no video and sends none; a slot that shows nobody is left out.
        wide = until_sync(settled(lambda h: h > 200), "the node holding Bob's tile height", 30)
        ((mid, wide_height),) = wide.items()
        views = threaded_server.views()
        assert sorted(len(v) for v in views.values()) == [0, 1], views
        bobs = next(pid for pid, view in views.items() if view)
        bob.screenshot("call-view-wide")

        # A phone's width: the grid reflows, the tile's height changes, and so does the view.
        page.set_viewport_size({"width": 390, "height": 844})
        narrow = until_sync(
            settled(lambda h: h > 0 and abs(h - wide_height) > 20),
            "the node following the narrower layout",
            30,
        )
        assert list(narrow) == [mid], (narrow, mid)
        ((narrow_height,),) = [narrow.values()]

        # Twice the device pixels per CSS pixel (a phone's screen, or the window moved to a
        # denser one) and the same layout: twice the height in device pixels.
        cdp = page.context.new_cdp_session(page)
        cdp.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": False},
        )
        dense = until_sync(
            settled(lambda h: abs(h - 2 * narrow_height) <= 2),
            "the node holding the tile's height in device pixels",
            30,
        )
        assert list(dense) == [mid], (dense, mid)
        bob.screenshot("call-view-phone")

        # The tile hidden (display: none, as a minimised tile): shown at 0 px, so the SFU
        # pauses the slot. The page keeps Alice in it meanwhile (no flapping: a slot left out
        # of the view would be sent again), past the usual idle time of a quiet slot.
        tile = "document.querySelector('[data-testid=call-tile][data-name=\"Alice\"]')"
        page.evaluate(f"{tile}.style.display = 'none'")
        until_sync(
            lambda: threaded_server.views()[bobs] == {mid: 0},
            "the node holding 0 for the hidden tile",
            30,
        )
        held_since = time.monotonic()

        def held() -> bool:
            assert threaded_server.views()[bobs] == {mid: 0}
            assert page.evaluate(f"{tile}.querySelector('video') !== null")
            return time.monotonic() - held_since > 4  # SLOT_IDLE_MS is 2.5 s

        until_sync(held, "the hidden tile held at 0", 15, interval=0.25)

        # Shown again: its height comes back and its video plays again.
        page.evaluate(f"{tile}.style.display = ''")
        until_sync(settled(lambda h: h > 0), "the node holding the tile's height again", 30)
        frames = int(page.evaluate(FRAMES, "Alice"))
        until_sync(
            lambda: page.evaluate(FRAMES, "Alice") > frames + 10, "Alice's video moving again", 30
        )
        cli.stop()
    assert [p for p in bob.problems() if "favicon" not in p] == [], bob.problems()
