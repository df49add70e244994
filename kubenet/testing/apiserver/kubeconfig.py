"""The kubeconfig the server writes for its clients: one user per auth method."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

JsonObject = dict[str, Any]

CLUSTER = "kubenet"


@dataclass(frozen=True)
class Credentials:
    """One kubeconfig user: a bearer token, a client certificate, or nothing."""

    name: str
    token: str = ""
    cert_pem: bytes = b""
    key_pem: bytes = b""

    def to_json(self) -> JsonObject:
        user: JsonObject = {}
        if self.token:
            user["token"] = self.token
        if self.cert_pem:
            user["client-certificate-data"] = base64.b64encode(self.cert_pem).decode()
            user["client-key-data"] = base64.b64encode(self.key_pem).decode()
        return {"name": self.name, "user": user}


def context_name(user: str) -> str:
    return f"{CLUSTER}-{user}"


def build(server: str, ca_pem: bytes | None, users: list[Credentials], current: str) -> JsonObject:
    cluster: JsonObject = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER, "cluster": cluster}],
        "users": [u.to_json() for u in users],
        "contexts": [
            {"name": context_name(u.name), "context": {"cluster": CLUSTER, "user": u.name}}
            for u in users
        ],
        "current-context": context_name(current),
    }


def write(path: Path, config: JsonObject) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
