"""Helpers shared by the tests (``tests/`` is on ``sys.path``: ``from support import until``).

:func:`until` / :func:`until_sync` are the one way a test waits: poll a condition until it
holds, never a fixed sleep. A test that must show that something does *not* happen for a while
(a muted member stays silent) still holds for that time; it says so where it sleeps.
"""

from support.poll import until, until_sync

__all__ = ["until", "until_sync"]
