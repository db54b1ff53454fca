"""Every use of a private aiortc/aioice name lives here (aiortc is pinned in pyproject).

``tests/test_aiortc_adapter.py`` checks each name this module touches, so an aiortc or
aioice upgrade that moves one fails loudly there instead of silently breaking media.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import aioice.ice

ICE_HOSTS_ENV = "SALON_ICE_HOSTS"
_original_host_addresses = aioice.ice.get_host_addresses


def restrict_ice_host_addresses(addresses: Sequence[str] | None) -> None:
    """Offer only these local addresses as ICE host candidates (None: every interface).

    aioice never offers 127.0.0.1, so calls between processes on one machine (tests, demos)
    would otherwise go out through a real interface; ``SALON_ICE_HOSTS=127.0.0.1`` keeps them
    on loopback.
    """
    if addresses is None:
        aioice.ice.get_host_addresses = _original_host_addresses
        return
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def apply_ice_env() -> None:
    """Apply ``$SALON_ICE_HOSTS`` (comma-separated addresses) if it is set."""
    value = os.environ.get(ICE_HOSTS_ENV, "").strip()
    if value:
        restrict_ice_host_addresses([a.strip() for a in value.split(",") if a.strip()])
