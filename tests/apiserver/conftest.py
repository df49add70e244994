"""Fixtures for the test API server's own tests."""

from __future__ import annotations

from kubenet.testing.apiserver.pytest_fixtures import apiserver, examples_apiserver, kube_api

__all__ = ["apiserver", "examples_apiserver", "kube_api"]

