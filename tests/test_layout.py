"""The server package's import rules (issue 12), read from the source: handlers get their
stores injected and never import an engine; only the app builds stores; nothing imports the
app back (no cycle through it); the server never imports the client."""

from __future__ import annotations

import ast
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


def modules() -> dict[str, set[str]]:
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts): imports_of(path)
        for path in SPACES.rglob("*.py")
    }


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
