"""``/metrics`` of ``salon serve`` (Prometheus text format, prometheus-client).

Everything is read at scrape time — the plain counters of :mod:`spaces.counters`, the hub's
and chat's live sizes, the conferences' census and the in-process SFU node's totals
(:class:`sfu.metrics.SfuCollector`) — so the hot path pays an integer add at most. Labels
are never a space, room, member or address: only a topology, a drop reason or the kind of
request a rate limit refused. Each app has its own registry (several apps in one process,
as the tests run them, never share counters).
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sfu.metrics import SfuCollector, histogram
from sfu.node import SfuNode
from spaces.handlers.call_media import CALL_MEDIA
from spaces.handlers.chat import CHAT
from spaces.handlers.conference import CONFERENCES
from spaces.services import COUNTERS, HUB
from spaces.sfu_registry import REGISTRY, LocalNode

TOPOLOGIES = ("mesh", "sfu")


class ServerCollector(Collector):
    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        app = self.app
        counters = app[COUNTERS]
        spaces, sessions = app[HUB].census()
        yield GaugeMetricFamily(
            "salon_websocket_connections", "WebSocket connections open", counters.connections_open
        )
        yield CounterMetricFamily(
            "salon_websocket_connections_accepted",
            "WebSocket connections accepted",
            counters.connections_opened,
        )
        yield GaugeMetricFamily("salon_sessions", "Authenticated sessions open", sessions)
        yield GaugeMetricFamily("salon_spaces_served", "Spaces with a session open", spaces)
        yield GaugeMetricFamily(
            "salon_rooms_served", "Rooms some session follows live", app[CHAT].rooms_followed()
        )
        yield CounterMetricFamily(
            "salon_chat_messages", "Chat messages committed", counters.messages
        )
        yield CounterMetricFamily(
            "salon_deliveries",
            "Frames queued to sessions (events and message batches)",
            counters.deliveries,
        )
        commit = counters.commit_seconds
        yield histogram(
            "salon_chat_commit_seconds",
            "Time to commit one batch of chat messages (group commit)",
            commit.bounds,
            commit.counts,
            commit.total,
        )
        census = app[CONFERENCES].census()
        calls = GaugeMetricFamily("salon_calls", "Calls with participants", labels=["topology"])
        people = GaugeMetricFamily(
            "salon_call_participants", "Participants joined to calls", labels=["topology"]
        )
        for topology in TOPOLOGIES:
            count, joined = census.get(topology, (0, 0))
            calls.add_metric([topology], count)
            people.add_metric([topology], joined)
        yield calls
        yield people
        yield GaugeMetricFamily(
            "salon_sfu_nodes",
            "SFU nodes registered (in-process and standalone)",
            len(app[REGISTRY].names()),
        )
        refused = CounterMetricFamily(
            "salon_rate_limited", "Requests refused by a rate limit, by kind", labels=["kind"]
        )
        for kind, count in sorted(counters.rate_limited.items()):
            refused.add_metric([kind], count)
        yield refused


def _local_nodes(app: web.Application) -> Iterator[SfuNode]:
    registry = app[REGISTRY]
    for name in registry.names():
        handle = registry.handle(name)
        if isinstance(handle, LocalNode):
            yield handle.node


def metrics_registry(app: web.Application) -> CollectorRegistry:
    """A registry of this app's collectors (no process or platform collectors: they would
    name paths and file descriptors the operator did not ask for)."""
    assert CALL_MEDIA in app  # the SFU's registry is installed
    registry = CollectorRegistry(auto_describe=True)
    registry.register(ServerCollector(app))
    registry.register(SfuCollector(lambda: _local_nodes(app)))
    return registry
