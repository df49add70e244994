"""The shared scenario suite through every backend's tracer.

The same packets must meet the same fate whichever backend rendered the rules; the
kernel tests (tests/kernel/) send the same cases as real packets.

Where a backend follows its own upstream mode and upstream's modes truly differ, the
case is listed in :data:`EXCEPTIONS` with the outcome that backend gives instead and
upstream's reason; the shared expectation stays as it is, and the exception is
asserted just as strictly.
"""

from __future__ import annotations

import pytest

from kubenet.render import ProxyMode, render
from kubenet.trace import trace
from tests.scenarios import (
    REJECT,
    SCENARIOS,
    Case,
    Expect,
    Scenario,
    all_cases,
    case_id,
    dnat,
)

BACKENDS = [ProxyMode.IPTABLES, ProxyMode.NFTABLES, ProxyMode.IPVS]

_POD_A = "10.244.1.2:8080"
_NO_REAL_SERVERS = (
    "IPVS mode: the virtual service has no real servers (Local policy, no local endpoint), "
    "and IPVS itself answers a packet for such a service with ICMP port unreachable "
    "(ip_vs_leave); upstream's IPVS mode has no DROP rule for it as the iptables mode does"
)

#: (backend, scenario, case) -> (the outcome that backend gives, upstream's reason).
EXCEPTIONS: dict[tuple[ProxyMode, str, str], tuple[Expect, str]] = {
    (
        ProxyMode.IPVS,
        "external-local",
        "a pod reaching the NodePort short-circuits to every endpoint",
    ): (
        dnat(_POD_A, masquerade=False),
        "upstream's IPVS mode has no short-circuit for pods reaching an external destination:"
        " a virtual service has one real-server list, and the NodePort's holds the Local"
        " policy's node-local endpoints",
    ),
    (
        ProxyMode.IPVS,
        "external-local",
        "the node reaching the NodePort is masqueraded to every endpoint",
    ): (
        dnat(_POD_A, masquerade=False),
        "upstream's IPVS mode treats the node like any client of a Local NodePort:"
        " KUBE-NODE-PORT-LOCAL-TCP returns before the masquerade mark, and the virtual"
        " service's real servers are the node-local endpoints",
    ),
    (
        ProxyMode.IPVS,
        "external-local-no-local-endpoints",
        "NodePort with Local policy and no local endpoint drops",
    ): (REJECT, _NO_REAL_SERVERS),
    (
        ProxyMode.IPVS,
        "internal-local",
        "internalTrafficPolicy Local without a local endpoint drops",
    ): (REJECT, _NO_REAL_SERVERS),
}


def expected(mode: ProxyMode, scenario: Scenario, case: Case) -> Expect:
    """The shared expectation, or the backend's listed exception."""
    exception = EXCEPTIONS.get((mode, scenario.name, case.name))
    return case.expect if exception is None else exception[0]


@pytest.mark.parametrize("mode", BACKENDS, ids=lambda m: m.value)
@pytest.mark.parametrize("pair", all_cases(), ids=case_id)
def test_case_through_tracer(mode: ProxyMode, pair: tuple[Scenario, Case]) -> None:
    scenario, case = pair
    plan = render(scenario.service_map, scenario.options, mode)
    result = trace(plan, case.packet)
    got = (result.verdict, result.endpoints, result.masquerade)
    expect = expected(mode, scenario, case)
    want = (expect.verdict, expect.endpoints, expect.masquerade)
    assert got == want, "rules hit:\n  " + "\n  ".join(result.rules)


def test_exceptions_name_real_cases_and_differ_from_the_shared_expectation() -> None:
    cases = {(s.name, c.name): c for s, c in all_cases()}
    for (mode, scenario, name), (expect, reason) in EXCEPTIONS.items():
        assert mode in BACKENDS and reason
        assert (scenario, name) in cases, f"no case {scenario}: {name}"
        assert cases[(scenario, name)].expect != expect, f"{scenario}: {name} needs no exception"


@pytest.mark.parametrize("mode", BACKENDS, ids=lambda m: m.value)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_render_is_deterministic(mode: ProxyMode, scenario: Scenario) -> None:
    first = render(scenario.service_map, scenario.options, mode)
    again = render(scenario.service_map, scenario.options, mode)
    assert first.text == again.text
