"""Config validation: ``salon serve`` with a bad config exits non-zero with one error line
naming the key (no traceback); trusted proxies' X-Forwarded-For keys the per-address limits;
no version in the ``Server`` header."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import SALON, assert_one_line_error, toml_text

from spaces.limits import client_address, trusted_networks

BAD_CONFIGS: list[tuple[dict[str, Any], str]] = [
    ({"server": {"log_level": "loud"}}, "server.log_level"),
    ({"server": {"port": 70000}}, "server.port"),
    ({"server": {"public_url": "salon.example"}}, "server.public_url"),
    ({"server": {"public_url": "https://salon.example/app?x=1"}}, "server.public_url"),
    ({"server": {"trusted_proxies": ["10.0.0.300"]}}, "server.trusted_proxies"),
    ({"server": {"trusted_proxies": ["127.0.0.1"]}}, "server.public_url"),
    ({"sfu": {"server_url": "ftp://x"}}, "sfu.server_url"),
    ({"sfu": {"port": -1}}, "sfu.port"),
    ({"limits": {"requests_per_second": 0}}, "limits.requests_per_second"),
    ({"limits": {"max_message_bytes": -5}}, "limits.max_message_bytes"),
    ({"conference": {"max_participants": 1}}, "conference.max_participants"),
    ({"metrics": {"token": "short"}}, "metrics.token"),
    ({"metrics": {"enabled": "yes"}}, "metrics.enabled"),
    ({"ice": {"stun_urls": ["http://stun"]}}, "ice.stun_urls"),
]


@pytest.mark.parametrize(("config", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_bad_config_is_one_error_line_naming_the_key(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    path = tmp_path / "salon.toml"
    path.write_text(toml_text(config), encoding="utf-8")
    result = subprocess.run(
        [str(SALON), "serve", "--config", str(path), "--port", "0", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    line = assert_one_line_error(result)
    assert key in line, line
    assert "listening on" not in result.stdout


def test_command_line_overrides_are_checked_too(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(SALON), "serve", "--port", "70000", "--data", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert "server.port" in assert_one_line_error(result)


def test_a_good_config_with_proxies_loads(tmp_path: Path) -> None:
    from spaces.config import load_config

    path = tmp_path / "salon.toml"
    path.write_text(
        toml_text(
            {
                "server": {
                    "public_url": "https://salon.example",
                    "trusted_proxies": ["127.0.0.1", "10.0.0.0/8", "::1"],
                    "log_level": "WARNING",
                },
                "metrics": {"enabled": True, "token": "x" * 32},
            }
        ),
        encoding="utf-8",
    )
    config = load_config(path)
    assert config.server.trusted_proxies == ["127.0.0.1", "10.0.0.0/8", "::1"]


def test_forwarded_for_is_believed_from_trusted_proxies_only() -> None:
    trusted = trusted_networks(["127.0.0.1", "10.0.0.0/8"])
    # Not a proxy: the header is the client's own claim, ignored.
    assert client_address("203.0.113.9", "198.51.100.1", trusted) == "203.0.113.9"
    # A trusted proxy: the rightmost untrusted hop; what the client prepended proves nothing.
    assert client_address("127.0.0.1", "1.2.3.4, 198.51.100.7", trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", "198.51.100.7, 10.1.2.3", trusted) == "198.51.100.7"
    assert client_address("127.0.0.1", None, trusted) == "127.0.0.1"
    assert client_address("::ffff:127.0.0.1", "198.51.100.8", trusted) == "198.51.100.8"
    assert client_address("127.0.0.1", "198.51.100.7", ()) == "127.0.0.1"


async def _open_ws(url: str, forwarded_for: str | None) -> tuple[Any, Any]:
    session = aiohttp.ClientSession()
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    ws = await session.ws_connect(url, headers=headers)
    return session, ws


async def _refused(ws: Any) -> bool:
    """The first frame: a challenge (accepted) or an error (refused for the address)."""
    message = await asyncio.wait_for(ws.receive(), 10)
    return b"too many connections" in message.data


async def test_rate_limits_count_the_forwarded_client_behind_a_trusted_proxy(
    app_server: Any,
) -> None:
    # The test client is 127.0.0.1, here the trusted proxy; each "client" may hold 1 socket.
    server = await app_server(
        {
            "server": {"public_url": "https://salon.example", "trusted_proxies": ["127.0.0.1"]},
            "limits": {"websockets_per_address": 1},
        }
    )
    opened = []
    try:
        for client in ("198.51.100.1", "198.51.100.2"):
            opened.append(await _open_ws(server.ws_url, client))
            assert not await _refused(opened[-1][1]), client
        opened.append(await _open_ws(server.ws_url, "198.51.100.1"))
        assert await _refused(opened[-1][1]), "the same forwarded client twice"
    finally:
        for session, ws in opened:
            await ws.close()
            await session.close()


async def test_untrusted_peer_cannot_spoof_forwarded_for(app_server: Any) -> None:
    server = await app_server({"limits": {"websockets_per_address": 1}})
    opened = []
    try:
        opened.append(await _open_ws(server.ws_url, "198.51.100.1"))
        assert not await _refused(opened[-1][1])
        opened.append(await _open_ws(server.ws_url, "198.51.100.2"))
        assert await _refused(opened[-1][1]), "a forged X-Forwarded-For escaped the limit"
    finally:
        for session, ws in opened:
            await ws.close()
            await session.close()


async def test_server_header_names_no_version(app_server: Any) -> None:
    server = await app_server()
    async with aiohttp.ClientSession() as session, session.get(server.url + "/health") as r:
        assert r.headers["Server"] == "salon"
