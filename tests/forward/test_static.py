"""Static files under --www-prefix: Go FileServer's answers, and no way out of --www."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubenet.forward import ProxyConfig
from kubenet.forward.static import resolve_inside

from .support import backend, raw_request, run, running_proxy, upstream

TRAVERSALS = [
    "/static/../secret.txt",
    "/static/%2e%2e/secret.txt",
    "/static/%2E%2E/secret.txt",
    "/static/..%2fsecret.txt",
    "/static/%2e%2e%2fsecret.txt",
    "/static/sub/../../secret.txt",
    "/static/sub/%2e%2e/%2e%2e/secret.txt",
    "/static/./../secret.txt",
    "/static//../secret.txt",
    "/static/..\\secret.txt",
    "/static/sub\\..\\..\\secret.txt",
    "/static/%5c..%5csecret.txt",
    "/static/%2Ftmp%2Fsecret.txt",
    "/static/secret.txt%00.txt",
    "/static/....//secret.txt",
    "/static/link-out",
    "/static/link-out/",
    "/static/dir-out/secret.txt",
    "/static/../../../../../../etc/passwd",
]


async def follow_redirects(address: str, target: str) -> list[tuple[int, bytes]]:
    """Request ``target`` and follow up to three redirects, as a browser would."""
    answers = []
    for _ in range(4):
        r = await raw_request(address, "GET", target)
        answers.append((r.status, r.body))
        location = r.header("Location")
        if r.status != 301 or location is None:
            break
        target = location if location.startswith("/") else target.rsplit("/", 1)[0] + "/" + location
    return answers


def test_no_traversal_reaches_outside_the_folder(www: Path) -> None:
    outside = www.parent / "secret.txt"
    (www / "link-out").symlink_to(outside)
    (www / "dir-out").symlink_to(www.parent, target_is_directory=True)

    async def scenario() -> None:
        async with backend() as b, running_proxy(upstream(b.url), ProxyConfig(www=str(www))) as p:
            for target in TRAVERSALS:
                answers = await follow_redirects(p.address, target)
                for status, body in answers:
                    assert b"outside the folder" not in body, (target, status)
                    assert b"root:" not in body, target
                # Nothing under /static/ was forwarded to the API server as a static
                # path either: a redirect out of the prefix lands on the API (which is
                # the backend here, answering JSON), never on a file.
                assert all(not s.raw_path.startswith("/static") for s in b.seen), target

    run(scenario())


def test_files_directories_and_listings(www: Path) -> None:
    async def scenario() -> None:
        async with (
            backend() as b,
            running_proxy(upstream(b.url), ProxyConfig(www=str(www), www_prefix="/static")) as p,
        ):
            r = await raw_request(p.address, "GET", "/static/hello.txt")
            assert (r.status, r.body) == (200, b"hello from www\n")
            assert r.header("Content-Type") == "text/plain; charset=utf-8"
            r = await raw_request(p.address, "GET", "/static/sub")
            assert (r.status, r.header("Location")) == (301, "sub/")
            r = await raw_request(p.address, "GET", "/static/sub/")
            assert r.status == 200 and b'<a href="page.html">page.html</a>' in r.body
            r = await raw_request(p.address, "GET", "/static/")
            assert b'<a href="sub/">sub/</a>' in r.body and b"hello.txt" in r.body
            r = await raw_request(p.address, "GET", "/static")
            assert (r.status, r.header("Location")) == (301, "/static/")
            r = await raw_request(p.address, "GET", "/static/missing")
            assert (r.status, r.body) == (404, b"404 page not found\n")
            r = await raw_request(p.address, "GET", "/static/hello.txt", [("Range", "bytes=0-4")])
            assert (r.status, r.body) == (206, b"hello")
            (www / "sub" / "index.html").write_text("<p>index</p>\n")
            r = await raw_request(p.address, "GET", "/static/sub/")
            assert r.body == b"<p>index</p>\n"
            r = await raw_request(p.address, "GET", "/static/sub/index.html")
            assert (r.status, r.header("Location")) == (301, "./")
            # Static files are not behind the API filter (upstream: the filter guards
            # the API only) and never reach the API server.
            r = await raw_request(p.address, "GET", "/static/hello.txt", host="evil.com")
            assert r.status == 200
            assert b.seen == []

    run(scenario())


def test_resolve_inside(www: Path) -> None:
    root = www.resolve()
    assert resolve_inside(root, "hello.txt") == root / "hello.txt"
    assert resolve_inside(root, "") == root
    for bad in ("../secret.txt", "sub/../../secret.txt", "a\x00b", "..\\secret.txt", "."):
        assert resolve_inside(root, bad) is None, bad
    (www / "inner").symlink_to(www / "hello.txt")
    assert resolve_inside(root, "inner") == root / "hello.txt"


@pytest.mark.parametrize("prefix", ["/static/", "/files/deep/"])
def test_www_prefix_is_honoured(www: Path, prefix: str) -> None:
    async def scenario() -> None:
        async with (
            backend() as b,
            running_proxy(upstream(b.url), ProxyConfig(www=str(www), www_prefix=prefix)) as p,
        ):
            r = await raw_request(p.address, "GET", f"{prefix}hello.txt")
            assert r.body == b"hello from www\n"

    run(scenario())
