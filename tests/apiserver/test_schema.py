"""Decoding types: values Go's JSON decoder refuses are refused with its message."""

from __future__ import annotations

from typing import Any

import pytest

from kubenet.testing.apiserver.schema import KINDS, DecodeError, check


@pytest.mark.parametrize(
    ("kind", "obj", "message"),
    [
        (
            "Service",
            {"spec": {"selector": {"app": True}}},
            "cannot unmarshal bool into Go struct field ServiceSpec.spec.selector of type string",
        ),
        (
            "Service",
            {"spec": {"ports": [{"port": "80"}]}},
            "json: cannot unmarshal string into Go struct field ServicePort.spec.ports.port of "
            "type int32",
        ),
        (
            "Service",
            {"spec": {"ports": [{"port": 1.5}]}},
            "json: cannot unmarshal number 1.5 into Go struct field ServicePort.spec.ports.port",
        ),
        (
            "Service",
            {"metadata": "web"},
            "cannot unmarshal string into Go struct field Service.metadata of type v1.ObjectMeta",
        ),
        (
            "Pod",
            {"metadata": {"labels": {"a": 1}}},
            "json: cannot unmarshal number into Go struct field ObjectMeta.metadata.labels of type "
            "string",
        ),
        (
            "EndpointSlice",
            {"endpoints": [{"addresses": "10.0.0.1"}]},
            "json: cannot unmarshal string into Go struct field Endpoint.endpoints.addresses of "
            "type []string",
        ),
        (
            "EndpointSlice",
            {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": "yes"}}]},
            "into Go struct field EndpointConditions.endpoints.conditions.ready of type bool",
        ),
        (
            "Node",
            {"spec": {"podCIDRs": "10.244.0.0/24"}},
            "cannot unmarshal string into Go struct field NodeSpec.spec.podCIDRs of type []string",
        ),
        ("Service", {"spec": {"ports": [{"nodePort": 2**31}]}}, "of type int32"),
    ],
)
def test_wrong_types_are_refused_with_gos_message(kind: str, obj: Any, message: str) -> None:
    with pytest.raises(DecodeError) as err:
        check(obj, KINDS[kind])
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        ("Service", {"spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": None}}),
        ("Service", {"spec": {"ports": [{"port": 80, "targetPort": 8080}], "unknownField": [1]}}),
        ("EndpointSlice", {"endpoints": [{"addresses": ["10.0.0.1"], "conditions": {}}]}),
        ("ConfigMap", {"data": {"k": "v"}, "metadata": {"annotations": {"a": "b"}}}),
    ],
)
def test_right_types_and_unknown_fields_pass(kind: str, obj: Any) -> None:
    check(obj, KINDS[kind])
