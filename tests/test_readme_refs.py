"""The README's threat-model table points at tests by name: keep every pointer real."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_test_the_readme_names_exists() -> None:
    text = (ROOT / "README.md").read_text()
    current: Path | None = None
    named = 0
    for match in re.finditer(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text):
        if match.group(1):
            current = ROOT / match.group(1)
            assert current.exists(), match.group(1)
            name = match.group(2)
        else:
            name = match.group(3)
        if name is not None:
            assert current is not None
            assert re.search(rf"^(async )?def {name}\b", current.read_text(), re.M), (
                f"README names {current.name}::{name}, which does not exist"
            )
            named += 1
    assert named >= 20
