"""What one address on an anonymous internet can make the server hold (issue 8, point 11), and
ids that a command line never reads as an option (point 12).

Each test plays the attacker against the real server in the test's event loop: raw WebSockets
from one address, a client creating spaces in a loop, members of one space staging story
uploads they never post, a modified client choosing ids that begin with ``-``. The server
refuses beyond each limit with a stable code and a clear message (one ``error:`` line in the
CLI), and everyone else — another address, another space — is unaffected.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from call_helpers import amake_town
from chat_support import jpeg_with_gps
from conftest import AppServer, SalonUser, until

from client.core.errors import ServerError
from protocol.chat_wire import StoryChunkStored, UploadStoryChunk
from protocol.errors import ErrorCode, NotFound
from protocol.records import InviteCreate, Join, Record, RoomCreate
from protocol.wire import (
    Append,
    Appended,
    Authenticate,
    Challenge,
    CreateSpace,
    Error,
    GetRecords,
    JoinSpace,
    OpenInvite,
    encoder,
    server_decoder,
)
from spaces.hub import Subscriber
from spaces.membership import Membership
from spaces.services import ATTEMPTS_BY_INVITE, MEMBERSHIP

pytestmark = pytest.mark.timeout(180)

ELSEWHERE = "127.0.0.2"  # another client address (all of 127/8 is this machine on Linux)


# -- raw WebSockets ------------------------------------------------------------------------------


class Raw:
    """A bare WebSocket from a chosen source address; ``first`` is what the server said first."""

    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.first: Any = None

    async def receive(self, timeout: float = 5.0) -> Any:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        if msg.type != aiohttp.WSMsgType.BINARY:
            return msg.type
        return server_decoder.decode(msg.data)

    async def close(self) -> None:
        await self.ws.close()
        await self.http.close()


async def raw(srv: AppServer, source: str = "127.0.0.1") -> Raw:
    http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(source, 0)))
    client = Raw(http, await http.ws_connect(srv.ws_url))
    client.first = await client.receive()
    return client


@contextlib.contextmanager
def from_address(source: str) -> Iterator[None]:
    """Run the real client library (in this process) from another source address."""
    original = aiohttp.ClientSession

    def session(*args: Any, **kw: Any) -> aiohttp.ClientSession:
        return original(*args, connector=aiohttp.TCPConnector(local_addr=(source, 0)), **kw)

    aiohttp.ClientSession = session  # type: ignore[misc]
    try:
        yield
    finally:
        aiohttp.ClientSession = original  # type: ignore[misc]


async def test_websockets_per_address_are_capped_and_others_unaffected(
    app_server: Any, user: Callable[..., SalonUser]
) -> None:
    srv = await app_server({"limits": {"websockets_per_address": 3}})
    held = [await raw(srv) for _ in range(3)]
    try:
        assert all(isinstance(c.first, Challenge) for c in held)
        # The fourth from this address is told why, then closed.
        refused = await raw(srv)
        assert isinstance(refused.first, Error), refused.first
        assert refused.first.code == ErrorCode.RATE_LIMITED
        assert "too many connections from your address (at most 3)" in refused.first.message
        assert msgspec.msgpack.decode(encoder.encode(refused.first))["code"] == "rate_limited"
        assert await refused.receive() in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        await refused.close()
        # The CLI says so in one line.
        line = await user("alice").afail("space", "create", "Mine", "--server", srv.url)
        assert "too many connections from your address" in line
        # Another address is not affected, nor are the connections already held.
        other = await raw(srv, ELSEWHERE)
        assert isinstance(other.first, Challenge)
        await other.close()
        for n, client in enumerate(held):
            await client.ws.send_bytes(encoder.encode(GetRecords(n)))
            reply = await client.receive()
            assert isinstance(reply, Error) and reply.code == ErrorCode.UNAUTHENTICATED
        # A closed connection frees its place.
        await held.pop().close()

        async def admitted() -> bool:
            client = await raw(srv)
            held.append(client)
            if isinstance(client.first, Challenge):
                return True
            await held.pop().close()
            return False

        await until(admitted, "a place freed by a closed connection")
    finally:
        for client in held:
            await client.close()
    from spaces.services import SOCKETS_BY_ADDRESS

    sockets = srv.app[SOCKETS_BY_ADDRESS]

    async def forgotten() -> bool:
        return len(sockets) == 0

    await until(forgotten, "every address forgotten once its sockets closed")


async def test_space_creation_is_rate_limited_per_address(
    app_server: Any, user: Callable[..., SalonUser]
) -> None:
    from client.core.space import create_space

    token = "t" * 40
    srv = await app_server(
        {
            "limits": {"space_creations_per_hour_per_address": 2},
            "spaces": {"allow_create": True, "creation_tokens": [token]},
        }
    )
    alice = user("alice")
    for n in range(2):
        await alice.arun("space", "create", f"Space {n}", "--server", srv.url)
    line = await alice.afail("space", "create", "One too many", "--server", srv.url)
    assert "too many new spaces from this address (at most 2 an hour)" in line
    assert len(alice.keystore().load().memberships) == 2
    # A creation token's holder is trusted by the operator: not limited.
    await alice.arun(
        "space", "create", "Sanctioned", "--server", srv.url, "--creation-token", token
    )
    # Another address still creates spaces.
    bob = user("bob")
    with from_address(ELSEWHERE):
        membership, _ = await create_space(bob.keystore(), srv.url, "Elsewhere", "Bob", 5, 3600)
    assert membership.name == "Elsewhere"


# -- story staging -------------------------------------------------------------------------------

STAGING = {
    "max_story_bytes": 100_000,
    "max_staged_story_bytes_per_space": 150_000,
    "max_staged_stories_per_space": 2,
    "max_staged_story_bytes": 1_000_000,
    "max_staged_stories": 16,
}


@contextlib.asynccontextmanager
async def member_session(person: SalonUser) -> AsyncIterator[Any]:
    """The person's own client, in this process, for sending hand-made requests."""
    from client.core.space import open_space

    keystore = person.keystore()
    async with open_space(keystore, keystore.load().memberships[0]) as session:
        yield session


async def upload(session: Any, story_id: str, offset: int, size: int) -> StoryChunkStored:
    request = UploadStoryChunk(session.conn.next_id(), story_id, offset, b"\x00" * size)
    stored: StoryChunkStored = await session.conn.request(request, StoryChunkStored)
    return stored


async def test_story_staging_is_bounded_per_space(
    app_server: Any, user: Callable[..., SalonUser], tmp_path: Path
) -> None:
    srv = await app_server({"limits": STAGING})
    town = await amake_town(srv.url, user, ("Bob", "Carol"))
    await town["Alice"].arun("room", "create", town.space, "news", "--kind", "channel")
    erin = user("erin")
    good = await erin.ajson("space", "create", "Good", "--server", srv.url)
    await erin.arun("room", "create", good["space_id"], "news", "--kind", "channel")
    image = tmp_path / "photo.jpg"
    image.write_bytes(jpeg_with_gps(64, 48))

    # Bob and Carol stage uploads they never post.
    async with member_session(town["Bob"]) as bob, member_session(town["Carol"]) as carol:
        assert (await upload(bob, "bobstory1", 0, 60_000)).size == 60_000
        assert (await upload(carol, "carolstory", 0, 60_000)).size == 60_000
        # Bytes: the space's 150,000 would be passed; Bob's upload is dropped.
        with pytest.raises(ServerError) as refused:
            await upload(bob, "bobstory1", 60_000, 40_000)
        assert refused.value.code == ErrorCode.RATE_LIMITED
        assert "too many story bytes being uploaded in this space" in str(refused.value)
        with pytest.raises(ServerError) as gone:
            await upload(bob, "bobstory1", 60_000, 1)
        assert gone.value.code == ErrorCode.CONFLICT
        # One story is still at most max_story_bytes.
        with pytest.raises(ServerError) as large:
            await upload(carol, "carolstory", 60_000, 50_000)
        assert large.value.code == ErrorCode.TOO_LARGE
        assert (await upload(carol, "carolstory", 0, 60_000)).size == 60_000
        assert (await upload(bob, "bobstory2", 0, 10_000)).size == 10_000

        # Uploads: two are in progress in this space; a third member's is refused, in one line.
        line = await town["Alice"].afail("story", "post", town.space, "news", str(image))
        assert "too many story uploads in progress in this space" in line

        # Another space is not affected.
        await erin.arun("story", "post", good["space_id"], "news", str(image))
        stories = await erin.ajson("story", "list", good["space_id"], "news")
        assert len(stories) == 1


# -- ids never begin with '-' ---------------------------------------------------------------------


async def test_ids_beginning_with_a_dash_are_refused(
    app_server: Any, user: Callable[..., SalonUser]
) -> None:
    """A modified client (skipping its own roster checks) signs records with ids that begin
    with '-', which would read as options in every other member's command line: the server
    refuses each, and nothing is added."""
    from client.core import crypto
    from client.core.space import chain

    srv = await app_server()
    town = await amake_town(srv.url, user, ())
    async with member_session(town["Alice"]) as alice:
        roster = alice.verified
        head = roster.head_seq
        name_box = crypto.secretbox(alice.space_key(roster.epoch), b"lobby")
        bad_bodies = {
            "bad room id": RoomCreate("-evilroom1234567", "chat", roster.epoch, name_box),
            "bad invite key or id": InviteCreate(
                "-evilinvite12345",
                crypto.public_signing_key(crypto.random_key()),
                "member",
                int(time.time()) + 3600,
                5,
            ),
        }
        for reason, body in bad_bodies.items():
            records = chain(alice.m, alice.space_id, roster, [body])
            with pytest.raises(ServerError) as refused:
                await alice.conn.request(Append(alice.conn.next_id(), records), Appended)
            assert refused.value.code == ErrorCode.INVALID_MESSAGE
            assert reason in str(refused.value)
        with pytest.raises(ServerError) as story:
            await upload(alice, "-evilstory12345", 0, 10)
        assert story.value.code == ErrorCode.INVALID_MESSAGE
        await alice.sync()
        assert alice.verified.head_seq == head


async def test_cli_takes_values_beginning_with_a_dash_after_double_dash(
    app_server: Any, user: Callable[..., SalonUser], tmp_path: Path
) -> None:
    srv = await app_server()
    town = await amake_town(srv.url, user, ())
    alice = town["Alice"]
    await alice.arun("room", "create", "--kind", "chat", town.space, "--", "-dashed")
    await alice.arun("send", town.space, "--", "-dashed", "-hello")
    shown = await alice.arun("read", "--json", town.space, "--", "-dashed")
    read = json.loads(shown.stdout)
    assert [m["text"] for m in read] == ["-hello"]
    # An id after '--' reaches the server (no such story), not the option parser.
    out = str(tmp_path / "story.jpg")
    line = await alice.afail("story", "get", town.space, "--out", out, "--", "-abcdefgh1234567")
    assert "no story '-abcdefgh1234567' in this space" in line
    # Without '--', the error says how.
    line = await alice.afail("send", town.space, "-dashed", "hi")
    assert "goes after '--'" in line


# -- other state a client could grow --------------------------------------------------------------


async def test_junk_ids_from_strangers_leave_no_state(app_server: Any) -> None:
    """Unauthenticated requests naming spaces and invites that do not exist (or that no
    client could make, 100 KB long) cost a lookup and leave nothing behind."""
    srv = await app_server({"limits": {"join_attempts_per_minute_per_address": 1000}})
    membership: Membership = srv.app[MEMBERSHIP]
    client = await raw(srv)
    try:
        for n in range(20):
            space = f"{n:024d}"
            await client.ws.send_bytes(encoder.encode(Authenticate(n, space, b"k" * 32, b"s")))
            assert (await client.receive()).code == ErrorCode.NOT_FOUND
        for n in range(20):
            junk = f"{n}" + "x" * 100_000
            join_record = Record("x" * 24, 1, bytes(32), b"k" * 32, 0, Join(junk, b"b" * 32, b"s"))
            message = (
                OpenInvite(n, junk, b"s") if n % 2 else JoinSpace(n, junk, b"s", join_record, b"s")
            )
            await client.ws.send_bytes(encoder.encode(message))
            assert (await client.receive()).code == ErrorCode.NOT_FOUND
    finally:
        await client.close()
    assert membership._locks == {}
    assert len(srv.app[ATTEMPTS_BY_INVITE]) == 0


def test_a_connection_that_reads_nothing_is_dropped_at_its_byte_budget() -> None:
    async def scenario() -> None:
        slow = Subscriber("space", b"m" * 32, max_bytes=300_000)
        assert slow.push(b"x" * 1_000_000)  # an empty queue takes any one frame
        assert await slow.pop() == b"x" * 1_000_000 and slow.queued_bytes == 0
        chunk = b"y" * 128 * 1024
        assert slow.push(chunk) and slow.push(chunk)
        assert not slow.push(chunk) and slow.closed  # 384 KiB would be queued

    asyncio.run(scenario())


def test_concurrency_limiter_and_address_keys() -> None:
    from spaces.limits import ConcurrencyLimiter, address_key

    sockets = ConcurrencyLimiter(2)
    assert sockets.acquire("a") and sockets.acquire("a") and not sockets.acquire("a")
    assert sockets.acquire("b")
    sockets.release("a")
    assert sockets.acquire("a")
    for key in ("a", "a", "b"):
        sockets.release(key)
    assert len(sockets) == 0
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("") == ""


async def test_a_create_space_with_a_bad_challenge_signature_stores_nothing(
    app_server: Any,
) -> None:
    """The founder's challenge signature is checked before the space is stored: a client
    that cannot sign the challenge leaves no space behind (it used to be checked after)."""
    from nacl.signing import SigningKey

    from protocol.records import Genesis, Record, derive_space_id, signing_bytes

    srv = await app_server()
    membership: Membership = srv.app[MEMBERSHIP]
    founder = SigningKey.generate()
    genesis = Genesis(b"b" * 32, b"n" * 16)
    space_id = derive_space_id(bytes(founder.verify_key), genesis)
    unsigned = Record(space_id, 0, bytes(32), bytes(founder.verify_key), int(time.time()), genesis)
    record = msgspec.structs.replace(unsigned, sig=founder.sign(signing_bytes(unsigned)).signature)
    client = await raw(srv)
    try:
        await client.ws.send_bytes(encoder.encode(CreateSpace(1, [record], [], b"\0" * 64, "")))
        assert (await client.receive()).code == ErrorCode.UNAUTHENTICATED
    finally:
        await client.close()
    with pytest.raises(NotFound):
        await membership.roster(space_id)
