"""The packages' import rules (issue 12), read from the source. The server: handlers get their
stores injected and never import an engine; only the app builds stores; nothing imports the
app back (no cycle through it); the server never imports the client. The client: its core
(spaces, rooms, chat, keys) never imports the calls or the CLI; the client never imports the
server or the SFU (the aiortc adapter both use is ``rtc``), but for ``salon serve``/``salon
sfu`` in client/cli/launch.py; the SFU never imports the client."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPACES = ROOT / "spaces"


def imports_of(path: Path) -> set[str]:
    """Every module ``path`` imports (at any depth, TYPE_CHECKING blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def modules(package: Path = SPACES) -> dict[str, set[str]]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): imports_of(path)
        for path in package.rglob("*.py")
    }


def within(imported: set[str], *packages: str) -> set[str]:
    """The modules in ``imported`` that are ``packages`` or inside one of them."""
    return {m for m in imported for p in packages if m == p or m.startswith(p + ".")}


def test_handlers_never_build_or_import_a_storage_engine():
    for name, imported in modules().items():
        if name.startswith("spaces.handlers."):
            engines = {
                m
                for m in imported
                if m.startswith(("spaces.storage.sqlite", "spaces.storage.postgres"))
                or m == "spaces.storage.engines"
            }
            assert not engines, f"{name} imports {engines}"


def test_only_the_app_chooses_the_engine_and_nothing_imports_the_app():
    for name, imported in modules().items():
        if name != "spaces.app":
            assert "spaces.app" not in imported, f"{name} imports spaces.app"
        if "spaces.storage.engines" in imported:
            assert name == "spaces.app", f"{name} chooses a storage engine"


def test_services_import_no_handler_and_the_server_no_client():
    for name, imported in modules().items():
        if name == "spaces.services":
            assert not {m for m in imported if m.startswith("spaces.handlers")}, imported
        client = {m for m in imported if m == "client" or m.startswith("client.")}
        assert not client, f"{name} imports {client}"


def test_the_client_core_imports_neither_calls_nor_the_cli():
    core = modules(ROOT / "client" / "core")
    assert "client.core.chat" in core and "client.core.stories" in core
    for name, imported in core.items():
        assert not within(imported, "client.call", "client.cli"), f"{name} imports {imported}"


def test_calls_never_import_the_cli():
    for name, imported in modules(ROOT / "client" / "call").items():
        cli = within(imported, "client.cli")
        assert not cli, f"{name} imports {cli}"


def test_the_client_imports_no_server_and_no_sfu_but_to_launch_them():
    launchers = set()
    for name, imported in modules(ROOT / "client").items():
        if within(imported, "spaces", "sfu"):
            launchers.add(name)
    assert launchers == {"client.cli.launch"}


def test_the_sfu_and_rtc_never_import_the_client_or_the_server():
    for package in ("sfu", "rtc"):
        for name, imported in modules(ROOT / package).items():
            assert not within(imported, "client"), f"{name} imports {within(imported, 'client')}"
            if package == "rtc":
                assert not within(imported, "spaces", "sfu"), f"{name} imports {imported}"


OURS = ("protocol", "spaces", "client", "sfu", "rtc", "bench", "tests")


def test_protocol_imports_nothing_of_ours():
    found = modules(ROOT / "protocol")
    assert "protocol.wire" in found
    for name, imported in found.items():
        ours = {m for m in within(imported, *OURS) if not m.startswith("protocol")}
        assert not ours, f"{name} imports {ours}"


def test_the_web_protocol_imports_only_the_web_protocol():
    folder = ROOT / "web" / "src" / "protocol"
    sources = sorted(folder.glob("*.ts"))
    assert sources
    for source in sources:
        text = source.read_text(encoding="utf-8")
        # Every module specifier: `from "x"` (multi-line imports too) and `import("x")`.
        for target in re.findall(r"""(?:\bfrom|\bimport)\s*\(?\s*["']([^"']+)["']""", text):
            if target.startswith("."):
                resolved = (folder / target).resolve()
                assert resolved.parent == folder, f"{source.name} imports {target}"
