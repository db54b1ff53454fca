"""Chat benchmarks (not a test): fan-out to 1,000 members and durable sends.

Usage: python bench/bench_chat.py [--members 1000] [--seconds 4] [--rate 100]

Three processes, so the figures mean something on a small machine: the real ``salon serve``
(SQLite, synchronous=FULL), a bare aiohttp broadcast server, and one client process driving
both through a minimal WebSocket client (no per-frame work beyond parsing and a msgspec
decode, so the servers are what is measured).

Fan-out: ``--members`` members (real identities joined through a signed invite) connect and
follow one room. Senders post messages; each is committed (group commit, fsync) and pushed to
every follower. Measured at the receivers: deliveries per second and send-to-delivery latency
(the sender's and the receivers' clocks are the same process's). Two loads per server:

- ``rate``: ``--rate`` messages/s in total (default 100: 100,000 deliveries/s to 1,000
  members), sent open-loop by ``--rate-senders`` members in turn (default 50, 2 messages/s
  each: a lively room) — latency at the target load;
- ``max``: ``--senders`` closed-loop senders — the most the server delivers.

The baseline is a bare aiohttp server that broadcasts each frame it receives, unchanged, to
every connection (``await ws.send_bytes`` in a loop — no auth, no storage, no queues): the
same bytes (a real ``MessagesAdded`` frame holding one padded message) to the same 1,000
clients. A delivery is one message reaching one member; the chat server puts the messages
of one group commit for a room into one frame, so under load it sends fewer frames than it
delivers messages (both are reported), while the bare server always sends one per message.

Durable sends: 1 and 50 concurrent members, each sending the next message when the last is
acknowledged (acknowledged = committed with synchronous=FULL), against a bare SQLite loop
that inserts one row and commits (synchronous=FULL, WAL) on the same disk in the same run.

Prints human-readable figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from _harness import Server, emit, percentile, start_process, stop_process

try:
    from client.core import chatcrypto, crypto
except ImportError:  # running from a checkout without the editable install
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from client.core import chatcrypto, crypto
from client.core.chat import new_client_id
from protocol import roomkeys
from protocol.chat_wire import ChatMessage, FetchMessages, Messages, MessagesAdded, SendMessage
from protocol.ids import new_id
from protocol.records import (
    Genesis,
    InviteCreate,
    Join,
    Record,
    RoomCreate,
    derive_space_id,
    join_statement,
    record_hash,
    signing_bytes,
)
from protocol.wire import (
    Authenticate,
    Challenge,
    CreateSpace,
    Welcome,
    auth_statement,
    encoder,
    server_decoder,
)

BENCH_LIMITS = {
    "max_message_bytes": 16 * 1024 * 1024,
    "max_records_per_append": 100_000,
    "requests_per_second": 1e9,
    "request_burst": 1_000_000_000,
    "messages_per_second_per_member": 1e9,
    "message_burst_per_member": 1_000_000_000,
    "auth_timeout_seconds": 120.0,
    "websockets_per_address": 1_000_000,  # every member connects from this one machine
}
CONNECT_CONCURRENCY = 64  # below aiohttp's listen backlog (128)


# -- a minimal WebSocket client (RFC 6455, client side) ------------------------------------------


class RawWs(asyncio.Protocol):
    """Just enough WebSocket to receive binary frames cheaply: frames go to ``on_frame`` (or
    a queue until one is set). Client frames use the all-zero mask (legal, and free)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.on_frame: Callable[[bytes], None] | None = None
        self.closed = False
        self._handshaken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as aiohttp's client does
        key = secrets.token_bytes(16).hex()[:22] + "=="
        transport.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self._handshaken:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.upgraded.set_exception(ConnectionError(bytes(buf[:80]).decode()))
                return
            del buf[: end + 4]
            self._handshaken = True
            self.upgraded.set_result(None)
        at, size = 0, len(buf)
        while size - at >= 2:
            b0, b1 = buf[at], buf[at + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - at < 4:
                    break
                length, head = int.from_bytes(buf[at + 2 : at + 4], "big"), 4
            elif length == 127:
                if size - at < 10:
                    break
                length, head = int.from_bytes(buf[at + 2 : at + 10], "big"), 10
            if size - at < head + length:
                break
            payload = bytes(buf[at + head : at + head + length])
            at += head + length
            opcode = b0 & 0x0F
            if opcode == 2:
                if self.on_frame is not None:
                    self.on_frame(payload)
                else:
                    self.queue.put_nowait(payload)
            elif opcode == 9:
                self._send(0xA, payload)
            elif opcode == 8:
                self.closed = True
        del buf[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))

    def _send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            head = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            head = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            head = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        assert self.transport is not None
        self.transport.write(head + b"\x00\x00\x00\x00" + payload)

    def send(self, payload: bytes) -> None:
        self._send(0x2, payload)

    async def recv(self, timeout: float = 60.0) -> bytes:
        return await asyncio.wait_for(self.queue.get(), timeout)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def ws_connect(host: str, port: int) -> RawWs:
    loop = asyncio.get_running_loop()
    _, ws = await loop.create_connection(lambda: RawWs(host, port), host, port)
    await asyncio.wait_for(ws.upgraded, 30)
    return ws


async def authenticate(ws: RawWs, space_id: str, seed: bytes) -> None:
    challenge = server_decoder.decode(await ws.recv())
    assert isinstance(challenge, Challenge)
    statement = auth_statement(challenge.origin, "member", space_id, challenge.nonce)
    key = crypto.public_signing_key(seed)
    ws.send(encoder.encode(Authenticate(1, space_id, key, crypto.sign(seed, statement))))
    reply = server_decoder.decode(await ws.recv())
    assert isinstance(reply, Welcome), reply


# -- the space: a founder, a room and N members joined through an invite -------------------------


def build_space(members: int) -> dict[str, Any]:
    """Sign a whole chain locally (one CreateSpace carries it): genesis, a chat room, an
    invite, and one Join per member signed with the invite key, as real joins are."""
    founder = crypto.random_key()
    genesis = Genesis(crypto.public_box_key(crypto.random_key()), secrets.token_bytes(16))
    space_id = derive_space_id(crypto.public_signing_key(founder), genesis)
    records: list[Record] = []

    def add(seed: bytes, body: Any) -> None:
        prev = record_hash(records[-1]) if records else bytes(32)
        unsigned = Record(
            space_id, len(records), prev, crypto.public_signing_key(seed), int(time.time()), body
        )
        records.append(
            msgspec.structs.replace(unsigned, sig=crypto.sign(seed, signing_bytes(unsigned)))
        )

    room_id = new_id()
    invite_seed = crypto.random_key()
    add(founder, genesis)
    name_box = crypto.secretbox(crypto.random_key(), b"bench")
    # Shared history: the room key stays at generation 0 however many members join.
    add(founder, RoomCreate(room_id, "chat", 0, name_box, history="shared"))
    add(
        founder,
        InviteCreate(
            "benchinvite0", crypto.public_signing_key(invite_seed), "member", 2**40, members
        ),
    )
    seeds = []
    for _ in range(members):
        seed, box_key = crypto.random_key(), crypto.public_box_key(crypto.random_key())
        key = crypto.public_signing_key(seed)
        statement = join_statement(space_id, key, box_key, "benchinvite0")
        add(seed, Join("benchinvite0", box_key, crypto.sign(invite_seed, statement)))
        seeds.append(seed)
    return {
        "space_id": space_id,
        "room_id": room_id,
        "founder": founder,
        "seeds": seeds,
        "records": records,
    }


async def create_space(host: str, port: int, space: dict[str, Any]) -> None:
    ws = await ws_connect(host, port)
    try:
        challenge = server_decoder.decode(await ws.recv())
        assert isinstance(challenge, Challenge)
        statement = auth_statement(challenge.origin, "create", space["space_id"], challenge.nonce)
        signature = crypto.sign(space["founder"], statement)
        ws.send(encoder.encode(CreateSpace(1, space["records"], [], signature)))
        reply = server_decoder.decode(await ws.recv(120))
        assert isinstance(reply, Welcome), reply
    finally:
        ws.close()


def sample_box() -> bytes:
    """A short real message (padded, with its key generation: 300 bytes), reused by every send."""
    header = chatcrypto.MessageHeader("s" * 24, "r" * 16, 0, bytes(32), bytes(16), 0)
    box = chatcrypto.seal_message(
        crypto.random_key(), crypto.random_key(), header, "hi!", 0, 0, bytes(32)
    )
    return roomkeys.frame(0, box)  # the key generation in front


# -- the client process --------------------------------------------------------------------------


def cpu_seconds(pid: int | None) -> float:
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class FanOut:
    """Receivers counting deliveries (messages) and frames, and latencies; ``sent`` maps a
    message's index (the second half of its client id) to its send time."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}
        self.counting = False
        self.count = 0
        self.frames = 0
        self.latencies: list[float] = []
        self.decoder = msgspec.msgpack.Decoder(MessagesAdded)

    def on_frame(self, payload: bytes) -> None:
        now = time.perf_counter()
        if not self.counting:
            return
        event = self.decoder.decode(payload)
        self.frames += 1
        self.count += len(event.messages)
        for message in event.messages:
            sent = self.sent.get(int.from_bytes(message.client_id[8:], "big"))
            if sent is not None:
                self.latencies.append(now - sent)


async def fanout_phase(
    target: str,
    host: str,
    port: int,
    spec: dict[str, Any],
    receivers: list[RawWs],
    fan: FanOut,
    mode: str,
    seconds: float,
    rate: float,
    senders: int,
    server_pid: int,
) -> dict[str, Any]:
    """One load against one server, receivers already connected and following."""
    box = sample_box()
    seeds = [bytes.fromhex(s) for s in spec["seeds"]]
    sender_seeds = seeds[-senders:]  # members who also receive: they post, others read
    conns = []
    for seed in sender_seeds:
        ws = await ws_connect(host, port)
        if target == "chat":
            await authenticate(ws, spec["space_id"], seed)
        else:
            ws.send(b"send")
        conns.append((ws, crypto.public_signing_key(seed)))
    counter = iter(range(10**12))
    stop = asyncio.Event()
    sent_in_window = 0

    def frame_for(index: int, member: bytes) -> bytes:
        client_id = new_client_id()[:8] + index.to_bytes(8, "big")
        if target == "chat":
            return encoder.encode(SendMessage(index, spec["room_id"], client_id, 0, 0, box))
        message = ChatMessage(index, member, client_id, 0, 0, time.time(), None, box)
        return encoder.encode(MessagesAdded(spec["room_id"], [message]))

    async def closed_loop(ws: RawWs, member: bytes) -> None:
        nonlocal sent_in_window
        while not stop.is_set():
            index = next(counter)
            frame = frame_for(index, member)
            fan.sent[index] = time.perf_counter()
            ws.send(frame)
            await ws.recv(30)  # the acknowledgement
            sent_in_window += fan.counting

    async def open_loop() -> None:
        """One pacer, round-robin over the connections (as many members post, not one)."""
        nonlocal sent_in_window
        start = time.perf_counter()
        drains = [asyncio.create_task(_drain(ws)) for ws, _ in conns]
        n = 0
        while not stop.is_set():
            delay = start + n / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            ws, member = conns[n % len(conns)]
            index = next(counter)
            frame = frame_for(index, member)
            fan.sent[index] = time.perf_counter()
            ws.send(frame)
            sent_in_window += fan.counting
            n += 1
        for drain in drains:
            drain.cancel()

    if mode == "max":
        tasks = [asyncio.create_task(closed_loop(ws, member)) for ws, member in conns]
    else:
        tasks = [asyncio.create_task(open_loop())]
    await asyncio.sleep(1.0)  # warm-up
    fan.count, fan.frames, fan.latencies, fan.counting = 0, 0, [], True
    cpu0, server0, t0 = cpu_seconds(None), cpu_seconds(server_pid), time.perf_counter()
    await asyncio.sleep(seconds)
    fan.counting = False
    t1, cpu1, server1 = time.perf_counter(), cpu_seconds(None), cpu_seconds(server_pid)
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        task.cancel()
    await asyncio.sleep(0.5)  # let in-flight deliveries land before the next phase
    for ws, _ in conns:
        ws.close()
    elapsed = t1 - t0
    lat = fan.latencies
    return {
        "server": target,
        "load": mode,
        "members": len(receivers),
        "senders": len(conns),
        "messages_per_s": round(sent_in_window / elapsed, 1),
        "deliveries_per_s": round(fan.count / elapsed),
        "frames_per_s": round(fan.frames / elapsed),
        "p50_ms": round(percentile(lat, 0.50) * 1000, 2),
        "p99_ms": round(percentile(lat, 0.99) * 1000, 2),
        "max_ms": round(max(lat, default=float("nan")) * 1000, 2),
        "receivers_dropped": sum(ws.closed for ws in receivers),
        "server_cpu": round((server1 - server0) / elapsed, 2),
        "client_cpu": round((cpu1 - cpu0) / elapsed, 2),
    }


async def _drain(ws: RawWs) -> None:
    while True:
        await ws.queue.get()


async def connect_receivers(
    target: str, host: str, port: int, spec: dict[str, Any], fan: FanOut
) -> list[RawWs]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    seeds = [bytes.fromhex(s) for s in spec["seeds"]]

    async def one(seed: bytes) -> RawWs:
        async with gate:
            ws = await ws_connect(host, port)
            if target == "chat":
                await authenticate(ws, spec["space_id"], seed)
                ws.send(encoder.encode(FetchMessages(2, spec["room_id"], 2**62, 1, True)))
                reply = server_decoder.decode(await ws.recv())
                assert isinstance(reply, Messages), reply
            else:
                ws.send(b"recv")
                assert await ws.recv() == b"ready"
            ws.on_frame = fan.on_frame
            return ws

    return list(await asyncio.gather(*(one(seed) for seed in seeds)))


async def durable_phase(
    host: str, port: int, spec: dict[str, Any], senders: int, seconds: float, server_pid: int
) -> dict[str, Any]:
    box = sample_box()
    seeds = [bytes.fromhex(s) for s in spec["seeds"]][:senders]
    conns = []
    for seed in seeds:
        ws = await ws_connect(host, port)
        await authenticate(ws, spec["space_id"], seed)
        conns.append(ws)
    counting = False
    acked = 0
    latencies: list[float] = []
    stop = asyncio.Event()

    async def sender(ws: RawWs) -> None:
        nonlocal acked
        request_id = 0
        while not stop.is_set():
            request_id += 1
            client_id = new_client_id()
            started = time.perf_counter()
            ws.send(encoder.encode(SendMessage(request_id, spec["room_id"], client_id, 0, 0, box)))
            await ws.recv(30)
            if counting:
                acked += 1
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(sender(ws)) for ws in conns]
    await asyncio.sleep(0.5)
    counting = True
    server0, t0 = cpu_seconds(server_pid), time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    t1, server1 = time.perf_counter(), cpu_seconds(server_pid)
    stop.set()
    await asyncio.wait(tasks, timeout=10)
    for ws in conns:
        ws.close()
    elapsed = t1 - t0
    return {
        "senders": senders,
        "acked_per_s": round(acked / elapsed),
        "p50_ms": round(percentile(latencies, 0.5) * 1000, 2),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "server_cpu": round((server1 - server0) / elapsed, 2),
    }


async def run_clients(args: argparse.Namespace) -> None:
    spec = json.loads(Path(args.spec).read_text())
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    results: dict[str, Any] = {"fanout": [], "durable": []}
    for target in ("chat", "bare"):
        host, port, pid = spec[target]["host"], spec[target]["port"], spec[target]["pid"]
        fan = FanOut()
        started = time.perf_counter()
        fan_spec = dict(spec, seeds=spec["seeds"][: args.members])
        receivers = await connect_receivers(target, host, port, fan_spec, fan)
        connect_s = time.perf_counter() - started
        for mode in ("rate", "max"):
            phase = await fanout_phase(
                target,
                host,
                port,
                spec,
                receivers,
                fan,
                mode,
                args.seconds,
                args.rate,
                args.senders if mode == "max" else args.rate_senders,
                pid,
            )
            phase["connect_s"] = round(connect_s, 2)
            results["fanout"].append(phase)
            print(json.dumps(phase), file=sys.stderr, flush=True)
        for ws in receivers:
            ws.close()
        await asyncio.sleep(1.0)
    chat = spec["chat"]
    for senders in (1, 50):
        phase = await durable_phase(
            chat["host"], chat["port"], spec, senders, args.seconds, chat["pid"]
        )
        results["durable"].append(phase)
        print(json.dumps(phase), file=sys.stderr, flush=True)
    print(json.dumps(results), flush=True)


# -- the bare aiohttp broadcast server -------------------------------------------------------------


async def run_bare(args: argparse.Namespace) -> None:
    """Relay every frame a "send" connection sends, unchanged, to every "recv" connection
    (``await ws.send_bytes`` in a loop), then answer the sender."""
    from aiohttp import WSMsgType, web

    receivers: set[web.WebSocketResponse] = set()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=262_144, heartbeat=30)
        await ws.prepare(request)
        first = await ws.receive()
        if first.data == b"recv":
            receivers.add(ws)
            await ws.send_bytes(b"ready")
            async for _ in ws:
                pass
            receivers.discard(ws)
            return ws
        async for msg in ws:
            if msg.type != WSMsgType.BINARY:
                continue
            for receiver in list(receivers):
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await receiver.send_bytes(msg.data)
            await ws.send_bytes(b"ok")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    print(f"listening on http://{host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


# -- the orchestrator ------------------------------------------------------------------------------


def bare_sqlite(path: Path, seconds: float) -> dict[str, Any]:
    """One row per transaction, synchronous=FULL, WAL: the disk's durable-commit rate."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (room TEXT, seq INTEGER, box BLOB, PRIMARY KEY (room, seq))")
    box = sample_box()
    n = 0
    start_t = time.perf_counter()
    deadline = start_t + seconds
    while time.perf_counter() < deadline:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?, ?)", ("room", n, box))
        db.execute("COMMIT")
        n += 1
    elapsed = time.perf_counter() - start_t
    db.close()
    return {"commits_per_s": round(n / elapsed)}


def orchestrate(args: argparse.Namespace) -> None:
    args.load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    me = str(Path(__file__).resolve())
    with tempfile.TemporaryDirectory(prefix="salon-bench-", dir=args.dir) as tmp:
        root = Path(tmp)
        chat = Server(root, {"limits": BENCH_LIMITS}, stop_timeout=15)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            chat.start(timeout=30)
            chat_host, chat_port = chat.host, chat.port
            bare, found = start_process([sys.executable, me, "bare"], root / "bare.log", timeout=30)
            procs.append(bare)
            bare_host, bare_port = found[2], int(found[3])

            t = time.perf_counter()
            space = build_space(max(args.members, 50))
            asyncio.run(create_space(chat_host, chat_port, space))
            print(
                f"space with {len(space['seeds'])} members created in "
                f"{time.perf_counter() - t:.1f}s",
                file=sys.stderr,
            )
            spec = {
                "space_id": space["space_id"],
                "room_id": space["room_id"],
                "seeds": [s.hex() for s in space["seeds"]],
                "chat": {"host": chat_host, "port": chat_port, "pid": chat.pid},
                "bare": {"host": bare_host, "port": bare_port, "pid": bare.pid},
            }
            (root / "spec.json").write_text(json.dumps(spec))
            clients = subprocess.run(
                [
                    sys.executable,
                    me,
                    "clients",
                    "--spec",
                    str(root / "spec.json"),
                    "--members",
                    str(args.members),
                    "--seconds",
                    str(args.seconds),
                    "--rate",
                    str(args.rate),
                    "--senders",
                    str(args.senders),
                    "--rate-senders",
                    str(args.rate_senders),
                ],
                capture_output=True,
                text=True,
                timeout=args.timeout,
            )
            if clients.returncode != 0:
                raise SystemExit(f"client process failed:\n{clients.stderr}")
            results = json.loads(clients.stdout.strip().splitlines()[-1])
            baseline = bare_sqlite(root / "bare.db", args.seconds)
        finally:
            chat.stop()
            for proc in procs:
                stop_process(proc, timeout=15)
    report(args, results, baseline)


def report(args: argparse.Namespace, results: dict[str, Any], baseline: dict[str, Any]) -> None:
    fan = {(p["server"], p["load"]): p for p in results["fanout"]}
    chat_max, bare_max = fan[("chat", "max")], fan[("bare", "max")]
    chat_rate = fan[("chat", "rate")]
    ratio = chat_max["deliveries_per_s"] / max(1, bare_max["deliveries_per_s"])
    durable = {p["senders"]: p for p in results["durable"]}
    print(
        f"Chat benchmarks, Python {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {args.load_before:.2f} before the run"
    )
    print(f"Fan-out to {args.members} members of one room (client process apart from servers):")
    for p in results["fanout"]:
        print(
            f"  {p['server']:>4} {p['load']:>4}: {p['messages_per_s']:>8.1f} msg/s"
            f" {p['deliveries_per_s']:>9,} deliveries/s ({p['frames_per_s']:>7,} frames/s)"
            f"  p50 {p['p50_ms']:>7.2f} ms"
            f"  p99 {p['p99_ms']:>7.2f} ms  (server cpu {p['server_cpu']:.2f},"
            f" client cpu {p['client_cpu']:.2f}, dropped {p['receivers_dropped']})"
        )
    print(f"  salon / bare aiohttp broadcast at max load: {ratio:.2f}")
    print("Durable sends (acknowledged after COMMIT, synchronous=FULL):")
    for n, p in sorted(durable.items()):
        print(
            f"  {n:>2} sender(s): {p['acked_per_s']:>7,} acked/s  p50 {p['p50_ms']:.2f} ms"
            f"  p99 {p['p99_ms']:.2f} ms  (server cpu {p['server_cpu']:.2f})"
        )
    print(f"  bare SQLite insert+commit loop: {baseline['commits_per_s']:,} commits/s")
    ratio_50 = durable[50]["acked_per_s"] / max(1, baseline["commits_per_s"])
    ratio_1 = durable[1]["acked_per_s"] / max(1, baseline["commits_per_s"])
    print(f"  ratio to the bare loop: 1 sender {ratio_1:.2f}, 50 senders {ratio_50:.2f}")
    summary = {
        "bench": "chat",
        "members": args.members,
        "load_average_before": round(args.load_before, 2),
        "fanout_deliveries_per_s": chat_max["deliveries_per_s"],
        "fanout_p50_ms": chat_max["p50_ms"],
        "fanout_p99_ms": chat_max["p99_ms"],
        "fanout_at_rate": {
            "messages_per_s": chat_rate["messages_per_s"],
            "deliveries_per_s": chat_rate["deliveries_per_s"],
            "p50_ms": chat_rate["p50_ms"],
            "p99_ms": chat_rate["p99_ms"],
        },
        "bare_broadcast_deliveries_per_s": bare_max["deliveries_per_s"],
        "fanout_ratio_vs_bare": round(ratio, 3),
        "durable_acked_per_s_1_sender": durable[1]["acked_per_s"],
        "durable_acked_per_s_50_senders": durable[50]["acked_per_s"],
        "bare_sqlite_commits_per_s": baseline["commits_per_s"],
        "durable_ratio_vs_bare_sqlite_50": round(ratio_50, 3),
        "phases": results,
    }
    emit(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", default="main", choices=["main", "clients", "bare"])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=4.0, help="measured time per phase")
    parser.add_argument("--rate", type=float, default=100.0, help="messages/s, open loop")
    parser.add_argument("--senders", type=int, default=4, help="closed-loop fan-out senders")
    parser.add_argument(
        "--rate-senders", type=int, default=50, help="members sharing the open-loop rate"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="bound on the client run")
    parser.add_argument("--dir", help="where the temporary data directory goes")
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    runner: Callable[[Any], Any]
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    if args.role == "bare":
        runner(run_bare(args))
    elif args.role == "clients":
        runner(run_clients(args))
    else:
        orchestrate(args)


if __name__ == "__main__":
    main()
