"""deploy/migration/: the patch that keeps kube-proxy off node-proxy's nodes, and its undo.

The patch is applied, as ``kubectl patch --type merge`` applies it, to a kube-proxy
DaemonSet shaped like kubeadm's; the result must still be valid Kubernetes, and
for each value of the label the two DaemonSets must never both run on a node
(the table in docs/migrating.md).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubenet.testing.apiserver.patch import json_patch, merge_patch

kubernetes_validate = pytest.importorskip(
    "kubernetes_validate", reason="needs kubernetes-validate (the test extra)"
)

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
LABEL = "kubenet.dev/node-proxy"

#: kube-proxy's DaemonSet as kubeadm makes it (trimmed to what matters here).
KUBE_PROXY: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "DaemonSet",
    "metadata": {
        "name": "kube-proxy",
        "namespace": "kube-system",
        "labels": {"k8s-app": "kube-proxy"},
    },
    "spec": {
        "selector": {"matchLabels": {"k8s-app": "kube-proxy"}},
        "updateStrategy": {"type": "RollingUpdate"},
        "template": {
            "metadata": {"labels": {"k8s-app": "kube-proxy"}},
            "spec": {
                "serviceAccountName": "kube-proxy",
                "priorityClassName": "system-node-critical",
                "hostNetwork": True,
                "nodeSelector": {"kubernetes.io/os": "linux"},
                "tolerations": [{"operator": "Exists"}],
                "containers": [
                    {
                        "name": "kube-proxy",
                        "image": "registry.k8s.io/kube-proxy:v1.32.0",
                        "command": [
                            "/usr/local/bin/kube-proxy",
                            "--config=/var/lib/kube-proxy/config.conf",
                            "--hostname-override=$(NODE_NAME)",
                        ],
                        "securityContext": {"privileged": True},
                    }
                ],
            },
        },
    },
}


def _patched() -> dict[str, Any]:
    patch = yaml.safe_load((DEPLOY / "migration" / "kube-proxy-patch.yaml").read_text())
    result: dict[str, Any] = merge_patch(copy.deepcopy(KUBE_PROXY), patch)
    return result


def _matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, operator = expression["key"], expression["operator"]
    values = expression.get("values", [])
    return {
        "In": lambda: labels.get(key) in values,
        "NotIn": lambda: labels.get(key) not in values,
        "Exists": lambda: key in labels,
        "DoesNotExist": lambda: key not in labels,
    }[operator]()


def _schedules(pod: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a DaemonSet's pod template lands on a node with these labels."""
    if any(labels.get(k) != v for k, v in pod.get("nodeSelector", {}).items()):
        return False
    required = (
        pod.get("affinity", {})
        .get("nodeAffinity", {})
        .get("requiredDuringSchedulingIgnoredDuringExecution")
    )
    if required is None:
        return True
    return any(
        all(_matches(e, labels) for e in term.get("matchExpressions", []))
        for term in required["nodeSelectorTerms"]
    )


def test_patched_kube_proxy_is_valid_kubernetes() -> None:
    kubernetes_validate.validate(_patched(), "1.33.0", strict=True)


@pytest.mark.parametrize(
    "label,kube_proxy,node_proxy",
    [(None, True, False), ("pending", False, False), ("true", False, True)],
)
def test_the_label_decides_which_proxy_runs(
    label: str | None, kube_proxy: bool, node_proxy: bool
) -> None:
    labels = {"kubernetes.io/os": "linux"} | ({LABEL: label} if label else {})
    daemonset = yaml.safe_load((DEPLOY / "kubernetes" / "daemonset.yaml").read_text())
    assert _schedules(_patched()["spec"]["template"]["spec"], labels) is kube_proxy
    assert _schedules(daemonset["spec"]["template"]["spec"], labels) is node_proxy
    # Before the patch kube-proxy runs everywhere: the patch is what keeps them apart.
    assert _schedules(KUBE_PROXY["spec"]["template"]["spec"], labels)


def test_the_patch_changes_nothing_else_and_the_undo_restores_it() -> None:
    patched = _patched()
    assert patched["spec"]["template"]["spec"].pop("affinity")
    assert patched == KUBE_PROXY
    undo = json.loads((DEPLOY / "migration" / "kube-proxy-unpatch.json").read_text())
    assert json_patch(_patched(), undo) == KUBE_PROXY
