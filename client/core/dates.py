"""How the client writes a moment for people and for ``--json``: one format everywhere."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(ts: float) -> str:
    """``ts`` (seconds since the epoch) as an ISO 8601 UTC timestamp, to the second."""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
