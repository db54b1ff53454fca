"""Two ``salon serve`` instances on one PostgreSQL behind one round-robin address, and how
long clients take to come back when one of them is SIGKILLed (issue 11).

Shared by ``tests/test_call_survives_instance_loss.py`` and the scale bench: :func:`cluster`
starts the proxy and the instances; :func:`resume_times` waits for each ``salon call`` that
lost its instance to say it is back (``reconnected to the server after``) and returns the
seconds from the kill to that line.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.rr_proxy import HOST, RoundRobinProxy

RESUMED = re.compile(r"reconnected to the server after ([0-9.]+) s")


@dataclass
class Cluster:
    proxy: RoundRobinProxy
    a: Any  # conftest.SalonServer
    b: Any
    database_url: str

    @property
    def url(self) -> str:
        return self.proxy.url

    def stop_b(self) -> float:
        """Stop instance B as an operator does (SIGTERM, a restart); the monotonic time."""
        stopped = time.monotonic()
        self.b.stop()
        return stopped

    def kill_a(self) -> float:
        """SIGKILL instance A; the monotonic time it was killed."""
        assert self.a.proc is not None
        self.a.proc.kill()
        killed = time.monotonic()
        self.a.proc.wait(timeout=10)
        return killed


@contextlib.contextmanager
def cluster(
    server_class: Any, database_url: str, root: Path, config: Mapping[str, Any]
) -> Iterator[Cluster]:
    """Proxy first (its address is the public one, which both instances serve), then A, B."""
    with RoundRobinProxy() as proxy:
        settings = {**config, "server": {**config.get("server", {}), "public_url": proxy.url}}
        a = server_class(root / "a", settings, database_url)
        b = server_class(root / "b", settings, database_url)
        a.start()
        try:
            b.start()
            try:
                proxy.backends = [(HOST, a.port), (HOST, b.port)]
                yield Cluster(proxy, a, b, database_url)
            finally:
                b.stop()
        finally:
            a.stop()


async def resume_times(
    processes: Sequence[Any],
    killed_at: float,
    timeout: float = 30.0,
    since: Sequence[int] | None = None,
) -> list[float]:
    """For each call process (``call_helpers.CallProcess``) that lost its instance: seconds
    from ``killed_at`` until it printed that it is back in the call (polled every 50 ms),
    in its output lines from ``since[i]`` on (default: all)."""
    times: list[float | None] = [None] * len(processes)
    starts = list(since) if since is not None else [0] * len(processes)
    deadline = time.monotonic() + timeout
    while any(t is None for t in times):
        for i, process in enumerate(processes):
            back = any(RESUMED.search(line) for line in process.lines[starts[i] :])
            if times[i] is None and back:
                times[i] = time.monotonic() - killed_at
        if time.monotonic() > deadline:
            missing = [p.user.name for p, t in zip(processes, times, strict=True) if t is None]
            outputs = "\n\n".join(f"{p.user.name}:\n" + "\n".join(p.lines) for p in processes)
            raise AssertionError(f"{missing} never came back within {timeout} s:\n{outputs}")
        await asyncio.sleep(0.05)
    return [t for t in times if t is not None]
