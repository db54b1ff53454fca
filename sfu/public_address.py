"""Advertising a node's public address (1:1 NAT), as a pure rewrite of its SDP answer.

A node on a cloud VM binds its private address, but clients must send to the public one the
provider maps onto it (every UDP port forwarded alike). The node therefore gathers its host
candidates as usual and, before answering, writes the configured public address into each
host candidate and the ``c=`` lines (what Janus calls ``nat_1_1_mapping`` and coturn
``external-ip``). Connectivity checks then arrive at the private address through the NAT and
ICE pairs them with the local candidate as usual.
"""

from __future__ import annotations

import ipaddress

__all__ = ["advertise_public_address"]


def advertise_public_address(sdp: str, public: str) -> str:
    """``sdp`` with every host candidate's and ``c=`` line's address replaced by ``public``
    (of the same family; the other family's candidates are left as they are)."""
    version = ipaddress.ip_address(public).version
    family = "IP4" if version == 4 else "IP6"
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=candidate:"):
            parts = line.split(" ")
            # foundation component transport priority ADDRESS port "typ" TYPE ...
            host = len(parts) >= 8 and parts[6] == "typ" and parts[7] == "host"
            if host and _version(parts[4]) == version:
                parts[4] = public
                line = " ".join(parts)
        elif line.startswith("c=IN "):
            parts = line.split(" ")
            if len(parts) == 3 and parts[1] == family:
                line = f"c=IN {family} {public}"
        lines.append(line)
    return "\r\n".join(lines)


def _version(address: str) -> int | None:
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return None  # an mDNS name or garbage: not ours to rewrite
