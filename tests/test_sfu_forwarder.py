"""sfu/forwarder.py driven with bytes and a fake clock: routing, gating, PLIs, queues, speakers."""

from __future__ import annotations

import functools
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sfu import rtp
from sfu.forwarder import (
    DownTrackSpec,
    Forwarder,
    ForwarderConfig,
    KeyframeRequest,
    SpeakerChanged,
    UpTrackSpec,
)

VP8, OPUS = 96, 111
LEVEL_ID = 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Publisher:
    """Makes a participant's RTP: VP8 frames (one packet each) and Opus packets with a level."""

    def __init__(self, index: int) -> None:
        self.video_ssrc = 0x1000 + index
        self.audio_ssrc = 0x2000 + index
        self.vseq = 100 * index
        self.aseq = 200 * index
        self.vts = 0
        self.ats = 0

    def specs(self) -> list[UpTrackSpec]:
        return [
            UpTrackSpec("video", self.video_ssrc, frozenset({VP8})),
            UpTrackSpec("audio", self.audio_ssrc, frozenset({OPUS}), LEVEL_ID),
        ]

    def video(self, keyframe: bool = False, *, skip: int = 0) -> bytes:
        self.vseq = (self.vseq + 1 + skip) & 0xFFFF
        self.vts += 6000
        tag = 0x10 if keyframe else 0x11
        payload = b"\x10" + bytes((tag, 0x9D, 0x01)) + b"sframe-ciphertext"
        return rtp.build_rtp(True, VP8, self.vseq, self.vts & 0xFFFFFFFF, self.video_ssrc, payload)

    def audio(self, level: int = 127) -> bytes:
        self.aseq = (self.aseq + 1) & 0xFFFF
        self.ats += 960
        ext = rtp.build_audio_level_extension(LEVEL_ID, level)
        ts = self.ats & 0xFFFFFFFF
        return rtp.build_rtp(True, OPUS, self.aseq, ts, self.audio_ssrc, b"\x78opus", ext)


def slots(index: int, video: int = 2, audio: int = 2) -> list[DownTrackSpec]:
    base = 0x10000 * (index + 1)
    return [DownTrackSpec("video", base + i, 100 + index, 90000) for i in range(video)] + [
        DownTrackSpec("audio", base + 0x100 + i, 110 + index, 48000, 7) for i in range(audio)
    ]


class Harness:
    """A forwarder with a fake clock, publishers and recording sinks.

    Most tests jump the clock without sending media, which the staleness check would rightly
    call a stall: it is off unless a test passes its own config.
    """

    def __init__(self, config: ForwarderConfig | None = None) -> None:
        self.clock = Clock()
        self.fwd = Forwarder(config or ForwarderConfig(stale_after=None), clock=self.clock)
        self.pubs: dict[str, Publisher] = {}
        self.received: dict[str, list[bytes]] = {}
        self.congested: set[str] = set()

    def join(self, pid: str, *, publish: bool = True, video: int = 2, audio: int = 2) -> Publisher:
        pub = Publisher(len(self.pubs))
        self.pubs[pid] = pub
        self.received[pid] = []
        self.fwd.add_participant(
            pid, pub.specs() if publish else [], slots(len(self.pubs), video, audio)
        )
        self.fwd.set_sink(pid, functools.partial(self._deliver, pid))
        return pub

    def send(self, pid: str, data: bytes) -> list[str]:
        """Route a packet; return who got a copy (sent or queued)."""
        before = {sub: self.fwd.sent_to(sub) + self.fwd.queued(sub) for sub in self.received}
        for sub in self.fwd.on_rtp(pid, data):  # left queued: their sink refused
            self.fwd.drain(sub, functools.partial(self._deliver, sub))
        after = {sub: self.fwd.sent_to(sub) + self.fwd.queued(sub) for sub in self.received}
        return sorted(sub for sub in self.received if after[sub] != before[sub])

    def _deliver(self, sub: str, pkt: bytes) -> bool:
        if sub in self.congested:
            return False
        self.received[sub].append(pkt)
        return True

    def headers(self, sub: str) -> list[rtp.RtpHeader]:
        out = []
        for pkt in self.received[sub]:
            hdr = rtp.parse_rtp(pkt)
            assert hdr is not None
            out.append(hdr)
        return out

    def plis(self, publisher: str | None = None) -> list[KeyframeRequest]:
        return [
            e
            for e in self.fwd.events()
            if isinstance(e, KeyframeRequest) and publisher in (None, e.publisher)
        ]


def test_audio_is_rewritten_per_subscriber_and_never_echoed() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    h.join("carol")
    packet = alice.audio(level=30)
    assert sorted(h.send("alice", packet)) == ["bob", "carol"]
    assert h.received["alice"] == []
    for sub, index in (("bob", 2), ("carol", 3)):
        [pkt] = h.received[sub]
        hdr = rtp.parse_rtp(pkt)
        assert hdr is not None
        assert hdr.ssrc in {s.ssrc for s in slots(index) if s.kind == "audio"}
        assert hdr.payload_type == 110 + index
        assert pkt[hdr.payload_start : hdr.payload_end] == b"\x78opus"  # payload untouched
        assert rtp.audio_level(pkt, hdr, 7) == 30  # level re-written under the slot's ext id


def test_video_waits_for_a_keyframe_then_flows_contiguously() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    assert h.plis("alice") == [KeyframeRequest("alice", alice.video_ssrc)]
    for _ in range(3):
        h.send("alice", alice.video())
    assert h.received["bob"] == []  # deltas before the first keyframe are useless
    h.send("alice", alice.video(keyframe=True))
    h.send("alice", alice.video())
    h.send("alice", alice.video(skip=2))  # two packets lost upstream
    seqs = [hdr.sequence for hdr in h.headers("bob")]
    assert seqs[1] == (seqs[0] + 1) & 0xFFFF
    assert seqs[2] == (seqs[1] + 3) & 0xFFFF  # real loss stays visible to the subscriber
    ts = [hdr.timestamp for hdr in h.headers("bob")]
    assert (ts[1] - ts[0]) & 0xFFFFFFFF == 6000


def test_mute_drops_audio_only_and_unmute_resumes_without_a_gap() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    h.send("alice", alice.video(keyframe=True))
    h.send("alice", alice.audio())
    h.fwd.set_muted("alice", "audio", True)
    assert h.fwd.is_muted("alice", "audio")
    for _ in range(5):
        assert h.send("alice", alice.audio(level=10)) == []
    h.send("alice", alice.video())
    kinds = [hdr.payload_type for hdr in h.headers("bob")]
    assert kinds == [102, 112, 102]  # video, one audio before the mute, video
    assert h.fwd.stats()["participants"]["alice"]["dropped_muted"] == 5  # type: ignore[index]
    h.clock.now += 2.0
    h.fwd.set_muted("alice", "audio", False)
    h.send("alice", alice.audio())
    audio = [hdr for hdr in h.headers("bob") if hdr.payload_type == 112]
    assert audio[1].sequence == (audio[0].sequence + 1) & 0xFFFF  # no fake loss
    assert (audio[1].timestamp - audio[0].timestamp) & 0xFFFFFFFF == 2 * 48000  # wall time


def test_muted_publisher_never_becomes_speaker() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    h.fwd.set_muted("alice", "audio", True)
    for _ in range(50):
        h.send("alice", alice.audio(level=5))
        h.clock.now += 0.02
    h.fwd.tick()
    assert h.fwd.active_speaker is None


def test_plis_are_coalesced_to_one_per_second_per_track() -> None:
    h = Harness()
    h.join("alice")
    for name in ("bob", "carol", "dave"):
        h.join(name)
    sent: list[float] = [h.clock.now for _ in h.plis("alice")]  # the first joiner's
    rng = random.Random(5)
    for _ in range(2000):
        h.clock.now += rng.random() * 0.05
        sub = rng.choice(["bob", "carol", "dave"])
        # Every subscriber's first video slot shows alice (first come, first served).
        h.fwd.on_keyframe_request(sub, slots(["bob", "carol", "dave"].index(sub) + 2)[0].ssrc)
        h.fwd.tick()
        sent += [h.clock.now for _ in h.plis("alice")]
    assert len(sent) >= 40  # requests keep being honoured ...
    gaps = [b - a for a, b in itertools.pairwise(sent)]
    assert min(gaps) >= 1.0  # ... but never more than one per second
    assert h.fwd.plis_coalesced > 1000


def test_pending_pli_is_cancelled_by_a_keyframe() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    h.plis()
    h.send("alice", alice.video(keyframe=True))
    h.clock.now += 0.1
    h.join("carol")  # wants a keyframe: coalesced (one was asked 0.1 s ago)
    assert h.plis("alice") == []
    h.send("alice", alice.video(keyframe=True))  # arrives anyway
    h.clock.now += 2
    h.fwd.tick()
    assert h.plis("alice") == []


def test_slow_subscriber_loses_its_own_packets_and_nobody_else_waits() -> None:
    h = Harness(ForwarderConfig(queue_packets=8, stale_after=None))
    alice = h.join("alice")
    h.join("bob")
    h.join("carol")
    h.send("alice", alice.video(keyframe=True))
    h.congested.add("carol")
    h.plis()
    h.clock.now += 2  # the join-time PLI is long past
    for _ in range(100):
        h.send("alice", alice.video())
        h.send("alice", alice.audio())
    assert len(h.received["bob"]) == 201  # every packet, none delayed
    assert h.fwd.queued("carol") <= 8
    stats = h.fwd.stats()["participants"]["carol"]  # type: ignore[index]
    # Audio overflows; video stops being queued once its picture broke (waits a keyframe).
    assert 90 <= stats["dropped_queue"] <= 110
    assert h.plis("alice") == [KeyframeRequest("alice", alice.video_ssrc)]
    # Carol recovers: her queue drains, her video restarts at a keyframe.
    h.congested.discard("carol")
    h.fwd.drain("carol", lambda pkt: h._deliver("carol", pkt))
    before = len(h.received["carol"])
    h.send("alice", alice.video())
    assert len(h.received["carol"]) == before
    h.send("alice", alice.video(keyframe=True))
    assert len(h.received["carol"]) == before + 1


def test_kick_stops_routing_both_ways_and_frees_slots() -> None:
    h = Harness()
    alice = h.join("alice")
    bob = h.join("bob")
    carol = h.join("carol", video=1, audio=1)
    dave = h.join("dave")
    assert h.fwd.routes("carol")[slots(3, 1, 1)[0].ssrc] == "alice"  # first come
    h.fwd.remove_participant("alice")
    assert "alice" not in h.fwd
    assert h.fwd.on_rtp("alice", alice.audio()) == []
    h.send("bob", bob.audio())
    assert h.received["alice"] == []
    # Carol's only slot now shows the next publisher in line.
    assert h.fwd.routes("carol")[slots(3, 1, 1)[0].ssrc] == "bob"
    h.fwd.remove_participant("alice")  # idempotent
    assert carol and dave


def test_publisher_leaving_mid_frame_hands_the_slot_over_cleanly() -> None:
    h = Harness()
    alice = h.join("alice")
    bob = h.join("bob")
    h.join("carol", video=1, audio=1)
    h.send("alice", alice.video(keyframe=True))
    half = b"\x10\x10\x9d\x01half"
    first = rtp.build_rtp(False, VP8, alice.vseq + 1, 1, alice.video_ssrc, half)
    h.send("alice", first)  # first half of a frame, then alice is gone
    h.fwd.remove_participant("alice")
    h.send("bob", bob.video())  # delta: carol's slot waits for bob's keyframe
    h.send("bob", bob.video(keyframe=True))
    h.send("bob", bob.video())
    carol = [hdr for hdr in h.headers("carol") if hdr.payload_type == 103]
    assert [hdr.ssrc for hdr in carol] == [slots(3, 1, 1)[0].ssrc] * 4
    seqs = [hdr.sequence for hdr in carol]
    assert seqs == [(seqs[0] + i) & 0xFFFF for i in range(4)]  # one stream, no gap
    assert carol[2].timestamp != carol[1].timestamp  # a new frame, not alice's half


def test_active_speaker_takes_the_floor_with_hysteresis_and_gets_a_slot() -> None:
    h = Harness()
    pubs = {name: h.join(name, video=1, audio=1) for name in ("alice", "bob", "carol")}

    def talk(levels: dict[str, int], seconds: float) -> None:
        for _ in range(int(seconds / 0.02)):
            for name, level in levels.items():
                h.send(name, pubs[name].audio(level))
            h.clock.now += 0.02
            h.fwd.tick()

    assert h.fwd.routes("bob") == {slots(2, 1, 1)[0].ssrc: "alice", slots(2, 1, 1)[1].ssrc: "alice"}
    talk({"alice": 127, "bob": 127, "carol": 20}, 1.0)
    assert h.fwd.active_speaker == "carol"
    assert SpeakerChanged("carol") in h.fwd.events()
    # Last-N: carol now fills bob's single video slot.
    assert h.fwd.routes("bob")[slots(2, 1, 1)[0].ssrc] == "carol"
    # A challenger barely louder does not take over (hysteresis) ...
    talk({"alice": 17, "carol": 20}, 1.0)
    assert h.fwd.active_speaker == "carol"
    # ... a clearly louder one does; silence keeps the last speaker.
    talk({"alice": 5, "carol": 40}, 1.0)
    assert h.fwd.active_speaker == "alice"
    talk({}, 2.0)
    assert h.fwd.active_speaker == "alice"


def test_unknown_ssrc_payload_type_and_participant_are_dropped() -> None:
    h = Harness()
    alice = h.join("alice")
    h.join("bob")
    assert h.send("alice", rtp.build_rtp(True, OPUS, 1, 1, 0xDEAD, b"x")) == []
    assert h.send("alice", rtp.build_rtp(True, 0, 1, 1, alice.audio_ssrc, b"x")) == []
    assert h.fwd.on_rtp("nobody", alice.audio()) == []
    stats = h.fwd.stats()["participants"]["alice"]  # type: ignore[index]
    assert stats["dropped_unknown"] == 2
    with pytest.raises(ValueError):
        h.fwd.add_participant("alice")
    with pytest.raises(KeyError):
        h.fwd.set_muted("nobody", "audio", True)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=60), max_size=20), st.integers(0, 0xFFFF))
def test_forwarder_survives_any_input(garbage: list[bytes], seq: int) -> None:
    h = Harness(ForwarderConfig())
    alice = h.join("alice")
    h.join("bob")
    header = rtp.build_rtp(True, VP8, seq, 1, alice.video_ssrc, b"")
    for blob in garbage:
        h.send("alice", blob)  # raw garbage
        h.send("alice", header + blob)  # a valid header on a garbage VP8 payload
        h.send("alice", bytes([0x90]) + header[1:] + blob)  # a claimed extension block
    h.fwd.tick()
    for hdr in h.headers("bob"):
        assert hdr.ssrc == slots(2)[0].ssrc


def test_a_flooding_publisher_is_cut_to_its_rate_limit() -> None:
    h = Harness(ForwarderConfig(max_audio_bps=80_000, rate_burst_seconds=0.5, stale_after=None))
    alice = h.join("alice")
    h.join("bob")
    big = b"\x78" + bytes(979)  # 1000-byte Opus packets
    sent = 0
    for n in range(500):  # 5 s at one packet every 10 ms: 800 kb/s offered
        alice.aseq += 1
        packet = rtp.build_rtp(True, OPUS, alice.aseq, n * 480, alice.audio_ssrc, big)
        sent += len(packet)
        h.send("alice", packet)
        h.clock.now += 0.01
    got = sum(len(p) for p in h.received["bob"])
    # 80 kb/s for 5 s plus the 0.5 s burst: 55 000 bytes, whatever was offered.
    assert 45_000 <= got <= 56_000 < sent
    stats = h.fwd.stats()["participants"]["alice"]  # type: ignore[index]
    assert stats["dropped_rate"] > 400


def test_packets_late_for_their_media_time_are_shed_then_flow_again() -> None:
    h = Harness(ForwarderConfig(stale_after=0.4, stale_reset=2.0))
    alice = h.join("alice")
    h.join("bob")
    h.send("alice", alice.video(keyframe=True))
    for _ in range(50):  # 1 s of audio in real time
        h.clock.now += 0.02
        h.send("alice", alice.audio())
    got = len(h.received["bob"])
    # The node stalls for 1 s: the next second of packets arrives all at once, late.
    h.clock.now += 1.0
    for _ in range(50):
        h.send("alice", alice.audio())
        h.send("alice", alice.video())
        h.clock.now += 0.001
    # The backlog's first ~0.6 s is shed; the rest is within 0.4 s of its media time.
    assert len(h.received["bob"]) - got <= 20
    stats = h.fwd.stats()["participants"]["alice"]  # type: ignore[index]
    assert stats["dropped_stale"] > 40
    # Caught up: fresh packets flow again.
    for _ in range(50):
        h.clock.now += 0.02
        h.send("alice", alice.audio())
    after = [rtp.parse_rtp(p) for p in h.received["bob"][got:]]
    assert sum(1 for hdr in after if hdr is not None and hdr.payload_type == 112) >= 19 + 50


def test_a_timestamp_jump_is_not_mistaken_for_a_stall_for_long() -> None:
    h = Harness(ForwarderConfig(stale_after=0.4, stale_reset=2.0))
    alice = h.join("alice")
    h.join("bob")
    for _ in range(20):
        h.clock.now += 0.02
        h.send("alice", alice.audio())
    alice.ats -= 48000 * 30  # the sender's clock jumps back 30 s (a restart, a bug)
    for _ in range(200):
        h.clock.now += 0.02
        h.send("alice", alice.audio())
    # Two seconds of doubt, then the new timeline is accepted.
    assert 290 >= len(h.received["bob"]) >= 20 + 200 - 2 / 0.02 - 5


def screen_packet(ssrc: int, seq: int, ts: int, keyframe: bool) -> bytes:
    payload = b"\x10" + bytes((0x10 if keyframe else 0x11, 0x9D, 0x01)) + b"screen-ciphertext"
    return rtp.build_rtp(True, VP8, seq, ts, ssrc, payload)


def test_a_screen_share_has_slots_of_its_own_with_keyframe_gating_and_video_mute() -> None:
    h = Harness()
    alice = h.join("alice")
    screen_ssrc = 0x3000
    h.fwd.remove_participant("alice")  # again, now with a screen as well
    h.fwd.add_participant(
        "alice", [*alice.specs(), UpTrackSpec("screen", screen_ssrc, frozenset({VP8}))], []
    )
    h.fwd.set_sink("alice", functools.partial(h._deliver, "alice"))
    h.join("bob")
    screen_slot = DownTrackSpec("screen", 0x9000, 120, 90000)
    h.fwd.remove_participant("bob")
    h.fwd.add_participant("bob", [], [*slots(2), screen_slot])
    h.fwd.set_sink("bob", functools.partial(h._deliver, "bob"))
    routes = h.fwd.routes("bob")
    assert routes[screen_slot.ssrc] == "alice"  # the screen slot carries Alice's screen
    assert sum(1 for who in routes.values() if who == "alice") == 3  # camera, screen, mic
    # A new subscriber asks for a keyframe on the screen too, and gets none before it.
    assert KeyframeRequest("alice", screen_ssrc) in h.plis("alice")
    h.send("alice", screen_packet(screen_ssrc, 1, 0, keyframe=False))
    assert h.received["bob"] == []
    h.send("alice", screen_packet(screen_ssrc, 2, 9000, keyframe=True))
    h.send("alice", screen_packet(screen_ssrc, 3, 18000, keyframe=False))
    got = [hdr.ssrc for hdr in h.headers("bob")]
    assert got == [screen_slot.ssrc] * 2  # on the screen slot, never a camera slot
    # The camera goes to a camera slot, not the screen slot.
    h.send("alice", alice.video(keyframe=True))
    assert h.headers("bob")[-1].ssrc in {s.ssrc for s in slots(2) if s.kind == "video"}
    # A video mute (a stage listener) is applied to the screen by the node; here directly.
    h.fwd.set_muted("alice", "screen", True)
    assert h.send("alice", screen_packet(screen_ssrc, 4, 27000, keyframe=True)) == []
