"""kubenet.lab.scale: which pods serve a Service after ``lab scale``."""

from __future__ import annotations

from typing import Any

import pytest

from kubenet.lab.layout import LabPod
from kubenet.lab.scale import MANAGED_BY, ScaleError, plan_scale

A = LabPod("pod-a", "10.244.1.2", "fd00:244:1::2", "node-a")
B = LabPod("pod-b", "10.244.1.3", "fd00:244:1::3", "node-a")
C = LabPod("pod-c", "10.244.1.4", "fd00:244:1::4", "node-a")
R = LabPod("pod-r", "10.244.2.2", "fd00:244:2::2", "node-b")
PODS = (A, B, C, R)


def service(
    name: str = "web", families: list[str] | None = None, target: Any = 8080
) -> dict[str, Any]:
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "targetPort": target}]}
    if families:
        spec["ipFamilies"] = families
    return {"metadata": {"name": name, "namespace": "demo"}, "spec": spec}


def slice_of(name: str, *ips: str, family: str = "IPv4", ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "demo", "resourceVersion": "7"},
        "addressType": family,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}} for ip in ips],
    }


def addresses(obj: dict[str, Any]) -> list[str]:
    return [ep["addresses"][0] for ep in obj["endpoints"]]


def test_scaling_down_keeps_the_first_serving_pods_in_order() -> None:
    plan = plan_scale(service(), [slice_of("web-1", B.ipv4, A.ipv4, R.ipv4)], PODS, 2)
    assert plan.pods == ("pod-b", "pod-a")
    (updated,) = plan.update
    assert addresses(updated) == [B.ipv4, A.ipv4]
    assert updated["metadata"]["resourceVersion"] == "7"  # an update, not a blind write
    assert plan.create == () and plan.delete == ()


def test_scaling_up_adds_pods_that_did_not_serve() -> None:
    plan = plan_scale(service(), [slice_of("web-1", R.ipv4)], PODS, 3)
    assert plan.pods == ("pod-r", "pod-a", "pod-b")


def test_endpoints_say_where_the_pod_runs_and_are_ready() -> None:
    (updated,) = plan_scale(service(), [slice_of("web-1")], PODS, 4).update
    assert [ep["nodeName"] for ep in updated["endpoints"]] == ["node-a"] * 3 + ["node-b"]
    assert all(ep["conditions"]["ready"] for ep in updated["endpoints"])
    assert updated["endpoints"][0]["targetRef"] == {
        "kind": "Pod",
        "namespace": "demo",
        "name": "pod-a",
    }


def test_not_ready_and_foreign_endpoints_do_not_count_as_serving() -> None:
    slices = [slice_of("web-1", C.ipv4, ready=False), slice_of("web-2", "10.244.9.9", B.ipv4)]
    plan = plan_scale(service(), slices, PODS, 1)
    assert plan.pods == ("pod-b",)


def test_extra_slices_of_a_family_are_deleted() -> None:
    slices = [slice_of("web-1", A.ipv4), slice_of("web-2", B.ipv4)]
    plan = plan_scale(service(), slices, PODS, 2)
    assert [s["metadata"]["name"] for s in plan.update] == ["web-1"]
    assert plan.delete == ("web-2",)
    assert addresses(plan.update[0]) == [A.ipv4, B.ipv4]


def test_zero_leaves_an_empty_slice() -> None:
    plan = plan_scale(service(), [slice_of("web-1", A.ipv4)], PODS, 0)
    assert plan.pods == ()
    assert plan.update[0]["endpoints"] == []


def test_a_service_without_slices_gets_one_from_its_numeric_target_port() -> None:
    plan = plan_scale(service("empty"), [], PODS, 1)
    (created,) = plan.create
    assert created["metadata"]["name"] == "empty-lab-ipv4"
    assert created["metadata"]["labels"] == {
        "kubernetes.io/service-name": "empty",
        "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
    }
    assert created["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert addresses(created) == [A.ipv4]


def test_a_named_target_port_without_slices_cannot_be_guessed() -> None:
    with pytest.raises(ScaleError, match="named targetPort 'http'"):
        plan_scale(service(target="http"), [], PODS, 1)


def test_dual_stack_services_get_one_slice_per_family() -> None:
    slices = [slice_of("dual-v4", A.ipv4), slice_of("dual-v6", A.ipv6, family="IPv6")]
    plan = plan_scale(service("dual", ["IPv4", "IPv6"]), slices, PODS, 2)
    v4, v6 = plan.update
    assert addresses(v4) == [A.ipv4, B.ipv4]
    assert addresses(v6) == [A.ipv6, B.ipv6]


@pytest.mark.parametrize("replicas", [-1, 5])
def test_impossible_counts_are_refused(replicas: int) -> None:
    with pytest.raises(ScaleError):
        plan_scale(service(), [], PODS, replicas)
