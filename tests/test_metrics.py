"""``/metrics`` (Prometheus text): a real session — chat messages, an SFU call between two
real ``salon call`` processes — shows up in the aggregate counters, and nothing in the
exposition names a space, room, member, invite or address of it; who may read it; a
standalone ``salon sfu`` node exposes its own; rate-limit refusals are counted."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from call_helpers import CallProcess, calls, make_town
from conftest import SALON, SalonServer, toml_text, until

pytestmark = pytest.mark.timeout(150)
TOKEN = "metrics-token-for-the-tests-0123"
SECRET = "n0de-secret-for-metrics-0123456789abcdef"


def scrape(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url + "/metrics", headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read().decode()


def value(text: str, sample: str) -> float:
    """The value of one sample line (``name{labels}``), 0 if absent."""
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def labels_used(text: str) -> set[str]:
    return {
        label
        for line in text.splitlines()
        if not line.startswith("#")
        for label in re.findall(r'(\w+)="', line)
    }


async def test_a_real_session_counted_and_never_named(
    make_server: Callable[..., SalonServer], user: Any, tmp_path: Path
) -> None:
    srv = make_server({"metrics": {"enabled": True}})
    town = make_town(srv.url, user, ("Bob",))
    alice, bob = town["Alice"], town["Bob"]
    alice.run("room", "create", town.space, "general", "--kind", "chat")
    for text in ("first", "second", "third"):
        alice.run("send", town.space, "general", text)
    bob.json("read", town.space, "general")
    alice.run("room", "create", town.space, "meeting-hall", "--kind", "conference",
              "--topology", "sfu")  # fmt: skip
    invite = alice.json("invite", "create", town.space)

    status, text = scrape(srv.url)
    assert status == 200
    assert value(text, "salon_chat_messages_total") == 3
    assert value(text, "salon_chat_commit_seconds_count") >= 1
    assert value(text, "salon_websocket_connections_accepted_total") >= 5
    assert value(text, "salon_deliveries_total") >= 1
    assert value(text, 'salon_calls{topology="sfu"}') == 0

    async with calls() as running:
        for name in ("Alice", "Bob"):
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "meeting-hall", stats, 30)
            )
        for call in running:
            await call.wait_for("first video from", 40)
        during = scrape(srv.url)[1]

        def forwarding() -> bool:
            return value(scrape(srv.url)[1], "salon_sfu_packets_forwarded_total") > 50

        await until(forwarding, "packets forwarded by the SFU", timeout=30)
        assert value(during, 'salon_calls{topology="sfu"}') == 1
        assert value(during, 'salon_call_participants{topology="sfu"}') == 2
        assert value(during, "salon_sfu_participants") == 2
        assert value(during, "salon_sessions") >= 2
        assert value(during, "salon_spaces_served") == 1
        for call in running:
            await call.stop()

    after = scrape(srv.url)[1]
    assert value(after, "salon_sfu_packets_received_total") > 50
    assert value(after, "salon_sfu_forwarding_seconds_count") > 50
    assert value(after, 'salon_sfu_forwarding_seconds_bucket{le="+Inf"}') == value(
        after, "salon_sfu_packets_received_total"
    )
    assert value(after, "salon_sfu_nodes") == 1
    assert 'salon_sfu_packets_dropped_total{reason="kid"}' in after

    # Nothing identifies the session: no id, key, name, room, invite or address.
    exposition = during + after + text
    secrets_of_the_session = [
        town.space,
        town.member_key("Alice").hex(),
        town.member_key("Bob").hex(),
        "Alice",
        "Bob",
        "Town hall",
        "meeting-hall",
        "general",
        "127.0.0.1",
        invite["link"].rsplit("/", 1)[-1].split("#")[0],
    ]
    for secret in secrets_of_the_session:
        assert secret not in exposition, secret
    assert labels_used(exposition) <= {"topology", "reason", "kind", "le"}, labels_used(exposition)


def test_who_may_read_metrics(make_server: Callable[..., SalonServer]) -> None:
    off = make_server()
    assert scrape(off.url)[0] == 404  # off unless enabled
    loopback = make_server({"metrics": {"enabled": True}})
    assert scrape(loopback.url)[0] == 200  # a scraper on the host
    # Relayed by a proxy (it says whom for): refused without a token.
    assert scrape(loopback.url, {"X-Forwarded-For": "203.0.113.5"})[0] == 403
    tokened = make_server({"metrics": {"enabled": True, "token": TOKEN}})
    assert scrape(tokened.url)[0] == 403
    assert scrape(tokened.url, {"Authorization": "Bearer wrong-token-of-some-length"})[0] == 403
    status, text = scrape(tokened.url, {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and "salon_chat_messages_total 0.0" in text


async def test_rate_limit_refusals_are_counted(app_server: Any) -> None:
    server = await app_server(
        {"limits": {"websockets_per_address": 1}, "metrics": {"enabled": True}}
    )
    async with aiohttp.ClientSession() as http:
        first = await http.ws_connect(server.ws_url)
        second = await http.ws_connect(server.ws_url)
        message = await second.receive(timeout=10)
        assert b"too many connections" in message.data
        async with http.get(server.url + "/metrics") as response:
            text = await response.text()
        await first.close()
        await second.close()
    assert value(text, 'salon_rate_limited_total{kind="websocket"}') == 1
    assert value(text, "salon_websocket_connections") == 1


async def test_a_standalone_node_exposes_its_metrics(
    make_server: Callable[..., SalonServer], tmp_path: Path
) -> None:
    srv = make_server({"sfu": {"enabled": False, "node_secret": SECRET}})
    config = tmp_path / "node.toml"
    config.write_text(
        toml_text(
            {
                "sfu": {"server_url": srv.url, "node_secret": SECRET, "port": 0},
                "metrics": {"enabled": True},
            }
        )
    )
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        node = subprocess.Popen(
            [str(SALON), "sfu", "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "SALON_ICE_HOSTS": "127.0.0.1"},
        )
    try:
        url = ""

        def listening() -> bool:
            nonlocal url
            found = re.search(r"listening on (http://\S+)", log_path.read_text())
            url = found.group(1) if found else ""
            return bool(found)

        await until(listening, "the node listening", timeout=30)
        await until(lambda: scrape(url)[0] == 200, "the node's /metrics")
        text = scrape(url)[1]
        assert "salon_sfu_packets_forwarded_total 0.0" in text
        assert "salon_sfu_forwarding_seconds_bucket" in text
        assert value(text, "salon_sfu_conferences") == 0
    finally:
        node.send_signal(signal.SIGTERM)
        try:
            node.wait(timeout=10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()
