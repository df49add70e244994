"""pytest fixtures for the test API server.

Use them from a ``conftest.py``::

    from kubenet.testing.apiserver.pytest_fixtures import apiserver, kube_api  # noqa: F401

``apiserver`` runs a fresh server per test on a free loopback port (TLS, tokens,
client certificates, 1 s bookmarks) and stops it afterwards; ``examples_apiserver``
is the same with the repository's ``examples/`` preloaded (skipped where the folder
is absent); ``kube_api`` is a ``kubernetes.client.ApiClient`` for ``apiserver``,
authenticated with the admin token.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest

from kubenet.testing.apiserver.server import ServerConfig, ThreadedApiServer, running_apiserver

#: Settings that keep tests quick: bookmarks every second instead of every minute.
TEST_CONFIG = ServerConfig(bookmark_interval=1.0)


@pytest.fixture
def apiserver() -> Iterator[ThreadedApiServer]:
    """A running server, stopped when the test ends."""
    with running_apiserver(TEST_CONFIG) as server:
        yield server


def examples_dir() -> Path | None:
    """The repository's ``examples/`` folder, when running from a checkout."""
    folder = Path(__file__).resolve().parents[3] / "examples"
    return folder if folder.is_dir() and any(folder.glob("*.yaml")) else None


@pytest.fixture
def examples_apiserver() -> Iterator[ThreadedApiServer]:
    """A running server with ``examples/`` preloaded (status kept, as fixtures)."""
    folder = examples_dir()
    if folder is None:
        pytest.skip("no examples/ folder next to the kubenet package")
    with running_apiserver(replace(TEST_CONFIG, manifests=(folder,))) as server:
        yield server


def api_client(server: ThreadedApiServer, context: str = "kubenet-token") -> Any:
    """A ``kubernetes.client.ApiClient`` for ``server`` using one kubeconfig context."""
    from kubernetes import client, config

    configuration = client.Configuration()
    # The kubernetes package ships without complete type hints.
    cast(Any, config).load_kube_config(
        config_file=str(server.kubeconfig), context=context, client_configuration=configuration
    )
    return client.ApiClient(configuration)


@pytest.fixture
def kube_api(apiserver: ThreadedApiServer) -> Iterator[Any]:
    """A ``kubernetes`` client for the ``apiserver`` fixture (admin token)."""
    api = api_client(apiserver)
    try:
        yield api
    finally:
        api.close()
