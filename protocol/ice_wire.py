"""ICE servers for NAT traversal (DESIGN §7c); :mod:`protocol.wire` lists them in its unions.

After authenticating, a member asks the server for the STUN and TURN servers to give every
``RTCPeerConnection`` it makes (mesh pairs and SFU links)::

    GetIceServers    -> IceServers    STUN URLs, and TURN URLs with short-lived credentials,
                                      and whether the operator wants relay-only calls

TURN credentials follow the shared-secret REST scheme coturn implements (``use-auth-secret``):
``username`` is ``"<expiry unix time>:<random id>"`` and ``credential`` is
``base64(HMAC-SHA1(secret, username))``, so the TURN server checks them with the secret alone.
The random id is fresh for every answer and names neither the member nor the space: the
TURN server (often run by someone else) learns nothing it could link across requests.
``IceServer`` has the shape of WebRTC's ``RTCIceServer``, so a browser passes the list to
``new RTCPeerConnection({iceServers})`` as it is.
"""

from __future__ import annotations

import msgspec


class GetIceServers(msgspec.Struct, tag="get_ice_servers", frozen=True):
    """Ask for the ICE servers (fresh TURN credentials each time). Members only."""

    id: int


class IceServer(msgspec.Struct, frozen=True):
    """One entry of ``RTCConfiguration.iceServers``: STUN URLs carry no credentials."""

    urls: list[str]
    username: str = ""
    credential: str = ""


class IceServers(msgspec.Struct, tag="ice_servers", frozen=True):
    """The ICE servers to use; ``expires_at`` (unix seconds) is when the TURN credentials
    stop being accepted for new allocations (0: no TURN). Ask again before making a
    connection after that. An empty list: host candidates only (a LAN or loopback)."""

    id: int
    servers: list[IceServer]
    expires_at: int = 0
    # The operator's "relay calls" ([ice] relay_only): every client uses iceTransportPolicy
    # "relay" for every connection, so no participant learns another's IP address (only the
    # TURN server's). Clients may also force relay-only locally (``salon call --relay-only``).
    relay_only: bool = False
