"""NAT traversal (STUN/TURN, DESIGN §7c), with a real TURN server (Debian's coturn, the
``coturn`` fixture).

- two ``salon call`` processes forced to relay-only ICE (``--relay-only``: no host or
  server-reflexive candidates) decode each other in a mesh and on the SFU, and coturn's log
  shows the relay allocations under our REST usernames ("<expiry>:<random>", one per
  request, naming neither member nor space);
- credentials made with a wrong secret, or expired, are refused by coturn and the call says
  why (and a direct allocation shows coturn checking the expiry and the HMAC);
- the credentials themselves: coturn's scheme (HMAC-SHA1 of the username under the secret),
  fresh for every request, and ``[ice]`` mistakes are one clear line naming the key.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any

import aioice
import pytest
from call_helpers import CallProcess, Town, amake_town, calls, first_line, make_town

from spaces.config import ConfigError, IceSection, load_config
from spaces.handlers.ice import ice_servers, turn_credentials

pytestmark = pytest.mark.timeout(150)
REST_USERNAME = re.compile(r"^(\d+):([A-Za-z0-9_-]{22})$")


def ice_config(coturn: Any, secret: str | None = None) -> dict[str, Any]:
    return {
        "ice": {"turn_urls": [coturn.url], "turn_secret": secret or coturn.secret},
        "conference": {"mesh_max": 2, "mesh_return_max": 1},
    }


def identities(town: Town) -> list[str]:
    """Every way a member or the space could be named: keys (hex, base64), fingerprints."""
    from protocol.records import fingerprint

    names = [town.space]
    for person in town.people:
        key = town.member_key(person)
        names += [key.hex(), base64.b64encode(key).decode(), fingerprint(key).replace(" ", "")]
        names += [base64.urlsafe_b64encode(key).decode().rstrip("=")]
    return names


def check_usernames(usernames: list[str], town: Town) -> None:
    # One request per participant (a participant may make several relays with its answer).
    assert len(set(usernames)) >= 2, usernames
    now = time.time()
    for username in usernames:
        match = REST_USERNAME.match(username)
        assert match, username
        assert now < int(match.group(1)) <= now + 86_400 + 60
        for name in identities(town):
            assert name not in username and username[11:] not in name


async def relay_call(town: Town, room: str, tmp_path: Path, seconds: float = 12) -> list[Any]:
    async with calls() as running:
        for name in ("Alice", "Bob"):
            stats = tmp_path / f"{name}.json"
            call = await CallProcess.start(
                town[name], town.space, room, stats, seconds, "--relay-only"
            )
            running.append(call)
        for call in running:
            await call.wait_for(r"verification code .* \(2 in the call", 40)
        return [await call.finish(60) for call in running]


@pytest.mark.parametrize("topology", ["mesh", "sfu"])
async def test_relay_only_call_goes_through_coturn(
    topology: str, coturn: Any, make_server: Any, user: Any, tmp_path: Path
) -> None:
    server = make_server(ice_config(coturn))
    town = make_town(server.url, user, ("Bob",))
    town["Alice"].run(
        "room", "create", town.space, "desk", "--kind", "conference", "--topology", topology
    )
    results = await relay_call(town, "desk", tmp_path)
    for other, result in zip(("Bob", "Alice"), results, strict=True):
        assert result.returncode == 0, (result.stdout, result.stderr)
        assert result.stats["topology"] == topology
        peer = result.peer(other)
        assert peer["video_frames_decoded"] > 10 and peer["audio_frames_decoded"] > 30, peer
        assert peer["decrypt_failures"] == 0, peer
    log = coturn.log()
    # Each relay-only client allocated a relay, and the peers' media went through them.
    check_usernames(coturn.allocated_usernames(), town)
    assert "ALLOCATE processed, success" in log
    assert "CREATE_PERMISSION processed, success" in log or "CHANNEL_BIND processed" in log


@pytest.mark.parametrize("fault", ["wrong-secret", "expired"])
async def test_refused_credentials_fail_the_call_with_a_clear_message(
    fault: str, coturn: Any, app_server: Any, user: Any, tmp_path: Path, monkeypatch: Any
) -> None:
    """A server whose secret is not coturn's, or whose credentials have expired (its clock
    set back by two lifetimes): coturn refuses them, and the call says why."""
    import spaces.handlers.ice

    if fault == "wrong-secret":
        srv = await app_server(ice_config(coturn, secret="not-the-secret-coturn-holds"))
    else:
        srv = await app_server(ice_config(coturn))
        monkeypatch.setattr(spaces.handlers.ice, "wall_clock", lambda: time.time() - 2 * 86_400)
    town = await amake_town(srv.url, user, ("Bob",))
    await town["Alice"].arun("room", "create", town.space, "desk", "--kind", "conference")
    async with calls() as running:
        for name in ("Alice", "Bob"):
            stats = tmp_path / f"{name}.json"
            running.append(
                await CallProcess.start(town[name], town.space, "desk", stats, 8, "--relay-only")
            )
        # The offerer finds it has no relay candidate to offer (the answerer waits for it).
        line = await first_line(running, r"no connection to (Bob|Alice)", 40)
        assert "the TURN server refused our credentials" in line, line
        results = [await call.finish(60) for call in running]
    assert results[0].peer("Bob")["video_frames_decoded"] == 0
    assert "401: Unauthorized" in coturn.log() and not coturn.allocated_usernames()


async def allocate(coturn: Any, username: str, password: str) -> list[str]:
    conn = aioice.Connection(
        ice_controlling=True,
        turn_server=("127.0.0.1", coturn.port),
        turn_username=username,
        turn_password=password,
        transport_policy=aioice.TransportPolicy.RELAY,
    )
    try:
        await asyncio.wait_for(conn.gather_candidates(), 20)
        return [c.type for c in conn.local_candidates]
    finally:
        await conn.close()


async def test_coturn_checks_expiry_and_secret(coturn: Any) -> None:
    now = time.time()
    good = turn_credentials(coturn.secret, 600, now)
    assert await allocate(coturn, good[0], good[1]) == ["relay"]
    expired = turn_credentials(coturn.secret, 600, now - 700)  # expired 100 s ago
    assert await allocate(coturn, expired[0], expired[1]) == []
    forged = turn_credentials("someone-elses-secret-123", 600, now)
    assert await allocate(coturn, forged[0], forged[1]) == []
    assert coturn.allocated_usernames() == [good[0]]


def test_credentials_are_cotruns_scheme_and_fresh_per_request() -> None:
    ice = IceSection(
        stun_urls=["stun:stun.example:3478"],
        turn_urls=["turn:turn.example:3478"],
        turn_secret="a-long-enough-secret",
        turn_ttl_seconds=600,
    )
    first, second = ice_servers(ice, 1, now=1_000_000), ice_servers(ice, 2, now=1_000_000)
    assert first.servers[0].urls == ["stun:stun.example:3478"] and not first.servers[0].username
    assert first.expires_at == 1_000_600
    turn_a, turn_b = first.servers[1], second.servers[1]
    for turn in (turn_a, turn_b):
        assert REST_USERNAME.match(turn.username) and turn.username.startswith("1000600:")
        mac = hmac.new(b"a-long-enough-secret", turn.username.encode(), hashlib.sha1).digest()
        assert base64.b64decode(turn.credential) == mac
    assert turn_a.username != turn_b.username and turn_a.credential != turn_b.credential
    # No TURN configured: STUN only, nothing expires.
    stun_only = ice_servers(IceSection(stun_urls=["stun:s.example"]), 3)
    assert [s.username for s in stun_only.servers] == [""] and stun_only.expires_at == 0


@pytest.mark.parametrize(
    ("ice", "key"),
    [
        ('turn_urls = ["turn:t.example"]', "ice.turn_secret"),
        ('turn_secret = "0123456789abcdef"', "ice.turn_urls"),
        ('turn_urls = ["turn:t.example"]\nturn_secret = "short"', "ice.turn_secret"),
        ('stun_urls = ["http://t.example"]', "ice.stun_urls"),
        ('turn_urls = ["stun:t.example"]\nturn_secret = "0123456789abcdef"', "ice.turn_urls"),
        ("turn_ttl_seconds = 5", "ice.turn_ttl_seconds"),
        ('stun_urls = ["stun:s.example"]\nrelay_only = true', "ice.relay_only"),
    ],
)
def test_ice_config_mistakes_name_the_key(tmp_path: Path, ice: str, key: str) -> None:
    path = tmp_path / "salon.toml"
    path.write_text(f"[ice]\n{ice}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert key in message and "\n" not in message, message


def test_relay_only_policy_and_its_failure_message() -> None:
    from client.call.ice import IceConfig, IceFailure

    ice = IceConfig(relay_only=True)
    config = ice.configuration(max_bundle=True)
    # An explicit empty list: aiortc's default for None is a public STUN server.
    assert config.iceServers == [] and config.iceTransportPolicy.value == "relay"
    with pytest.raises(IceFailure, match="TURN server refused"):
        ice.check_gathered("v=0\r\na=candidate:1 1 udp 1 127.0.0.1 5000 typ host\r\n")
    ice.check_gathered("a=candidate:1 1 udp 1 127.0.0.1 5000 typ relay raddr 0.0.0.0 rport 9")


def test_relay_only_against_a_server_without_turn_is_one_clear_error(
    make_server: Any, user: Any
) -> None:
    server = make_server()
    town = make_town(server.url, user, ())
    town["Alice"].run("room", "create", town.space, "desk", "--kind", "conference")
    line = town["Alice"].fail(
        "call", town.space, "desk", "--duration", "3", "--relay-only", "--video", "none"
    )
    assert "--relay-only needs a TURN server" in line, line


def test_sfu_public_address_replaces_host_candidates() -> None:
    from sfu.public_address import advertise_public_address

    sdp = "\r\n".join(
        [
            "v=0",
            "c=IN IP4 10.0.0.5",
            "a=candidate:a 1 udp 2130706431 10.0.0.5 40000 typ host",
            "a=candidate:b 1 udp 2130706431 fd00::5 40002 typ host",
            "a=candidate:c 1 udp 16777215 192.0.2.9 40004 typ relay raddr 0.0.0.0 rport 9",
            "",
        ]
    )
    out = advertise_public_address(sdp, "203.0.113.7").split("\r\n")
    assert out[1] == "c=IN IP4 203.0.113.7"
    assert out[2] == "a=candidate:a 1 udp 2130706431 203.0.113.7 40000 typ host"
    assert out[3:5] == sdp.split("\r\n")[3:5]  # other family, other types: unchanged


def test_sfu_public_address_must_be_an_address(tmp_path: Path) -> None:
    path = tmp_path / "salon.toml"
    path.write_text('[sfu]\npublic_address = "sfu.example.org"\n')
    with pytest.raises(ConfigError, match=r"sfu\.public_address"):
        load_config(path)


def test_the_client_asks_again_before_the_credentials_expire() -> None:
    from client.call.ice import IceConfig
    from protocol.ice_wire import IceServer, IceServers

    now = [1000.0]
    ice = IceConfig(clock=lambda: now[0])
    ice.update(IceServers(1, [IceServer(["turn:t.example"], "2000:x", "c")], expires_at=2000))
    assert ice.has_turn and not ice.stale()
    now[0] = 1890.0
    assert not ice.stale()  # more than a tenth of the lifetime left
    now[0] = 1901.0
    assert ice.stale()
    ice.update(IceServers(2, [], expires_at=0))  # TURN gone: nothing to renew
    assert not ice.stale() and not ice.has_turn


def test_relay_calls_are_the_servers_choice_and_stay_on() -> None:
    """``[ice] relay_only`` reaches clients in the answer; a client turns relay-only on when
    told, and a later answer cannot turn it off (nor the server undo a local --relay-only)."""
    from client.call.ice import IceConfig
    from protocol.ice_wire import IceServer, IceServers

    ice = IceSection(turn_urls=["turn:t.example"], turn_secret="a-long-enough-secret")
    assert ice_servers(ice, 1).relay_only is False
    relay = IceSection(
        turn_urls=["turn:t.example"], turn_secret="a-long-enough-secret", relay_only=True
    )
    assert ice_servers(relay, 1).relay_only is True
    turn = [IceServer(["turn:t.example"], "2000:x", "c")]
    client = IceConfig()
    client.update(IceServers(1, turn, 2000))
    assert client.configuration().iceTransportPolicy.value == "all"
    client.update(IceServers(2, turn, 2000, relay_only=True))
    assert client.configuration().iceTransportPolicy.value == "relay"
    client.update(IceServers(3, turn, 2000))
    assert client.relay_only
    local = IceConfig(relay_only=True)
    local.update(IceServers(1, turn, 2000))
    assert local.relay_only


@pytest.mark.usefixtures("loopback_ice")
async def test_an_sfu_node_advertises_its_public_address() -> None:
    from client.call.e2ee_media import MEDIA_SUITE, SfuSession
    from client.call.sframe import SFrameContext
    from sfu.node import SfuConfig, SfuNode

    session = SfuSession(recv_ctx=SFrameContext(MEDIA_SUITE), video_slots=1, audio_slots=1)
    node = SfuNode(SfuConfig(public_address="203.0.113.7"))
    try:
        answer = await node.join("conference", "p1", await session.create_offer())
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate:")]
        assert candidates and all(" 203.0.113.7 " in line for line in candidates), candidates
        assert "127.0.0.1" not in answer  # the bound (private) address is not offered
    finally:
        await session.close()
        await node.close()
