"""Fail loudly if the pinned aiortc/aioice moves a private name the adapter relies on."""

from __future__ import annotations

import inspect

import aioice.ice
import pytest

from sfu import aiortc_adapter


def test_aioice_gathers_host_addresses_through_module_function() -> None:
    source = inspect.getsource(aioice.ice.Connection.gather_candidates)
    assert "get_host_addresses(" in source
    params = list(inspect.signature(aiortc_adapter._original_host_addresses).parameters)
    assert params == ["use_ipv4", "use_ipv6"]


@pytest.mark.asyncio
async def test_restricted_ice_gathers_only_loopback() -> None:
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    try:
        conn = aioice.ice.Connection(ice_controlling=True, components=1)
        await conn.gather_candidates()
        hosts = {c.host for c in conn.local_candidates}
        await conn.close()
    finally:
        aiortc_adapter.restrict_ice_host_addresses(None)
    assert hosts == {"127.0.0.1"}
