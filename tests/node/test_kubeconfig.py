"""Connection settings: kubeconfig (through the client's loader), --master, in-cluster."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from kubenet.kubeconfig import KubeconfigError, load
from kubenet.testing.apiserver import ThreadedApiServer


def test_kubeconfig_token_context(apiserver: ThreadedApiServer) -> None:
    access = load(str(apiserver.kubeconfig))
    assert access.server == apiserver.url
    assert access.headers() == {"Authorization": f"Bearer {apiserver.admin_token}"}
    assert isinstance(access.ssl_context, ssl.SSLContext)
    assert access.ssl_context.verify_mode is ssl.CERT_REQUIRED
    assert apiserver.admin_token not in repr(access)


def test_kubeconfig_certificate_context(apiserver: ThreadedApiServer) -> None:
    access = load(str(apiserver.kubeconfig), context="kubenet-cert")
    assert access.headers() == {}
    assert access.ssl_context is not None


def test_master_overrides_the_kubeconfig_server(apiserver: ThreadedApiServer) -> None:
    access = load(str(apiserver.kubeconfig), "https://10.0.0.1:6443/")
    assert access.server == "https://10.0.0.1:6443"
    assert access.headers()["Authorization"].endswith(apiserver.admin_token)


def test_master_alone_has_no_credentials() -> None:
    access = load(None, "http://127.0.0.1:8080")
    assert (access.server, access.ssl_context, access.headers()) == (
        "http://127.0.0.1:8080",
        None,
        {},
    )


@pytest.mark.parametrize(
    ("kubeconfig", "master", "message"),
    [
        ("/nonexistent/kubeconfig", None, "no such file"),
        (None, "ftp://example.org", r"is not an http\(s\) URL"),
    ],
)
def test_bad_settings_are_one_clear_error(
    kubeconfig: str | None, master: str | None, message: str
) -> None:
    with pytest.raises(KubeconfigError, match=message):
        load(kubeconfig, master, environ={})


def test_a_malformed_kubeconfig_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "kubeconfig"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    with pytest.raises(KubeconfigError, match="--kubeconfig"):
        load(str(path))


def test_in_cluster_service_account(apiserver: ThreadedApiServer, tmp_path: Path) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text("first-token\n")
    (sa / "ca.crt").write_bytes(apiserver.ca_path.read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": "6443"}
    access = load(None, None, environ=env, service_account=sa)
    assert access.server == "https://127.0.0.1:6443"
    assert access.headers() == {"Authorization": "Bearer first-token"}
    # The kubelet rotates the token by replacing the file: the next request sees it.
    (sa / "token.new").write_text("second-token-which-is-longer")
    (sa / "token.new").rename(sa / "token")
    assert access.headers() == {"Authorization": "Bearer second-token-which-is-longer"}


def test_no_flags_outside_a_cluster_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match="KUBERNETES_SERVICE_HOST"):
        load(None, None, environ={}, service_account=tmp_path)
