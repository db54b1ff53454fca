"""``salon web verify URL``: is the web app a server serves the one your checkout builds?

A web app's code comes from the server it talks to, on every visit: a server could serve a
page that sends the invite secret or the keys elsewhere. The build (``web/scripts/build.mjs``)
is reproducible, so anyone can rebuild the bundle from the source they trust and compare it,
file by file, with what a server serves. This module does both halves.

Compared: ``index.html``, ``manifest.json`` and every file under ``assets/`` (those of the
local build, those the served manifest lists, and those the served index.html references).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from client.core.errors import ClientCode, ClientError, ExitCode, Unreachable, UsageError

REFERENCED = re.compile(r"""(?:src|href)\s*=\s*["']/(assets/[A-Za-z0-9._-]+)["']""")
ASSET_PATH = re.compile(r"^assets/[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
FETCH_TIMEOUT = 30.0
MAX_FILE_BYTES = 32 * 1024 * 1024

# Exit codes of `salon web verify` (client.core.errors.ExitCode; 2 is a usage error, 3 an
# unreachable server, 5 a failed local build).
MATCHES = ExitCode.OK
DIFFERS = ExitCode.FAILED

CANNOT_CHECK = (
    "not checked: what this server sends to other people or at other times (it can tell "
    "requests apart), what your browser actually runs (extensions, a different response on "
    "your next visit), and the server's own code; a match says the files served to this "
    "request are exactly the ones your checkout builds"
)


class WebBuildError(ClientError):
    """The local build could not be made (no Node.js/npm, npm ci or the build failed)."""

    exit_code = ExitCode.ENDED
    code = ClientCode.BUILD_FAILED


@dataclass
class Outcome:
    local_bundle: str
    served_bundle: str | None
    compared: list[str] = field(default_factory=list)
    differ: list[str] = field(default_factory=list)  # served bytes differ
    missing: list[str] = field(default_factory=list)  # in the local build, not served
    extra: list[str] = field(default_factory=list)  # served (referenced/listed), not local

    @property
    def matches(self) -> bool:
        return not (self.differ or self.missing or self.extra)

    def as_json(self) -> dict[str, object]:
        return {
            "matches": self.matches,
            "bundle": self.local_bundle,
            "served_bundle": self.served_bundle,
            "compared": self.compared,
            "differ": self.differ,
            "missing": self.missing,
            "extra": self.extra,
            "not_checked": CANNOT_CHECK,
        }

    def text(self) -> str:
        if self.matches:
            return f"matches: bundle {self.local_bundle} ({len(self.compared)} files)"
        lines = [
            f"DIFFERS: the server does not serve what your checkout builds "
            f"(your bundle {self.local_bundle}, "
            f"the server says {self.served_bundle or 'nothing'})"
        ]
        lines += [f"  differs: {path}" for path in self.differ]
        lines += [f"  not served: {path}" for path in self.missing]
        lines += [f"  served, not in your build: {path}" for path in self.extra]
        return "\n".join(lines)


def default_checkout() -> Path:
    """The checkout this package runs from, if it has web/ (an editable install)."""
    return Path(__file__).resolve().parents[2]  # client/core/webverify.py → the checkout


def build_local(checkout: Path, outdir: Path) -> dict[str, bytes]:
    """Build the bundle from ``checkout`` into ``outdir``; its files by relative path."""
    web = checkout / "web"
    if not (web / "scripts" / "build.mjs").is_file():
        raise UsageError(
            f"{checkout} is not a Salon checkout (no web/scripts/build.mjs); "
            "give the one to build with --checkout DIR"
        )
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        raise WebBuildError("building the web app needs Node.js and npm (apt install nodejs npm)")
    if not (web / "node_modules").is_dir():
        _run([npm, "ci", "--no-audit", "--no-fund"], web, "npm ci")
    _run([node, "scripts/build.mjs", "--outdir", str(outdir)], web, "the build")
    return {
        path.relative_to(outdir).as_posix(): path.read_bytes()
        for path in sorted(outdir.rglob("*"))
        if path.is_file()
    }


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise WebBuildError(f"{what} failed in {cwd}: {last[0]}")


def server_base(url: str) -> str:
    """``http://host:port`` (plus a path prefix before /join/ or /space/) from any app URL."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"not a web address: {url!r} (like https://salon.example.org/)")
    path = re.split(r"/(?:join|space)(?:/|$)", parts.path, maxsplit=1)[0].rstrip("/")
    return str(urlunsplit((parts.scheme, parts.netloc, path, "", "")))  # no query, fragment


async def fetch_served(base: str, local_paths: list[str]) -> dict[str, bytes | None]:
    """What the server serves: index.html, manifest.json and every asset worth comparing."""
    timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
    served: dict[str, bytes | None] = {}
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:

            async def get(path: str) -> bytes | None:
                target = f"{base}/" if path == "index.html" else f"{base}/{path}"
                async with http.get(target, allow_redirects=False) as response:
                    if response.status != 200:
                        return None
                    body = bytearray()
                    async for chunk in response.content.iter_chunked(65536):
                        body += chunk
                        if len(body) > MAX_FILE_BYTES:
                            raise Unreachable(f"{target} is larger than any file of the app")
                    return bytes(body)

            index, manifest = await asyncio.gather(get("index.html"), get("manifest.json"))
            if index is None:
                raise Unreachable(f"{base}/ does not serve a web app (no page at /)")
            served["index.html"], served["manifest.json"] = index, manifest
            wanted = set(local_paths) | set(REFERENCED.findall(index.decode("utf-8", "replace")))
            if manifest is not None:
                wanted |= set(_manifest_files(manifest))
            assets = sorted(p for p in wanted if ASSET_PATH.match(p))
            bodies = await asyncio.gather(*(get(path) for path in assets))
            served.update(zip(assets, bodies, strict=True))
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise Unreachable(f"cannot fetch {base}: {exc or type(exc).__name__}") from None
    return served


def _manifest_files(manifest: bytes) -> list[str]:
    try:
        files = json.loads(manifest).get("files", {})
    except (ValueError, AttributeError):
        return []
    return [path for path in files if isinstance(path, str)] if isinstance(files, dict) else []


def _bundle_of(manifest: bytes | None) -> str | None:
    if manifest is None:
        return None
    try:
        bundle = json.loads(manifest).get("bundle")
    except (ValueError, AttributeError):
        return None
    return bundle if isinstance(bundle, str) else None


def compare(local: dict[str, bytes], served: dict[str, bytes | None]) -> Outcome:
    outcome = Outcome(
        local_bundle=_bundle_of(local.get("manifest.json")) or "?",
        served_bundle=_bundle_of(served.get("manifest.json")),
    )
    for path in sorted(set(local) | set(served)):
        mine, theirs = local.get(path), served.get(path)
        if mine is None:
            if theirs is not None:
                outcome.extra.append(path)
        elif theirs is None:
            outcome.missing.append(path)
        elif mine != theirs:
            outcome.differ.append(path)
        else:
            outcome.compared.append(path)
    return outcome


async def verify(url: str, checkout: Path) -> Outcome:
    base = server_base(url)
    with tempfile.TemporaryDirectory(prefix="salon-web-verify-") as tmp:
        local = await asyncio.to_thread(build_local, checkout, Path(tmp) / "dist")
    served = await fetch_served(base, sorted(local))
    return compare(local, served)
