"""SFU forwarding benchmark (not a test): ``make bench-sfu``.

Usage: python bench/bench_sfu.py [--quick] [--publishers 4] [--steps 10,20,40]
                                 [--window 4] [--skip-frame] [--skip-relay]

Publishers send VP8 (~30 fps, 640x360 at 500 kb/s, SFrame-encrypted) + Opus (50 packets/s
with RFC 6464 audio levels) through an SFU to N subscribers; N ramps up. Every role is its
own process on 127.0.0.1 (the SFU, the publishers, two subscriber processes), so the SFU's
CPU is measured alone (``time.process_time`` of its process, all threads).

Three forwarders are measured in the same run:

* ``rtp``   — Salon's SFU (``sfu/node.py``): forwards below the frame layer, rewriting
              SSRC / sequence number / timestamp per subscriber.
* ``frame`` — the alternative the design weighed: aiortc's receive and send paths with a
              pass-through decoder and pre-encoded packing (``sfu/aiortc_adapter.py``),
              forwarding whole encoded frames.
* ``relay`` — what a Python developer would otherwise build: aiortc's ``MediaRelay``
              (decode once, re-encode VP8 + Opus per subscriber), with plain media.

Per step: SFU CPU (fraction of one core), forwarded packets/s, loss at the subscribers
(sequence gaps, which include packets the SFU dropped), latency (publisher send → subscriber
receive of each frame's last packet, both clocks CLOCK_MONOTONIC, so it includes two
loopback hops and the load generators' own queueing: an upper bound on what the SFU adds)
and SFU RSS. A *subscriber stream* is one publisher's video + audio to one subscriber.

The last line is JSON: subscriber_streams_per_core, forwarded_packets_per_core_s,
added_latency_p50_ms / p99_ms (rtp mode, at the step nearest 70 % of a core),
memory_per_participant_mb, ratio_vs_relay, rekey_p95_ms (null: rekeying is driven by the
conference control plane, which does not use the SFU yet).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import heapq
import json
import multiprocessing
import os
import platform
import random
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

try:
    from sfu import aiortc_adapter
except ImportError:  # running from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sfu import aiortc_adapter

from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from sfu import rtp

WIDTH, HEIGHT, FPS, BITRATE = 640, 360, 30, 500_000
CLIP_SECONDS = 2
KEYFRAME_EVERY = FPS  # the clip has a keyframe each second (and one on any PLI)
MTU_PAYLOAD = 1200
LOSS_LIMIT = 0.005
CALL_TIMEOUT = 60.0
CONF = "bench"


def rtc_config() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def prefer(transceiver: Any, mime: str) -> None:
    caps = RTCRtpSender.getCapabilities(transceiver.kind).codecs
    transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() == mime])


class IdleTrack(MediaStreamTrack):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    async def recv(self) -> Any:
        await asyncio.sleep(1e6)
        raise MediaStreamError


class QueueTrack(MediaStreamTrack):
    """Frame-layer SFU slot: yields the OutboundFrames put into it (bounded, drop-oldest).

    aiortc's sender packetizes and sends each frame right after ``recv`` returns it, so
    that is where the frame's added latency is taken.
    """

    def __init__(self, kind: str, latency_ns: list[int]) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=64)
        self.latency_ns = latency_ns

    def put(self, frame: Any) -> None:
        if self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(frame)

    async def recv(self) -> Any:
        frame = await self.queue.get()
        delta = time.monotonic_ns() - int.from_bytes(frame.data[-8:], "big")
        if 0 <= delta < 5_000_000_000:
            self.latency_ns.append(delta)
        return frame


# ======================================================================= the media clip


def make_clip(encrypt: bool) -> tuple[list[bytes], list[bytes], int]:
    """Pre-encoded VP8 frames and Opus packets (optionally SFrame-protected), level dBov."""
    import av
    import numpy as np

    from client.media import TestPatternTrack, ToneTrack
    from client.sframe import SFrameContext, protect_frame

    pattern = TestPatternTrack("Bench", WIDTH, HEIGHT, FPS)
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height, codec.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    codec.bit_rate = BITRATE
    codec.gop_size = KEYFRAME_EVERY
    codec.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "minrate": str(BITRATE),
        "maxrate": str(BITRATE),
        "bufsize": str(BITRATE),
    }
    video: list[bytes] = []
    for n in range(FPS * CLIP_SECONDS):
        frame = av.VideoFrame.from_ndarray(pattern.render(n), format="bgr24")
        frame = frame.reformat(format="yuv420p")
        frame.pts, frame.time_base = n, fractions.Fraction(1, FPS)
        if n % KEYFRAME_EVERY == 0:
            frame.pict_type = av.video.frame.PictureType.I
        video += [bytes(p) for p in codec.encode(frame)]
    opus = av.CodecContext.create("libopus", "w")
    opus.sample_rate, opus.layout, opus.format = 48000, "mono", "s16"
    opus.bit_rate = 32000
    tone = ToneTrack("Bench")
    audio: list[bytes] = []
    for n in range(50 * CLIP_SECONDS):
        t = (np.arange(960) + n * 960) / 48000
        pcm = (np.sin(2 * np.pi * tone.frequency * t) * 0.3 * 32767).astype(np.int16)
        af = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        af.sample_rate, af.pts, af.time_base = 48000, n * 960, fractions.Fraction(1, 48000)
        audio += [bytes(p) for p in opus.encode(af)]
    if encrypt:
        ctx = SFrameContext(4)
        ctx.add_key(1, bytes(16))
        video = [protect_frame(ctx, 1, "vp8", f) for f in video]
        audio = [protect_frame(ctx, 1, "opus", f) for f in audio]
    return video, audio, -13


def vp8_payloads(frame: bytes, picture_id: int) -> list[bytes]:
    """RFC 7741 packetization with a 15-bit picture id, like aiortc's."""
    pid = bytes((0x80 | (picture_id >> 8) & 0x7F, picture_id & 0xFF))
    size = MTU_PAYLOAD - 4
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)] or [b""]
    return [bytes((0x90 if i == 0 else 0x80, 0x80)) + pid + c for i, c in enumerate(chunks)]


def stamp(payload: bytes) -> bytes:
    """Overwrite the last 8 bytes with the send time (opaque to every forwarder)."""
    return payload[:-8] + time.monotonic_ns().to_bytes(8, "big")


# ======================================================================= worker roles


class Role:
    async def close(self) -> None:
        pass


class SfuRole(Role):
    """Salon's SFU node (below-frame forwarding)."""

    def __init__(self) -> None:
        from sfu.node import SfuConfig, SfuNode

        self.node = SfuNode(
            SfuConfig(connect_timeout=60.0, max_media_sections=40), on_event=self._on_event
        )
        self.latency_ns: list[int] = []
        self.left: list[str] = []
        self._tapped = False

    async def op_join(self, pid: str, offer: str) -> str:
        answer = await self.node.join(CONF, pid, offer)
        if not self._tapped:
            self._tap(self.node.forwarder(CONF))
        return answer

    def _on_event(self, event: Any) -> None:
        if type(event).__name__ == "ParticipantLeft":
            self.left.append(f"{event.participant_id}:{event.reason}")
            if os.environ.get("BENCH_DEBUG"):
                print(f"SFU: {event}", file=sys.stderr, flush=True)

    def _tap(self, fwd: Any) -> None:
        """Time each stamped packet from the publisher's send to the SFU's last copy sent.

        ``Forwarder.on_rtp`` sends every copy through the subscribers' sinks before it
        returns (a congested subscriber's copy waits in its queue and is not timed); the
        stamp (publisher's CLOCK_MONOTONIC) is readable here because SRTP ends at the SFU
        and the bench stamps the SFrame ciphertext's last 8 bytes.
        """
        self._tapped = True
        on_rtp = fwd.on_rtp
        samples = self.latency_ns

        def tapped_on_rtp(pid: str, data: bytes) -> list[str]:
            queued = on_rtp(pid, data)  # every copy not queued has been sent
            if len(data) > 20 and data[1] & 0x80:
                delta = time.monotonic_ns() - int.from_bytes(data[-8:], "big")
                if 0 <= delta < 5_000_000_000:
                    samples.append(delta)
            return queued

        fwd.on_rtp = tapped_on_rtp

    async def op_stats(self) -> dict[str, Any]:
        stats = self.node.stats()
        forwarder = stats["conferences"].get(CONF, {}).get("forwarder", {})
        dropped = sum(p["dropped_queue"] for p in forwarder.get("participants", {}).values())
        queued = sum(p["queued"] for p in forwarder.get("participants", {}).values())
        peers = stats["conferences"].get(CONF, {}).get("participants", {}).values()
        congested = sum(p["socket_congested"] for p in peers)
        return {
            "cpu": time.process_time(),
            "wall": time.monotonic(),
            "rss_mb": rss_mb(),
            "packets_out": self.node.packets_out,
            "packets_in": self.node.packets_in,
            "processing_ms": stats["processing_ms"],
            "added_ms": [v / 1e6 for v in self.latency_ns],
            "left": list(self.left),
            "dropped_queue": dropped,
            "queued": queued,
            "congested": congested,
            "plis": forwarder.get("plis_sent", 0),
        }

    async def op_reset(self) -> None:
        self.node.reset_latency_samples()
        self.latency_ns.clear()

    async def close(self) -> None:
        await self.node.close()


class FrameSfuRole(Role):
    """Frame-layer forwarding with aiortc's own receive/send paths (for the comparison)."""

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.publishers: list[dict[str, Any]] = []  # kind -> list of slot tracks
        self.subscribers: list[dict[str, list[QueueTrack]]] = []
        self.packets_out = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.latency_ns: list[int] = []

    async def op_join(self, pid: str, offer: str) -> str:
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        published: dict[str, Any] = {}
        slots: dict[str, list[QueueTrack]] = {"video": [], "audio": []}
        directions = offered_directions(offer)
        for t in pc.getTransceivers():
            if directions.get(t.mid or "") == "sendonly":
                t.direction = "recvonly"
                aiortc_adapter.enable_passthrough(t.receiver)
                aiortc_adapter.use_marker_release(t.receiver, t.kind)
                published[t.kind] = t
            else:
                track = QueueTrack(t.kind, self.latency_ns)
                t.direction = "sendonly"
                t.sender.replaceTrack(track)
                aiortc_adapter.enable_preencoded(t.sender)
                aiortc_adapter.on_keyframe_request(t.sender, lambda: None)
                slots[t.kind].append(track)
        await pc.setLocalDescription(await pc.createAnswer())
        if published:
            index = len(self.publishers)
            self.publishers.append(published)
            for kind, t in published.items():
                self.tasks.append(asyncio.create_task(self._pump(index, kind, t.receiver)))
        else:
            self.subscribers.append(slots)
        return str(pc.localDescription.sdp)

    async def _pump(self, index: int, kind: str, receiver: Any) -> None:
        clock = 90000 if kind == "video" else 48000
        time_base = fractions.Fraction(1, clock)
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await receiver.track.recv()
                out = aiortc_adapter.OutboundFrame(frame.data, frame.timestamp, time_base)
                for slots in self.subscribers:
                    if index < len(slots[kind]):
                        slots[kind][index].put(out)
                        self.packets_out += 1 + len(frame.data) // MTU_PAYLOAD

    async def op_stats(self) -> dict[str, Any]:
        return {
            "cpu": time.process_time(),
            "wall": time.monotonic(),
            "rss_mb": rss_mb(),
            "packets_out": self.packets_out,
            "added_ms": [v / 1e6 for v in self.latency_ns],
        }

    async def op_reset(self) -> None:
        self.latency_ns.clear()

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for pc in self.pcs:
            await pc.close()


def offered_directions(offer: str) -> dict[str, str]:
    from aiortc import sdp

    return {m.rtp.muxId: m.direction for m in sdp.SessionDescription.parse(offer).media}


class RelayRole(Role):
    """aiortc MediaRelay: decode each publisher once, re-encode for every subscriber."""

    def __init__(self) -> None:
        from aiortc.contrib.media import MediaRelay

        self.relay = MediaRelay()
        self.pcs: list[RTCPeerConnection] = []
        self.sources: list[dict[str, MediaStreamTrack]] = []
        self.packets_out = 0

    async def op_join(self, pid: str, offer: str) -> str:
        pc = RTCPeerConnection(rtc_config())
        self.pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        if "sendonly" in offered_directions(offer).values():
            tracks = {t.kind: t.receiver.track for t in pc.getTransceivers()}
            for t in pc.getTransceivers():
                t.direction = "recvonly"
            self.sources.append(tracks)
        else:
            counters: dict[str, int] = {}
            for t in pc.getTransceivers():
                n = counters.get(t.kind, 0)
                counters[t.kind] = n + 1
                t.direction = "sendonly"
                if n < len(self.sources):
                    t.sender.replaceTrack(self.relay.subscribe(self.sources[n][t.kind]))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def op_stats(self) -> dict[str, Any]:
        return {"cpu": time.process_time(), "wall": time.monotonic(), "rss_mb": rss_mb()}

    async def op_reset(self) -> None:
        pass

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


class PublisherRole(Role):
    """P publishers sending the pre-encoded clip as RTP through an RtpSink, on a schedule."""

    def __init__(self, encrypt: bool) -> None:
        self.video, self.audio, self.level = make_clip(encrypt)
        # Send times ride in the last 8 payload bytes of each frame's last packet, which
        # would corrupt a plain stream: only ciphertext (opaque to the forwarder) is stamped.
        self.stamp: Callable[[bytes], bytes] = stamp if encrypt else bytes
        self.pcs: list[RTCPeerConnection] = []
        self.keyframe_wanted: list[bool] = []
        self.task: asyncio.Task[None] | None = None
        self.sent = 0

    async def op_create(self, n: int) -> list[str]:
        offers = []
        for i in range(n):
            pc = RTCPeerConnection(rtc_config())
            tv = pc.addTransceiver(IdleTrack("video"), direction="sendonly")
            prefer(tv, "video/vp8")
            ta = pc.addTransceiver(IdleTrack("audio"), direction="sendonly")
            prefer(ta, "audio/opus")
            self.keyframe_wanted.append(False)
            aiortc_adapter.on_keyframe_request(tv.sender, lambda i=i: self._want_keyframe(i))
            await pc.setLocalDescription(await pc.createOffer())
            self.pcs.append(pc)
            offers.append(pc.localDescription.sdp)
        return offers

    def _want_keyframe(self, i: int) -> None:
        self.keyframe_wanted[i] = True

    async def op_connect(self, answers: list[str]) -> None:
        for pc, answer in zip(self.pcs, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        deadline = time.monotonic() + 30
        while any(pc.connectionState != "connected" for pc in self.pcs):
            if time.monotonic() > deadline:
                raise RuntimeError("publishers did not connect")
            await asyncio.sleep(0.05)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        streams = []
        for i, pc in enumerate(self.pcs):
            tv, ta = pc.getTransceivers()
            sink = aiortc_adapter.RtpSink(tv.sender.transport)
            level_id = next(
                (
                    e.id
                    for e in aiortc_adapter.negotiated_header_extensions(ta)
                    if e.uri.endswith("ssrc-audio-level")
                ),
                None,
            )
            vpt = aiortc_adapter.negotiated_codecs(tv)[0].payloadType
            apt = aiortc_adapter.negotiated_codecs(ta)[0].payloadType
            phase = random.random() / FPS
            streams.append(
                {
                    "i": i,
                    "sink": sink,
                    "video": (aiortc_adapter.sender_ssrc(tv.sender), vpt),
                    "audio": (aiortc_adapter.sender_ssrc(ta.sender), apt, level_id),
                    "vn": random.randrange(len(self.video)),
                    "an": 0,
                    "vseq": random.randrange(0x8000),
                    "aseq": random.randrange(0x8000),
                    "pid": random.randrange(0x8000),
                    "phase": phase,
                }
            )
        start = time.monotonic()
        # (due time, kind, stream index): one schedule for every publisher's two streams.
        heap = [(start + s["phase"], "video", s["i"]) for s in streams]
        heap += [(start + s["phase"] / 2, "audio", s["i"]) for s in streams]
        heapq.heapify(heap)
        while True:
            due, kind, i = heapq.heappop(heap)
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            s = streams[i]
            if kind == "video":
                self._send_video(s, due - start)
                heapq.heappush(heap, (due + 1 / FPS, kind, i))
            else:
                self._send_audio(s, due - start)
                heapq.heappush(heap, (due + 0.02, kind, i))

    def _send_video(self, s: dict[str, Any], t: float) -> None:
        if self.keyframe_wanted[s["i"]]:
            self.keyframe_wanted[s["i"]] = False
            s["vn"] = (s["vn"] // KEYFRAME_EVERY + 1) * KEYFRAME_EVERY % len(self.video)
        frame = self.video[s["vn"]]
        s["vn"] = (s["vn"] + 1) % len(self.video)
        s["pid"] = (s["pid"] + 1) & 0x7FFF
        ssrc, pt = s["video"]
        ts = int(t * 90000) & 0xFFFFFFFF
        payloads = vp8_payloads(frame, s["pid"])
        for k, payload in enumerate(payloads):
            last = k == len(payloads) - 1
            s["vseq"] = (s["vseq"] + 1) & 0xFFFF
            body = self.stamp(payload) if last else payload
            s["sink"](rtp.build_rtp(last, pt, s["vseq"], ts, ssrc, body))
            self.sent += 1

    def _send_audio(self, s: dict[str, Any], t: float) -> None:
        ssrc, pt, level_id = s["audio"]
        frame = self.audio[s["an"]]
        s["an"] = (s["an"] + 1) % len(self.audio)
        s["aseq"] = (s["aseq"] + 1) & 0xFFFF
        ext = b"" if level_id is None else rtp.build_audio_level_extension(level_id, -self.level)
        ts = int(t * 48000) & 0xFFFFFFFF
        s["sink"](rtp.build_rtp(True, pt, s["aseq"], ts, ssrc, self.stamp(frame), ext))
        self.sent += 1

    async def op_stats(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "cpu": time.process_time(),
            "states": [pc.connectionState for pc in self.pcs],
            "task": "running" if self.task and not self.task.done() else repr(self.task),
        }

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        for pc in self.pcs:
            await pc.close()


class _Stream:
    __slots__ = ("cycles", "first", "last", "received")

    def __init__(self, seq: int) -> None:
        self.first = seq
        self.last = seq
        self.cycles = 0
        self.received = 0


class SubscriberRole(Role):
    """Subscribers that count every RTP packet (loss from sequence gaps).

    They read the SRTP header straight off the socket without decrypting (see
    ``receive_rtp_from_socket(decrypt=False)``): cheap, so the generators leave the SFU
    as much of the 2 cores as possible.
    """

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.streams: dict[tuple[int, int], _Stream] = {}

    async def op_create(self, n: int, video_slots: int, audio_slots: int) -> list[str]:
        offers = []
        for _ in range(n):
            pc = RTCPeerConnection(rtc_config())
            for kind, count in (("video", video_slots), ("audio", audio_slots)):
                for _ in range(count):
                    t = pc.addTransceiver(kind, direction="recvonly")
                    prefer(t, "video/vp8" if kind == "video" else "audio/opus")
            await pc.setLocalDescription(await pc.createOffer())
            self.pcs.append(pc)
            offers.append(pc.localDescription.sdp)
        return offers

    async def op_connect(self, answers: list[str]) -> None:
        fresh = self.pcs[len(self.pcs) - len(answers) :]
        for pc, answer in zip(fresh, answers, strict=True):
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            dtls = pc.getTransceivers()[0].receiver.transport
            aiortc_adapter.intercept_rtp(dtls, self._counter(id(pc)))
        deadline = time.monotonic() + 60
        while any(pc.connectionState != "connected" for pc in fresh):
            if time.monotonic() > deadline:
                raise RuntimeError("subscribers did not connect")
            await asyncio.sleep(0.05)
        for pc in fresh:  # count SRTP headers straight off the socket: cheap generators
            dtls = pc.getTransceivers()[0].receiver.transport
            aiortc_adapter.receive_rtp_from_socket(dtls, self._counter(id(pc)), decrypt=False)

    def _counter(self, key: int) -> Callable[[bytes], None]:
        streams = self.streams

        def on_rtp(data: bytes) -> None:
            seq = (data[2] << 8) | data[3]
            ssrc = int.from_bytes(data[8:12], "big")
            s = streams.get((key, ssrc))
            if s is None:
                s = streams[(key, ssrc)] = _Stream(seq)
            elif (seq - s.last) & 0xFFFF < 0x8000:
                if seq < s.last:
                    s.cycles += 1
                s.last = seq
            s.received += 1

        return on_rtp

    async def op_snapshot(self) -> dict[str, Any]:
        expected = sum((s.cycles << 16) + s.last - s.first + 1 for s in self.streams.values())
        received = sum(s.received for s in self.streams.values())
        return {
            "expected": expected,
            "received": received,
            "streams": len(self.streams),
            "cpu": time.process_time(),
        }

    async def close(self) -> None:
        for pc in self.pcs:
            await pc.close()


ROLES: dict[str, Callable[..., Role]] = {
    "rtp": SfuRole,
    "frame": FrameSfuRole,
    "relay": RelayRole,
    "pub": PublisherRole,
    "sub": SubscriberRole,
}


def worker_main(role: str, conn: Connection, kwargs: dict[str, Any]) -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format=f"{role}: %(name)s %(message)s")
    aiortc_adapter.restrict_ice_host_addresses(["127.0.0.1"])
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 2 and os.environ.get("BENCH_PIN") == "1":
        # The forwarder gets a core to itself; load generators share the rest, so their
        # bursts do not preempt it (and its CPU time is measured cleanly).
        os.sched_setaffinity(0, cpus[:1] if role in ("rtp", "frame", "relay") else cpus[1:])
    profile = os.environ.get("BENCH_PROFILE") == role
    if profile:  # BENCH_PROFILE=rtp: where the SFU's time goes, in /tmp/bench_rtp.prof
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    if role in ("rtp", "frame"):
        import uvloop

        uvloop.run(serve(role, conn, kwargs))
    else:
        asyncio.run(serve(role, conn, kwargs))
    if profile:
        profiler.disable()
        profiler.dump_stats(f"/tmp/bench_{role}.prof")


async def serve(role: str, conn: Connection, kwargs: dict[str, Any]) -> None:
    if os.environ.get("BENCH_NOGC"):
        import gc

        gc.disable()
    handler = ROLES[role](**kwargs)
    loop = asyncio.get_running_loop()
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg["op"] == "quit":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(handler.close(), 10)
            conn.send({"ok": True})
            return
        try:
            result = await getattr(handler, "op_" + msg["op"])(**msg.get("args", {}))
            conn.send({"ok": True, "result": result})
        except Exception as exc:
            conn.send({"ok": False, "error": repr(exc)})


# ======================================================================= orchestration


class Worker:
    def __init__(self, ctx: Any, role: str, **kwargs: Any) -> None:
        self.role = role
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=worker_main, args=(role, child, kwargs), daemon=True)
        self.proc.start()

    def call(self, op: str, timeout: float = CALL_TIMEOUT, **args: Any) -> Any:
        self.conn.send({"op": op, "args": args})
        if not self.conn.poll(timeout):
            raise TimeoutError(f"{self.role}.{op} took more than {timeout} s")
        reply = self.conn.recv()
        if not reply["ok"]:
            raise RuntimeError(f"{self.role}.{op}: {reply['error']}")
        return reply["result"]

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.send({"op": "quit"})
            self.conn.poll(15)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_mode(
    mode: str,
    publishers: int,
    steps: list[int],
    window: float,
    deadline: float,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """Ramp subscribers through ``steps`` against one forwarder; one result per step."""
    ctx = multiprocessing.get_context("spawn")
    server = Worker(ctx, mode)
    pub = Worker(ctx, "pub", encrypt=mode != "relay")
    subs = [Worker(ctx, "sub") for _ in range(2)]
    results: list[dict[str, Any]] = []
    try:
        rss0 = server.call("stats")["rss_mb"]
        offers = pub.call("create", n=publishers)
        answers = [server.call("join", pid=f"pub{i}", offer=o) for i, o in enumerate(offers)]
        pub.call("connect", answers=answers)
        joined = 0
        for target in steps:
            if time.monotonic() > deadline:
                log(f"  {mode}: time budget reached before N={target}")
                break
            while joined < target:
                batch = min(10, target - joined)
                w = subs[(joined // 10) % len(subs)]
                offers = w.call("create", n=batch, video_slots=publishers, audio_slots=publishers)
                answers = [
                    server.call("join", pid=f"sub{joined + k}", offer=o)
                    for k, o in enumerate(offers)
                ]
                w.call("connect", answers=answers, timeout=120)
                joined += batch
            time.sleep(2.0 if mode != "relay" else 4.0)  # keyframes (≤ 1 s) and warm-up
            server.call("reset")
            a = server.call("stats")
            s0 = [w.call("snapshot") for w in subs]
            time.sleep(window)
            b = server.call("stats")
            s1 = [w.call("snapshot") for w in subs]
            wall = b["wall"] - a["wall"]
            cpu = (b["cpu"] - a["cpu"]) / wall
            expected = sum(y["expected"] - x["expected"] for x, y in zip(s0, s1, strict=True))
            received = sum(y["received"] - x["received"] for x, y in zip(s0, s1, strict=True))
            loss = max(0.0, 1 - received / expected) if expected else 1.0
            streams = publishers * target
            row = {
                "mode": mode,
                "subscribers": target,
                "streams": streams,
                "cpu": round(cpu, 3),
                "received_pps": round(received / wall),
                "packets_out_pps": round((b.get("packets_out", 0) - a.get("packets_out", 0)) / wall)
                if "packets_out" in b
                else round(received / wall),
                "loss": round(loss, 5),
                "added_p50_ms": percentile(b.get("added_ms", []), 0.5),
                "added_p99_ms": percentile(b.get("added_ms", []), 0.99),
                "processing_p50_ms": (b.get("processing_ms") or {}).get("p50"),
                "processing_p99_ms": (b.get("processing_ms") or {}).get("p99"),
                "rss_mb": round(b["rss_mb"], 1),
                "rss_per_participant_mb": round((b["rss_mb"] - rss0) / (publishers + target), 3),
                "streams_per_core": round(streams / cpu, 1) if cpu > 0 else None,
                "sub_cpu": round(
                    sum(y["cpu"] - x["cpu"] for x, y in zip(s0, s1, strict=True)) / wall, 2
                ),
            }
            results.append(row)
            if os.environ.get("BENCH_DEBUG"):
                b.pop("added_ms", None)
                log(f"    pub {pub.call('stats')} sfu {b}")
            log(
                f"  {mode:5} N={target:4} streams={streams:4} cpu={cpu:5.2f} "
                f"out={row['packets_out_pps']:6}/s loss={loss:.4f} "
                f"added p50/p99={fmt(row['added_p50_ms'])}/{fmt(row['added_p99_ms'])} ms "
                f"rss/participant={row['rss_per_participant_mb']} MB "
                f"streams/core={row['streams_per_core']} (generators cpu {row['sub_cpu']})"
            )
            if loss > LOSS_LIMIT * 4 or cpu > 0.97:
                break
    finally:
        for w in [*subs, pub, server]:
            w.stop()
    return results


def fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def summarise(
    rtp_rows: list[dict[str, Any]],
    frame_rows: list[dict[str, Any]],
    relay_rows: list[dict[str, Any]],
) -> dict[str, Any]:
    def best(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        ok = [r for r in rows if r["loss"] <= LOSS_LIMIT and r["streams_per_core"]]
        return max(ok, key=lambda r: r["streams"]) if ok else None

    top = best(rtp_rows)
    per_core = top["streams_per_core"] if top else None
    pkts = round(top["packets_out_pps"] / top["cpu"]) if top else None
    at70 = min(rtp_rows, key=lambda r: abs(r["cpu"] - 0.7)) if rtp_rows else None
    memory = max((r["rss_per_participant_mb"] for r in rtp_rows), default=None)
    if rtp_rows:
        biggest = max(rtp_rows, key=lambda r: r["subscribers"])
        memory = biggest["rss_per_participant_mb"]
    relay = best(relay_rows) or (relay_rows[-1] if relay_rows else None)
    relay_per_core = relay["streams_per_core"] if relay else None
    frame = best(frame_rows)
    return {
        "subscriber_streams_per_core": per_core,
        "forwarded_packets_per_core_s": pkts,
        "added_latency_p50_ms": round(at70["added_p50_ms"], 3)
        if at70 and at70["added_p50_ms"] is not None
        else None,
        "added_latency_p99_ms": round(at70["added_p99_ms"], 3)
        if at70 and at70["added_p99_ms"] is not None
        else None,
        "memory_per_participant_mb": memory,
        "ratio_vs_relay": round(per_core / relay_per_core, 1)
        if per_core and relay_per_core
        else None,
        "rekey_p95_ms": None,
        # context for the figures above
        "latency_at_sfu_cpu": at70["cpu"] if at70 else None,
        "sfu_processing_p99_ms": at70["processing_p99_ms"] if at70 else None,
        "frame_layer_streams_per_core": frame["streams_per_core"] if frame else None,
        "relay_streams_per_core": relay_per_core,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--steps", default="")
    parser.add_argument("--window", type=float, default=4.0)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole run")
    parser.add_argument("--skip-frame", action="store_true")
    parser.add_argument("--skip-relay", action="store_true")
    args = parser.parse_args()
    start = time.monotonic()
    deadline = start + args.budget

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", flush=True)

    if args.quick:
        rtp_steps, frame_steps, relay_steps, window = [5, 20], [5], [1], 2.0
    else:
        rtp_steps = [int(x) for x in args.steps.split(",") if x] or [
            10,
            25,
            40,
            60,
            80,
            100,
            125,
            150,
            180,
            210,
        ]
        frame_steps, relay_steps, window = [10, 25, 40], [1, 2], args.window
    log(
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{args.publishers} publishers, VP8 {WIDTH}x{HEIGHT}@{FPS} {BITRATE // 1000} kb/s + Opus"
    )
    log("rtp (Salon SFU, below the frame layer):")
    rtp_rows = run_mode("rtp", args.publishers, rtp_steps, window, deadline - 150, log)
    frame_rows: list[dict[str, Any]] = []
    if not args.skip_frame:
        log("frame (aiortc pass-through + pre-encoded send, whole frames):")
        frame_rows = run_mode("frame", args.publishers, frame_steps, window, deadline - 60, log)
    relay_rows: list[dict[str, Any]] = []
    if not args.skip_relay:
        log("relay (aiortc MediaRelay, decode + re-encode per subscriber, 1 publisher):")
        relay_rows = run_mode("relay", 1, relay_steps, window, deadline, log)
    summary = summarise(rtp_rows, frame_rows, relay_rows)
    log(f"total {time.monotonic() - start:.0f} s")
    print(json.dumps({"rows": rtp_rows + frame_rows + relay_rows}))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
