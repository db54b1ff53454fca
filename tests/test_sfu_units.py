"""The SFU integration's pure parts: topology choice, the node control channel, node
assignment, the media key ring and what it means for removed and new participants."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from client.call.e2ee_media import MEDIA_SUITE
from client.call.keys import CallKeys, media_kid
from client.call.sframe import SFrameContext, SFrameError, UnknownKeyError, decrypt
from client.call.sfu_topology import OVERLAP_SECONDS, SUPERSEDED_MAX_SECONDS, MediaKeyRing
from client.core import crypto
from protocol.conference_rules import topology_for
from protocol.conference_wire import CallAction, action_signing_bytes
from protocol.errors import CallFull
from protocol.records import RoomCreate
from sfu import control
from spaces.conference import Conference
from spaces.config import Config, ConfigError, config_problem, load_config
from spaces.sfu_registry import SfuRegistry, SfuUnavailable

SPACE, ROOM, NOW = "space0123456789", "room0123456789", 1_800_000_000_000


# -- which topology carries a call -------------------------------------------------------


def test_topology_for_with_an_sfu() -> None:
    assert topology_for("auto", 4, 4, True) == "mesh"
    assert topology_for("auto", 5, 4, True) == "sfu"
    # Hysteresis: on the SFU, an auto call stays there until it is down to mesh_return_max.
    assert topology_for("auto", 4, 4, True, current="sfu", mesh_return_max=3) == "sfu"
    assert topology_for("auto", 3, 4, True, current="sfu", mesh_return_max=3) == "mesh"
    assert topology_for("auto", 4, 4, True, current="mesh", mesh_return_max=3) == "mesh"
    # "sfu" and stage rooms always use it; "mesh" rooms never do, and fill up.
    assert topology_for("sfu", 1, 4, True) == "sfu"
    assert topology_for("auto", 2, 4, True, stage=True) == "sfu"
    assert topology_for("mesh", 5, 4, True) is None
    # Without one, every room is a mesh that fills up at mesh_max.
    assert topology_for("sfu", 2, 4, False, stage=True) == "mesh"
    assert topology_for("auto", 5, 4, False) is None


class Person:
    def __init__(self) -> None:
        self.seed = crypto.random_key()
        self.key = crypto.public_signing_key(self.seed)

    def act(self, call_id: str, name: str, target: bytes = b"") -> CallAction:
        unsigned = CallAction(
            SPACE,
            ROOM,
            call_id,
            self.key,
            name,
            target,
            NOW,
            secrets.token_bytes(16),  # type: ignore[arg-type]
        )
        signature = crypto.sign(self.seed, action_signing_bytes(unsigned))
        return msgspec.structs.replace(unsigned, sig=signature)


def make_conference(topology: str, sfu: bool, stage: bool = False) -> Conference:
    spec = RoomCreate(ROOM, "conference", 0, b"", False, stage, topology)  # type: ignore[arg-type]
    ids = (f"call{n:012d}" for n in itertools.count())
    return Conference(
        SPACE,
        spec,
        mesh_max=3,
        mesh_return_max=1,
        max_participants=20,
        sfu_available=sfu,
        make_call_id=lambda: next(ids),
    )


def test_an_auto_call_moves_to_the_sfu_and_back_with_hysteresis() -> None:
    conf = make_conference("auto", sfu=True)
    people = [Person() for _ in range(4)]
    roles = {p.key: "member" for p in people}
    seen = []
    for person in people:
        conf.join(person.act(conf.call_id, "join", person.key), roles, NOW)  # type: ignore[arg-type]
        seen.append(conf.topology)
    assert seen == ["mesh", "mesh", "mesh", "sfu"]
    version = conf.version
    for person in people[:3]:
        conf.leave(person.key)
        seen.append(conf.topology)
    assert seen[4:] == ["sfu", "sfu", "mesh"]  # back at mesh_return_max = 1
    assert conf.version > version
    # A call that is over starts small again; an "sfu" room starts on the SFU.
    conf.leave(people[3].key)
    assert conf.topology == "mesh"
    assert make_conference("sfu", sfu=True).topology == "sfu"
    assert make_conference("auto", sfu=True, stage=True).topology == "sfu"


def test_without_an_sfu_the_full_call_says_why() -> None:
    conf = make_conference("auto", sfu=False)
    people = [Person() for _ in range(4)]
    roles = {p.key: "member" for p in people}
    for person in people[:3]:
        conf.join(person.act(conf.call_id, "join", person.key), roles, NOW)  # type: ignore[arg-type]
    last = people[3]
    with pytest.raises(CallFull, match=r"^this server has no SFU; the call is full \(a mesh"):
        conf.join(last.act(conf.call_id, "join", last.key), roles, NOW)  # type: ignore[arg-type]
    # The SFU arriving (a standalone node registering) lets the call grow.
    conf.set_sfu_available(True)
    conf.join(last.act(conf.call_id, "join", last.key), roles, NOW)  # type: ignore[arg-type]
    assert conf.topology == "sfu"


def test_sfu_config_is_strict_and_checked(tmp_path: Path) -> None:
    assert config_problem(Config()) is None
    path = tmp_path / "bad.toml"
    for text, problem in (
        ("[conference]\nmesh_max = 4\nmesh_return_max = 4\n", "mesh_return_max"),
        ('[sfu]\nnode_secret = "short"\n', "at least 32 characters"),
        ("[sfu]\nenabled = 1\n", "Expected `bool`"),
        ("[sfu]\nnodes = []\n", "unknown field `nodes`"),
    ):
        path.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            load_config(path)


# -- the node control channel -----------------------------------------------------------

SECRET = "s" * 40


def channel() -> tuple[control.ChannelCodec, control.ChannelCodec]:
    server_nonce, node_nonce = secrets.token_bytes(32), secrets.token_bytes(32)
    key = control.session_key(SECRET, server_nonce, node_nonce, "node-1")
    return control.ChannelCodec(key, "server"), control.ChannelCodec(key, "node")


def test_handshake_proofs_bind_the_secret_nonces_and_name() -> None:
    a, b = secrets.token_bytes(32), secrets.token_bytes(32)
    proof = control.hello_mac(SECRET, a, b, "node-1")
    control.verify(control.hello_mac(SECRET, a, b, "node-1"), proof, "proof")
    for other in (
        control.hello_mac("t" * 40, a, b, "node-1"),  # another secret
        control.hello_mac(SECRET, b, a, "node-1"),  # other nonces (a replay)
        control.hello_mac(SECRET, a, b, "node-2"),  # another name
        control.welcome_mac(SECRET, a, b, "node-1"),  # the server's proof is not the node's
    ):
        with pytest.raises(control.ChannelError, match="does not verify"):
            control.verify(other, proof, "proof")
    with pytest.raises(control.ChannelError):
        control.check_nonce(b"short")


def test_channel_frames_are_authenticated_in_order_and_one_way() -> None:
    server, node = channel()
    first = server.seal(control.NodeJoin(1, "c", "1", "v=0"))
    second = server.seal(control.NodeKick(2, "c", "1"))
    assert node.open_request(first) == control.NodeJoin(1, "c", "1", "v=0")
    with pytest.raises(control.ChannelError, match="out of order or replayed"):
        node.open_request(first)  # a replay
    assert node.open_request(second) == control.NodeKick(2, "c", "1")
    # A tampered frame, every byte of it, is refused.
    third = server.seal(control.NodeMute(3, "c", "1", "audio", True))
    for i in range(len(third)):
        bad = bytearray(third)
        bad[i] ^= 0x01
        with pytest.raises(control.ChannelError):
            control.ChannelCodec(node._key, "node").open_request(bytes(bad))
    # The node's frames do not pass as the server's (no reflection), and skipping one fails.
    report = node.seal(control.NodeLoad(5, 1, 2))
    with pytest.raises(control.ChannelError, match="does not verify"):
        node.open_request(report)
    server.seal(control.NodeLeave(4, "c", "1"))  # lost on the way
    with pytest.raises(control.ChannelError, match="out of order"):
        node.open_request(server.seal(control.NodeLeave(5, "c", "1")))
    assert server.open_report(report) == control.NodeLoad(5, 1, 2)
    with pytest.raises(control.ChannelError):
        server.open_report(b"short")


# -- node assignment ------------------------------------------------------------------------


@dataclass
class FakeNode:
    name: str
    reported: int = 0
    joined: list[tuple[str, str]] = field(default_factory=list)

    async def join(
        self, conference: str, participant: str, sdp: str, sender_index: int | None = None
    ) -> str:
        self.joined.append((conference, participant))
        return "answer"

    async def leave(self, conference: str, participant: str) -> None: ...

    async def kick(self, conference: str, participant: str) -> None: ...

    async def set_muted(
        self, conference: str, participant: str, kind: str, muted: bool
    ) -> None: ...

    async def set_view(
        self, conference: str, participant: str, heights: dict[str, int]
    ) -> None: ...

    def load(self) -> int:
        return self.reported


@dataclass
class Events:
    lost: list[list[str]] = field(default_factory=list)

    def participant_left(self, conference: str, participant: str, reason: str) -> None: ...

    def speaker(self, conference: str, participant: str | None) -> None: ...

    def node_lost(self, conferences: list[str]) -> None:
        self.lost.append(conferences)


def test_conferences_go_to_the_least_loaded_node() -> None:
    registry = SfuRegistry()
    events = Events()
    registry.events = events
    with pytest.raises(SfuUnavailable):
        registry.node_for("c0")
    a, b = FakeNode("a"), FakeNode("b")
    registry.add(a)
    registry.add(b)
    with pytest.raises(Exception, match="already registered"):
        registry.add(FakeNode("a"))
    placed = {c: registry.node_for(c).name for c in ("c1", "c2", "c3", "c4")}
    assert sorted(placed.values()) == ["a", "a", "b", "b"]  # empty conferences alternate
    assert registry.node_for("c1").name == placed["c1"]  # a conference stays put
    for n in range(4):  # c1 grows: 4 participants, 12 subscriber streams on its node
        registry.joined("c1", str(n))
    busy = placed["c1"]
    assert registry.node_for("c5").name != busy
    # A node's own report counts when it is above the registry's estimate.
    idle = "b" if busy == "a" else "a"
    (a if idle == "a" else b).reported = 100
    assert registry.node_for("c6").name == busy
    registry.release("c6")
    # A node that goes away takes its conferences with it; they land elsewhere next time.
    registry.remove(busy)
    assert sorted(events.lost[0]) == sorted(c for c, n in placed.items() if n == busy)
    assert registry.node_for("c1").name == idle


async def test_the_log_may_assign_a_node_this_instance_does_not_have() -> None:
    """Several instances (issue 11): placements come from the calls' ordered log, so a
    conference may name a node registered elsewhere only; :meth:`choose` names only ours."""
    registry = SfuRegistry()
    a = FakeNode("a")
    registry.add(a)
    registry.assign("c1", "elsewhere")
    assert registry.assigned("c1") is None and registry.assigned_to("c1") == "elsewhere"
    assert registry.choose() == "a"
    registry.assign("c2", "a")
    for n in range(3):  # 6 subscriber streams on a
        registry.joined("c2", str(n))
    waiting = asyncio.ensure_future(registry.wait_for("b", 5))
    await asyncio.sleep(0)
    assert not waiting.done()
    b = FakeNode("b")
    registry.add(b)
    assert await waiting is b
    assert registry.choose() == "b"
    assert await registry.wait_for("never", 0.05) is None
    registry.release("c1")
    assert registry.assigned_to("c1") is None


# -- media keys -----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_key_ring_keeps_a_ratchet_chain_and_retires_superseded_keys_after_the_overlap() -> None:
    clock = Clock()
    me, bob = b"m" * 32, b"b" * 32
    keys, bobs = CallKeys(me), CallKeys(bob)
    ring = MediaKeyRing(me, SFrameContext(MEDIA_SUITE), clock)
    ring.set_index(me, 1)
    ring.set_index(bob, 2)
    assert ring.install(me, keys.own) and ring.send_kid == media_kid(1, 0)
    assert ring.install(bob, bobs.own) and not ring.install(bob, bobs.own)
    assert ring.holds(bob, bobs.own)
    first = ring.send.encrypt(ring.send_kid, b"", b"frame")
    keys.membership(1, [b"c" * 32], [])  # a join: ratchet
    bobs.membership(1, [b"c" * 32], [])
    assert ring.install(me, keys.own) and ring.send_kid == media_kid(1, 1)
    assert ring.install(bob, bobs.own)
    # A join only ratchets: Bob's epoch 0 stays readable (he may still send under it while
    # his new key reaches the joiner; anyone holding it held it before).
    clock.now += SUPERSEDED_MAX_SECONDS + 0.1
    ring.tick()
    assert ring.recv_kids == [media_kid(2, 0), media_kid(2, 1)]
    # Sending keys stay (with their counters): one is never re-added from zero.
    assert ring.send.kids() == [media_kid(1, 0), media_kid(1, 1)]
    assert ring.send.next_counter(media_kid(1, 0)) == 1
    # Frames from a key that may still come are worth holding; others are not.
    assert ring.may_arrive(media_kid(2, 2))
    assert not ring.may_arrive(media_kid(2, 0))  # an old epoch: gone for good
    assert not ring.may_arrive(media_kid(9, 0))  # nobody we know
    ring.set_index(b"d" * 32, 4)
    assert ring.may_arrive(media_kid(4, 7))  # a new sender whose first key is on its way
    assert ring.member_of(media_kid(2, 5)) == bob and ring.member_of(None) is None
    assert first  # the first frame was sealed under the first key
    # A leave: Bob's fresh key supersedes his whole chain. It goes OVERLAP_SECONDS after a
    # frame under the fresh key decrypted here ...
    bobs.membership(2, [], [b"c" * 32])
    assert ring.install(bob, bobs.own)
    clock.now += OVERLAP_SECONDS + 0.1
    ring.tick()
    assert len(ring.recv_kids) == 3  # nothing under the new key yet: still in flight
    ring.frame_seen(media_kid(2, 2))
    clock.now += OVERLAP_SECONDS - 0.1
    ring.tick()
    assert len(ring.recv_kids) == 3
    clock.now += 0.2
    ring.tick()
    assert ring.recv_kids == [media_kid(2, 2)]
    # ... or SUPERSEDED_MAX_SECONDS after it was superseded, whatever comes.
    bobs.membership(3, [], [b"e" * 32])
    assert ring.install(bob, bobs.own)
    clock.now += SUPERSEDED_MAX_SECONDS + 0.1
    ring.tick()
    assert ring.recv_kids == [media_kid(2, 3)]


def test_removed_and_joining_participants_read_only_their_share() -> None:
    """Through SFrame with the ring's keys: after a removal, nothing a sender encrypts is
    readable with any key the removed participant ever held; a joiner reads nothing from
    before it joined."""
    clock = Clock()
    alice, carol, dave = b"a" * 32, b"c" * 32, b"d" * 32
    a_keys = CallKeys(alice)
    ring = MediaKeyRing(alice, SFrameContext(MEDIA_SUITE), clock)
    ring.set_index(alice, 1)
    ring.install(alice, a_keys.own)

    def send(n: int) -> list[bytes]:
        assert ring.send_kid is not None
        return [ring.send.encrypt(ring.send_kid, b"\x9d", b"frame %d" % i) for i in range(n)]

    kept_by_carol = [a_keys.own]  # every key of Alice's that Carol ever held
    before_join = send(3)
    a_keys.membership(1, [dave], [])  # Dave joins: Alice ratchets, seals the new key to him
    ring.install(alice, a_keys.own)
    kept_by_carol.append(a_keys.own)
    dave_keys = [a_keys.own]
    with_dave = send(3)
    a_keys.membership(2, [], [carol])  # Carol is removed: Alice rekeys, Carol gets nothing
    ring.install(alice, a_keys.own)
    dave_keys.append(a_keys.own)
    after_removal = send(3)

    def readable(frame: bytes, keys: list) -> bool:
        for key in keys:
            try:
                decrypt(MEDIA_SUITE, key.key, b"\x9d", frame)
            except SFrameError:
                continue
            return True
        return False

    assert all(readable(f, kept_by_carol) for f in before_join + with_dave)
    assert not any(readable(f, kept_by_carol) for f in after_removal)
    assert not any(readable(f, [k.ratchet() for k in kept_by_carol]) for f in after_removal)
    assert not any(readable(f, dave_keys) for f in before_join)
    assert all(readable(f, dave_keys) for f in with_dave + after_removal)
    # And a receiving context without the key fails cleanly on every one of them.
    rx = SFrameContext(MEDIA_SUITE)
    with pytest.raises(UnknownKeyError):
        rx.decrypt(b"\x9d", after_removal[0])


def test_a_key_superseded_by_a_quick_second_leave_still_reads_what_it_sealed() -> None:
    """Carol and Erin leave a moment apart: Bob rekeys twice. His first new key reaches
    Dave after Dave heard of both leaves; it is never current again, but the frames Bob
    sent under it before he heard of Erin's leave must still decrypt (no lost frames)."""
    clock = Clock()
    bob, dave = CallKeys(b"b" * 32), CallKeys(b"d" * 32)
    carol, erin = b"c" * 32, b"e" * 32
    bob.baseline(1)
    dave.baseline(1)
    assert dave.receive(bob.me, bob.message())
    bob_ring = MediaKeyRing(bob.me, SFrameContext(MEDIA_SUITE), clock)
    dave_ring = MediaKeyRing(dave.me, SFrameContext(MEDIA_SUITE), clock)
    for ring in (bob_ring, dave_ring):
        ring.set_index(bob.me, 2)
    bob_ring.install(bob.me, bob.own)
    bob.membership(10, [], [carol])
    bob_ring.install(bob.me, bob.own)
    first = bob.message()
    assert bob_ring.send_kid is not None
    between = bob_ring.send.encrypt(bob_ring.send_kid, b"", b"sent before Erin left")
    bob.membership(11, [], [erin])
    second = bob.message()
    dave.membership(10, [], [carol])
    dave.membership(11, [], [erin])
    assert not dave.receive(bob.me, first)  # superseded: never current ...
    assert dave.current(bob.me) is None
    usable = dave.usable(bob.me)
    assert [k.epoch for k in usable] == [1]  # ... but kept for what it sealed
    for key in usable[::-1]:
        dave_ring.install(bob.me, key, current=False)
    dave_ctx = dave_ring.context_for(2)
    assert dave_ctx is not None and dave_ctx.decrypt(b"", between)[1] == b"sent before Erin left"
    assert dave.receive(bob.me, second) and dave.current(bob.me) == bob.own
    assert dave_ring.install(bob.me, bob.own)
    dave_ring.frame_seen(media_kid(2, 2))  # Bob's frames under his second key arrive
    clock.now += OVERLAP_SECONDS + 0.1
    dave_ring.tick()
    assert dave_ring.recv_kids == [media_kid(2, 2)]


def test_a_participant_who_joins_again_gets_its_new_key_under_the_same_id() -> None:
    """Joining again keeps the seat (the index) and starts at epoch 0 with a fresh key: the
    same key id as before, a different key. The ring must take the new one."""
    ring = MediaKeyRing(b"m" * 32, SFrameContext(MEDIA_SUITE), Clock())
    bob = b"b" * 32
    ring.set_index(bob, 2)
    first, second = CallKeys(bob), CallKeys(bob)  # two processes of Bob's
    assert ring.install(bob, first.own)
    assert ring.install(bob, second.own) and ring.install(bob, second.own) is False
    sealed = SFrameContext(MEDIA_SUITE)
    sealed.add_key(media_kid(2, 0), second.own.key)
    frame = sealed.encrypt(media_kid(2, 0), b"", b"hello again")
    ctx = ring.context_for(2)
    assert ctx is not None and ctx.decrypt(b"", frame)[1] == b"hello again"
