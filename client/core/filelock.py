"""An exclusive lock on an open file that works on POSIX (``flock``) and Windows (``msvcrt``).

Imported by the keystore; ``fcntl`` is POSIX-only, so neither module is imported at the top
of anything ``salon`` imports (``import client.cli.main`` works where ``fcntl`` does not exist).
"""

from __future__ import annotations

import contextlib
import importlib
import time
from collections.abc import Iterator
from typing import IO, Any

WINDOWS_RETRY_SECONDS = 0.05


def _module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@contextlib.contextmanager
def exclusive(file: IO[Any]) -> Iterator[None]:
    """Hold an exclusive lock on ``file`` (blocking) for the ``with`` body."""
    fcntl = _module("fcntl")
    if fcntl is not None:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)
        return
    msvcrt = _module("msvcrt")
    if msvcrt is None:
        raise OSError("no file locking on this platform (neither fcntl nor msvcrt)")
    # msvcrt locks a byte range from the current position: always the first byte (a range
    # past the end of the file can be locked). LK_NBLCK fails at once when another process
    # holds it; poll until it is free, as flock would block.
    fd = file.fileno()
    while True:
        file.seek(0)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            break
        except OSError:
            time.sleep(WINDOWS_RETRY_SECONDS)
    try:
        yield
    finally:
        file.seek(0)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
