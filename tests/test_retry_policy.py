"""The media link retry policy (client/call/retry.py), driven by a fake clock."""

from __future__ import annotations

import itertools
import random

from client.call.retry import QuietDetector, RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def run(policy: RetryPolicy, clock: Clock, seconds: float, step: float = 0.05) -> list[float]:
    """Poll every ``step`` for ``seconds``; the times a retry was decided (each retry starts
    an attempt at once, as a link does)."""
    retries = []
    end = clock.now + seconds
    while clock.now < end:
        clock.now += step
        decision = policy.poll()
        if decision == "retry":
            retries.append(clock.now)
            policy.attempt_started()
    return retries


def next_retry(policy: RetryPolicy, clock: Clock, step: float = 0.05) -> float:
    for _ in range(int(60 / step)):
        clock.now += step
        if policy.poll() == "retry":
            policy.attempt_started()
            return clock.now
    raise AssertionError("no retry within 60 s")


def test_a_connected_link_is_left_alone() -> None:
    clock = Clock()
    policy = RetryPolicy(clock)
    policy.observe("connected")
    assert run(policy, clock, 60) == []
    assert policy.retries == 0 and not policy.gave_up


def test_a_failed_link_is_retried_soon_with_growing_jittered_delays() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, random.Random(1), retry_deadline=1000)
    policy.observe("connected")
    policy.observe("failed")
    first = next_retry(policy, clock)
    assert 0.25 - 0.06 <= first - 100.0 <= 0.55  # 0.25-0.5 s after the failure
    # Each retry that fails again waits longer: 0.5-1 s, 1-2 s, 2-4 s, then 2-4 s (the cap).
    times = [first]
    for _ in range(4):
        policy.observe("failed")
        times.append(next_retry(policy, clock))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) == 4
    assert 0.5 - 0.06 <= gaps[0] <= 1.0 + 0.06
    assert 1.0 - 0.06 <= gaps[1] <= 2.0 + 0.06
    assert 2.0 - 0.06 <= gaps[2] <= 4.0 + 0.06 and 2.0 - 0.06 <= gaps[3] <= 4.0 + 0.06


def test_a_silent_link_gets_a_grace_period_then_is_retried() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, random.Random(2), disconnected_grace=4.0)
    policy.observe("connected")
    policy.observe("disconnected")
    assert run(policy, clock, 3.9) == []
    retries = run(policy, clock, 1.0)
    assert len(retries) == 1
    # The outage began when the link went quiet, not when the grace ran out.
    assert policy.outage_started == 100.0


def test_a_link_that_comes_back_by_itself_is_not_retried() -> None:
    clock = Clock()
    policy = RetryPolicy(clock)
    policy.observe("connected")
    policy.observe("disconnected")
    run(policy, clock, 3.0)
    policy.observe("connected")
    assert run(policy, clock, 30) == []
    assert policy.reconnects == 0 and policy.outage_started is None


def test_an_attempt_that_never_connects_is_retried_after_its_deadline() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, connect_deadline=20.0, retry_deadline=6.0)
    assert run(policy, clock, 19.9) == []
    retries = run(policy, clock, 1.0)
    assert len(retries) == 1
    # A retry's own deadline is shorter: the next one comes within 6 s + back-off.
    again = run(policy, clock, 7.1)
    assert len(again) == 1


def test_an_outage_of_ten_seconds_is_ridden_out_and_counted() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, random.Random(3))
    policy.observe("connected")
    policy.observe("disconnected")  # the network drops for 10 s
    retries = run(policy, clock, 10.0)
    assert retries and not policy.gave_up
    policy.observe("connected")  # the retry under way when the network came back worked
    assert policy.reconnects == 1
    assert policy.recovered is not None and 10.0 <= policy.recovered <= 10.1


def test_it_gives_up_once_after_the_bound() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, give_up_after=30.0)
    policy.observe("connected")
    policy.observe("failed")
    decisions = []
    for _ in range(int(40 / 0.05)):
        clock.now += 0.05
        decision = policy.poll()
        decisions.append(decision)
        if decision == "retry":
            policy.attempt_started()
            policy.observe("failed")  # every retry fails at once
    assert decisions.count("give-up") == 1
    at = decisions.index("give-up") * 0.05 + 0.05
    assert 30.0 <= at <= 30.1
    assert decisions.count("retry") >= 8  # it kept trying until then
    assert policy.gave_up and policy.reconnects == 0


def test_a_reconnect_is_a_fresh_connection_after_a_connected_one() -> None:
    clock = Clock()
    policy = RetryPolicy(clock)
    policy.attempt_started()
    policy.observe("connected")
    assert policy.reconnects == 0  # the first connection is no reconnect
    policy.observe("failed")
    clock.now += 1.0
    policy.attempt_started()  # the other side offered again: we answered
    clock.now += 0.5
    policy.observe("connected")
    assert policy.reconnects == 1 and policy.recovered == 0.5


def test_quiet_detector() -> None:
    clock = Clock()
    quiet = QuietDetector(clock, quiet_seconds=2.5)
    assert not quiet.update(10)
    clock.now += 2.4
    assert not quiet.update(10)
    clock.now += 0.2
    assert quiet.update(10)
    assert not quiet.update(11)
    quiet.reset()
    assert not quiet.update(11)


def test_a_silence_counts_from_when_it_began() -> None:
    clock = Clock()
    policy = RetryPolicy(clock, disconnected_grace=4.0)
    policy.observe("connected")
    clock.now += 2.5  # noticed 2.5 s into the silence
    policy.observe("disconnected", since=clock.now - 2.5)
    clock.now += 1.6
    assert policy.in_trouble()
    policy.poll()
    assert policy.outage_started == 100.0
