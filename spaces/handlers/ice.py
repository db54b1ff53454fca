"""ICE servers for members: STUN URLs and TURN credentials in coturn's REST scheme.

``[ice]`` in the config names the servers (:class:`spaces.config.IceSection`); a member asks
with :class:`protocol.ice_wire.GetIceServers` and gets fresh TURN credentials each time:

    username   = "<expiry unix time>:<16 random bytes, base64url>"
    credential = base64(HMAC-SHA1(turn_secret, username))

which is what coturn checks with ``use-auth-secret`` / ``static-auth-secret``. The random
part is not derived from anything (no member key, space id or session), so the TURN server's
logs cannot link a relay to a person or a space, nor two requests to each other.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

import msgspec
from aiohttp import web

from protocol.ice_wire import GetIceServers, IceServer, IceServers
from spaces.config import IceSection
from spaces.services import CONFIG, Caller, add_routes

USERNAME_RANDOM_BYTES = 16


def wall_clock() -> float:
    """What credentials are dated by (unix seconds); tests replace it to make expired ones."""
    return time.time()


def turn_credentials(
    secret: str, ttl_seconds: int, now: float, token: Callable[[int], str] = secrets.token_urlsafe
) -> tuple[str, str, int]:
    """(username, credential, expiry) valid for ``ttl_seconds`` from ``now``."""
    expires_at = int(now) + ttl_seconds
    username = f"{expires_at}:{token(USERNAME_RANDOM_BYTES)}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode("ascii"), expires_at


def ice_servers(
    ice: IceSection,
    request_id: int,
    now: float | None = None,
    token: Callable[[int], str] = secrets.token_urlsafe,
) -> IceServers:
    """The answer to one :class:`GetIceServers`: STUN first, then TURN with new credentials."""
    servers: list[IceServer] = []
    if ice.stun_urls:
        servers.append(IceServer(list(ice.stun_urls)))
    expires_at = 0
    if ice.turn_urls and ice.turn_secret:
        username, credential, expires_at = turn_credentials(
            ice.turn_secret, ice.turn_ttl_seconds, wall_clock() if now is None else now, token
        )
        servers.append(IceServer(list(ice.turn_urls), username, credential))
    return IceServers(request_id, servers, expires_at, ice.relay_only)


def install_ice(app: web.Application) -> None:
    """Answer GetIceServers for authenticated members of ``app``."""

    async def get_ice_servers(caller: Caller, message: GetIceServers) -> msgspec.Struct:
        return ice_servers(caller.app[CONFIG].ice, message.id)

    add_routes(app, {GetIceServers: get_ice_servers})
