"""The browser key store in a real browser (issue 9, "Keys in the browser").

``web/scripts/idb_check.mjs`` bundles ``web/src/keystore/idb.ts`` with the vault; a headless
Debian Chromium page (Playwright, ``executable_path``) on a local http origin writes a
membership, then a second page load of the same origin reads it back with the device key it
finds in IndexedDB. The device key is a non-extractable AES-GCM ``CryptoKey``; the stored
bytes do not hold the seed; nothing is in localStorage or cookies.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.timeout(120), pytest.mark.e2e]

WEB = Path(__file__).resolve().parent.parent / "web"
CHROMIUM = os.environ.get("SALON_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[str]:
    if shutil.which("node") is None:
        pytest.fail("node is needed to build the web client's modules")
    if not (WEB / "node_modules").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=WEB, check=True, timeout=100)
    subprocess.run(
        ["node", "scripts/idb_check.mjs", str(tmp_path)], cwd=WEB, check=True, timeout=60
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_vault_in_indexeddb_with_a_non_extractable_device_key(origin: str) -> None:
    try:
        from playwright import sync_api
    except ImportError:
        pytest.fail(
            "Python Playwright is needed to drive Debian's chromium (pip install playwright)"
        )
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing (.ci/run installs Debian's chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            context = browser.new_context()
            page = context.new_page()
            page.goto(origin + "/index.html")
            first: dict[str, Any] = page.evaluate("salonIdbCheck('write')")
            page.reload()
            again: dict[str, Any] = page.evaluate("salonIdbCheck('read')")
        finally:
            browser.close()
    for result in (first, again):
        assert result["extractable"] is False
        assert result["algorithm"] == "AES-GCM"
        assert result["usages"] == ["decrypt", "encrypt"]
        assert result["localStorage"] == 0 and result["cookie"] == ""
    assert first["rawHoldsSeed"] is False
    assert len(first["seed"]) == 64
    expected = [{"name": "Tea club", "display_name": "Bob", "seed": first["seed"]}]
    assert first["memberships"] == expected
    assert again["memberships"] == expected  # the same device key opened it after a reload
