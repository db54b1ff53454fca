"""The ``net`` fixture: a fresh :class:`LossyNet` per test, skipped where no network namespace
can be made (not root, no ``nft``/``tc``), failed instead under ``CI=true`` (.ci/run installs
nftables and runs as root). tests/conftest.py loads it as a plugin, so any test may ask for
``net``."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from support.lossy_net import LossyNet, unavailable


@pytest.fixture
def net() -> Iterator[LossyNet]:
    reason = unavailable()
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"no lossy network namespace under CI: {reason}")
        pytest.skip(reason)
    with LossyNet() as made:
        yield made
