"""Fixtures for node-proxy's tests: the embedded API server."""

from __future__ import annotations

from kubenet.testing.apiserver.pytest_fixtures import apiserver, kube_api

__all__ = ["apiserver", "kube_api"]
