"""What every bench shares: one percentile, one ``salon serve`` start-up, one way to print.

Percentile: **linear interpolation between closest ranks** (Hyndman & Fan type 7; numpy's
default, ``statistics.quantiles(method="inclusive")``, a spreadsheet's PERCENTILE.INC): the
value at rank ``(n - 1) * q`` of the sorted sample, interpolated between its two neighbours, so
p50 is the median and p0/p100 the minimum/maximum. Every figure called pNN in a bench's output
comes from :func:`percentile`, defined in ``protocol/quantiles.py`` (the SFU node's stats use it
too) and re-exported here. Before, bench_chat and bench_sfu took the element at index
``int(q * n)`` (biased up: p50 of an even sample was the upper middle, p99 of 100 values the
maximum) and web.py/web_call.py took p95 at index ``round(0.95 * (n - 1))``; bench_call and
bench_rekey already interpolated.

Server: :class:`Server` runs the real ``salon serve`` on 127.0.0.1, port 0 (or a given one),
with its own data directory and a ``salon.toml`` written from ``{section: {key: value}}``
overrides; its stdout and stderr go to ``server.log`` in its root (appended across restarts).

Output: human-readable lines first, then :func:`emit` prints the result as one JSON line — the
last line of stdout, what ``make bench-*`` consumers parse. :func:`ratio` is a figure over the
baseline measured in the same run.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from protocol.quantiles import percentile

SALON = Path(sys.executable).parent / "salon"
LISTENING = re.compile(r"listening on (http://([\d.]+):(\d+)\S*)")


def summary(
    values: Iterable[float], qs: Iterable[float] = (0.5, 0.95), digits: int = 1
) -> dict[str, float | int | None]:
    """``{"p50": …, "p95": …, "n": count}`` rounded to ``digits``; the pNN are None (JSON null)
    for no values."""
    ordered = sorted(values)
    out: dict[str, float | int | None] = {
        f"p{round(q * 100)}": round(percentile(ordered, q), digits) if ordered else None for q in qs
    }
    out["n"] = len(ordered)
    return out


def ratio(measured: float, baseline: float) -> float | None:
    """``measured / baseline`` (the baseline measured in the same run); None without one."""
    return measured / baseline if baseline else None


def emit(result: Mapping[str, Any], lines: Iterable[str] = ()) -> None:
    """Print the human-readable ``lines``, then ``result`` as one JSON line: the last line."""
    for line in lines:
        print(line, flush=True)
    print(json.dumps(result), flush=True)


def toml_text(config: Mapping[str, Mapping[str, Any]]) -> str:
    """A tiny TOML writer for ``{section: {key: scalar or list}}`` (JSON scalars are TOML)."""
    return "".join(
        f"[{section}]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in values.items())
        for section, values in config.items()
    )


def start_process(
    cmd: list[str],
    log_path: Path,
    *,
    timeout: float = 60.0,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> tuple[subprocess.Popen[bytes], re.Match[str]]:
    """Run ``cmd`` with stdout and stderr appended to ``log_path`` and wait until it prints
    ``listening on http://HOST:PORT`` (groups: 1 the URL, 2 the host, 3 the port). Raises
    SystemExit with the log if it exits or ``timeout`` passes first."""
    offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = LISTENING.search(log_path.read_bytes()[offset:].decode(errors="replace"))
        if found:
            return proc, found
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise SystemExit(f"{cmd[0]} did not start:\n{log_path.read_text(errors='replace')}")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Server:
    """``salon serve`` as a subprocess, for a bench.

    ``root`` holds ``salon.toml`` (from ``config``, when given), ``data/`` (unless ``data_dir``)
    and ``server.log``. ``env`` adds to the environment (e.g. ``SALON_ICE_HOSTS``). After
    :meth:`start`: ``url``, ``host``, ``port``, ``pid``. Use as a context manager, or call
    :meth:`stop` (SIGTERM, then SIGKILL after ``stop_timeout`` seconds).
    """

    def __init__(
        self,
        root: Path,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        stop_timeout: float = 20.0,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir or root / "data"
        self.log_path = root / "server.log"
        self.config_path: Path | None = None
        if config:
            self.config_path = root / "salon.toml"
            self.config_path.write_text(toml_text(config), encoding="utf-8")
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.host = ""
        self.port = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None, "server not started"
        return self.proc.pid

    def start(self, port: int = 0, timeout: float = 60.0) -> str:
        """Start on 127.0.0.1:``port`` and wait for ``listening on URL``; the URL. Raises
        SystemExit with the log if it never comes."""
        assert self.proc is None or self.proc.poll() is not None, "server already running"
        cmd = [str(SALON), "serve", "--port", str(port), "--data", str(self.data_dir)]
        if self.config_path is not None:
            cmd += ["--config", str(self.config_path)]
        self.proc, found = start_process(
            cmd, self.log_path, timeout=timeout, env=self.env, cwd=self.cwd
        )
        self.url, self.host, self.port = found[1], found[2], int(found[3])
        return self.url

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, self.stop_timeout)

    def __enter__(self) -> Server:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
