"""Fixtures shared across test modules."""

from __future__ import annotations

import pytest

from kubenet.testing.netns import missing_kernel_support


@pytest.fixture(scope="session")
def ipset_kernel() -> None:
    """Skip unless we may build namespaces and load iptables rules and ipsets in them."""
    missing = missing_kernel_support(iptables=True, tools=("ipset",))
    if missing:
        pytest.skip(missing)
