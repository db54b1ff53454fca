"""Scale benchmarks (not a test): SQLite, PostgreSQL with 1 and with 2 instances, one run.

Usage: python bench/bench_scale.py [--members 1000] [--seconds 5] [--senders 50]
       [--fanout-senders 4] [--no-resume] [--quick]

Starts a throwaway PostgreSQL (tests/support/postgres.py; here with ``fsync`` on, PostgreSQL's
default, so a commit is as durable as SQLite's ``synchronous=FULL``) and, one configuration
after the other, real ``salon serve`` instances: on SQLite (1 instance), on PostgreSQL with 1
and with 2 instances on one fresh database each. The space (``--members`` members joined
through a signed invite, one room) is the same in every configuration. Clients run in this
process (bench_chat's minimal WebSocket client: authentication and frames from the client
library's ``protocol``/``crypto``, no per-frame work beyond a msgspec decode) and are spread
round-robin over the instances: with 2, half the followers and half the senders are on each.

- **Fan-out**: every member follows the room; ``--fanout-senders`` members send closed-loop
  (the next message once the last is acknowledged). Measured at the followers: deliveries/s
  (one message reaching one member) and send-to-delivery latency p50/p99. With 2 instances a
  message sent through A reaches B's followers through LISTEN/NOTIFY and a reload.
- **Durable sends**: followers gone, ``--senders`` members send closed-loop; acknowledged
  sends/s (acknowledged = committed) and the acknowledgement latency.
- **Baseline**: a bare asyncpg loop on the same PostgreSQL — each of N connections inserts one
  row shaped like a stored message (same columns, same primary key and unique index) and
  commits (autocommit: one round trip), N = the same concurrency (``--senders`` for the durable
  figure, ``--fanout-senders`` for fan-out, whose figure compared is messages committed/s).
  Every PostgreSQL figure also has its ratio to the SQLite figure of the same run.
- **SIGKILL resume** (2 instances, unless ``--no-resume``): the followers connect through a
  round-robin TCP front (tests/support/roundrobin.py, a process of its own) while one member
  sends 10 messages/s directly to instance B; instance A is killed with SIGKILL. Each of A's
  followers reconnects (the client library's back-off, as ``salon read --follow``),
  authenticates and re-fetches after the last sequence it saw. Measured: SIGKILL → that
  re-fetch answered, p50/p95; and every acknowledged message reached every follower exactly
  once (``lost`` counts misses). Calls surviving the loss of an instance are timed by another
  test, not here (``null``).

Each window also records the CPU it took, in cores: the ``salon serve`` instances, PostgreSQL
(postmaster and backends) and this client process — on a 2-core machine a second instance
adds processes, not cores.

``--quick``: tiny sizes, a few seconds (tests/test_bench_scale.py runs it so this cannot rot).
Prints human-readable figures, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent), str(HERE.parent / "tests")]

import asyncpg  # noqa: E402
import msgspec  # noqa: E402
from _harness import Server, emit, percentile, ratio, start_process, stop_process  # noqa: E402
from bench_chat import (  # noqa: E402
    BENCH_LIMITS,
    CONNECT_CONCURRENCY,
    FanOut,
    RawWs,
    authenticate,
    build_space,
    cpu_seconds,
    create_space,
    sample_box,
    ws_connect,
)
from support.postgres import PostgresServer, find_bindir  # noqa: E402

from client.core.backoff import Backoff  # noqa: E402
from client.core.chat import RECONNECT_FIRST, RECONNECT_MAX, new_client_id  # noqa: E402
from protocol.chat_wire import (  # noqa: E402
    FetchMessages,
    Messages,
    MessagesAdded,
    MessageSent,
    SendMessage,
)
from protocol.wire import encoder, server_decoder  # noqa: E402

Where = tuple[str, int]  # an instance's host and port
NOT_MEASURED_CALLS = (
    "not measured here: calls surviving a SIGKILLed instance are timed by"
    " tests/test_call_survives_instance_loss.py (branch callsurvive)"
)
RESUME_RATE = 10.0  # messages/s sent during the resume phase
ROUND_ROBIN = HERE.parent / "tests" / "support" / "roundrobin.py"
FOLLOW_NEW = 2**62  # FetchMessages.after: no backlog, just follow (and learn last_seq)


def spread(items: Sequence[Any], where: Sequence[Where]) -> list[tuple[Any, Where]]:
    """Each item with its instance, round-robin."""
    return [(item, where[i % len(where)]) for i, item in enumerate(items)]


async def follow(ws: RawWs, room_id: str, after: int = FOLLOW_NEW) -> Messages:
    ws.send(encoder.encode(FetchMessages(2, room_id, after, 500, True)))
    while True:
        reply = server_decoder.decode(await ws.recv())
        if isinstance(reply, Messages):
            return reply


async def connect_followers(
    space: dict[str, Any], where: Sequence[Where], fan: FanOut
) -> list[RawWs]:
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(seed: bytes, at: Where) -> RawWs:
        async with gate:
            ws = await ws_connect(*at)
            await authenticate(ws, space["space_id"], seed)
            await follow(ws, space["room_id"])
            ws.on_frame = fan.on_frame
            return ws

    members = spread(space["seeds"][: space["members"]], where)
    return list(await asyncio.gather(*(one(seed, at) for seed, at in members)))


async def senders_connected(
    space: dict[str, Any], seeds: list[bytes], where: Sequence[Where]
) -> list[RawWs]:
    conns = []
    for seed, at in spread(seeds, where):
        ws = await ws_connect(*at)
        await authenticate(ws, space["space_id"], seed)
        conns.append(ws)
    return conns


async def closed_loop(
    conns: list[RawWs],
    room_id: str,
    warmup: float,
    seconds: float,
    on_window: Callable[[bool], None],
    stamp: Callable[[int], None] | None = None,
) -> tuple[int, list[float], float]:
    """Every connection sends, awaits its acknowledgement, sends again. Counts the acks and
    their latencies within the measured window (after ``warmup``); ``on_window(True/False)``
    marks its start and end; ``stamp(index)`` is called as message ``index`` leaves."""
    box = sample_box()
    counter = iter(range(10**12))
    stop = asyncio.Event()
    counting = False
    acked = 0
    latencies: list[float] = []

    async def sender(ws: RawWs) -> None:
        nonlocal acked
        while not stop.is_set():
            index = next(counter)
            client_id = new_client_id()[:8] + index.to_bytes(8, "big")
            frame = encoder.encode(SendMessage(index, room_id, client_id, 0, 0, box))
            started = time.perf_counter()
            if stamp is not None:
                stamp(index)
            ws.send(frame)
            reply = server_decoder.decode(await ws.recv(60))
            assert isinstance(reply, MessageSent), reply  # an error is no acknowledgement
            if counting:
                acked += 1
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(sender(ws)) for ws in conns]
    await asyncio.sleep(warmup)
    counting = True
    on_window(True)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    on_window(False)
    elapsed = time.perf_counter() - t0
    stop.set()
    await asyncio.wait(tasks, timeout=30)
    for task in tasks:
        task.cancel()
    return acked, latencies, elapsed


def ms(values: list[float], q: float) -> float:
    return round(percentile(values, q) * 1000, 2)


def children(pid: int) -> list[int]:
    """The direct children of ``pid`` (PostgreSQL's backends under its postmaster)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


class Cpu:
    """CPU time used within the measured window, in cores: the ``salon serve`` instances,
    PostgreSQL (the postmaster and every backend), and this client process."""

    def __init__(self, servers: Sequence[int], postmaster: int | None) -> None:
        self.servers, self.postmaster = list(servers), postmaster
        self.start: dict[str, float] = {}
        self.cores: dict[str, float] = {}
        self.t0 = 0.0

    def sample(self) -> dict[str, float]:
        postgres = [self.postmaster, *children(self.postmaster)] if self.postmaster else []
        return {
            "servers": sum(pid_cpu(pid) for pid in self.servers),
            "postgres": sum(pid_cpu(pid) for pid in postgres),
            "client": cpu_seconds(None),
        }

    def window(self, on: bool) -> None:
        now = time.perf_counter()
        if on:
            self.start, self.t0 = self.sample(), now
            return
        end = self.sample()
        # A backend that ended within the window takes its CPU time with it: a lower bound.
        self.cores = {
            f"{k}_cpu": round(max(0.0, end[k] - self.start[k]) / (now - self.t0), 2) for k in end
        }


def postmaster_pid(postgres: PostgresServer) -> int | None:
    try:
        return int((postgres.data / "postmaster.pid").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return None


def pid_cpu(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, IndexError):
        return 0.0


async def fanout(
    space: dict[str, Any], where: Sequence[Where], cpu: Cpu, args: argparse.Namespace
) -> dict[str, Any]:
    fan = FanOut()
    started = time.perf_counter()
    followers = await connect_followers(space, where, fan)
    connect_s = time.perf_counter() - started
    conns = await senders_connected(space, space["seeds"][-args.fanout_senders :], where)

    def window(on: bool) -> None:
        if on:
            fan.count, fan.frames, fan.latencies = 0, 0, []
        fan.counting = on
        cpu.window(on)

    def stamp(index: int) -> None:
        fan.sent[index] = time.perf_counter()

    sent, _, elapsed = await closed_loop(
        conns, space["room_id"], args.warmup, args.seconds, window, stamp
    )
    await asyncio.sleep(0.3)  # in-flight deliveries land (uncounted) before the sockets close
    dropped = sum(ws.closed for ws in followers)
    for ws in (*followers, *conns):
        ws.close()
    return {
        "members": len(followers),
        "senders": len(conns),
        "messages_per_s": round(sent / elapsed, 1),
        "deliveries_per_s": round(fan.count / elapsed),
        "frames_per_s": round(fan.frames / elapsed),
        "p50_ms": ms(fan.latencies, 0.50),
        "p99_ms": ms(fan.latencies, 0.99),
        "followers_dropped": dropped,
        "connect_s": round(connect_s, 2),
        **cpu.cores,
    }


async def durable(
    space: dict[str, Any], where: Sequence[Where], cpu: Cpu, args: argparse.Namespace
) -> dict[str, Any]:
    conns = await senders_connected(space, space["seeds"][: args.senders], where)
    acked, latencies, elapsed = await closed_loop(
        conns, space["room_id"], args.warmup, args.seconds, cpu.window
    )
    for ws in conns:
        ws.close()
    return {
        "senders": len(conns),
        "acked_per_s": round(acked / elapsed),
        "p50_ms": ms(latencies, 0.50),
        "p99_ms": ms(latencies, 0.99),
        **cpu.cores,
    }


# -- SIGKILL: followers behind a round-robin front resume on the surviving instance ----------------


class LossAwareWs(RawWs):
    """A RawWs whose ``recv`` answers ``b""`` once the connection is gone."""

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.queue.put_nowait(b"")


class ResumingFollower:
    """What ``salon read --follow`` does across a lost instance, minus decryption: follow,
    and when the connection ends reconnect (the client library's back-off), authenticate and
    fetch after the last sequence seen. ``seqs`` are the sequences received (deduplicated, as
    the client does); ``resumed_at`` when the first re-fetch after a loss was answered."""

    def __init__(self, space: dict[str, Any], seed: bytes, front: Where) -> None:
        self.space, self.seed, self.front = space, seed, front
        self.last = 0
        self.head = 0  # the room's last seq when first followed
        self.seqs: set[int] = set()
        self.client_ids: dict[int, bytes] = {}
        self.connections = 0
        self.gap_fetches = 0
        self.attempts = 0  # connection attempts after the first connection was lost
        self.lost_at: float | None = None
        self.resumed_at: float | None = None
        self.ready = asyncio.Event()

    def take(self, messages: Any) -> None:
        for message in messages:
            if message.seq > self.last:
                self.last = message.seq
            self.seqs.add(message.seq)
            self.client_ids[message.seq] = message.client_id

    async def run(self) -> None:
        backoff = Backoff(RECONNECT_FIRST, RECONNECT_MAX)
        loop = asyncio.get_running_loop()
        room_id = self.space["room_id"]
        while True:
            ws: LossAwareWs | None = None
            self.attempts += self.lost_at is not None
            try:
                _, ws = await loop.create_connection(lambda: LossAwareWs(*self.front), *self.front)
                await asyncio.wait_for(ws.upgraded, 30)
                await authenticate(ws, self.space["space_id"], self.seed)
                first = self.connections == 0
                after = FOLLOW_NEW if first else self.last
                ws.send(encoder.encode(FetchMessages(2, room_id, after, 500, True)))
                while frame := await ws.recv(3600):
                    event = server_decoder.decode(frame)
                    if isinstance(event, MessagesAdded) and event.messages:
                        if event.messages[0].seq > self.last + 1 and self.connections:
                            # A gap: fetch it, as the client library's Follower does.
                            self.gap_fetches += 1
                            ws.send(encoder.encode(FetchMessages(3, room_id, self.last, 500)))
                        self.take(event.messages)
                    elif isinstance(event, Messages):
                        if first and event.id == 2:
                            self.last = self.head = event.last_seq
                        else:
                            self.take(event.messages)
                        if event.messages and event.messages[-1].seq < event.last_seq:
                            ws.send(encoder.encode(FetchMessages(3, room_id, self.last, 500)))
                            continue
                        if event.id == 2:  # following, caught up
                            self.connections += 1
                            self.ready.set()
                            backoff.reset()
                        if not first and self.resumed_at is None:
                            self.resumed_at = time.perf_counter()
            except (ConnectionError, OSError, AssertionError, msgspec.DecodeError):
                pass
            finally:
                if ws is not None:
                    ws.close()
            if self.connections and self.lost_at is None:
                self.lost_at = time.perf_counter()
            await backoff.wait()


def established(port: int) -> int:
    """Established TCP connections whose local port is ``port`` (a server's accepted ones)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    count += 1
    return count


async def resume(
    space: dict[str, Any], servers: list[Server], front: Where, args: argparse.Namespace
) -> dict[str, Any]:
    """Kill ``servers[0]`` with SIGKILL under followers that reach both through ``front``."""
    victim, survivor = servers
    followers = [ResumingFollower(space, s, front) for s in space["seeds"][: space["members"]]]
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def start(follower: ResumingFollower) -> asyncio.Task[None]:
        async with gate:
            task = asyncio.create_task(follower.run())
            await asyncio.wait_for(follower.ready.wait(), 60)
            return task

    tasks = await asyncio.gather(*(start(f) for f in followers))
    on_victim = established(victim.port)  # the followers A serves
    sender = (
        await senders_connected(space, [space["seeds"][0]], [(survivor.host, survivor.port)])
    )[0]
    acked: dict[int, bytes] = {}
    box = sample_box()
    stop = asyncio.Event()

    async def send() -> None:
        n = 0
        t0 = time.perf_counter()
        while not stop.is_set():
            client_id = new_client_id()
            sender.send(encoder.encode(SendMessage(n, space["room_id"], client_id, 0, 0, box)))
            reply = server_decoder.decode(await sender.recv(60))
            assert isinstance(reply, MessageSent), reply
            acked[reply.seq] = client_id
            n += 1
            await asyncio.sleep(max(0.0, t0 + n / RESUME_RATE - time.perf_counter()))

    sending = asyncio.create_task(send())
    await asyncio.sleep(args.warmup)
    killed_at = time.perf_counter()
    assert victim.proc is not None
    victim.proc.kill()  # SIGKILL
    deadline = killed_at + args.resume_timeout
    while time.perf_counter() < deadline:
        lost = [f for f in followers if f.lost_at is not None]
        if len(lost) >= on_victim and all(f.resumed_at is not None for f in lost):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(args.warmup)  # sending goes on after the resumption
    stop.set()
    await sending
    last = max(acked)
    deadline = time.perf_counter() + args.resume_timeout
    while time.perf_counter() < deadline and any(f.last < last for f in followers):
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sender.close()
    lost_followers = [f for f in followers if f.lost_at is not None]
    waits = [f.resumed_at - killed_at for f in lost_followers if f.resumed_at is not None]
    noticed = [f.lost_at - killed_at for f in lost_followers if f.lost_at is not None]
    missing = 0
    wrong = 0
    for f in followers:
        for seq, client_id in acked.items():
            if seq > f.head and seq not in f.seqs:
                missing += 1
            elif seq in f.seqs and f.client_ids[seq] != client_id:
                wrong += 1
    return {
        "followers": len(followers),
        "on_killed_instance": on_victim,
        "lost_connection": len(lost_followers),
        "resumed": len(waits),
        "p50_ms": ms(waits, 0.50),
        "p95_ms": ms(waits, 0.95),
        "max_ms": round(max(waits, default=float("nan")) * 1000, 2),
        "messages_acked": len(acked),
        "gap_fetches": sum(f.gap_fetches for f in followers),
        "reconnect_attempts": sum(f.attempts for f in lost_followers),
        "min_ms": round(min(waits, default=float("nan")) * 1000, 2),
        "noticed_p50_ms": ms(noticed, 0.50),  # SIGKILL → the follower saw its connection end
        "lost": missing,  # acknowledged messages some follower never received
        "mismatched": wrong,  # a sequence carrying another message than the one acknowledged
    }


# -- the bare asyncpg loop -----------------------------------------------------------------------


BARE_TABLE = """
CREATE TABLE bare_messages (
    space_id text NOT NULL, room_id text NOT NULL, seq bigint NOT NULL, sender bytea NOT NULL,
    client_id bytea NOT NULL, epoch bigint NOT NULL, ttl bigint NOT NULL,
    sent_at double precision NOT NULL, expires_at double precision, box bytea NOT NULL,
    PRIMARY KEY (space_id, room_id, seq)
);
CREATE UNIQUE INDEX bare_by_client_id ON bare_messages(space_id, room_id, client_id, sender);
"""


async def bare_asyncpg(url: str, concurrency: int, warmup: float, seconds: float) -> float:
    """Insert+commit per row from ``concurrency`` connections; commits per second."""
    setup = await asyncpg.connect(url)
    await setup.execute("DROP TABLE IF EXISTS bare_messages")
    await setup.execute(BARE_TABLE)
    await setup.close()
    conns = [await asyncpg.connect(url) for _ in range(concurrency)]
    box, sender = sample_box(), os.urandom(32)
    seqs = iter(range(1, 10**12))
    counting, stop, done = False, False, 0

    async def loop(conn: asyncpg.Connection) -> None:
        nonlocal done
        insert = await conn.prepare(
            "INSERT INTO bare_messages (space_id, room_id, seq, sender, client_id, epoch, ttl,"
            " sent_at, expires_at, box) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        )
        while not stop:
            await insert.fetch(
                "s" * 43,
                "r" * 22,
                next(seqs),
                sender,
                new_client_id(),
                0,
                0,
                time.time(),
                None,
                box,
            )
            done += counting

    tasks = [asyncio.create_task(loop(conn)) for conn in conns]
    await asyncio.sleep(warmup)
    counting = True
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - t0
    stop = True
    await asyncio.gather(*tasks)
    for conn in conns:
        await conn.close()
    return done / elapsed


# -- the orchestrator ------------------------------------------------------------------------------


CONFIGS = (
    ("sqlite_1", "sqlite", 1),
    ("postgresql_1", "postgresql", 1),
    ("postgresql_2", "postgresql", 2),
)


def run(coro: Any) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


def measure_config(
    name: str,
    engine: str,
    instances: int,
    postgres: PostgresServer,
    space: dict[str, Any],
    root: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    config: dict[str, dict[str, Any]] = {"limits": BENCH_LIMITS}
    if engine == "postgresql":
        config["storage"] = {"url": postgres.create_database()}
    servers = [Server(root / name / str(i), config, stop_timeout=15) for i in range(instances)]
    try:
        for server in servers:
            server.start(timeout=60)
        where = [(s.host, s.port) for s in servers]
        t = time.perf_counter()
        run(create_space(*where[0], space))
        created_s = time.perf_counter() - t
        got: dict[str, Any] = {"engine": engine, "instances": instances}
        pids = [s.pid for s in servers]
        got["fanout"] = run(fanout(space, where, Cpu(pids, postmaster_pid(postgres)), args))
        got["fanout"]["space_created_s"] = round(created_s, 2)
        print(f"{name} fan-out: {got['fanout']}", file=sys.stderr, flush=True)
        got["durable"] = run(durable(space, where, Cpu(pids, postmaster_pid(postgres)), args))
        print(f"{name} durable: {got['durable']}", file=sys.stderr, flush=True)
        if instances == 2 and args.resume:
            # The front is a process of its own, as an operator's load balancer is.
            front, found = start_process(
                [sys.executable, str(ROUND_ROBIN), *(f"{h}:{p}" for h, p in where)],
                root / name / "front.log",
            )
            try:
                got["sigkill_resume"] = run(resume(space, servers, (found[2], int(found[3])), args))
            finally:
                stop_process(front)
            print(f"{name} resume: {got['sigkill_resume']}", file=sys.stderr, flush=True)
        return got
    finally:
        for server in servers:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured time per phase")
    parser.add_argument("--senders", type=int, default=50, help="durable senders")
    parser.add_argument("--fanout-senders", type=int, default=4, help="closed-loop fan-out senders")
    parser.add_argument("--resume-timeout", type=float, default=60.0)
    parser.add_argument("--no-resume", dest="resume", action="store_false")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--dir", help="where the temporary data directories go")
    args = parser.parse_args()
    if args.quick:
        args.members, args.senders, args.fanout_senders = 12, 4, 2
        args.seconds, args.warmup = 0.5, 0.3
    bindir = find_bindir()
    if bindir is None:
        raise SystemExit(
            "PostgreSQL server binaries not found (Debian: apt-get install postgresql)"
        )
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    started = time.perf_counter()
    space = build_space(max(args.members, args.senders, args.fanout_senders))
    space["members"] = args.members  # the followers: the first members
    postgres = PostgresServer(bindir, fsync=True)
    results: dict[str, Any] = {}
    try:
        postgres.start()
        bare_url = postgres.create_database()
        bare = {
            n: run(bare_asyncpg(bare_url, n, args.warmup, args.seconds))
            for n in sorted({args.senders, args.fanout_senders})
        }
        with tempfile.TemporaryDirectory(prefix="salon-bench-scale-", dir=args.dir) as tmp:
            for name, engine, instances in CONFIGS:
                results[name] = measure_config(
                    name, engine, instances, postgres, space, Path(tmp), args
                )
    finally:
        postgres.stop()
    report(args, results, bare, load_before, time.perf_counter() - started)


def report(
    args: argparse.Namespace,
    results: dict[str, Any],
    bare: dict[int, float],
    load_before: float,
    took: float,
) -> None:
    def rounded(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    sqlite = results["sqlite_1"]
    for got in results.values():
        fan, dur = got["fanout"], got["durable"]
        fan["messages_vs_bare_asyncpg"] = rounded(
            ratio(fan["messages_per_s"], bare[args.fanout_senders])
        )
        dur["vs_bare_asyncpg"] = rounded(ratio(dur["acked_per_s"], bare[args.senders]))
        if got is not sqlite:
            fan["vs_sqlite"] = rounded(
                ratio(fan["deliveries_per_s"], sqlite["fanout"]["deliveries_per_s"])
            )
            dur["vs_sqlite"] = rounded(ratio(dur["acked_per_s"], sqlite["durable"]["acked_per_s"]))
    lines = [
        f"Scale benchmarks, Python {platform.python_version()}, {os.cpu_count()} CPUs,"
        f" load average {load_before:.2f} before the run, {took:.0f} s in all",
        "Bare asyncpg insert+commit loop (fsync on): "
        + ", ".join(f"{n} connections {v:,.0f} commits/s" for n, v in sorted(bare.items())),
        f"Fan-out to {args.members} members, {args.fanout_senders} closed-loop senders:",
    ]
    for name, got in results.items():
        f = got["fanout"]
        lines.append(
            f"  {name:>12}: {f['deliveries_per_s']:>9,} deliveries/s"
            f" ({f['messages_per_s']:,} msg/s)"
            f"  p50 {f['p50_ms']:.1f} ms  p99 {f['p99_ms']:.1f} ms"
            f"  vs SQLite {f.get('vs_sqlite') or 1:.2f}"
            f"  msg/s vs bare asyncpg {f['messages_vs_bare_asyncpg']}"
            f"  (cores: salon {f['servers_cpu']}, postgres {f['postgres_cpu']},"
            f" clients {f['client_cpu']})"
        )
    lines.append(f"Durable acknowledged sends, {args.senders} concurrent senders:")
    for name, got in results.items():
        d = got["durable"]
        lines.append(
            f"  {name:>12}: {d['acked_per_s']:>7,} acked/s  p50 {d['p50_ms']:.1f} ms"
            f"  p99 {d['p99_ms']:.1f} ms  vs SQLite {d.get('vs_sqlite') or 1:.2f}"
            f"  vs bare asyncpg {d['vs_bare_asyncpg']}"
            f"  (cores: salon {d['servers_cpu']}, postgres {d['postgres_cpu']},"
            f" clients {d['client_cpu']})"
        )
    resumed = results["postgresql_2"].get("sigkill_resume")
    if resumed:
        lines.append(
            f"SIGKILL of one of 2 instances: {resumed['lost_connection']} of"
            f" {resumed['followers']} followers lost their connection; resumed p50"
            f" {resumed['p50_ms']} ms, p95 {resumed['p95_ms']} ms; {resumed['lost']} acknowledged"
            f" messages lost, {resumed['mismatched']} mismatched"
        )
    summary = {
        "bench": "scale",
        "members": args.members,
        "senders": args.senders,
        "fanout_senders": args.fanout_senders,
        "seconds": args.seconds,
        "quick": args.quick,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "bare_asyncpg_commits_per_s": {str(n): round(v) for n, v in sorted(bare.items())},
        **{
            name: {k: v for k, v in got.items() if k != "sigkill_resume"}
            for name, got in results.items()
        },
        "sigkill_resume_chat": resumed,
        "sigkill_resume_call": None,
        "sigkill_resume_call_note": NOT_MEASURED_CALLS,
    }
    emit(summary, lines)


if __name__ == "__main__":
    main()
