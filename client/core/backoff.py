"""Reconnect back-off: exponential, capped, with jitter — one helper for every reconnecting
path of the client (``salon read --follow`` to the server, ``salon call`` to the SFU).

Delays grow ``first, first*factor, ...`` up to ``cap``; each one actually waited is drawn
uniformly from ``[delay/2, delay]`` ("equal jitter"), so clients that lost the same server
at the same moment spread their reconnects instead of arriving together, yet never retry
sooner than half the nominal delay. :meth:`Backoff.reset` after a connection that worked.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable


class Backoff:
    def __init__(
        self,
        first: float,
        cap: float,
        factor: float = 2.0,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if not 0 < first <= cap or factor < 1:
            raise ValueError("need 0 < first <= cap and factor >= 1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.rng = rng or random.Random()
        self._sleep = sleep
        self._nominal = first
        self.attempts = 0

    def next_delay(self) -> float:
        """The next delay to wait (jittered), and move the nominal delay on."""
        nominal = self._nominal
        self._nominal = min(self._nominal * self.factor, self.cap)
        self.attempts += 1
        return self.rng.uniform(nominal / 2, nominal)

    async def wait(self, delay: float | None = None) -> float:
        """Sleep for ``delay`` (default: :meth:`next_delay`); returns how long."""
        delay = self.next_delay() if delay is None else delay
        await self._sleep(delay)
        return delay

    def reset(self) -> None:
        self._nominal = self.first
        self.attempts = 0
