"""List and watch against the embedded API server: events, bookmarks, relists, backoff."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from kubenet.kubeconfig import load
from kubenet.testing.apiserver import ThreadedApiServer
from kubenet.watch import (
    ADDED,
    DELETED,
    MODIFIED,
    ApiError,
    Backoff,
    Client,
    Delta,
    Reflector,
    Resource,
    endpoint_slices,
    node,
    services,
)
from tests.node.support import (
    Objects,
    endpoint_slice,
    eventually,
    restartable_apiserver,
    run,
    service,
    write_kubeconfig,
)
from tests.node.support import node as node_object

FAST = Backoff(initial=0.05, maximum=0.2, jitter=0.0)


class Recorder:
    """A reflector handler that keeps every batch."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Delta], bool]] = []

    def __call__(self, deltas: Sequence[Delta], synced: bool) -> None:
        self.batches.append((list(deltas), synced))

    def seen(self, kind: str, key: str) -> bool:
        return any(d.type == kind and d.key == key for batch, _ in self.batches for d in batch)

    def keys(self, kind: str) -> list[str]:
        return [d.key for batch, _ in self.batches for d in batch if d.type == kind]


@contextlib.asynccontextmanager
async def reflecting(
    client: Client, resource: Resource, recorder: Recorder, **kwargs: object
) -> AsyncIterator[Reflector]:
    reflector = Reflector(client, resource, recorder, backoff=FAST, **kwargs)  # type: ignore[arg-type]
    task = asyncio.create_task(reflector.run())
    try:
        yield reflector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def test_list_then_watch_sees_every_change(apiserver: ThreadedApiServer) -> None:
    objects = Objects(apiserver)
    objects.apply(service("before", "10.96.0.10"))

    async def scenario() -> None:
        client = Client(load(str(apiserver.kubeconfig)))
        recorder = Recorder()
        try:
            async with reflecting(client, services(), recorder) as reflector:
                await asyncio.wait_for(reflector.synced.wait(), 5)
                first, synced = recorder.batches[0]
                assert synced and {d.key for d in first} == {"default/before", "default/kubernetes"}
                assert {d.type for d in first} == {ADDED}
                objects.apply(service("after", "10.96.0.11"))
                await eventually(lambda: recorder.seen(ADDED, "default/after"))
                objects.apply(service("after", "10.96.0.11", port=81))
                await eventually(lambda: recorder.seen(MODIFIED, "default/after"))
                objects.delete_service("after")
                await eventually(lambda: recorder.seen(DELETED, "default/after"))
                assert all(not synced for _, synced in recorder.batches[1:])
                assert reflector.lists == 1
        finally:
            await client.close()

    run(scenario())


def test_selectors_leave_out_what_kube_proxy_ignores(apiserver: ThreadedApiServer) -> None:
    objects = Objects(apiserver)
    objects.apply(
        service("mine", "10.96.0.20"),
        service("theirs", "10.96.0.21", labels={"service.kubernetes.io/service-proxy-name": "x"}),
        endpoint_slice("mine", ["10.244.1.2"]),
        node_object("node-a", "10.180.0.1"),
        node_object("node-b", "10.180.0.2"),
    )

    async def scenario() -> None:
        client = Client(load(str(apiserver.kubeconfig)))
        try:
            listed = {r: (await client.list(r))[0] for r in (services(), endpoint_slices())}
            nodes, _ = await client.list(node("node-b"))
        finally:
            await client.close()
        names = {o["metadata"]["name"] for o in listed[services()]}
        assert "mine" in names and "theirs" not in names
        assert {o["metadata"]["name"] for o in listed[endpoint_slices()]} == {
            "mine-abc",
            "kubernetes",
        }
        assert [n["metadata"]["name"] for n in nodes] == ["node-b"]

    run(scenario())


def test_bookmarks_move_the_resume_point(apiserver: ThreadedApiServer) -> None:
    objects = Objects(apiserver)

    async def scenario() -> None:
        client = Client(load(str(apiserver.kubeconfig)))
        recorder = Recorder()
        try:
            async with reflecting(client, services(), recorder) as reflector:
                await asyncio.wait_for(reflector.synced.wait(), 5)
                listed_at = int(reflector.resource_version)
                # Writes to another resource move the server's version, not ours...
                objects.apply(endpoint_slice("x", ["10.244.1.9"]))
                # ... until a bookmark (every second here) carries it over.
                await eventually(lambda: int(reflector.resource_version) > listed_at, 5)
                assert len(recorder.batches) == 1
        finally:
            await client.close()

    run(scenario())


def test_errors_back_off_and_report_nothing(tmp_path: Path) -> None:
    with restartable_apiserver(tmp_path) as srv:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", srv.url, token="wrong")

        async def scenario() -> None:
            client = Client(load(str(kubeconfig)))
            recorder = Recorder()
            try:
                with pytest.raises(ApiError) as err:
                    await client.list(services())
                assert err.value.code == 401 and not err.value.history_lost
                async with reflecting(client, services(), recorder) as reflector:
                    await eventually(lambda: reflector.errors >= 3, 5)
                    assert recorder.batches == [] and not reflector.synced.is_set()
            finally:
                await client.close()

        run(scenario())


def test_a_lost_history_is_listed_again_as_changes(tmp_path: Path) -> None:
    with restartable_apiserver(tmp_path, history=5) as srv:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", srv.url)
        srv.objects.apply(service("stays", "10.96.0.30"), service("goes", "10.96.0.31"))

        async def scenario() -> None:
            client = Client(load(str(kubeconfig)))
            recorder = Recorder()
            reflector = Reflector(client, services(), recorder, backoff=FAST)
            try:
                task = asyncio.create_task(reflector.run())
                await asyncio.wait_for(reflector.synced.wait(), 5)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                # While nobody watches, more changes than the server remembers.
                srv.objects.delete_service("goes")
                srv.objects.apply(service("stays", "10.96.0.30", port=81))
                for i in range(8):
                    srv.objects.apply(service(f"new-{i}", f"10.96.1.{i + 1}"))
                recorder.batches.clear()
                task = asyncio.create_task(reflector.run())  # resumes: 410, then a list
                await eventually(lambda: reflector.lists == 2, 5)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            finally:
                await client.close()
            changes, synced = recorder.batches[0]
            assert synced
            # Everything still there is reported (its content may have changed even
            # where its resource version did not), the rest as deleted.
            assert {(d.type, d.key) for d in changes} == {
                (DELETED, "default/goes"),
                (MODIFIED, "default/stays"),
                (MODIFIED, "default/kubernetes"),
                *((ADDED, f"default/new-{i}") for i in range(8)),
            }

        run(scenario())


def test_a_restarted_server_with_a_fresh_store_is_listed_again(tmp_path: Path) -> None:
    with restartable_apiserver(tmp_path) as srv:
        kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", srv.url)
        for i in range(20):
            srv.objects.apply(service(f"s-{i}", f"10.96.0.{i + 10}"))

        async def scenario() -> None:
            client = Client(load(str(kubeconfig)))
            recorder = Recorder()
            try:
                async with reflecting(client, services(), recorder) as reflector:
                    await asyncio.wait_for(reflector.synced.wait(), 5)
                    srv.stop()
                    await eventually(lambda: reflector.errors >= 1, 5)
                    assert len(recorder.batches) == 1  # the outage reports nothing
                    srv.start()  # same port, empty store: our version is "too large"
                    srv.objects.apply(service("s-0", "10.96.0.10"))
                    await eventually(lambda: reflector.lists == 2, 10)
            finally:
                await client.close()
            changes, synced = recorder.batches[-1]
            assert synced
            # Everything but s-0 (and the bootstrap Service) is gone in the new store.
            assert {d.key for d in changes if d.type == DELETED} == {
                f"default/s-{i}" for i in range(1, 20)
            }

        run(scenario(), timeout=40)
