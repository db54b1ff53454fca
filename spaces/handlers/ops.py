"""The operator's endpoints: ``/health`` (liveness of what the server depends on) and
``/ready`` (whether it serves yet).

- ``/health``: 200 ``{"status": "ok"}`` when the database answers a trivial query (the main
  store's :meth:`~spaces.storage.interfaces.Store.healthy`) and, when the server has an SFU
  (``[sfu] enabled`` or standalone nodes accepted), at least one SFU node is registered; else
  503 ``{"status": "down", "down": ["database", "sfu"]}`` naming what is down. A server
  that accepts standalone nodes (``[sfu] node_secret``) adds ``"sfu_nodes"``: how many
  nodes are registered with it (a count, no names or addresses).
- ``/metrics`` (``[metrics] enabled``): Prometheus text, aggregate counters only
  (:mod:`spaces.metrics`); who may read it: :func:`sfu.metrics.may_read`.
- ``/ready``: 200 once the stores are open (migrations applied), 503 while shutting down.
  While migrations run, ``salon serve`` answers ``/ready`` and ``/health`` with 503
  ``{"status": "migrating"}`` from a placeholder app (:func:`migrating_app`).

Neither names a space, room, member or address.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry

from sfu.metrics import metrics_response
from spaces.services import CONFIG, SPACE_STORE
from spaces.sfu_registry import REGISTRY


@dataclass
class Readiness:
    ready: bool = False


READINESS = web.AppKey("readiness", Readiness)
METRICS = web.AppKey("metrics", CollectorRegistry)


async def health(request: web.Request) -> web.Response:
    app = request.app
    down = []
    if not await app[SPACE_STORE].healthy():
        down.append("database")
    sfu = app[CONFIG].sfu
    if (sfu.enabled or sfu.node_secret) and not app[REGISTRY].available():
        down.append("sfu")
    extra = {"sfu_nodes": len(app[REGISTRY].names())} if sfu.node_secret else {}
    if down:
        return web.json_response({"status": "down", "down": down, **extra}, status=503)
    return web.json_response({"status": "ok", **extra})


async def ready(request: web.Request) -> web.Response:
    if request.app[READINESS].ready:
        return web.json_response({"status": "ready"})
    return web.json_response({"status": "not ready"}, status=503)


async def metrics(request: web.Request) -> web.Response:
    return metrics_response(request, request.app[METRICS], request.app[CONFIG].metrics.token)


def install_ops(app: web.Application) -> None:
    """``/health``, ``/ready`` and, with ``[metrics] enabled``, ``/metrics``; the app is
    ready from start-up (stores open) to shutdown. Install last: after the stores' context
    so ``ready`` is set once they are open, and after every service /metrics reads."""
    app[READINESS] = Readiness()
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    if app[CONFIG].metrics.enabled:
        from spaces.metrics import metrics_registry  # prometheus-client only when used

        app[METRICS] = metrics_registry(app)
        app.router.add_get("/metrics", metrics)

    async def became_ready(app: web.Application) -> None:
        app[READINESS].ready = True

    async def stopping(app: web.Application) -> None:
        app[READINESS].ready = False

    app.on_startup.append(became_ready)
    app.on_shutdown.insert(0, stopping)


async def _migrating(request: web.Request) -> web.Response:
    return web.json_response({"status": "migrating"}, status=503)


def migrating_app() -> web.Application:
    """What answers on the server's port while the database migrates."""
    app = web.Application()
    app.router.add_get("/health", _migrating)
    app.router.add_get("/ready", _migrating)

    async def no_version(request: web.Request, response: web.StreamResponse) -> None:
        response.headers["Server"] = "salon"

    app.on_response_prepare.append(no_version)
    return app
