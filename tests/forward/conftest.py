"""Fixtures for the api-proxy tests (helpers live in tests/forward/support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenet.testing.apiserver.certs import CertificateAuthority

from .support import Pki


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority("forward-test-ca")
    other = CertificateAuthority("someone-else")
    (folder / "ca.crt").write_bytes(ca.cert_pem)
    (folder / "other-ca.crt").write_bytes(other.cert_pem)
    server_cert, server_key = ca.serving(["127.0.0.1", "localhost"]).write(folder, "server")
    client_cert, client_key = ca.client("alice", ["devs"]).write(folder, "client")
    return Pki(
        folder / "ca.crt", server_cert, server_key, client_cert, client_key, folder / "other-ca.crt"
    )


@pytest.fixture
def www(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "www"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello from www\n")
    (folder / "sub").mkdir()
    (folder / "sub" / "page.html").write_text("<p>page</p>\n")
    (tmp_path / "secret.txt").write_text("outside the folder\n")
    yield folder
