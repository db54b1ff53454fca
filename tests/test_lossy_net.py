"""The lossy-link fixture itself (tests/support/lossy_net.py): UDP between the namespace and the
root namespace gets through, is lost at the rate asked for, stops in a blackout, and is capped
by ``set_rate``. Real namespaces, nftables and tc; no salon processes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time

import pytest
from support.lossy_net import LossyNet

pytestmark = pytest.mark.e2e

# Runs inside the namespace: send COUNT datagrams of SIZE bytes to HOST:PORT (PACE seconds
# apart), print how many echoes came back within a short wait.
PROBE = """
import socket, sys, time
host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
pace = float(sys.argv[5])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
got = 0
def drain(wait):
    global got
    s.settimeout(wait)
    try:
        while True:
            s.recvfrom(65536)
            got += 1
    except (TimeoutError, BlockingIOError):
        pass
for i in range(count):
    s.sendto(i.to_bytes(4, "big") + bytes(size - 4), (host, port))
    drain(pace or 0.0)  # read echoes as they come (a full receive buffer would drop them)
drain(0.5)
print(got)
"""


class Echo:
    """A UDP echo server on the root end of the veth; counts what it received."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received = 0
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(65536)
            except TimeoutError:
                continue
            self.received += 1
            self.sock.sendto(data, addr)

    def close(self) -> None:
        self.stopped = True
        self.thread.join()
        self.sock.close()


def probe(net: LossyNet, echo: Echo, count: int, size: int = 100, pace: float = 0.0) -> int:
    args = [net.host_addr, str(echo.port), str(count), str(size), str(pace)]
    done = subprocess.run(
        [*net.exec_prefix(), sys.executable, "-c", PROBE, *args],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return int(done.stdout)


def test_loss_blackout_and_a_rate_cap(net: LossyNet) -> None:
    echo = Echo(net.host_addr)
    try:
        assert probe(net, echo, 300, pace=0.001) == 300  # a clean link loses nothing
        net.set_loss(20)
        back = probe(net, echo, 1000, pace=0.0005)
        # 20 % each way: ~64 % of round trips survive (binomial, 1000 tries: ±5 % is 3.3 σ)
        assert 0.59 < back / 1000 < 0.69, back
        counters = net.counters()
        assert 150 < counters["up"] < 250 and counters["down"] > 100, counters
        net.blackout(True)
        assert probe(net, echo, 20) == 0
        net.blackout(False)
        net.set_loss(0)
        assert probe(net, echo, 50, pace=0.001) == 50  # back to a clean link
        # 400 kbit/s up: 1000-byte datagrams sent as fast as possible for ~1 s arrive at
        # ~50/s (the tbf queue holds 200 ms; the rest is dropped at the sender's end).
        net.set_rate(up_kbit=400)
        before = echo.received
        started = time.monotonic()
        probe(net, echo, 400, size=1000, pace=0.0025)
        elapsed = time.monotonic() - started
        arrived = echo.received - before
        assert arrived < 400 * 0.5, arrived  # without the cap all 400 would arrive
        assert arrived <= (400_000 / 8 * elapsed + 3000 + 200 * 50) / 1000 + 5, (arrived, elapsed)
        net.set_rate()
        before = echo.received
        probe(net, echo, 400, size=1000, pace=0.0025)
        assert echo.received - before == 400
    finally:
        echo.close()
