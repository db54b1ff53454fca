"""Red team on issue 8 points 4/5 (SFU key ids) and 11/12 (resource limits, ids).

Each test plays a hostile server, a malicious participant or an abusive stranger against
what points 4, 5, 11 and 12 built, and checks the honest side holds:

* a server that moves a sender index from one member to another cannot make one member's
  frames show as another's (receivers bind an index to the first member it named);
* no VP8 packetisation trick (descriptor bits, splits, reordering, duplicate sequence
  numbers, timestamps) gets a frame under another publisher's key id past the SFU into a
  receiver's jitter buffer: the SFU's and the receivers' ideas of a frame start agree;
* story uploads kept alive with empty chunks cannot hold the server's staging budget
  forever (everyone else's uploads refused).

What still does not hold is marked ``xfail(strict=True)`` with the reason.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiortc.codecs.vpx import vp8_depayload
from aiortc.rtp import RtpPacket
from test_sfu_keyids import (
    ALICE,
    BOB,
    BOB_KEY,
    BOB_KID,
    HUGE_CTR,
    MALLORY,
    MALLORY_KEY,
    MALLORY_KID,
    VP8,
    harness,
    protected,
    ring_for_alice,
)

from client.call.e2ee_media import MEDIA_SUITE, _peek_kid
from client.call.keys import CallKeys, MediaKeyMessage
from client.call.sframe import ReplayError, SFrameContext, UnknownKeyError, unprotect_frame
from client.call.sfu_topology import SfuTopology
from client.call.topology import Peer
from protocol.chat_wire import UploadStoryChunk
from protocol.errors import RateLimited
from protocol.media_keys import kid_index, media_kid
from rtc.aiortc_adapter import MarkerJitterBuffer
from sfu import rtp
from sfu.forwarder import ForwarderConfig
from spaces.app import CONNECTION_SLACK
from spaces.chat import Chat
from spaces.config import Config, LimitsSection

ELSEWHERE = "127.0.0.2"

ALICE_M, BOB_M, MALLORY_M = b"a" * 32, b"b" * 32, b"m" * 32


# -- a hostile server moving sender indexes -------------------------------------------------------


def test_a_server_cannot_move_a_sender_index_to_another_member() -> None:
    """The server hands out sender indexes. Bob's call state says Mallory is index 3 and
    she sends under kid(3, 0); the next state gives index 3 to Bob (and Mallory a new one).
    Before: every frame under kid(3, 0) — Mallory's key, still held — showed as Bob's."""
    ring = ring_for_alice()
    assert ring.set_index(BOB_M, MALLORY) is False  # refused: 3 already names Mallory
    assert ring.set_index(MALLORY_M, 9) is True  # a member may get a new index (rejoined)
    forged = protected(MALLORY_KID, MALLORY_KEY * 2, "vp8", b"\x11\x02\x00" + bytes(20))
    ctx = ring.context_for(MALLORY)  # the SFU stamps the index the server told it: 3
    assert ctx is not None
    kid, _ = unprotect_frame(ctx, "vp8", forged)
    assert ring.member_of(kid) == MALLORY_M  # her frame is hers, never Bob's
    assert ring.indexes[BOB_M] == BOB


class _Sink:
    def __init__(self) -> None:
        self.links: list[tuple[bytes, str, str]] = []

    def on_link(self, member: bytes, state: str, detail: str = "") -> None:
        self.links.append((member, state, detail))

    def on_send_key(self, epoch: int) -> None:
        pass

    def on_reconnected(self, member: bytes | None, outage: float) -> None:
        pass


async def test_the_sfu_topology_refuses_a_peer_given_another_members_index() -> None:
    keys = CallKeys(ALICE_M)
    sfu = SimpleNamespace(my_index=ALICE, send_frames=SFrameContext(MEDIA_SUITE))
    sink = _Sink()
    ctx: Any = SimpleNamespace(
        sfu=sfu, me=ALICE_M, keys=keys, video=None, audio=None, screen=None, sink=sink
    )
    topology = SfuTopology(ctx)
    topology._closed = True  # no connection attempts: only the key bookkeeping is tested
    try:
        mallory = Peer(MALLORY_M, MALLORY, b"l1", False, "Mallory")
        await topology.set_peers({MALLORY_M: mallory})
        # Next state: Bob is given Mallory's index; so is someone given ours.
        bob = Peer(BOB_M, MALLORY, b"l2", False, "Bob")
        carol = Peer(b"c" * 32, ALICE, b"l3", False, "Carol")
        await topology.set_peers({MALLORY_M: mallory, BOB_M: bob, b"c" * 32: carol})
        refused = {m for m, state, _ in sink.links if state == "refused"}
        assert refused == {BOB_M, b"c" * 32}
        assert topology.ring.member_of(MALLORY_KID) == MALLORY_M
        assert "sender index 3" in next(d for m, s, d in sink.links if m == BOB_M)
    finally:
        await topology.close()


# -- the SFU and the receivers agree on what a frame is ------------------------------------------


def _mallory_stream(rnd: random.Random, packets: int) -> list[bytes]:
    """Mallory's video up-track: her own frames and frames under Bob's key id, split at
    random points, behind random VP8 descriptors, with random sequence numbers (repeats,
    reordering), timestamps and marker bits."""
    frames = []
    for _ in range(64):
        kid, key = rnd.choice([(BOB_KID, BOB_KEY), (MALLORY_KID, MALLORY_KEY)])
        body = rnd.choice([b"\x10\x02\x00\x9d\x01\x2a" + bytes(30), b"\x11\x02\x00" + bytes(30)])
        frames.append(protected(kid, key, "vp8", body, rnd.randrange(1000)))
    out, seq = [], 100
    for _ in range(packets):
        frame = rnd.choice(frames)
        a = 0 if rnd.random() < 0.6 else rnd.randrange(len(frame) + 1)
        chunk = frame[a:] if rnd.random() < 0.5 else frame[a : rnd.randrange(a, len(frame) + 1)]
        b0 = rnd.choice([0x10, 0x00, 0x90, 0x80, 0x11, 0x18, 0x14, 0x30, rnd.randrange(256)])
        desc = bytes([b0])
        if b0 & 0x80:
            x = rnd.choice([0x80, 0xC0, 0xE0, 0xF0, 0x10, 0x20, 0x40, rnd.randrange(256)])
            desc += bytes([x])
            if x & 0x80:
                desc += rnd.choice([b"\x05", b"\x85\x01", b"\x85"])
            if x & 0x40:
                desc += b"\x01"
            if x & 0x30:
                desc += b"\x02"
        seq = (seq + rnd.choice([1, 1, 1, 0, -1, 2, -2])) & 0xFFFF
        ts = rnd.choice([3000, 6000, 9000, 12000])
        out.append(rtp.build_rtp(rnd.random() < 0.5, VP8, seq, ts, 0x1002, desc + chunk))
    return out


def test_no_packetisation_gets_a_frame_under_bobs_key_id_to_a_receiver() -> None:
    """A parser differential between the SFU (which checks the key id of each frame start)
    and the receivers' jitter buffer (which builds frames) would be a bypass: fuzz it."""
    completed = 0
    for seed in range(30):
        fwd, got = harness(ForwarderConfig(stale_after=None, max_video_bps=10**12))
        for packet in _mallory_stream(random.Random(seed), 1200):
            fwd.on_rtp("mallory", packet)
        buf = MarkerJitterBuffer("video")
        for data in got["alice"]:
            p = RtpPacket.parse(data)
            try:
                p._data = vp8_depayload(p.payload)  # type: ignore[attr-defined]
            except ValueError:
                continue  # aiortc drops it too
            _, frame = buf.add(p)
            if frame is None:
                continue
            completed += 1
            kid = _peek_kid("vp8", bytes(frame.data))
            assert kid is None or kid_index(kid) == MALLORY, (seed, kid)
            assert getattr(frame, "source", None) == MALLORY
    assert completed > 500  # the fuzz did reach the receivers' frame assembly


@pytest.mark.xfail(
    strict=True,
    reason="key ids are bound to publishers by indexes the server assigns (to the clients and "
    "to its SFU): a server colluding with a participant can give her Bob's index at the SFU, and "
    "since every receiver holds Bob's symmetric key, her forged frames (and a huge counter) then "
    "pass as Bob's. Needs per-frame sender authentication (signatures), not a contained fix.",
)
def test_a_colluding_server_cannot_let_mallory_block_bobs_frames() -> None:
    fwd, got = harness()
    fwd.remove_participant("mallory")
    fwd.add_participant("mallory", fwd_specs_of_mallory(), (), sender_index=BOB)  # the lie
    ring = ring_for_alice()
    forged = protected(BOB_KID, BOB_KEY * 2, "opus", b"\x78" + bytes(20), HUGE_CTR)
    fwd.on_rtp("mallory", rtp.build_rtp(True, 111, 1, 960, 0x2002, forged))
    for data in got["alice"]:
        p = RtpPacket.parse(data)
        ctx = ring.context_for(p.csrc[0])
        assert ctx is not None
        unprotect_frame(ctx, "opus", p.payload)  # decrypts: it is Bob's key
    genuine = protected(BOB_KID, BOB_KEY * 2, "opus", b"\x78" + bytes(20), 5)
    ctx = ring.context_for(BOB)
    assert ctx is not None
    try:
        unprotect_frame(ctx, "opus", genuine)
    except ReplayError:
        pytest.fail("Bob's genuine frame is refused as a replay")


def fwd_specs_of_mallory() -> list[Any]:
    from sfu.forwarder import UpTrackSpec

    return [UpTrackSpec("audio", 0x2002, frozenset({111}))]


# -- story staging kept alive ----------------------------------------------------------------------


class _Roster:
    def active(self, member: bytes) -> None:
        pass


class _Membership:
    async def roster(self, space_id: str) -> _Roster:
        return _Roster()


class _Staging:
    """Chat's story staging with a small server budget, driven by a test clock."""

    def __init__(self) -> None:
        limits = LimitsSection(
            max_story_bytes=100,
            max_staged_story_bytes_per_space=200,
            max_staged_stories_per_space=2,
            max_staged_story_bytes=800,
            max_staged_stories=16,
        )
        self.now = 1000.0
        membership: Any = _Membership()
        self.chat = Chat(Any, membership, Config(limits=limits), time.time, lambda: self.now)  # type: ignore[arg-type]
        self.ids = iter(range(1, 10**6))
        # Four spaces of Mallory's, two members each, fill the server's 800 bytes.
        self.held = [(f"space{s}", bytes([m]) * 32) for s in range(4) for m in range(2)]

    async def upload(self, space: str, member: bytes, story: str, offset: int, size: int) -> int:
        msg = UploadStoryChunk(next(self.ids), story, offset, b"\x00" * size)
        return (await self.chat.upload_chunk(space, member, msg)).size

    async def fill(self) -> None:
        for space, member in self.held:
            assert await self.upload(space, member, "stuckstory", 0, 100) == 100


async def test_idle_uploads_make_room_when_the_staging_budget_is_full() -> None:
    """Before: room was made (idle uploads dropped) only when an upload *fitted*, the
    condition was inverted; a full budget stayed full until the 10-minute sweep."""
    s = _Staging()
    await s.fill()
    with pytest.raises(RateLimited):
        await s.upload("honest", ALICE_M, "honeststory", 0, 10)
    s.now += 61  # Mallory went quiet a minute ago
    assert await s.upload("honest", ALICE_M, "honeststory", 0, 10) == 10
    # While the budget is not tight, an upload a minute idle is kept (the sweep's 10 min).
    s = _Staging()
    await s.upload("space0", BOB_M, "slowstory", 0, 10)
    s.now += 120
    assert await s.upload("space1", ALICE_M, "otherstory", 0, 10) == 10
    assert await s.upload("space0", BOB_M, "slowstory", 10, 10) == 20


async def test_uploads_kept_alive_cannot_hold_the_servers_staging_budget_forever() -> None:
    """Staging budgets are per space and per server. Four spaces of Mallory's fill the
    server's; she then sends an empty chunk every 50 s to each upload, so none is ever
    idle. Before: every other space's story upload was refused for as long as she liked."""
    s = _Staging()
    await s.fill()
    upload, held = s.upload, s.held
    with pytest.raises(RateLimited):
        await upload("honest", ALICE_M, "honeststory", 0, 10)
    for _ in range(24):  # 20 minutes of keep-alives
        s.now += 50
        for space, member in held:
            assert await upload(space, member, "stuckstory", 100, 0) == 100
    assert await upload("honest", ALICE_M, "honeststory", 0, 10) == 10
    await asyncio.sleep(0)


# -- a removed member's copy of a sender's key, after the leave --------------------------------


@pytest.mark.parametrize("rejoined", [False, True])
async def test_a_senders_key_stops_decrypting_soon_after_a_leave_even_if_its_next_is_withheld(
    rejoined: bool,
) -> None:
    """Carol is removed; every sender moves to a fresh key at once. Before, Alice kept
    accepting Bob's previous key (which Carol holds) until Bob's next key reached her — a
    server that withholds that key let Carol's frames under Bob's key id play as Bob's
    for as long as it liked. Now the previous key goes after the overlap, key or no key."""
    now = [100.0]
    keys = CallKeys(ALICE_M)
    sfu = SimpleNamespace(my_index=ALICE, send_frames=SFrameContext(MEDIA_SUITE))
    ctx: Any = SimpleNamespace(
        sfu=sfu, me=ALICE_M, keys=keys, video=None, audio=None, screen=None, sink=_Sink()
    )
    topology = SfuTopology(ctx, clock=lambda: now[0])
    topology._connecting = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # never connects
    carol = b"c" * 32
    try:
        peers = {
            BOB_M: Peer(BOB_M, BOB, b"l1", False, "Bob"),
            carol: Peer(carol, 7, b"l2", False, "Carol"),
        }
        await topology.set_peers(peers)
        keys.baseline(1)
        assert keys.receive(BOB_M, MediaKeyMessage(0, BOB_KEY * 2, 1))
        ring = topology.ring
        assert BOB_KID in ring.recv_kids
        # Carol is removed (she keeps Bob's key); Bob's fresh key never comes (withheld).
        # With ``rejoined``, the server also says Bob joined again in the same change.
        keys.membership(2, [BOB_M] if rejoined else [], [carol, BOB_M] if rejoined else [carol])
        del peers[carol]
        await topology.set_peers(peers)
        now[0] += 1.0
        ring.tick()
        assert BOB_KID in ring.recv_kids  # the overlap: frames already in flight
        now[0] += 10.0
        ring.tick()
        forged = protected(BOB_KID, BOB_KEY * 2, "opus", b"\x78" + bytes(20), 99)  # Carol's
        bob_ctx = ring.context_for(BOB)
        assert bob_ctx is not None
        with pytest.raises(UnknownKeyError):
            unprotect_frame(bob_ctx, "opus", forged)
        # Bob's next key, when it comes, works (and a later replay of the old one is refused).
        assert keys.receive(BOB_M, MediaKeyMessage(1, MALLORY_KEY * 2, 2))
        assert media_kid(BOB, 1) in ring.recv_kids and BOB_KID not in ring.recv_kids
    finally:
        await topology.close()


# -- half-sent HTTP requests past the per-address cap ------------------------------------------


def test_one_address_cannot_hold_more_tcp_connections_than_its_cap(make_server: Any) -> None:
    """The WebSocket cap counted upgraded connections only: one address could hold any
    number of half-sent HTTP requests (a slowloris; 300 were still open after 20 s with a cap
    of 128) and exhaust the server's file descriptors. Now an address holds at most its
    WebSocket cap plus a few; the rest are closed at once, other addresses unaffected."""
    srv = make_server({"limits": {"websockets_per_address": 4}})
    limit = 4 + CONNECTION_SLACK
    held: list[socket.socket] = []
    try:
        for _ in range(limit + 10):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
            s.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")  # never finishes its headers
            held.append(s)

        def closed(s: socket.socket) -> bool:
            s.settimeout(0.2)
            try:
                return s.recv(1) == b""
            except TimeoutError:
                return False
            except OSError:
                return True

        deadline = time.monotonic() + 10
        while sum(map(closed, held)) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(map(closed, held)) == 10
        # Another address still gets in.
        other = socket.create_connection(("127.0.0.1", srv.port), source_address=(ELSEWHERE, 0))
        other.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        other.settimeout(5)
        assert other.recv(64).startswith(b"HTTP/1.1 200")
        other.close()
    finally:
        for s in held:
            s.close()
    # Closed connections are forgotten: the address can connect again.
    deadline = time.monotonic() + 10
    while True:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        s.settimeout(5)
        try:
            answer = s.recv(64)
        except OSError:
            answer = b""
        s.close()
        if answer.startswith(b"HTTP/1.1 200") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert answer.startswith(b"HTTP/1.1 200")
