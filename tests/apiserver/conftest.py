"""Fixtures for the test API server's own tests."""

from __future__ import annotations

import pytest

from kubenet.testing.apiserver.pytest_fixtures import apiserver, examples_apiserver, kube_api

__all__ = ["apiserver", "examples_apiserver", "kube_api"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "benchmark: a scale check that also reports its timings (runs in CI, seconds)"
    )
