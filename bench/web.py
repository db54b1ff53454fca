"""The web app's benchmark (not a test): `make bench-web`. Last line: one JSON document.

Usage: python bench/web.py [--rounds 10] [--web-dir DIR]

Real components: ``salon serve`` serving the built bundle, the ``salon`` CLI (Alice), and
Debian's Chromium through Playwright (Bob, in the page). Measured:

- ``join``: from opening an invite link in a fresh browser context (its own IndexedDB) to the
  space being shown (``[data-testid=space-view]``), the display name typed as soon as the
  form (``[data-testid=join-name]``) is there. Target p50 ≤ 1 s. Beside it, the CLI's
  ``salon join LINK --as NAME`` wall time (a fresh process each time, as a person runs it).
- ``send``: from starting ``salon send SPACE ROOM TEXT`` to the text being in the page
  (``[data-testid=message]``), and, for the same messages, to the line printed by a
  ``salon read --follow`` already running (the CLI's figure). Both include the sending
  process's start-up (Python, keystore unlock): ``send_process_ms`` is how long that process
  ran; ``page_after_follow_ms`` (page minus follow, per message) is what the page adds over
  the CLI reader. Target ≤ 100 ms for the page after the server pushed the message. The page's
  time is when the text entered its DOM (a MutationObserver's wall-clock stamp), not when
  Playwright's polling noticed it (that adds ~300 ms here).
- ``bundle``: the served JS and CSS, raw and gzip -9 (what a first visit downloads).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import queue
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _harness import SALON, Server, emit, summary  # run as a script: bench/ is on sys.path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("SALON_CHROMIUM", "/usr/bin/chromium")
SPACE_VIEW = "[data-testid=space-view]"
MESSAGE = "[data-testid=message]"
JOIN_NAME = "[data-testid=join-name]"
JOIN_SUBMIT = "[data-testid=join-submit]"
PASSPHRASE = "bench passphrase, not a secret"
ROOM = "general"
SEEN_OBSERVER = """() => {
  window.__salonBenchSeen = {};
  new MutationObserver(() => {
    const text = window.__salonBenchWatch;
    if (text && !(text in window.__salonBenchSeen) && document.body.textContent.includes(text)) {
      window.__salonBenchSeen[text] = performance.timeOrigin + performance.now();
    }
  }).observe(document.body, { childList: true, subtree: true, characterData: true });
}"""


class Cli:
    def __init__(self, home: Path) -> None:
        self.env = {**os.environ, "SALON_HOME": str(home), "SALON_PASSPHRASE": PASSPHRASE}

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(SALON), *args], capture_output=True, text=True, env=self.env, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"salon {' '.join(args[:2])}: {done.stderr.strip()}")
        return done.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "--json"))


LIMITS = {
    "requests_per_second": 1e9,
    "request_burst": 1_000_000_000,
    "join_attempts_per_minute_per_address": 100_000,
    "join_attempts_per_minute_per_invite": 100_000,
    "messages_per_second_per_member": 1e9,
    "message_burst_per_member": 1_000_000_000,
}


def bundle_size(web_dir: Path) -> dict[str, int]:
    index = (web_dir / "index.html").read_text(encoding="utf-8")
    paths = re.findall(r'(?:src|href)="/(assets/[^"]+\.(?:js|css))"', index)
    raw = b"".join((web_dir / p).read_bytes() for p in sorted(paths))
    return {"raw_bytes": len(raw), "gzip_bytes": len(gzip.compress(raw, 9, mtime=0))}


class Follower:
    """``salon read --follow`` in the background: when each text's line was printed."""

    def __init__(self, cli: Cli, space: str) -> None:
        self.proc = subprocess.Popen(
            [str(SALON), "read", space, ROOM, "--follow", "--quiet"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=cli.env,
        )
        self.seen: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.seen.put((time.time(), line))

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while True:
            at, line = self.seen.get(timeout=max(0.01, deadline - time.monotonic()))
            if text in line:
                return at

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def bench(rounds: int, web_dir: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    result: dict[str, Any] = {"bench": "web", "rounds": rounds, "bundle": bundle_size(web_dir)}
    with tempfile.TemporaryDirectory(prefix="salon-bench-web-") as tmp:
        root = Path(tmp)
        server = Server(root, {"server": {"web_dir": str(web_dir)}, "limits": LIMITS})
        url = server.start()
        try:
            alice = Cli(root / "alice")
            space = alice.json("space", "create", "Bench", "--server", url, "--as", "alice")
            space_id = space["space_id"]
            alice.run("room", "create", space_id, ROOM, "--kind", "chat")
            link = alice.json("invite", "create", space_id, "--uses", str(2 * rounds + 2))["link"]
            cli_join: list[float] = []
            for i in range(rounds):
                started = time.perf_counter()
                Cli(root / f"cli{i}").run("join", link, "--as", f"cli{i}")
                cli_join.append((time.perf_counter() - started) * 1000)
            result["cli_join_ms"] = summary(cli_join)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
                try:
                    result.update(browser_figures(browser, alice, space_id, link, rounds))
                except Exception as exc:  # the UI is not there yet, or broke: say so
                    result["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                finally:
                    browser.close()
        finally:
            server.stop()
    return result


def hook(page: Any, testid: str, fallback: Callable[[Any], Any]) -> Any:
    """The UI's data-testid hook, or (until web/src/ui has them all) the same element found
    by its label or role."""
    return page.locator(testid).or_(fallback(page))


def browser_figures(browser: Any, alice: Cli, space_id: str, link: str, rounds: int) -> Any:
    joins: list[float] = []
    page = None
    for i in range(rounds):
        context = browser.new_context()
        page = context.new_page()
        started = time.perf_counter()
        page.goto(link)
        hook(page, JOIN_NAME, lambda p: p.get_by_label("Your name in this space")).fill(f"web{i}")
        hook(page, JOIN_SUBMIT, lambda p: p.get_by_role("button", name="Join")).click()
        hook(page, SPACE_VIEW, lambda p: p.locator("nav.sidebar")).wait_for()
        joins.append((time.perf_counter() - started) * 1000)
        if i < rounds - 1:
            context.close()
    assert page is not None
    figures: dict[str, Any] = {"join_ms": summary(joins)}
    # The last joined page stays open in the room; Alice sends, a CLI reader follows too.
    page.get_by_role("link", name=ROOM).click()
    # When each watched text first entered the DOM (a MutationObserver, not Playwright's
    # polling), as epoch milliseconds.
    page.evaluate(SEEN_OBSERVER)
    follower = Follower(alice, space_id)
    to_page: list[float] = []
    to_follow: list[float] = []
    process: list[float] = []
    after_follow: list[float] = []
    try:
        for i in range(rounds):
            text = f"bench {i} {secrets.token_hex(4)}"
            page.evaluate("(text) => { window.__salonBenchWatch = text; }", text)
            started = time.time()  # wall clock: the page's and the follower's stamps are too
            sending = subprocess.Popen(
                [str(SALON), "send", space_id, ROOM, text],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=alice.env,
            )
            hook(page, MESSAGE, lambda p: p.locator("li")).filter(has_text=text).wait_for()
            in_page = page.evaluate("window.__salonBenchSeen[window.__salonBenchWatch]") / 1000
            in_follow = follower.wait_for(text)
            sending.wait(timeout=60)
            process.append((time.time() - started) * 1000)
            to_page.append((in_page - started) * 1000)
            to_follow.append((in_follow - started) * 1000)
            after_follow.append((in_page - in_follow) * 1000)
    finally:
        follower.stop()
    figures["send_to_page_ms"] = summary(to_page)
    figures["send_to_follow_ms"] = summary(to_follow)
    figures["send_process_ms"] = summary(process)
    figures["page_after_follow_ms"] = summary(after_follow)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--web-dir", type=Path, default=ROOT / "spaces" / "web_dist")
    args = parser.parse_args()
    if not (args.web_dir / "index.html").is_file():
        sys.exit(f"no built web app in {args.web_dir}: run make web-build")
    result = bench(args.rounds, args.web_dir.resolve())
    join, page = result.get("join_ms", {}), result.get("send_to_page_ms", {})
    print(f"bundle: {result['bundle']['gzip_bytes'] / 1024:.0f} KiB gzip")
    print(f"join: browser p50 {join.get('p50')} ms, CLI p50 {result['cli_join_ms']['p50']} ms")
    print(f"send → page p50 {page.get('p50')} ms")
    if "error" in result:
        print(f"browser part failed: {result['error']}")
    emit(result)


if __name__ == "__main__":
    main()
