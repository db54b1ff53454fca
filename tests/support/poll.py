"""Poll a condition until it holds: :func:`until` in async tests, :func:`until_sync` in plain
ones (Playwright's sync API, CLI subprocesses). Both return the condition's truthy value and
raise ``AssertionError`` naming ``what`` when ``timeout`` seconds pass without it."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def _timed_out(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"timed out after {timeout} s waiting for {what}")


async def until(
    condition: Callable[[], Any | Awaitable[Any]],
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> Any:
    """Await until ``condition()`` (sync or async) is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        await asyncio.sleep(interval)


def until_sync(
    condition: Callable[[], T],
    what: str,
    timeout: float = 10.0,
    interval: float = 0.05,
) -> T:
    """Block until ``condition()`` is truthy; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise _timed_out(what, timeout)
        time.sleep(interval)
