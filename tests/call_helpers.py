"""Helpers for call tests: real ``salon call`` processes whose output a test can wait on.

Each :class:`CallProcess` is a real aiortc peer (its own process, keystore and WebSocket),
kept on loopback with ``SALON_ICE_HOSTS=127.0.0.1``. Its stdout is read line by line as it
runs (stdout is not a TTY, so the call prints plain lines), so a test can wait for "connected
to Bob" or "waiting in the lobby" before acting, with every wait bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import SALON, SalonUser

CALL_ENV = {"SALON_ICE_HOSTS": "127.0.0.1", "PYTHONFAULTHANDLER": "1"}
WAIT = 30.0  # the longest any single wait in a call test may take


@dataclass
class CallResult:
    returncode: int
    stdout: list[str]
    stderr: str
    stats: dict[str, Any]

    def peer(self, display_name: str) -> dict[str, Any]:
        found = [p for p in self.stats["participants"] if p["display_name"] == display_name]
        assert found, f"{display_name} not in {self.stats['participants']}"
        return found[0]


class CallProcess:
    """``salon call SPACE ROOM`` running in the background. Use :meth:`start`."""

    def __init__(self, user: SalonUser, proc: asyncio.subprocess.Process, stats: Path) -> None:
        self.user = user
        self.proc = proc
        self.stats_path = stats
        self.lines: list[str] = []
        self.times: list[float] = []  # when each line arrived (time.monotonic())
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(
        cls,
        user: SalonUser,
        space: str,
        room: str,
        stats: Path,
        duration: float = 10.0,
        *extra: str,
        env: dict[str, str] | None = None,
        prefix: Sequence[str] = (),
    ) -> CallProcess:
        """``prefix`` runs it inside something, e.g. a network namespace
        (``LossyNet.exec_prefix()``, tests/support/lossy_net.py)."""
        args = [*prefix, str(SALON), "call", space, room, "--duration", str(duration)]
        args += ["--stats", str(stats), *extra]
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=user.env({**CALL_ENV, **(env or {})}),
        )
        return cls(user, proc, stats)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self.times.append(time.monotonic())
            self._changed.set()
        self._changed.set()

    def index(self, pattern: str) -> int | None:
        """Index of the first output line matching ``pattern`` so far (None if none)."""
        regex = re.compile(pattern)
        return next((i for i, line in enumerate(self.lines) if regex.search(line)), None)

    async def wait_for(self, pattern: str, timeout: float = WAIT) -> str:
        """Wait until a line matches ``pattern``; fails with the output so far."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.index(pattern)
            if found is not None:
                return self.lines[found]
            if self._reader.done():
                raise AssertionError(
                    f"{self.user.name}'s call ended without {pattern!r}:\n"
                    + "\n".join(self.lines)
                    + await self._stderr()
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.user.name}: no {pattern!r} within {timeout} s:\n"
                    + "\n".join(self.lines)
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    async def _stderr(self) -> str:
        if self.proc.returncode is None or self.proc.stderr is None:
            return ""
        return "\nstderr: " + (await self.proc.stderr.read()).decode(errors="replace")

    async def finish(self, timeout: float = WAIT) -> CallResult:
        """Wait for the process to exit (kill it after ``timeout``) and read its stats."""
        assert self.proc.stderr is not None
        try:
            stderr = await asyncio.wait_for(self.proc.stderr.read(), timeout)
            await asyncio.wait_for(self.proc.wait(), timeout)
            await asyncio.wait_for(self._reader, timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(
                f"{self.user.name}'s call did not end in time:\n" + "\n".join(self.lines)
            ) from None
        text = stderr.decode(errors="replace")
        assert "Traceback" not in text and "Fatal Python error" not in text, text
        stats = json.loads(self.stats_path.read_text()) if self.stats_path.exists() else {}
        assert self.proc.returncode is not None
        return CallResult(self.proc.returncode, self.lines, text, stats)

    async def stop(self, timeout: float = WAIT) -> CallResult:
        """Leave the call as a user does (Ctrl-C) and collect the result."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
        return await self.finish(timeout)

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def first_line(running: list[CallProcess], pattern: str, timeout: float = WAIT) -> str:
    """Wait until any of the calls prints a line matching ``pattern``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for call in running:
            found = call.index(pattern)
            if found is not None:
                return call.lines[found]
        await asyncio.sleep(0.1)
    outputs = "\n\n".join(f"{c.user.name}:\n" + "\n".join(c.lines) for c in running)
    raise AssertionError(f"no {pattern!r} within {timeout} s:\n{outputs}")


@contextlib.asynccontextmanager
async def calls() -> Any:
    """Collects CallProcesses and kills any still running when the test ends."""
    started: list[CallProcess] = []
    try:
        yield started
    finally:
        for call in started:
            await call.kill()


@dataclass
class Town:
    """A space with an owner (Alice) and members, all real CLI users of one server."""

    space: str
    people: dict[str, SalonUser]

    def __getitem__(self, name: str) -> SalonUser:
        return self.people[name]

    def signing_seed(self, name: str) -> bytes:
        seed: bytes = self.people[name].keystore().load().memberships[0].signing_seed
        return seed

    def member_key(self, name: str) -> bytes:
        from client.core.crypto import public_signing_key

        return public_signing_key(self.signing_seed(name))


def code_for(result: CallResult, people: int) -> str:
    """The last verification code a participant showed while ``people`` were in the call."""
    pattern = re.compile(rf"verification code ([\d ]+) \({people} in the call")
    found = [m.group(1) for line in result.stdout if (m := pattern.search(line))]
    assert found, result.stdout
    return found[-1]


def make_town(url: str, make_user: Any, names: tuple[str, ...] = ("Bob", "Carol")) -> Town:
    alice = make_user("alice")
    created = alice.json("space", "create", "Town hall", "--server", url, "--as", "Alice")
    people = {"Alice": alice}
    for name in names:
        person = make_user(name.lower())
        person.run("join", created["link"], "--as", name)
        people[name] = person
    return Town(created["space_id"], people)


async def amake_town(url: str, make_user: Any, names: tuple[str, ...] = ("Bob",)) -> Town:
    """:func:`make_town` for a server running on the test's own event loop."""
    alice = make_user("alice")
    created = await alice.ajson("space", "create", "Town hall", "--server", url, "--as", "Alice")
    people = {"Alice": alice}
    for name in names:
        person = make_user(name.lower())
        await person.arun("join", created["link"], "--as", name)
        people[name] = person
    return Town(created["space_id"], people)
