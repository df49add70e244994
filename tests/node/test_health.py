"""Health: upstream's rules and JSON, and real health-check servers on loopback."""

from __future__ import annotations

import json
import socket
from dataclasses import replace

import aiohttp

from kubenet.model import IPFamily
from kubenet.node.health import (
    HealthCheck,
    ProxyHealth,
    ServiceHealthServers,
    go_time,
    health_checks,
    node_eligible,
    service_json,
)
from tests.node.support import node, run
from tests.scenarios import ep, svc


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_times_are_written_as_go_marshals_them() -> None:
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(1_700_000_000.0) == "2023-11-14T22:13:20Z"
    assert go_time(1_700_000_000.25) == "2023-11-14T22:13:20.25Z"
    assert go_time(1_700_000_000.125) == "2023-11-14T22:13:20.125Z"
    # Nanoseconds are written as far as they go, trailing zeros dropped.
    assert go_time(0.000001) == "1970-01-01T00:00:00.000001Z"


def _health(clock: Clock, node_object: dict[str, object] | None = None) -> ProxyHealth:
    default = node("node-a", "10.180.0.1")
    return ProxyHealth(60.0, (IPFamily.IPV4, IPFamily.IPV6), lambda: node_object or default, clock)


def test_healthy_until_an_update_waits_too_long() -> None:
    clock = Clock()
    health = _health(clock)
    assert health.health() == {
        "lastUpdated": "0001-01-01T00:00:00Z",
        "currentTime": go_time(clock.now),
        "healthy": True,
    }
    health.queued_update()
    clock.now += 59
    assert health.healthy  # nothing synced yet: starting up counts as healthy
    health.updated()
    last = clock.now
    health.queued_update()
    clock.now += 30
    assert health.healthy
    clock.now += 31
    body = health.health()
    assert body["healthy"] is False
    assert body["status"] == {
        "IPv4": {"lastUpdated": go_time(last), "healthy": False},
        "IPv6": {"lastUpdated": go_time(last), "healthy": False},
    }
    health.updated()
    assert health.healthy


def test_healthz_and_livez_bodies() -> None:
    clock = Clock()
    health = _health(clock)
    health.updated()
    clock.now += 5
    code, text = health.healthz()
    assert code == 200
    # Go's json.Marshal: compact, fields in declaration order; lastUpdated is "now".
    assert text == (
        f'{{"lastUpdated":"{go_time(clock.now)}","currentTime":"{go_time(clock.now)}",'
        '"nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":'
        f'"{go_time(clock.now - 5)}","healthy":true}},"IPv6":{{"lastUpdated":'
        f'"{go_time(clock.now - 5)}","healthy":true}}}}}}'
    )
    code, text = health.livez()
    assert code == 200 and "nodeEligible" not in json.loads(text)


def test_an_ineligible_node_fails_healthz_only() -> None:
    doomed = node("node-a", "10.180.0.1")
    doomed["spec"]["taints"] = [{"key": "ToBeDeletedByClusterAutoscaler"}]  # type: ignore[index]
    health = _health(Clock(), doomed)
    code, text = health.healthz()
    assert code == 503 and json.loads(text)["nodeEligible"] is False
    assert health.livez()[0] == 200


def test_node_eligibility() -> None:
    assert node_eligible(node("node-a", "10.180.0.1"))
    assert not node_eligible(None)
    deleting = node("node-a", "10.180.0.1")
    deleting["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"  # type: ignore[index]
    assert not node_eligible(deleting)
    assert node_eligible(node("node-a", "10.180.0.1", taints=["other"]))


def test_service_json_is_upstreams_template() -> None:
    assert service_json("ns", "lb", 2, True) == (
        '{\n\t"service": {\n\t\t"namespace": "ns",\n\t\t"name": "lb"\n\t},\n'
        '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}'
    )


def test_health_checks_count_distinct_local_ready_addresses() -> None:
    a, b, r = ep("pod-a"), ep("pod-b"), ep("pod-r")
    a_other_port = replace(a, port=9090)
    unready = replace(b, ready=False)
    http = replace(svc("lb", "10.96.0.40", (a, unready, r)), health_check_node_port=32000)
    admin = replace(
        svc("lb", "10.96.0.40", (a_other_port,), port=81, port_name="admin"),
        health_check_node_port=32000,
    )
    plain = svc("plain", "10.96.0.41", (a,))
    assert health_checks([http, admin, plain]) == {("default", "lb"): HealthCheck(32000, 1)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_health_check_servers_open_answer_and_close() -> None:
    clock = Clock()
    health = _health(clock)
    first, second = _free_port(), _free_port()

    async def get(port: int) -> tuple[int, dict[str, str], str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/anything") as resp,
        ):
            return resp.status, dict(resp.headers), await resp.text()

    async def scenario() -> None:
        servers = ServiceHealthServers(health, ["127.0.0.1"])
        try:
            await servers.sync({("default", "lb"): HealthCheck(first, 2)})
            status, headers, body = await get(first)
            assert status == 200 and headers["X-Load-Balancing-Endpoint-Weight"] == "2"
            assert headers["Content-Type"] == "application/json"
            assert body == service_json("default", "lb", 2, True)
            await servers.sync({("default", "lb"): HealthCheck(first, 0)})
            assert (await get(first))[0] == 503
            # The port moves: the old one closes, the new one answers.
            await servers.sync({("default", "lb"): HealthCheck(second, 1)})
            assert (await get(second))[0] == 200
            try:
                await get(first)
                raise AssertionError("the old port still answers")
            except aiohttp.ClientConnectionError:
                pass
            assert servers.ports == {("default", "lb"): second}
        finally:
            await servers.close()
        assert servers.ports == {}

    run(scenario())


def test_a_port_in_use_is_skipped_and_tried_again() -> None:
    health = _health(Clock())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        async def scenario() -> None:
            servers = ServiceHealthServers(health, ["127.0.0.1"])
            await servers.sync({("default", "lb"): HealthCheck(port, 1)})
            assert servers.ports == {}
            await servers.close()

        run(scenario())


def test_the_unhealthy_proxy_fails_every_health_check() -> None:
    clock = Clock()
    health = _health(clock)
    health.updated()
    health.queued_update()
    clock.now += 120
    port = _free_port()

    async def scenario() -> None:
        servers = ServiceHealthServers(health, ["127.0.0.1"])
        try:
            await servers.sync({("default", "lb"): HealthCheck(port, 3)})
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"http://127.0.0.1:{port}/") as resp,
            ):
                assert resp.status == 503
                assert '"serviceProxyHealthy": false' in await resp.text()
        finally:
            await servers.close()

    run(scenario())
