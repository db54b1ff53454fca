"""The browser's SFrame media worker (web/src/media/) in real browsers (issue 10).

A test page (web/test/browser/media_page.ts, bundled with esbuild) served under the web app's
strict CSP makes two participants in one page, each with its own SFrame worker, joined by two
RTCPeerConnections: fake camera (a Y4M of a known colour) and microphone, VP8 + Opus, sender
transforms encrypt, receiver transforms decrypt. Checked: the receiver decodes the camera's
colour and hears audio with zero decrypt failures; a receiver with the wrong key decodes
nothing and counts failures; frames under a foreign key id are dropped. Chromium through
Playwright, Firefox ESR through puppeteer-core (WebDriver BiDi): the harness of
tests/browser_support.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import CHROMIUM, FirefoxPage, WebPage
from media_page_support import PageServer, build_media, chromium_args, write_y4m

pytestmark = pytest.mark.timeout(240)

# The camera's colour, BT.601 limited range: Y, Cb, Cr for about RGB (230, 120, 20).
YUV = (138, 68, 184)
RGB = (230, 120, 20)
SENDER = 1

GOOD = {"senderIndex": SENDER, "publisher": SENDER, "wrongKey": False, "wantDecoded": 30}
WRONG_KEY = {"senderIndex": SENDER, "publisher": SENDER, "wrongKey": True, "wantDecoded": 0}
FOREIGN = {"senderIndex": 3, "publisher": SENDER, "wrongKey": False, "wantDecoded": 0}
# an SFU slot's receiver (source = the frame's single CSRC): a direct link puts no CSRC on them
NO_CSRC = {"senderIndex": SENDER, "publisher": "csrc", "wrongKey": False, "wantDecoded": 0}


def scenario(base: dict[str, Any], timeout_ms: int = 30000) -> dict[str, Any]:
    return {"wantDropped": 20, "timeoutMs": timeout_ms, **base}


@pytest.fixture(scope="module")
def page_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with PageServer(build_media(tmp_path_factory.mktemp("media-page"))) as server:
        yield server.url


def run_chromium(
    browser_type: Any, url: str, scenarios: list[dict[str, Any]], y4m: Path | None
) -> dict[str, Any]:
    """A Chromium of its own (the fake camera plays ``y4m``), the scenarios run in one page."""
    browser = browser_type.launch(executable_path=CHROMIUM, headless=True, args=chromium_args(y4m))
    try:
        page = WebPage(browser.new_page(), "media")
        page.page.goto(url)
        page.page.wait_for_selector("html[data-media-ready]", state="attached")
        results = [page.page.evaluate("s => window.mediaTest.loopback(s)", s) for s in scenarios]
        return {"browser": browser.version, "errors": page.problems(), "results": results}
    finally:
        browser.close()


def check_good(out: dict[str, Any], *, colour: bool, webaudio: bool = True) -> None:
    assert out["problem"] is None
    sent, got = out["sender"]["tracks"], out["receiver"]["tracks"]
    assert out["sender"]["sendKid"] == SENDER << 16
    assert out["receiver"]["receiveKids"] == [SENDER << 16]
    for kind in ("video", "audio"):
        assert sent[kind]["encrypted"] > 0, kind
        assert sent[kind]["lastKid"] == SENDER << 16
        assert got[kind]["decrypted"] > 0, kind
        assert got[kind]["lastKid"] == SENDER << 16
        bad = ("failures", "droppedForeignKid", "droppedNoKey", "droppedReplay", "droppedMalformed")
        why = (kind, got[kind]["lastDrop"])
        assert {k: got[kind][k] for k in bad} == dict.fromkeys(bad, 0), why
        assert sent[kind]["droppedOther"] == 0
    assert out["framesDecoded"] >= 30
    if webaudio:
        assert out["audioPeak"] > 0.01, "the receiver hears the microphone (WebAudio analyser)"
    else:  # headless Firefox has no audio output: its AudioContext never runs
        assert out["statsAudioLevel"] > 0.01, "the decoded audio is not silence (getStats)"
    assert len(out["colour"]) == 3
    if colour:
        assert all(abs(a - b) <= 30 for a, b in zip(out["colour"], RGB, strict=True)), out
        assert out["spread"] <= 40, "one solid colour, not decoded garbage"
    else:
        assert sum(out["colour"]) > 30, "not a black picture"


def check_wrong_key(out: dict[str, Any]) -> None:
    got = out["receiver"]["tracks"]
    assert out["framesDecoded"] == 0, "nothing decodes under the wrong key"
    assert got["video"]["failures"] >= 20
    assert got["audio"]["failures"] > 0
    assert got["video"]["decrypted"] == got["audio"]["decrypted"] == 0


def check_foreign(out: dict[str, Any], kids: list[int] | None = None) -> None:
    got = out["receiver"]["tracks"]
    # the receiver holds the sender's real key (index 3), but its transform is bound to index 1
    assert sorted(out["receiver"]["receiveKids"]) == (kids or [SENDER << 16, 3 << 16])
    assert out["framesDecoded"] == 0
    assert got["video"]["droppedForeignKid"] >= 20
    assert got["audio"]["droppedForeignKid"] > 0
    assert got["video"]["failures"] == got["audio"]["failures"] == 0, "refused before any key"
    assert got["video"]["decrypted"] == got["audio"]["decrypted"] == 0


def test_chromium_sframe_loopback(chromium: Any, page_url: str, tmp_path: Path) -> None:
    y4m = write_y4m(tmp_path / "colour.y4m", YUV)
    scenarios = [scenario(GOOD), scenario(WRONG_KEY), scenario(FOREIGN), scenario(NO_CSRC)]
    run = run_chromium(chromium.browser_type, page_url, scenarios, y4m)
    assert [e for e in run["errors"] if "favicon" not in e] == []
    good, wrong, foreign, no_csrc = run["results"]
    check_good(good, colour=True)
    check_wrong_key(wrong)
    check_foreign(foreign)
    check_foreign(no_csrc, kids=[SENDER << 16])
    assert no_csrc["receiver"]["tracks"]["video"]["lastDrop"].startswith("foreign-kid: no source")


def test_firefox_sframe_loopback(firefox: Any, page_url: str) -> None:
    page: FirefoxPage = firefox()
    page.goto(page_url)
    page.wait("html[data-media-ready]")
    results = [
        page.evaluate(f"window.mediaTest.loopback({json.dumps(s)})", timeout=70.0)
        for s in (
            scenario(GOOD, 45000),
            scenario(WRONG_KEY, 45000),
            scenario(FOREIGN, 45000),
            scenario({**GOOD, "rotate": "receiver-first", "leave": True}, 45000),
        )
    ]
    assert [e for e in page.problems() if "favicon" not in e] == []
    good, wrong, foreign, rotation = results
    check_good(good, colour=False, webaudio=False)
    check_wrong_key(wrong)
    check_foreign(foreign)
    check_rotation_and_leave(rotation)


def video_rx(phase: dict[str, Any]) -> dict[str, Any]:
    tracks: dict[str, Any] = phase["receiver"]["tracks"]
    return dict(tracks["video"])


def check_rotation_and_leave(first: dict[str, Any]) -> None:
    """A receiver-first rotation loses nothing; after a leave, keys go after the overlap."""
    kid0, kid1 = SENDER << 16, SENDER << 16 | 1
    assert first["framesDecoded"] >= 30
    assert first["rotatedKids"] == [kid0, kid1], "both keys during the overlap"
    after = video_rx(first["afterRotate"])
    assert after["lastKid"] == kid1
    assert (after["failures"], after["droppedNoKey"]) == (0, 0), "make-before-break: no gap"
    assert first["afterRotate"]["framesDecoded"] >= first["framesDecoded"] + 30
    assert first["kidsAfterOverlap"] == [kid1], "the old key is gone after the overlap"
    dropped_at = first["leaveFirstDrop"]["elapsedMs"] - first["leaveAtMs"]
    assert 1900 <= dropped_at <= 6000, f"keys kept for the 2 s overlap, then dropped ({dropped_at})"
    at_drop, later = video_rx(first["leaveFirstDrop"]), video_rx(first["afterLeave"])
    assert later["droppedNoKey"] >= at_drop["droppedNoKey"] + 20
    assert later["decrypted"] == at_drop["decrypted"], "nothing decrypts after the overlap"
    assert first["afterLeave"]["receiveKids"] == []
    assert later["failures"] == 0


def test_chromium_key_rotation_and_leave(chromium: Any, page_url: str) -> None:
    """§15.5 in the browser: a new epoch installed at the receiver first switches with no frame
    lost; frames of a sender that switched before its key arrived wait for it (up to 3 s) and
    none is lost; a key later than that loses only the frames in between, and the video decodes
    again (a keyframe follows); after the sender leaves, its keys decrypt for the 2 s overlap
    and never after."""
    kid1 = SENDER << 16 | 1
    scenarios = [
        scenario({**GOOD, "rotate": "receiver-first", "leave": True}),
        scenario({**GOOD, "rotate": "sender-first", "keyDelayMs": 300}),
        scenario({**GOOD, "rotate": "sender-first", "keyDelayMs": 4000}),
    ]
    run = run_chromium(chromium.browser_type, page_url, scenarios, None)
    assert [e for e in run["errors"] if "favicon" not in e] == []
    first, second, third = run["results"]

    check_rotation_and_leave(first)

    assert second["framesDecoded"] >= 30
    after = video_rx(second["afterRotate"])
    assert after["lastKid"] == kid1 and after["failures"] == 0
    assert after["held"] > 0, "frames under the new key waited for it"
    assert after["droppedNoKey"] == 0, "and none was lost"
    assert second["afterRotate"]["framesDecoded"] >= second["framesDecoded"] + 30

    assert third["framesDecoded"] >= 30
    after = video_rx(third["afterRotate"])
    assert after["lastKid"] == kid1 and after["failures"] == 0
    assert after["droppedNoKey"] > 0, "frames that waited longer than 3 s are dropped"
    assert third["afterRotate"]["framesDecoded"] >= third["framesDecoded"] + 30, "it recovers"
