"""The app's shared services, as typed keys of aiohttp's app registry, and the route seam.

:func:`spaces.app.build_app` builds every service once (the stores from ``[storage] url``) and
puts it under its key here; handlers (:mod:`spaces.handlers`) read ``app[KEY]`` and never build
a service or a store themselves. A feature's own service (chat, conferences, call media) has
its key beside it, in the module that installs it. This module imports no handler, so every
handler may import it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from aiohttp import web

from spaces.config import Config
from spaces.counters import Counters
from spaces.events import Events
from spaces.hub import Hub, Subscriber
from spaces.limits import ConcurrencyLimiter, KeyedLimiter, Network
from spaces.membership import Membership
from spaces.storage.interfaces import ChatStore, ConferenceStore, Store, Stores, StoryStaging

CONFIG = web.AppKey("config", Config)
COUNTERS = web.AppKey("counters", Counters)  # what /metrics reports (spaces/counters.py)
HUB = web.AppKey("hub", Hub)
MEMBERSHIP = web.AppKey("membership", Membership)
# The stores, built once at start-up; opened and closed by the app's storage context.
STORES = web.AppKey("stores", Stores)
SPACE_STORE = web.AppKey("space_store", Store)
CHAT_STORE = web.AppKey("chat_store", ChatStore)
CONFERENCE_STORE = web.AppKey("conference_store", ConferenceStore)
EVENTS = web.AppKey("events", Events)  # from the other instances (spaces.events)
STORY_STAGING = web.AppKey("story_staging", StoryStaging)  # uploads until posted
ATTEMPTS_BY_ADDRESS = web.AppKey("attempts_by_address", KeyedLimiter)
ATTEMPTS_BY_INVITE = web.AppKey("attempts_by_invite", KeyedLimiter)
CREATIONS_BY_ADDRESS = web.AppKey("creations_by_address", KeyedLimiter)
SOCKETS_BY_ADDRESS = web.AppKey("sockets_by_address", ConcurrencyLimiter)
# [server] trusted_proxies: peers whose X-Forwarded-For names the client (spaces/limits.py)
PROXIES = web.AppKey("trusted_proxies", tuple[Network, ...])


@dataclass(frozen=True)
class Caller:
    """Who sent a member request: the app's services and the session's membership."""

    app: web.Application
    subscriber: Subscriber

    @property
    def space_id(self) -> str:
        return self.subscriber.space_id

    @property
    def member(self) -> bytes:
        return self.subscriber.member


# A route answers one member request type; feature modules add theirs with add_routes().
Route = Callable[[Caller, Any], Awaitable[msgspec.Struct]]
ROUTES = web.AppKey("routes", dict[type, Route])


def add_routes(app: web.Application, routes: dict[type, Route]) -> None:
    app[ROUTES].update(routes)
