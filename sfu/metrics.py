"""``/metrics`` of SFU nodes (Prometheus text format): one collector over the in-process or
standalone nodes, read at scrape time from the counters the node keeps anyway
(:meth:`sfu.node.SfuNode.totals`, its forwarding-time buckets). Aggregate counts only: no
conference, participant or address is ever a label.

:func:`metrics_response` is the ``/metrics`` handler body shared by ``salon serve`` and
``salon sfu``, with its access rule (:func:`may_read`): a bearer token when one is
configured, else a direct loopback peer only.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable, Iterable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from sfu.node import SfuNode

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RETRANSMISSION_COUNTERS = (
    ("nacks_received", "Packets subscribers asked to be retransmitted (NACK)"),
    ("retransmits", "Packets retransmitted to subscribers from the SFU's history"),
    ("nacks_upstream", "Packets asked of publishers (NACK): never received by the SFU"),
    ("recovered", "Publishers' retransmissions that filled a gap"),
)
DROP_REASONS = ("malformed", "unknown", "kid", "muted", "rate", "stale", "queue", "duplicate")


# The forwarding-time histogram's bounds: 2**k ns for these k (4.1 µs to 16.8 ms).
FORWARDING_BITS = range(12, 25)


def histogram(
    name: str,
    documentation: str,
    bounds: Iterable[float],
    counts: list[int],
    total: float | None,
) -> HistogramMetricFamily:
    """A histogram family from per-bucket (not cumulative) counts, the last above every bound
    (``total`` None: no ``_sum``, when keeping one would cost the hot path)."""
    buckets, running = [], 0
    for bound, count in zip(bounds, counts, strict=False):
        running += count
        buckets.append((repr(float(bound)), running))
    running += counts[-1]
    buckets.append(("+Inf", running))
    family = HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=total)
    if total is None:  # prometheus-client writes _count only beside _sum
        family.add_sample(f"{name}_count", {}, running)
    return family


class SfuCollector(Collector):
    """The SFU's counters, summed over the nodes ``nodes()`` returns (a server has at most
    one in-process node; a standalone process has one)."""

    def __init__(self, nodes: Callable[[], Iterable[SfuNode]]) -> None:
        self.nodes = nodes

    def collect(self) -> Iterator[Metric]:
        nodes = list(self.nodes())
        totals: dict[str, int] = {}
        by_bit_length = [0] * 64
        for node in nodes:
            for key, value in node.totals().items():
                totals[key] = totals.get(key, 0) + value
            for n, count in enumerate(node.latency_counts):
                by_bit_length[n] += count
        # A time of bit length n is below 2**n ns: it falls in the first bound 2**k, k >= n.
        counts, previous = [], 0
        for k in FORWARDING_BITS:
            counts.append(sum(by_bit_length[previous : k + 1]))
            previous = k + 1
        counts.append(sum(by_bit_length[previous:]))
        yield GaugeMetricFamily(
            "salon_sfu_conferences", "Conferences on the SFU", totals.get("conferences", 0)
        )
        yield GaugeMetricFamily(
            "salon_sfu_participants",
            "Participants connected to the SFU",
            totals.get("participants", 0),
        )
        yield CounterMetricFamily(
            "salon_sfu_packets_received",
            "RTP packets received by the SFU",
            totals.get("packets_in", 0),
        )
        yield CounterMetricFamily(
            "salon_sfu_packets_forwarded",
            "RTP packets forwarded to subscribers",
            totals.get("packets_out", 0),
        )
        dropped = CounterMetricFamily(
            "salon_sfu_packets_dropped", "RTP packets dropped, by reason", labels=["reason"]
        )
        for reason in DROP_REASONS:
            dropped.add_metric([reason], totals.get(f"dropped_{reason}", 0))
        yield dropped
        yield CounterMetricFamily(
            "salon_sfu_plis_sent",
            "Keyframe requests (PLI) sent to publishers",
            totals.get("plis_sent", 0),
        )
        yield CounterMetricFamily(
            "salon_sfu_keyframe_requests",
            "Keyframe requests from subscribers",
            totals.get("keyframe_requests", 0),
        )
        for name, doc in RETRANSMISSION_COUNTERS:
            yield CounterMetricFamily(f"salon_sfu_{name}", doc, totals.get(name, 0))
        yield CounterMetricFamily(
            "salon_sfu_layer_switches",
            "Subscribers' video slots moved to another simulcast layer",
            totals.get("layer_switches", 0),
        )
        if nodes:
            yield histogram(
                "salon_sfu_forwarding_seconds",
                "Time to route one received RTP packet to its subscribers",
                [2**k / 1e9 for k in FORWARDING_BITS],
                counts,
                None,
            )


def may_read(request: web.Request, token: str) -> bool:
    """With a token: the request carries ``Authorization: Bearer TOKEN``. Without one: the
    TCP peer itself is a loopback address (a proxy's X-Forwarded-For is not consulted, so
    a request relayed by a proxy on the same host is refused unless it has the token)."""
    if token:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())
    if "X-Forwarded-For" in request.headers:
        return False
    try:
        return ipaddress.ip_address((request.remote or "").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def metrics_response(request: web.Request, registry: CollectorRegistry, token: str) -> web.Response:
    if not may_read(request, token):
        raise web.HTTPForbidden(text="metrics: not allowed from here (see [metrics] token)")
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE})
