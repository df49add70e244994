"""The shared scenario suite through every backend's tracer.

The same packets must meet the same fate whichever backend rendered the rules; the
kernel tests (tests/kernel/) send the same cases as real packets.
"""

from __future__ import annotations

import pytest

from kubenet.render import ProxyMode, render
from kubenet.trace import trace
from tests.scenarios import SCENARIOS, Case, Scenario, all_cases, case_id

BACKENDS = [ProxyMode.IPTABLES, ProxyMode.NFTABLES]


@pytest.mark.parametrize("mode", BACKENDS, ids=lambda m: m.value)
@pytest.mark.parametrize("pair", all_cases(), ids=case_id)
def test_case_through_tracer(mode: ProxyMode, pair: tuple[Scenario, Case]) -> None:
    scenario, case = pair
    plan = render(scenario.service_map, scenario.options, mode)
    result = trace(plan, case.packet)
    got = (result.verdict, result.endpoints, result.masquerade)
    want = (case.expect.verdict, case.expect.endpoints, case.expect.masquerade)
    assert got == want, "rules hit:\n  " + "\n  ".join(result.rules)


@pytest.mark.parametrize("mode", BACKENDS, ids=lambda m: m.value)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
def test_render_is_deterministic(mode: ProxyMode, scenario: Scenario) -> None:
    first = render(scenario.service_map, scenario.options, mode)
    again = render(scenario.service_map, scenario.options, mode)
    assert first.text == again.text
