"""Kubeconfig -> upstream credentials, as kubectl reads them, checked over real TLS."""

from __future__ import annotations

import asyncio
import base64
import datetime
import json
import os
import re
import shutil
import stat
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenet.forward import CredentialsError, KubeconfigOptions, load_credentials, upstreams_for
from kubenet.forward.credentials import (
    ExecSource,
    OidcSource,
    TokenFileSource,
    impersonation_headers,
)

from .support import Pki, backend, raw_request, run, running_proxy


def kubeconfig(
    path: Path,
    server: str,
    user: dict[str, Any],
    cluster: dict[str, Any] | None = None,
    extra_contexts: dict[str, tuple[str, dict[str, Any]]] | None = None,
) -> Path:
    """Write a kubeconfig: context "main" (current) plus ``extra_contexts``."""
    clusters = [{"name": "main", "cluster": {"server": server, **(cluster or {})}}]
    users = [{"name": "main", "user": user}]
    contexts = [{"name": "main", "context": {"cluster": "main", "user": "main"}}]
    for name, (other_server, other_user) in (extra_contexts or {}).items():
        clusters.append({"name": name, "cluster": {"server": other_server}})
        users.append({"name": name, "user": other_user})
        contexts.append({"name": name, "context": {"cluster": name, "user": name}})
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": clusters,
        "users": users,
        "contexts": contexts,
        "current-context": "main",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


async def first_request(options: KubeconfigOptions, **seen_kwargs: Any) -> Any:
    """Send one request through a proxy built from ``options``; return what arrived."""
    (up,) = upstreams_for(options)
    async with running_proxy(up) as p:
        r = await raw_request(p.address, "GET", "/api/v1/pods")
        return r


def test_bearer_token_and_ca_data_over_tls(tmp_path: Path, pki: Pki) -> None:
    async def scenario() -> None:
        async with backend(pki.server_context()) as b:
            cfg = kubeconfig(
                tmp_path / "config",
                b.url,
                {"token": "abc123"},
                {"certificate-authority-data": b64(pki.ca)},
            )
            r = await first_request(KubeconfigOptions(kubeconfig=str(cfg)))
            assert r.status == 200
            assert b.last.header("Authorization") == "Bearer abc123"

    run(scenario())


def test_client_certificate_files_and_inline_data(tmp_path: Path, pki: Pki) -> None:
    async def scenario() -> None:
        async with backend(pki.server_context(require_client_cert=True)) as b:
            files = kubeconfig(
                tmp_path / "files",
                b.url,
                # Relative paths are relative to the kubeconfig's folder, as in kubectl.
                {"client-certificate": os.path.relpath(pki.client_cert, tmp_path),
                 "client-key": os.path.relpath(pki.client_key, tmp_path)},
                {"certificate-authority": str(pki.ca)},
            )  # fmt: skip
            r = await first_request(KubeconfigOptions(kubeconfig=str(files)))
            assert r.status == 200
            subject = dict(x[0] for x in b.last.peer_cert["subject"])  # type: ignore[index]
            assert subject["commonName"] == "alice"
            assert b.last.header("Authorization") is None
            inline = kubeconfig(
                tmp_path / "inline",
                b.url,
                {"client-certificate-data": b64(pki.client_cert),
                 "client-key-data": b64(pki.client_key)},
                {"certificate-authority-data": b64(pki.ca)},
            )  # fmt: skip
            r = await first_request(KubeconfigOptions(kubeconfig=str(inline)))
            assert r.status == 200
            # Flags override the kubeconfig's files, as kubectl's --client-certificate.
            r = await first_request(
                KubeconfigOptions(
                    kubeconfig=str(kubeconfig(tmp_path / "bare", b.url, {})),
                    certificate_authority=str(pki.ca),
                    client_certificate=str(pki.client_cert),
                    client_key=str(pki.client_key),
                )
            )
            assert r.status == 200

    run(scenario())


def test_server_verification(tmp_path: Path, pki: Pki) -> None:
    async def scenario() -> None:
        async with backend(pki.server_context()) as b:
            wrong_ca = kubeconfig(
                tmp_path / "wrong",
                b.url,
                {"token": "t"},
                {"certificate-authority": str(pki.other_ca)},
            )
            r = await first_request(KubeconfigOptions(kubeconfig=str(wrong_ca)))
            assert r.status == 500
            assert r.body.startswith(b"tls: failed to verify certificate")
            r = await first_request(
                KubeconfigOptions(kubeconfig=str(wrong_ca), insecure_skip_tls_verify=True)
            )
            assert r.status == 200
            # The certificate names 127.0.0.1 and localhost; another name fails unless
            # --tls-server-name names one of those.
            by_name = kubeconfig(
                tmp_path / "byname",
                b.url.replace("127.0.0.1", "localhost"),
                {"token": "t"},
                {"certificate-authority": str(pki.ca), "tls-server-name": "nope.example"},
            )
            r = await first_request(KubeconfigOptions(kubeconfig=str(by_name)))
            assert r.status == 500
            r = await first_request(
                KubeconfigOptions(kubeconfig=str(by_name), tls_server_name="localhost")
            )
            assert r.status == 200

    run(scenario())


def test_basic_auth(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with backend() as b:
            cfg = kubeconfig(tmp_path / "c", b.url, {"username": "admin", "password": "s3cret"})
            await first_request(KubeconfigOptions(kubeconfig=str(cfg)))
            assert (
                b.last.header("Authorization")
                == "Basic " + base64.b64encode(b"admin:s3cret").decode()
            )

    run(scenario())


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")

    async def scenario() -> None:
        async with backend() as b:
            cfg = kubeconfig(tmp_path / "c", b.url, {"tokenFile": "token"})
            (up,) = upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
            assert isinstance(up.credentials.source, TokenFileSource)
            async with running_proxy(up) as p:
                await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer first"
                # Rotate the way kubelet does: write aside, rename over.
                (tmp_path / "token.new").write_text("second")
                (tmp_path / "token.new").rename(token_file)
                await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer second"
                # A missing file mid-rotation keeps the last good token.
                token_file.unlink()
                await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer second"

    run(scenario())


EXEC_PLUGIN = """\
import json, os, sys, datetime
counter = os.environ["COUNTER"]
with open(counter, "a") as f:
    f.write("x")
runs = len(open(counter).read())
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
status = {"token": f"exec-token-{runs}"}
ttl = float(os.environ.get("TTL", "0"))
if ttl:
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=ttl)
    status["expirationTimestamp"] = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
if os.environ.get("FAIL"):
    print("plugin stderr mentions hunter2", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}))
"""


def exec_user(tmp_path: Path, ttl: float = 0, fail: bool = False) -> tuple[dict[str, Any], Path]:
    script = tmp_path / "plugin.py"
    script.write_text(EXEC_PLUGIN)
    counter = tmp_path / "runs"
    counter.write_text("")
    env = [{"name": "COUNTER", "value": str(counter)}, {"name": "TTL", "value": str(ttl)}]
    if fail:
        env.append({"name": "FAIL", "value": "1"})
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(script)],
            "env": env,
            "interactiveMode": "Never",
        }
    }
    return user, counter


def test_exec_plugin_cached_until_expiry_and_rerun_after_401(tmp_path: Path) -> None:
    from aiohttp import web

    reject_next = {"on": False}

    async def sometimes_401(_: web.Request) -> web.StreamResponse:
        if reject_next["on"]:
            reject_next["on"] = False
            return web.json_response({"kind": "Status", "code": 401}, status=401)
        return web.json_response({})

    async def scenario() -> None:
        async with backend(routes={"/api": sometimes_401}) as b:
            user, counter = exec_user(tmp_path, ttl=1.0)
            cfg = kubeconfig(tmp_path / "c", b.url, user)
            (up,) = upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
            assert isinstance(up.credentials.source, ExecSource)
            async with running_proxy(up) as p:
                for _ in range(3):
                    await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer exec-token-1"
                assert counter.read_text() == "x"  # cached: one run for three requests
                reject_next["on"] = True
                r = await raw_request(p.address, "GET", "/api")
                assert r.status == 401  # passed on as upstream does, then refreshed
                await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer exec-token-2"
                await asyncio.sleep(1.1)  # past expirationTimestamp
                await raw_request(p.address, "GET", "/api")
                assert b.last.header("Authorization") == "Bearer exec-token-3"
                assert counter.read_text() == "xxx"

    run(scenario())


def test_exec_plugin_failure_is_a_500_without_its_stderr(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with backend() as b:
            user, _ = exec_user(tmp_path, fail=True)
            cfg = kubeconfig(tmp_path / "c", b.url, user)
            r = await first_request(KubeconfigOptions(kubeconfig=str(cfg)))
            assert r.status == 500
            assert b"getting credentials: exec plugin" in r.body
            assert b"returned 3" in r.body
            assert b"hunter2" not in r.body
            assert b.seen == []

    run(scenario())


def test_impersonation_from_kubeconfig_and_flags(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with backend() as b:
            user = {
                "token": "t",
                "as": "jane",
                "as-groups": ["devs", "ops"],
                "as-uid": "42",
                "as-user-extra": {"scopes": ["view", "edit"], "odd key/x": ["y"]},
            }
            cfg = kubeconfig(tmp_path / "c", b.url, user)
            await first_request(KubeconfigOptions(kubeconfig=str(cfg)))
            seen = b.last
            assert seen.header("Impersonate-User") == "jane"
            assert seen.header("Impersonate-Uid") == "42"
            assert seen.all("Impersonate-Group") == ["devs", "ops"]
            assert seen.all("Impersonate-Extra-scopes") == ["view", "edit"]
            assert seen.all("Impersonate-Extra-odd%20key%2Fx") == ["y"]
            await first_request(
                KubeconfigOptions(
                    kubeconfig=str(cfg),
                    impersonate="system:serviceaccount:d:sa",
                    impersonate_groups=("g1",),
                )
            )
            assert b.last.header("Impersonate-User") == "system:serviceaccount:d:sa"
            assert b.last.all("Impersonate-Group") == ["g1"]

    run(scenario())


def test_impersonating_groups_needs_a_user() -> None:
    with pytest.raises(CredentialsError, match="without impersonating a user"):
        impersonation_headers({"as-groups": ["g"]})


def test_overrides_contexts_and_errors(tmp_path: Path) -> None:
    cfg = kubeconfig(
        tmp_path / "c",
        "https://10.0.0.1:6443",
        {"token": "main-token"},
        extra_contexts={"other": ("http://10.0.0.2:8080/base", {"token": "other-token"})},
    )
    main = load_credentials(KubeconfigOptions(kubeconfig=str(cfg)))
    assert (main.name, main.server) == ("main", "https://10.0.0.1:6443")
    other = load_credentials(KubeconfigOptions(kubeconfig=str(cfg), context="other"))
    assert (other.server, other.server_path) == ("http://10.0.0.2:8080/base", "/base")
    mixed = load_credentials(KubeconfigOptions(kubeconfig=str(cfg), cluster="other", user="main"))
    assert mixed.server.startswith("http://10.0.0.2")
    forced = load_credentials(KubeconfigOptions(kubeconfig=str(cfg), server="http://127.0.0.9:1"))
    assert forced.server == "http://127.0.0.9:1"
    for options, message in [
        (KubeconfigOptions(kubeconfig=str(cfg), context="nope"), 'context "nope" does not exist'),
        (KubeconfigOptions(kubeconfig=str(cfg), cluster="nope"), 'cluster "nope" does not exist'),
        (KubeconfigOptions(kubeconfig=str(cfg), user="nope"), 'user "nope" does not exist'),
        (KubeconfigOptions(kubeconfig=str(tmp_path / "missing")), "no such file or directory"),
        (KubeconfigOptions(kubeconfig=str(cfg), server="ftp://x"), "is not an http(s) URL"),
    ]:
        with pytest.raises(CredentialsError, match=message.replace("(", r"\(").replace(")", r"\)")):
            load_credentials(options)


def test_no_kubeconfig_needs_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(CredentialsError, match="no configuration has been provided"):
        load_credentials(KubeconfigOptions())
    only_flags = load_credentials(KubeconfigOptions(server="http://127.0.0.1:8080", token="t"))
    assert only_flags.server == "http://127.0.0.1:8080"


def test_kubeconfig_env_merges_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = kubeconfig(tmp_path / "a", "https://10.0.0.1", {"token": "a"})
    second_cfg = yaml.safe_load(first.read_text())
    second_cfg["contexts"][0]["name"] = "second"
    second_cfg["clusters"][0]["name"] = "second"
    second_cfg["clusters"][0]["cluster"]["server"] = "https://10.0.0.2"
    second_cfg["contexts"][0]["context"]["cluster"] = "second"
    second_cfg["current-context"] = "second"
    (tmp_path / "b").write_text(yaml.safe_dump(second_cfg))
    monkeypatch.setenv("KUBECONFIG", f"{first}:{tmp_path / 'b'}:{tmp_path / 'absent'}")
    ups = upstreams_for(KubeconfigOptions(), contexts=["main", "second"])
    assert [(u.name, u.origin) for u in ups] == [
        ("main", "https://10.0.0.1"),
        ("second", "https://10.0.0.2"),
    ]


def test_secrets_stay_out_of_reprs_and_errors(tmp_path: Path) -> None:
    cfg = kubeconfig(tmp_path / "c", "https://10.0.0.1", {"token": "hunter2-token"})
    creds = load_credentials(KubeconfigOptions(kubeconfig=str(cfg)))
    assert "hunter2" not in repr(creds)
    assert "hunter2" not in repr(KubeconfigOptions(token="hunter2-token"))
    auth = run(creds.auth())
    assert auth.authorization == "Bearer hunter2-token"
    assert "hunter2" not in repr(auth)
    broken = kubeconfig(
        tmp_path / "broken", "https://10.0.0.1", {"token": "hunter2-token"},
        {"certificate-authority-data": base64.b64encode(b"not a cert").decode()},
    )  # fmt: skip
    with pytest.raises(CredentialsError) as info:
        load_credentials(KubeconfigOptions(kubeconfig=str(broken)))
    assert "hunter2" not in str(info.value)


def test_exec_plugin_may_answer_with_a_client_certificate(tmp_path: Path, pki: Pki) -> None:
    script = tmp_path / "cert-plugin.py"
    status = {
        "clientCertificateData": pki.client_cert.read_text(),
        "clientKeyData": pki.client_key.read_text(),
        "expirationTimestamp": (
            datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        ).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    script.write_text(
        "import json\nprint(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        f"'kind': 'ExecCredential', 'status': {status!r}}}))\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)

    async def scenario() -> None:
        async with backend(pki.server_context(require_client_cert=True)) as b:
            user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1",
                             "command": sys.executable, "args": [str(script)]}}  # fmt: skip
            cfg = kubeconfig(
                tmp_path / "c", b.url, user, {"certificate-authority-data": b64(pki.ca)}
            )
            r = await first_request(KubeconfigOptions(kubeconfig=str(cfg)))
            assert r.status == 200, r.body
            subject = dict(x[0] for x in b.last.peer_cert["subject"])  # type: ignore[index]
            assert subject["commonName"] == "alice"

    run(scenario())


def test_exec_info_is_passed_to_the_plugin(tmp_path: Path) -> None:
    script = tmp_path / "info.py"
    out = tmp_path / "info.json"
    script.write_text(
        "import json, os\n"
        f"open({str(out)!r}, 'w').write(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1', "
        "'kind': 'ExecCredential', 'status': {'token': 't'}}))\n"
    )
    cfg = kubeconfig(
        tmp_path / "c",
        "https://10.0.0.1:6443",
        {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
                  "args": [str(script)], "provideClusterInfo": True}},
    )  # fmt: skip
    creds = load_credentials(KubeconfigOptions(kubeconfig=str(cfg)))
    assert run(creds.auth()).authorization == "Bearer t"
    info = json.loads(out.read_text())
    assert info["kind"] == "ExecCredential"
    assert info["spec"]["cluster"]["server"] == "https://10.0.0.1:6443"


# --- auth-provider: oidc --------------------------------------------------------------


def jwt(exp: float, who: str) -> str:
    """An unsigned JWT with an ``exp`` claim (the proxy reads, never verifies, it)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'none'})}.{part({'exp': int(exp), 'sub': who})}.c2ln"


class IdentityProvider:
    """An OIDC provider's discovery and token endpoints, over TLS, with rotating
    refresh tokens: each refresh token is accepted once."""

    def __init__(self, answers: dict[str, tuple[str, str]]) -> None:
        #: refresh token -> (the new id-token, the new refresh token)
        self.answers = answers
        self.grants: list[str] = []
        self.url = ""

    def routes(self) -> dict[str, Any]:
        from aiohttp import web

        async def discovery(_: web.Request) -> web.StreamResponse:
            return web.json_response({"issuer": self.url, "token_endpoint": f"{self.url}/token"})

        async def token(request: web.Request) -> web.StreamResponse:
            form = await request.post()
            given = str(form.get("refresh_token"))
            self.grants.append(given)
            if form.get("grant_type") != "refresh_token" or given not in self.answers:
                return web.json_response({"error": "invalid_grant"}, status=400)
            id_token, refresh = self.answers.pop(given)
            return web.json_response(
                {"access_token": "unused", "token_type": "Bearer", "expires_in": 3600,
                 "id_token": id_token, "refresh_token": refresh}
            )  # fmt: skip

        return {"/.well-known/openid-configuration": discovery, "/token": token}


def oidc_user(idp: IdentityProvider, pki: Pki, id_token: str, refresh: str) -> dict[str, Any]:
    return {
        "auth-provider": {
            "name": "oidc",
            "config": {
                "idp-issuer-url": idp.url,
                "idp-certificate-authority": str(pki.ca),
                "client-id": "kubernetes",
                "client-secret": "shh",
                "id-token": id_token,
                "refresh-token": refresh,
            },
        }
    }


def stored_provider(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    config: dict[str, Any] = document["users"][0]["user"]["auth-provider"]["config"]
    return config


def test_oidc_id_token_refreshed_near_expiry_and_written_back(tmp_path: Path, pki: Pki) -> None:
    now = time.time()
    expired, soon, later = jwt(now - 60, "t0"), jwt(now + 300 + 1.5, "t1"), jwt(now + 3600, "t2")
    idp = IdentityProvider({"r1": (soon, "r2"), "r2": (later, "r3")})

    async def scenario() -> None:
        async with backend(pki.server_context(), routes=idp.routes()) as provider:
            idp.url = provider.url
            async with backend() as api:
                cfg = kubeconfig(tmp_path / "c", api.url, oidc_user(idp, pki, expired, "r1"))
                cfg.chmod(0o600)
                # Loading refreshes an expired token at once (in a thread here: the
                # provider answers on this event loop).
                (up,) = await asyncio.to_thread(
                    upstreams_for, KubeconfigOptions(kubeconfig=str(cfg))
                )
                assert isinstance(up.credentials.source, OidcSource)
                assert idp.grants == ["r1"]
                stored = stored_provider(cfg)
                assert (stored["id-token"], stored["refresh-token"]) == (soon, "r2")
                async with running_proxy(up) as p:
                    await raw_request(p.address, "GET", "/api")
                    assert api.last.header("Authorization") == f"Bearer {soon}"
                    await asyncio.sleep(1.6)  # now within five minutes of its expiry
                    for _ in range(3):
                        r = await raw_request(p.address, "GET", "/api")
                        assert r.status == 200
                        assert api.last.header("Authorization") == f"Bearer {later}"
                assert idp.grants == ["r1", "r2"]  # one refresh for three requests
                stored = stored_provider(cfg)
                assert (stored["id-token"], stored["refresh-token"]) == (later, "r3")
                assert stored["client-secret"] == "shh"  # the rest of the entry is kept
                assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
                assert "shh" not in repr(up.credentials) and later not in repr(up.credentials)

    run(scenario())


def test_oidc_refusal_keeps_the_token_and_does_not_ask_on_every_request(
    tmp_path: Path, pki: Pki
) -> None:
    soon = jwt(time.time() + 300 + 1, "t1")
    idp = IdentityProvider({})  # refuses every refresh token

    async def scenario() -> None:
        async with backend(pki.server_context(), routes=idp.routes()) as provider:
            idp.url = provider.url
            async with backend() as api:
                cfg = kubeconfig(tmp_path / "c", api.url, oidc_user(idp, pki, soon, "r1"))
                (up,) = upstreams_for(KubeconfigOptions(kubeconfig=str(cfg)))
                assert idp.grants == []  # not stale yet
                async with running_proxy(up) as p:
                    await asyncio.sleep(1.1)
                    for _ in range(3):
                        r = await raw_request(p.address, "GET", "/api")
                        assert r.status == 200  # the API server judges the old token
                        assert api.last.header("Authorization") == f"Bearer {soon}"
                assert idp.grants == ["r1"]
                assert stored_provider(cfg)["id-token"] == soon

    run(scenario())


def test_oidc_expired_and_refused_at_start_is_a_clear_error(tmp_path: Path, pki: Pki) -> None:
    idp = IdentityProvider({})

    async def scenario() -> None:
        async with backend(pki.server_context(), routes=idp.routes()) as provider:
            idp.url = provider.url
            user = oidc_user(idp, pki, jwt(time.time() - 60, "t0"), "r1")
            cfg = kubeconfig(tmp_path / "c", "https://127.0.0.1:1", user)
            with pytest.raises(CredentialsError) as caught:
                await asyncio.to_thread(load_credentials, KubeconfigOptions(kubeconfig=str(cfg)))
            assert str(caught.value) == (
                "context 'main': refreshing the oidc id-token: InvalidGrantError"
            )
            assert "r1" not in str(caught.value) and "shh" not in str(caught.value)

    run(scenario())


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("gcp", 'the gcp auth plugin has been removed; use the "gke-gcloud-auth-plugin"'),
        ("azure", "the azure auth plugin has been removed; use the https://github.com/Azure"),
        ("keystone", 'no Auth Provider found for name "keystone"'),
    ],
)
def test_auth_providers_kubectl_no_longer_has_are_refused(
    tmp_path: Path, name: str, says: str
) -> None:
    user = {"auth-provider": {"name": name, "config": {"access-token": "x"}}}
    cfg = kubeconfig(tmp_path / "c", "https://127.0.0.1:1", user)
    with pytest.raises(CredentialsError, match=f"^context 'main': {re.escape(says)}"):
        load_credentials(KubeconfigOptions(kubeconfig=str(cfg)))
    # --token replaces the user's credentials, as in kubectl.
    assert load_credentials(KubeconfigOptions(kubeconfig=str(cfg), token="t")) is not None


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not on PATH")
def test_kubectl_refreshes_an_oidc_token_the_same_way(tmp_path: Path, pki: Pki) -> None:
    """kubectl, given the same kubeconfig and provider, asks for the same grant, sends
    the same token and leaves the same kubeconfig behind as api-proxy's loading."""
    now = time.time()
    expired, fresh = jwt(now - 60, "t0"), jwt(now + 3600, "t1")
    results = {}

    async def one(who: str) -> None:
        idp = IdentityProvider({"r1": (fresh, "r2")})
        async with backend(pki.server_context(), routes=idp.routes()) as provider:
            idp.url = provider.url
            async with backend(pki.server_context()) as api:
                user = oidc_user(idp, pki, expired, "r1")
                ca = {"certificate-authority": str(pki.ca)}
                cfg = kubeconfig(tmp_path / who, api.url, user, ca)
                if who == "kubectl":
                    argv = ["kubectl", "--kubeconfig", str(cfg), "get", "--raw", "/api"]
                    done = await asyncio.create_subprocess_exec(
                        *argv, stdout=asyncio.subprocess.DEVNULL
                    )
                    assert await done.wait() == 0
                else:
                    options = KubeconfigOptions(kubeconfig=str(cfg))
                    (up,) = await asyncio.to_thread(upstreams_for, options)
                    async with running_proxy(up) as p:
                        assert (await raw_request(p.address, "GET", "/api")).status == 200
                stored = stored_provider(cfg)
                results[who] = (
                    idp.grants,
                    api.last.header("Authorization"),
                    (stored["id-token"], stored["refresh-token"]),
                )

    run(one("kubectl"))
    run(one("api-proxy"))
    assert results["api-proxy"] == results["kubectl"] == (["r1"], f"Bearer {fresh}", (fresh, "r2"))
