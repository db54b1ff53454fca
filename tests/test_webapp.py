"""The web app's build and serving (issue 9): reproducible bundle, headers, `salon web verify`.

Real components: the real build (web/scripts/build.mjs), a real ``salon serve`` subprocess
serving it, the real ``salon web verify`` command.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from browser_support import ROOT, WEB
from conftest import SalonServer, SalonUser

from spaces.handlers.webapp import SECURITY_HEADERS

pytestmark = pytest.mark.timeout(180)


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another filesystem
        shutil.copy2(source, target)


def files_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_two_builds_in_different_places_are_byte_identical(tmp_path: Path, web_dist: Path):
    # A second checkout elsewhere (its own copy of web/, node_modules hard-linked), built to
    # another directory: same bytes, same bundle hash.
    other = tmp_path / "elsewhere" / "web"
    shutil.copytree(
        WEB,
        other,
        ignore=shutil.ignore_patterns("node_modules", ".test-build", "out"),
    )
    shutil.copytree(WEB / "node_modules", other / "node_modules", copy_function=link_or_copy)
    out = tmp_path / "second-dist"
    done = subprocess.run(["node", "scripts/build.mjs", "--outdir", str(out)], cwd=other)
    assert done.returncode == 0
    first, second = files_of(web_dist), files_of(out)
    assert first.keys() == second.keys()
    assert first == second
    manifest = json.loads(first["manifest.json"])
    assert set(manifest["files"]) == {p for p in first if p.startswith("assets/")}
    for path, body in first.items():
        assert b"/tmp/" not in body and str(ROOT).encode() not in body, path


def test_served_app_headers_and_caching(web_server: SalonServer, web_dist: Path):
    manifest = json.loads((web_dist / "manifest.json").read_text())
    index = (web_dist / "index.html").read_bytes()
    assert f'<meta name="salon-bundle" content="{manifest["bundle"]}">'.encode() in index
    for path in ("/", "/join/abcdefghijkl", "/space/xyz/room", "/space"):
        status, headers, body = get(web_server.url + path)
        assert (status, body) == (200, index), path
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert headers["Cache-Control"] == "no-cache"
        for name, value in SECURITY_HEADERS.items():
            assert headers[name] == value, (path, name)
    for asset, digest in manifest["files"].items():
        status, headers, body = get(f"{web_server.url}/{asset}")
        assert status == 200
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert headers["X-Content-Type-Options"] == "nosniff"
        if asset.endswith(".js"):
            assert headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert body == (web_dist / asset).read_bytes(), digest
        status, headers, packed = get(f"{web_server.url}/{asset}", {"Accept-Encoding": "gzip"})
        assert headers["Content-Encoding"] == "gzip" and headers["Vary"] == "Accept-Encoding"
        assert gzip.decompress(packed) == body
    # Every response carries the headers: the API, a miss, a path trick.
    for path in ("/health", "/assets/nope-123.js", "/assets/..%2fmanifest.json", "/nothing"):
        status, headers, _ = get(web_server.url + path)
        assert status in (200, 404), path
        assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
        assert headers["Referrer-Policy"] == "no-referrer"


def test_server_keeps_no_request_log(web_server: SalonServer):
    get(f"{web_server.url}/join/zyxwvutsrqpo?secret=hunter2")
    assert "zyxwvutsrqpo" not in web_server.log_text()
    assert "hunter2" not in web_server.log_text()


def test_unbuilt_app_is_a_clear_503(make_server, tmp_path: Path):
    empty = tmp_path / "no-build"
    empty.mkdir()
    srv = make_server({"server": {"web_dir": str(empty)}})
    status, headers, body = get(srv.url + "/join/abcdefghijkl")
    assert status == 503
    assert headers["Content-Security-Policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    text = body.decode()
    assert "not built" in text and "npm run build" in text and "make run" in text
    assert "Traceback" not in text and "Traceback" not in srv.log_text()
    assert str(empty) not in text  # the server's paths are its own business; the log says
    assert f"the web app is not built (no {empty / 'index.html'})" in srv.log_text()
    assert get(srv.url + "/health")[0] == 200


def test_verify_matches_the_served_build(web_server: SalonServer, user):
    result = user("verifier").run("web", "verify", f"{web_server.url}/join/abcdefghijkl#x")
    assert result.returncode == 0
    manifest = json.loads(get(web_server.url + "/manifest.json")[2])
    assert result.stdout.startswith(f"matches: bundle {manifest['bundle']}")
    assert "not checked:" in result.stdout


def test_verify_names_a_tampered_asset(make_server, web_dist: Path, tmp_path: Path, user):
    tampered = tmp_path / "tampered"
    shutil.copytree(web_dist, tampered)
    script = next((tampered / "assets").glob("main-*.js"))
    # What a hostile server might add: one line that posts the fragment elsewhere.
    script.write_bytes(script.read_bytes() + b'\nfetch("/x"+location.hash);\n')
    srv = make_server({"server": {"web_dir": str(tampered)}})
    verifier: SalonUser = user("verifier")
    result = verifier.run("web", "verify", srv.url, "--checkout", str(ROOT), check=False)
    assert result.returncode == 1, result.stderr
    assert f"differs: assets/{script.name}" in result.stdout
    assert result.stdout.startswith("DIFFERS")
    report = verifier.run("web", "verify", srv.url, "--json", check=False)
    assert report.returncode == 1
    assert json.loads(report.stdout)["differ"] == [f"assets/{script.name}"]


def test_verify_errors_are_one_line(user, tmp_path: Path):
    verifier: SalonUser = user("verifier")
    bad = verifier.fail("web", "verify", "ftp://example.org/")
    assert "not a web address" in bad
    assert verifier.run("web", "verify", "http://127.0.0.1:9/", check=False).returncode == 3
    not_checkout = verifier.run(
        "web", "verify", "http://127.0.0.1:9/", "--checkout", str(tmp_path), check=False
    )
    assert not_checkout.returncode == 2
    assert "not a Salon checkout" in not_checkout.stderr


@pytest.mark.e2e
def test_build_refuses_inline_script(tmp_path: Path):
    # The CSP forbids inline code; the build says so instead of shipping a page that breaks.
    other = tmp_path / "web"
    shutil.copytree(WEB, other, ignore=shutil.ignore_patterns("node_modules", ".test-build"))
    os.symlink(WEB / "node_modules", other / "node_modules")
    page = (other / "index.html").read_text()
    (other / "index.html").write_text(page.replace("</head>", "<script>alert(1)</script></head>"))
    code = os.system(
        f"cd '{other}' && node scripts/build.mjs --outdir '{tmp_path / 'd'}' 2>/dev/null"
    )
    assert code != 0
    assert not (tmp_path / "d").exists()
