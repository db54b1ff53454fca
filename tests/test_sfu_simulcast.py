"""Simulcast layers and bandwidth adaptation in sfu/forwarder.py, driven with bytes and a fake
clock: SSRCs learned from RIDs, layer choice from the estimate, the tile and the speaker,
switches on keyframes with contiguous numbering, trials, receiver reports, abs-send-time."""

from __future__ import annotations

import itertools

from sfu import rtp
from sfu.bandwidth import BandwidthConfig, DownlinkEstimate, UplinkEstimate
from sfu.forwarder import DownTrackSpec, Forwarder, ForwarderConfig, UpTrackSpec
from sfu.layers import Layer, SlotNeed, allocate

VP8, OPUS, RTX = 96, 111, 97
RID_ID, RRID_ID, ABS_ID, LEVEL_ID = 10, 11, 3, 1
RIDS = ("q", "h", "f")
HEIGHTS = {"q": 180, "h": 360, "f": 720}
# Bytes per frame per layer at 30 frames/s: ~150 kbit/s, ~500 kbit/s, ~1.5 Mbit/s.
SIZES = {"q": 600, "h": 2000, "f": 6000}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def rid_ext(ext_id: int, rid: str) -> bytes:
    body = bytes(((ext_id << 4) | (len(rid) - 1),)) + rid.encode()
    body += b"\0" * (-len(body) % 4)
    return b"\xbe\xde" + (len(body) // 4).to_bytes(2, "big") + body


class SimulcastPublisher:
    """A browser-like publisher: three layers on SSRCs it never announced, RID on each packet."""

    def __init__(self, base: int) -> None:
        self.ssrcs = {rid: base + i for i, rid in enumerate(RIDS)}
        self.seq = {rid: 1000 * (i + 1) for i, rid in enumerate(RIDS)}
        self.ts = 0

    def spec(self) -> UpTrackSpec:
        return UpTrackSpec(
            "video",
            0,
            frozenset({VP8}),
            rtx_payload_type=RTX,
            rtx_apt=VP8,
            rids=RIDS,
            rid_ext_id=RID_ID,
            repaired_rid_ext_id=RRID_ID,
        )

    def frame(self, rid: str, keyframe: bool = False, *, skip: int = 0) -> bytes:
        self.seq[rid] = (self.seq[rid] + 1 + skip) & 0xFFFF
        height = HEIGHTS[rid]
        width = height * 16 // 9
        if keyframe:
            vp8 = bytes((0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A))
            vp8 += width.to_bytes(2, "little") + height.to_bytes(2, "little")
        else:
            vp8 = bytes((0x11, 0x02, 0x00))
        payload = b"\x10" + vp8 + bytes(SIZES[rid])
        ssrc = self.ssrcs[rid]
        return rtp.build_rtp(True, VP8, self.seq[rid], self.ts, ssrc, payload, rid_ext(RID_ID, rid))

    def tick(self) -> None:
        self.ts = (self.ts + 3000) & 0xFFFFFFFF


def slots(base: int, video: int = 2) -> list[DownTrackSpec]:
    return [
        DownTrackSpec("video", base + i, 100, 90000, abs_send_time_id=ABS_ID) for i in range(video)
    ] + [DownTrackSpec("audio", base + 0x100, 110, 48000, LEVEL_ID)]


class Call:
    def __init__(self, config: ForwarderConfig | None = None) -> None:
        self.clock = Clock()
        self.fwd = Forwarder(config or ForwarderConfig(stale_after=None), clock=self.clock)
        self.pubs: dict[str, SimulcastPublisher] = {}
        self.got: dict[str, list[bytes]] = {}
        self.caps: dict[str, float] = {}  # a subscriber's link capacity (bit/s)

    def publisher(self, pid: str) -> SimulcastPublisher:
        pub = SimulcastPublisher(0x100 * (len(self.pubs) + 1))
        self.pubs[pid] = pub
        self.fwd.add_participant(pid, [pub.spec()], [])
        return pub

    def subscriber(self, pid: str, video: int = 2) -> int:
        base = 0x10000 * (len(self.got) + 1)
        self.got[pid] = []
        self.fwd.add_participant(pid, [], slots(base, video))
        self.fwd.set_sink(pid, lambda pkt, pid=pid: self.got[pid].append(pkt) is None)
        return base

    def run(self, seconds: float, keyframes_every: float = 1.0, *, clean: bool = True) -> None:
        """Every publisher sends all its layers at 30 frames/s, keyframes now and then;
        with ``clean``, every subscriber sends REMB twice a second as a receive-side
        estimator on its link would: 1.5 × what arrives while its capacity (``caps``) holds,
        less than the capacity once more than that is sent."""
        frames = round(seconds * 30)
        per_key = max(1, round(keyframes_every * 30))
        for n in range(frames):
            key = n % per_key == 0
            for pid, pub in self.pubs.items():
                pub.tick()
                for rid in RIDS:
                    self.fwd.on_rtp(pid, pub.frame(rid, key))
            self.clock.now += 1 / 30
            if n % 3 == 0:
                self.fwd.tick()
            if clean and n % 15 == 0:
                for sub in self.got:
                    sent = self.fwd._participants[sub].send_bps
                    cap = self.caps.get(sub, float("inf"))
                    if sent:
                        remb = min(cap, sent * 1.5 + 10_000) if sent <= cap else 0.8 * cap
                        self.fwd.on_feedback(sub, remb_bps=remb)

    def layer_of(self, sub: str, slot: int) -> int | None:
        return self.fwd.layers(sub)[slot]

    def heights(self, sub: str, since: int = 0) -> set[int]:
        """Picture heights of the keyframes a subscriber got (its own numbering)."""
        found = set()
        for pkt in self.got[sub][since:]:
            hdr = rtp.parse_rtp(pkt)
            assert hdr is not None
            start = rtp.vp8_frame_start(pkt, hdr)
            if start >= 0 and pkt[start] & 1 == 0:
                found.add(int.from_bytes(pkt[start + 8 : start + 10], "little") & 0x3FFF)
        return found


def test_layer_ssrcs_are_learned_from_rids_and_the_top_layer_is_chosen_on_a_clean_link() -> None:
    call = Call()
    call.publisher("alice")
    base = call.subscriber("bob", video=1)
    call.run(0.2)
    assert call.layer_of("bob", base) == 0  # starts low: fast, cheap
    call.run(4.0)
    assert call.layer_of("bob", base) == 2
    stats = call.fwd.stats()["participants"]["bob"]  # type: ignore[index]
    assert stats["layer_switches"] >= 1
    # The subscriber's numbering runs on without a gap across the switches.
    seqs = [rtp.parse_rtp(p).sequence for p in call.got["bob"]]  # type: ignore[union-attr]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert 720 in call.heights("bob")


def test_a_packet_with_an_unknown_rid_or_no_rid_is_dropped() -> None:
    call = Call()
    call.publisher("alice")
    call.subscriber("bob")
    unknown = rtp.build_rtp(True, VP8, 1, 0, 0x999, b"\x10\x10\x02\x00", rid_ext(RID_ID, "x"))
    bare = rtp.build_rtp(True, VP8, 1, 0, 0x998, b"\x10\x10\x02\x00")
    assert call.fwd.on_rtp("alice", unknown) == []
    assert call.fwd.on_rtp("alice", bare) == []
    counters = call.fwd.stats()["participants"]["alice"]  # type: ignore[index]
    assert counters["dropped_unknown"] == 2


def test_congestion_steps_a_subscriber_down_while_a_clean_one_keeps_the_top_layer() -> None:
    call = Call()
    call.publisher("alice")
    call.publisher("carol")
    capped = call.subscriber("bob")
    clean = call.subscriber("dave")
    call.run(12.0)
    assert set(call.fwd.layers("dave").values()) == {2}
    # Bob's link takes ~450 kbit/s: both tiles drop to the lowest layer, on its keyframes.
    call.caps["bob"] = 450_000
    call.run(3.0)
    assert set(call.fwd.layers("bob").values()) == {0}
    before = len(call.got["bob"])
    call.run(2.0)
    assert call.heights("bob", before) == {180}
    assert set(call.fwd.layers("dave").values()) == {2}
    assert call.layer_of("dave", clean) == 2 and call.layer_of("bob", capped) == 0


def test_a_failed_trial_backs_off_and_a_successful_one_is_kept() -> None:
    call = Call()
    call.publisher("alice")
    base = call.subscriber("bob", video=1)
    call.run(4.0)
    call.fwd.on_feedback("bob", remb_bps=300_000)
    call.run(1.0)
    assert call.layer_of("bob", base) == 0
    # Trials up come after a quiet spell; each failure doubles the wait.
    trials = []
    downlink = call.fwd._participants["bob"].downlink
    for _ in range(240):
        call.run(0.5, clean=False)
        failed = downlink.failed_trials
        call.fwd.on_feedback("bob", remb_bps=300_000)  # the link still cannot take more
        if downlink.failed_trials > failed:
            trials.append(call.clock.now)
    assert len(trials) >= 3
    gaps = [b - a for a, b in itertools.pairwise(trials)]
    assert gaps == sorted(gaps) and gaps[-1] > gaps[0]
    # Now the link clears up: a trial holds and the top layer stays.
    downlink._next_trial_at = call.clock.now
    call.run(15.0)
    assert call.layer_of("bob", base) == 2


def test_tile_size_caps_the_layer_and_a_hidden_tile_gets_nothing() -> None:
    call = Call()
    call.publisher("alice")
    base = call.subscriber("bob", video=1)
    call.run(4.0)
    assert call.layer_of("bob", base) == 2
    call.fwd.set_view("bob", {base: 300})  # a 300 px tile: the 360 p layer is enough
    call.run(2.0)
    assert call.layer_of("bob", base) == 1
    call.fwd.set_view("bob", {base: 0})
    call.run(0.5)
    before = len(call.got["bob"])
    call.run(1.0)
    assert call.layer_of("bob", base) is None and len(call.got["bob"]) == before
    call.fwd.set_view("bob", {base: 1000})
    call.run(2.0)
    assert call.layer_of("bob", base) == 2 and 720 in call.heights("bob", before)


def test_the_active_speaker_gets_the_high_layer_when_only_one_fits() -> None:
    call = Call(ForwarderConfig(stale_after=None, speaking_level=90))
    call.publisher("alice")
    call.publisher("carol")
    fwd = call.fwd
    fwd.add_participant("carol-audio", [UpTrackSpec("audio", 0x777, frozenset({OPUS}), LEVEL_ID)])
    call.subscriber("bob")
    call.run(3.0)
    # Room for one 1.5 Mbit/s layer and one low one.
    call.caps["bob"] = 1_900_000
    call.run(5.5)  # a trial of both high fails on the way, the next waits 8 s
    layers = fwd.layers("bob")
    assert sorted(v for v in layers.values() if v is not None) == [0, 2]
    routes = fwd.routes("bob")
    high = next(pid for ssrc, pid in routes.items() if layers.get(ssrc) == 2)
    low = next(pid for ssrc, pid in routes.items() if layers.get(ssrc) == 0)
    # Now the one on the low layer speaks: it gets the high layer.
    fwd._participants[low].last_spoke = call.clock.now
    fwd._speaker = fwd._participants[low]
    call.run(2.0)
    layers = fwd.layers("bob")
    assert next(pid for ssrc, pid in fwd.routes("bob").items() if layers.get(ssrc) == 2) == low
    assert high != low


def test_without_adaptation_every_subscriber_gets_the_top_layer_whatever_it_says() -> None:
    call = Call(ForwarderConfig(stale_after=None, adapt=False))
    call.publisher("alice")
    base = call.subscriber("bob", video=1)
    call.run(2.0)
    call.fwd.on_feedback("bob", remb_bps=100_000, fraction_lost=0.5)
    call.run(2.0)
    assert call.layer_of("bob", base) == 2


def test_forwarded_video_carries_abs_send_time_from_the_node_clock() -> None:
    call = Call()
    call.publisher("alice")
    call.subscriber("bob")
    call.run(1.0)
    pkt = call.got["bob"][-1]
    hdr = rtp.parse_rtp(pkt)
    assert hdr is not None
    value = rtp.find_extension(pkt, hdr, ABS_ID)
    assert value is not None and len(value) == 3
    sent = int.from_bytes(value, "big") / 262144
    assert abs(sent - (call.clock.now % 64)) < 0.1


def test_reception_reports_count_losses_per_layer_and_steer_the_uplink_estimate() -> None:
    call = Call()
    pub = call.publisher("alice")
    call.run(1.0)
    call.fwd.reception_reports("alice")
    assert call.fwd.uplink_estimate("alice") == BandwidthConfig().publish_start_bps
    for n in range(60):  # the top layer loses every other packet
        pub.tick()
        call.fwd.on_rtp("alice", pub.frame("q", n == 0))
        call.fwd.on_rtp("alice", pub.frame("f", n == 0, skip=1))
        call.clock.now += 1 / 30
    reports = {r.ssrc: r for r in call.fwd.reception_reports("alice")}
    top, low = reports[pub.ssrcs["f"]], reports[pub.ssrcs["q"]]
    assert 120 <= top.fraction_lost <= 135 and top.cumulative_lost >= 59
    assert low.fraction_lost == 0 and low.cumulative_lost == 0
    assert top.extended_highest_seq == pub.seq["f"]
    estimate = call.fwd.uplink_estimate("alice")
    assert estimate is not None and estimate < BandwidthConfig().publish_start_bps


def test_allocation_rules() -> None:
    three = [Layer(150_000, 180), Layer(500_000, 360), Layer(1_500_000, 720)]
    # Lowest for everyone first, then raised by rank.
    assert allocate(100_000, [SlotNeed(three), SlotNeed(three)]) == [0, 0]
    assert allocate(1_800_000, [SlotNeed(three, rank=1), SlotNeed(three, rank=0)]) == [0, 2]
    # A tile caps the layer; a hidden one gets nothing; a layer not arriving is skipped.
    assert allocate(1e9, [SlotNeed(three, view_height=200)]) == [1]
    assert allocate(1e9, [SlotNeed(three, view_height=0)]) == [None]
    gap = [Layer(150_000, 180), Layer(0, 360), Layer(1_500_000, 720)]
    assert allocate(1e9, [SlotNeed(gap, view_height=300)]) == [2]
    assert allocate(1e9, [SlotNeed([Layer(0), Layer(0)])]) == [None]


def test_downlink_estimate_rules() -> None:
    cfg = BandwidthConfig()
    est = DownlinkEstimate(cfg, 0.0)
    assert est.budget(0.0) == cfg.initial_bps
    est.on_loss(0.1, 1_000_000, 1.0)  # random loss is not congestion
    assert est.estimate is None
    est.on_remb(1_200_000, 1_000_000, 1.0)  # room above what we send: never lowers
    assert est.estimate == cfg.initial_bps
    est.on_remb(2_000_000, 1_000_000, 1.0)
    assert est.estimate == 2_000_000
    est.on_remb(600_000, 1_000_000, 2.0)  # the receiver's queues grew
    assert est.estimate == 600_000 and est.congested_at == 2.0
    est.on_loss(0.5, 1_000_000, 3.0)
    assert est.estimate == 600_000  # min of the two
    assert not est.can_trial(4.0)
    assert est.can_trial(3.0 + cfg.trial_backoff)


def test_uplink_estimate_rules() -> None:
    up = UplinkEstimate(BandwidthConfig())
    start = up.estimate
    assert up.on_interval(0.0, 500_000) == start  # clean: no reason to go down
    assert up.on_interval(0.4, 500_000) == 400_000
    assert up.on_interval(0.05, 400_000) == 400_000  # in between: hold
    assert up.on_interval(0.0, 400_000) == 432_000  # clean again: +8 %


def test_who_spoke_last_ranks_above_the_others_after_weeks_of_uptime() -> None:
    """The rank of a slot whose publisher is not the speaker counts from when it last spoke;
    with the node's clock (monotonic: seconds since boot) past 1e6 s, every such slot ranked
    alike — and alike the active speaker's."""
    for start in (1000.0, 5e6):
        call = Call(ForwarderConfig(stale_after=None, speaking_level=90))
        call.clock.now = start
        call.publisher("alice")
        call.publisher("carol")
        fwd = call.fwd
        call.subscriber("bob")
        call.run(3.0)
        call.caps["bob"] = 1_900_000
        call.run(5.5)
        layers = fwd.layers("bob")
        low = next(pid for ssrc, pid in fwd.routes("bob").items() if layers.get(ssrc) == 0)
        for pid in fwd.participant_ids():  # both spoke, neither is the speaker: low last
            fwd._participants[pid].last_spoke = call.clock.now - (pid != low) * 5
        call.run(2.0)
        layers = fwd.layers("bob")
        high = next(pid for ssrc, pid in fwd.routes("bob").items() if layers.get(ssrc) == 2)
        assert high == low, start
