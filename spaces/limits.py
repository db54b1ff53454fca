"""Rate limits and quotas (sans-I/O): token buckets driven by an injected clock, and counts
of what a key holds at once.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens per second; each
request takes one. :class:`KeyedLimiter` keeps one bucket per key (a connection, an invite,
an address) and forgets idle keys so an attacker cannot grow it without bound.
:class:`ConcurrencyLimiter` counts what each key holds now (open WebSockets per address).
:func:`address_key` is the key of a client address: IPv4 as is, IPv6 by its /64 (one
subscriber gets a whole /64, so a per-address limit on a single IPv6 address is no limit).
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], float]


@dataclass
class TokenBucket:
    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate=rate, burst=burst, tokens=burst, updated=now)

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens if there are enough; returns whether it was allowed."""
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


class KeyedLimiter:
    """One token bucket per key, at most ``max_keys`` of them (least recently used go first)."""

    def __init__(self, rate: float, burst: float, clock: Clock, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def allow(self, key: str, cost: float = 1.0) -> bool:
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self.rate, self.burst, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)


def address_key(address: str) -> str:
    """The key a per-address limit counts under: the IPv4 address, or the /64 of an IPv6
    address (an IPv4-mapped IPv6 address counts as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address  # not an IP (a Unix socket): one key for whatever it is
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class ConcurrencyLimiter:
    """At most ``limit`` things held at once per key; a key holding nothing is forgotten,
    so the table never holds more keys than there are things held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        """Take one for ``key`` if it holds fewer than ``limit``; pair with :meth:`release`."""
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def release(self, key: str) -> None:
        held = self._held.get(key, 0) - 1
        if held > 0:
            self._held[key] = held
        else:
            self._held.pop(key, None)

    def held(self, key: str) -> int:
        return self._held.get(key, 0)

    def __len__(self) -> int:
        return len(self._held)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(entries: list[str]) -> tuple[Network, ...]:
    """``[server] trusted_proxies`` parsed (validated by the config loader)."""
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def is_trusted(address: str, trusted: tuple[Network, ...]) -> bool:
    if not trusted:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The client a request comes from: the peer, unless the peer is a trusted proxy; then
    the rightmost X-Forwarded-For entry that is not itself a trusted proxy (entries left of
    it were written by the client and prove nothing)."""
    if not forwarded_for or not is_trusted(peer, trusted):
        return peer
    for entry in reversed(forwarded_for.split(",")):
        hop = entry.strip()
        if not hop:
            continue
        if not is_trusted(hop, trusted):
            return hop
    return peer
