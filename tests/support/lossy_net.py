"""A lossy link for one call participant: a network namespace behind a veth pair.

There is no netem on these machines; what works (issue 13) is a network namespace joined to
the root namespace by a veth pair, random UDP drops with nftables *inside* the namespace
(``numgen random mod 100 < P drop``, here at the ingress of each end of the veth, so both
directions lose P % "on the wire"),
bandwidth caps with ``tc qdisc … tbf`` (downlink: the root side's egress; uplink: the
namespace side's egress), and a blackout that drops every packet (TCP too) both ways.

::

    with LossyNet() as net:          # names and a /30 of its own: xdist workers never clash
        net.set_loss(10)             # % of UDP packets dropped each way
        net.set_rate(down_kbit=500)  # None: no cap
        net.blackout(True)           # drop everything, until blackout(False)
        subprocess.run([*net.exec_prefix(), "salon", "call", ...])

``net.host_addr`` is the root side's address (a server and an SFU listening there are reached
from inside the namespace over the veth, and from the root namespace as a local address);
``net.ns_addr`` the namespace side's (its ICE host candidate: ``SALON_ICE_HOSTS``).

Needs root, ``ip``, ``nft`` and ``tc``: :func:`unavailable` says why not, for a skip. A test
and a bench use the same class (``bench/bench_network.py``). Synchronous (``subprocess.run``):
every change is a few short commands.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

__all__ = ["LossyNet", "unavailable"]

TABLE = "salon_lossy"  # netdev tables salon_lossy_<device>: one per veth end
_TIMEOUT = 10.0


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, capture_output=True, text=True, timeout=_TIMEOUT)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


_unavailable: str | bool | None = False  # False: not checked yet


def unavailable() -> str | None:
    """Why a lossy namespace cannot be made here (a skip reason), or None if it can.

    Checked once per process by making (and removing) a throwaway namespace with an nft table.
    """
    global _unavailable
    if _unavailable is not False:
        return _unavailable  # type: ignore[return-value]
    reason: str | None = None
    missing = [tool for tool in ("ip", "nft", "tc") if shutil.which(tool) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed (apt-get install iproute2 nftables)"
    elif os.geteuid() != 0:
        reason = "network namespaces need root"
    else:
        probe = f"salonprobe-{secrets.token_hex(3)}"
        try:
            _run("ip", "netns", "add", probe)
            _run("ip", "netns", "exec", probe, "nft", "add", "table", "netdev", TABLE)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            reason = f"cannot make a network namespace with nftables: {exc}"
        finally:
            _run("ip", "netns", "delete", probe, check=False)
    _unavailable = reason
    return reason


class LossyNet:
    """One namespace + veth pair + nft table, removed by :meth:`close` (or ``with``)."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"salon-{tag}"
        self.host_if = f"slh{tag}"  # interface names: at most 15 characters
        self.ns_if = f"sln{tag}"
        # A random /30 in 10.200.0.0/13; two test workers picking the same one is ~1 in 500k.
        block = secrets.randbelow(8 * 256 * 64) * 4
        base = (10 << 24) | (200 << 16) | block
        self.host_addr = _ip(base + 1)
        self.ns_addr = _ip(base + 2)
        self.loss = 0
        self.down_kbit: int | None = None
        self.up_kbit: int | None = None
        self.dark = False
        self._made = False

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> LossyNet:
        self._made = True
        try:
            _run("ip", "netns", "add", self.name)
            _run("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
            _run("ip", "link", "set", self.ns_if, "netns", self.name)
            _run("ip", "addr", "add", f"{self.host_addr}/30", "dev", self.host_if)
            _run("ip", "link", "set", self.host_if, "up")
            self._ns("ip", "addr", "add", f"{self.ns_addr}/30", "dev", self.ns_if)
            self._ns("ip", "link", "set", self.ns_if, "up")
            self._ns("ip", "link", "set", "lo", "up")
            self._ns("ip", "route", "add", "default", "via", self.host_addr)
            # Static neighbours: no ARP round trip (and its 3-packet queue, which drops the rest
            # of a first burst) before the first datagrams cross.
            host_mac = _mac([], self.host_if)
            ns_mac = _mac(self.exec_prefix(), self.ns_if)
            _run("ip", "neigh", "replace", self.ns_addr, "lladdr", ns_mac, "dev", self.host_if,
                 "nud", "permanent")  # fmt: skip
            self._ns("ip", "neigh", "replace", self.host_addr, "lladdr", host_mac,
                     "dev", self.ns_if, "nud", "permanent")  # fmt: skip
            self._apply_nft()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Remove the namespace (its end of the veth goes with it) and the root end."""
        if not self._made:
            return
        self._made = False
        _run("nft", "delete", "table", "netdev", f"{TABLE}_{self.host_if}", check=False)
        _run("ip", "netns", "delete", self.name, check=False)
        _run("ip", "link", "delete", self.host_if, check=False)

    def __enter__(self) -> LossyNet:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ conditions

    def exec_prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def set_loss(self, percent: int) -> None:
        """Drop ``percent`` % of UDP packets at random, in each direction (0: none)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"loss must be 0-100 %, not {percent}")
        self.loss = percent
        self._apply_nft()

    def blackout(self, on: bool) -> None:
        """Drop every packet in and out of the namespace (the link is gone) until off again."""
        self.dark = on
        self._apply_nft()

    def set_rate(self, down_kbit: int | None = None, up_kbit: int | None = None) -> None:
        """Cap the namespace's downlink / uplink (kbit/s, token bucket); None: no cap."""
        self.down_kbit, self.up_kbit = down_kbit, up_kbit
        self._tbf(self.host_if, down_kbit, [])
        self._tbf(self.ns_if, up_kbit, self.exec_prefix())

    def counters(self) -> dict[str, int]:
        """Packets dropped so far: ``down`` (into the namespace) and ``up`` (out of it)."""
        return {
            "down": self._dropped(self.exec_prefix(), self.ns_if),
            "up": self._dropped([], self.host_if),
        }

    def bytes_moved(self) -> dict[str, int]:
        """Bytes that crossed the link so far: ``down`` (into the namespace), ``up`` (out)."""
        stats = Path("/sys/class/net") / self.host_if / "statistics"
        return {
            "down": int((stats / "tx_bytes").read_text()),
            "up": int((stats / "rx_bytes").read_text()),
        }

    @staticmethod
    def _dropped(prefix: list[str], dev: str) -> int:
        out = _run(*prefix, "nft", "-j", "list", "table", "netdev", f"{TABLE}_{dev}").stdout
        total = 0
        for item in json.loads(out).get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"]["packets"])
        return total

    # ------------------------------------------------------------------ internals

    def _ns(self, *args: str) -> subprocess.CompletedProcess[str]:
        return _run(*self.exec_prefix(), *args)

    def _apply_nft(self) -> None:
        """Replace both tables, each in one atomic ``nft -f`` transaction.

        Packets are lost "on the wire": at the ingress of the receiving end of the veth (the
        namespace's end for the downlink, the root end for the uplink). A drop in an output
        hook would fail the sender's ``sendto`` with EPERM instead, which no real link does.
        """
        if self.dark:
            rule = "counter drop"
        elif self.loss:
            rule = f"ip protocol udp numgen random mod 100 < {self.loss} counter drop"
        else:
            rule = ""
        self._nft(self.exec_prefix(), self.ns_if, rule)
        self._nft([], self.host_if, rule)

    def _nft(self, prefix: list[str], dev: str, rule: str) -> None:
        table = f"{TABLE}_{dev}"
        script = (
            f"table netdev {table} {{}}\ndelete table netdev {table}\n"
            f"table netdev {table} {{\n  chain ingress {{\n"
            f"    type filter hook ingress device {dev} priority 0; policy accept;\n"
            f"    {rule}\n  }}\n}}\n"
        )
        done = subprocess.run(
            [*prefix, "nft", "-f", "-"], input=script, capture_output=True, text=True,
            timeout=_TIMEOUT,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"nft failed: {done.stderr.strip()}\n{script}")

    @staticmethod
    def _tbf(dev: str, kbit: int | None, prefix: list[str]) -> None:
        _run(*prefix, "tc", "qdisc", "del", "dev", dev, "root", check=False)
        if kbit is None:
            return
        # Burst: at least one full-size packet and ~20 ms at the rate; queue up to 200 ms.
        burst = max(3000, kbit * 1000 // 8 // 50)
        _run(
            *prefix, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
            "rate", f"{kbit}kbit", "burst", str(burst), "latency", "200ms",
        )  # fmt: skip


def _mac(prefix: list[str], dev: str) -> str:
    link = json.loads(_run(*prefix, "ip", "-j", "link", "show", "dev", dev).stdout)
    return str(link[0]["address"])


def _ip(value: int) -> str:
    return ".".join(str((value >> shift) & 0xFF) for shift in (24, 16, 8, 0))
