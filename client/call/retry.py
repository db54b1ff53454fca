"""When to make a media link again (sans-I/O): one policy for every mesh pair and the SFU link.

aiortc has no ICE restart, so a "restart" here is a fresh ``RTCPeerConnection`` offered
again under a higher ``attempt`` (PROTOCOL.md §15): the answerer (a mesh peer, or the SFU
through ``sfu_offer``) drops the old connection and answers the new one. Nothing about the
media keys changes: the same SFrame contexts, and no counter ever starts again under a key.

The link's owner feeds the policy what it sees and asks it what to do::

    policy = RetryPolicy(clock)
    policy.attempt_started()            # an offer (or an answer) is on its way
    policy.observe("connected")         # the transport's state, on every change or tick
    match policy.poll():                # on a regular tick
        case "retry": ...               # make a fresh connection, then attempt_started()
        case "give-up": ...             # say so; the policy stays quiet from now on
        case None: ...

A link is *in trouble* when it is ``failed``, ``disconnected`` (no packet arrived) for
longer than ``disconnected_grace``, or an attempt did not connect within its deadline
(``connect_deadline`` for the first, ``retry_deadline`` for a retry). From the moment
trouble starts (the *outage*), retries follow a jittered back-off
(:class:`client.core.backoff.Backoff`) until the link connects again — :attr:`recovered`
then holds how long the outage lasted — or the outage has lasted ``give_up_after`` (long
enough to ride out a ≥ 10 s network drop), when :meth:`poll` says ``"give-up"`` once.

:class:`QuietDetector` turns a transport's packet counter into ``disconnected``: aiortc
has no such state (its ICE consent checks give up only after ~30 s), so a link that has
received nothing for :data:`QUIET_SECONDS` — peers send RTCP at least every 1.5 s — counts
as disconnected.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Literal

from client.core.backoff import Backoff

TransportState = Literal["connecting", "connected", "disconnected", "failed"]
Decision = Literal["retry", "give-up"] | None

CONNECT_DEADLINE = 20.0  # the first attempt that has not connected by then failed ...
RETRY_DEADLINE = 6.0  # ... and a retry (the other side is already there, waiting)
DISCONNECTED_GRACE = 4.0  # a silent link may come back by itself this long
GIVE_UP_AFTER = 30.0  # keep trying this long after the trouble started
FIRST_DELAY = 0.5  # back-off between retries: 0.25-0.5 s, 0.5-1 s, ... up to 2-4 s
MAX_DELAY = 4.0


class RetryPolicy:
    """Decides when one link is retried (see the module docstring). Time comes from
    ``clock`` (monotonic seconds); nothing here sleeps or touches the network."""

    def __init__(
        self,
        clock: Callable[[], float],
        rng: random.Random | None = None,
        *,
        connect_deadline: float = CONNECT_DEADLINE,
        retry_deadline: float = RETRY_DEADLINE,
        disconnected_grace: float = DISCONNECTED_GRACE,
        give_up_after: float = GIVE_UP_AFTER,
        first_delay: float = FIRST_DELAY,
        max_delay: float = MAX_DELAY,
    ) -> None:
        self.clock = clock
        self.connect_deadline = connect_deadline
        self.retry_deadline = retry_deadline
        self.disconnected_grace = disconnected_grace
        self.give_up_after = give_up_after
        self.backoff = Backoff(first_delay, max_delay, rng=rng)
        self.state: TransportState = "connecting"
        self.retries = 0  # fresh connections made, over the link's life
        self.reconnects = 0  # outages that ended with the link connected again
        self.gave_up = False
        self.recovered: float | None = None  # the last outage's length, once it ended
        self.outage_started: float | None = None
        self.ever_connected = False
        self._attempt_at = clock()
        self._since = self._attempt_at  # when ``state`` began
        self._retry_at: float | None = None
        self._fresh = False  # a fresh connection since the link was last connected

    def attempt_started(self) -> None:
        """A fresh attempt (our offer, or our answer to the other side's new offer) began
        now: its connect deadline runs from here, and if the link was connected before,
        connecting again counts as a reconnect."""
        now = self.clock()
        self._attempt_at = now
        self._retry_at = None
        self._fresh = self.ever_connected
        if self.state != "connecting":
            self.state, self._since = "connecting", now

    def observe(self, state: TransportState, since: float | None = None) -> None:
        """The transport's state now (repeat freely: only changes count); ``since``: when
        it began, if earlier than now (a silence is noticed only after a while)."""
        if state == self.state:
            return
        now = self.clock()
        self.state, self._since = state, now if since is None else min(since, now)
        if state != "connected":
            return
        self.ever_connected = True
        if self._fresh:
            self.reconnects += 1
        if self.outage_started is not None or self._fresh:
            self.recovered = now - (
                self._attempt_at if self.outage_started is None else self.outage_started
            )
        self._fresh = False
        self.outage_started = None
        self._retry_at = None
        self.backoff.reset()

    def in_trouble(self) -> bool:
        now = self.clock()
        if self.state == "failed":
            return True
        if self.state == "disconnected":
            return now - self._since >= self.disconnected_grace
        if self.state == "connecting":
            deadline = self.retry_deadline if self.retries else self.connect_deadline
            return now - self._attempt_at >= deadline
        return False

    def poll(self) -> Decision:
        """What to do now: ``"retry"`` (then call :meth:`attempt_started`), ``"give-up"``
        (once; the link stays down), or nothing."""
        if self.gave_up or not self.in_trouble():
            return None
        now = self.clock()
        if self.outage_started is None:
            # A silent link's outage began when it went quiet, not when we lost patience.
            self.outage_started = self._since if self.state == "disconnected" else now
            self.recovered = None
        if now - self.outage_started >= self.give_up_after:
            self.gave_up = True
            return "give-up"
        if self._retry_at is None:
            self._retry_at = now + self.backoff.next_delay()
        if now < self._retry_at:
            return None
        self._retry_at = None
        self.retries += 1
        return "retry"

    def outage(self) -> float:
        """How long the current outage has lasted (0 when there is none)."""
        return 0.0 if self.outage_started is None else self.clock() - self.outage_started


QUIET_SECONDS = 2.5


class QuietDetector:
    """Is a connected transport silent? Feed it the packets received so far, on a tick."""

    def __init__(self, clock: Callable[[], float], quiet_seconds: float = QUIET_SECONDS) -> None:
        self.clock = clock
        self.quiet_seconds = quiet_seconds
        self._count: int | None = None
        self._changed = clock()

    @property
    def silent_since(self) -> float:
        """When the count last moved (the silence's start, once :meth:`update` says quiet)."""
        return self._changed

    def update(self, packets_received: int) -> bool:
        """True when the count has not moved for ``quiet_seconds`` (a new transport, with
        a count that starts again, is never quiet at first)."""
        now = self.clock()
        if packets_received != self._count:
            self._count, self._changed = packets_received, now
            return False
        return now - self._changed >= self.quiet_seconds

    def reset(self) -> None:
        self._count, self._changed = None, self.clock()
