"""The ICE servers a call's connections use (STUN, TURN), as the spaces server hands them out.

The call client asks once when it joins (:func:`fetch_ice_servers`) and again before the
TURN credentials expire; every ``RTCPeerConnection`` it makes — each mesh pair, each SFU
link — takes :meth:`IceConfig.configuration` at the moment it is made. ``relay_only``
(``salon call --relay-only``) is WebRTC's ``iceTransportPolicy: "relay"``: no host or
server-reflexive candidates, every byte through the TURN server. aiortc uses only the first
STUN and the first TURN URL it can (UDP or TCP; ``turns:`` over TCP).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiortc import RTCBundlePolicy, RTCConfiguration, RTCIceServer
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from client.core.connection import Connection
from client.core.errors import ClientCode, ClientError
from protocol import ice_wire

REFRESH_MARGIN = 0.1  # ask again when this share of the credentials' lifetime is left
MIN_REFRESH_SECONDS = 60.0  # and never more often (a clock far off the server's)


class IceFailure(ClientError):
    """No way to reach a peer under the chosen policy (e.g. the TURN server refused us)."""

    code = ClientCode.ICE_FAILED


async def fetch_ice_servers(conn: Connection) -> ice_wire.IceServers:
    return await conn.request(ice_wire.GetIceServers(conn.next_id()), ice_wire.IceServers)


class IceConfig:
    """The servers in force and the transport policy (see the module doc)."""

    def __init__(self, relay_only: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.relay_only = relay_only
        self.servers: list[ice_wire.IceServer] = []
        self.expires_at = 0
        self._fetched_at = 0.0
        self._asked_at = 0.0
        self._clock = clock

    def asking(self) -> None:
        """About to ask the server (so a failing server is not asked again at once)."""
        self._asked_at = self._clock()

    def update(self, answer: ice_wire.IceServers) -> None:
        """Take the servers; the server's ``relay_only`` (the operator's "relay calls") turns
        relay-only on for the rest of the call and never off (a local --relay-only stays)."""
        self.relay_only = self.relay_only or answer.relay_only
        self.servers = list(answer.servers)
        self.expires_at = answer.expires_at
        self._fetched_at = self._clock()

    @property
    def has_turn(self) -> bool:
        return any(u.startswith(("turn:", "turns:")) for s in self.servers for u in s.urls)

    def stale(self) -> bool:
        """Whether the TURN credentials are close enough to expiry to ask for new ones."""
        last = max(self._fetched_at, self._asked_at)
        if not self.expires_at or self._clock() - last < MIN_REFRESH_SECONDS:
            return False
        left = self.expires_at - self._clock()
        return left <= (self.expires_at - self._fetched_at) * REFRESH_MARGIN

    def configuration(self, *, max_bundle: bool = False) -> RTCConfiguration:
        """A fresh configuration for one new ``RTCPeerConnection``."""
        # Always a list, never None: aiortc's default for None is a public STUN server,
        # which would tell a third party about every call.
        servers = [
            RTCIceServer(list(s.urls), s.username or None, s.credential or None)
            for s in self.servers
        ]
        return RTCConfiguration(
            iceServers=servers,
            iceTransportPolicy=(
                RTCIceTransportPolicy.RELAY if self.relay_only else RTCIceTransportPolicy.ALL
            ),
            bundlePolicy=RTCBundlePolicy.MAX_BUNDLE if max_bundle else RTCBundlePolicy.BALANCED,
        )

    def check_gathered(self, sdp: str) -> None:
        """Raise :class:`IceFailure` if a relay-only description holds no relay candidate
        (aioice drops a refused or unreachable TURN allocation silently)."""
        if self.relay_only and " typ relay" not in sdp:
            raise IceFailure(
                "relay-only: no relay candidate (the TURN server refused our credentials "
                "or did not answer)"
            )
