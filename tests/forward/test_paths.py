"""Path normalisation (no spelling slips past a reject rule) and kubectl proxy's routing."""

from __future__ import annotations

import pytest

from kubenet.forward.filter import FilterRules
from kubenet.forward.paths import (
    Canonical,
    PathRefused,
    Redirect,
    Route,
    RouteKind,
    Router,
    encode_path,
    is_watch,
    join_server_path,
    normalise,
)

DEFAULTS = FilterRules.from_flags()
POD = "/api/v1/namespaces/default/pods/foo"

#: Spellings of an exec or attach request. None of them may reach the API server as
#: exec/attach without the default reject list refusing it.
BYPASS_ATTEMPTS = [
    f"{POD}/exec",
    f"{POD}/attach",
    f"{POD}/exec/",
    f"{POD}/exec;jsessionid=1",
    f"{POD}/exec%20",
    f"{POD}/%65xec",
    f"{POD}/exe%63",
    f"{POD}/%65%78%65%63",
    f"{POD}/%61ttach",
    f"{POD}/%61%74%74%61%63%68",
    f"//{POD[1:]}/exec",
    "/api//v1/namespaces/default/pods/foo/exec",
    f"{POD}//exec",
    f"{POD}/./exec",
    f"{POD}/bar/../exec",
    f"{POD}/bar/%2e%2e/exec",
    f"{POD}/bar/%2E%2E/attach",
    f"{POD}/%2e/exec",
    f"{POD}/bar/.%2e/exec",
    "/api/v1/namespaces/default/pods/foo/exec/..//exec",
    "/x/../api/v1/namespaces/default/pods/foo/exec",
    "/%61pi/v1/namespaces/default/pods/foo/exec",
    "/api/v1/namespaces/default/%70ods/foo/exec",
    f"{POD}%2Fexec",
    f"{POD}%2fattach",
    f"{POD}/exec%2F",
    f"{POD}/exec%00",
    f"{POD}/exec%0a",
    f"{POD}/exec%",
    f"{POD}/exec%zz",
    "/api/v1/namespaces/default/pods/foo/bar/..%2Fexec",
]


def follow(raw: str) -> Canonical:
    """What a client that follows redirects ends up requesting."""
    path, _, query = raw.partition("?")
    for _ in range(5):
        result = normalise(path, query)
        if isinstance(result, Canonical):
            return result
        path, _, query = result.location.partition("?")
    raise AssertionError(f"redirect loop for {raw}")


@pytest.mark.parametrize("raw", BYPASS_ATTEMPTS)
def test_no_spelling_of_exec_or_attach_passes_the_default_rules(raw: str) -> None:
    try:
        canonical = follow(raw)
    except PathRefused:
        return  # refused outright: 400, nothing forwarded
    assert not DEFAULTS.accepts("GET", canonical.path, "localhost"), canonical
    assert not DEFAULTS.accepts("POST", canonical.path, "localhost"), canonical


def test_double_encoding_is_decoded_once_like_the_api_server() -> None:
    # The API server decodes once too: it sees the literal "%65xec", not exec. The
    # filter sees exactly that, and the proxy forwards it so it decodes to that again.
    canonical = follow(f"{POD}/%2565xec")
    assert canonical.path == f"{POD}/%65xec"
    assert encode_path(canonical.path) == f"{POD}/%2565xec"


@pytest.mark.parametrize(
    ("raw", "location"),
    [
        ("//api/v1/pods", "/api/v1/pods"),
        ("/api/v1/./pods", "/api/v1/pods"),
        ("/api/v1/x/../pods/", "/api/v1/pods/"),
        ("/api/v1/pods/.", "/api/v1/pods"),
        ("/api/v1/pods/..", "/api/v1"),
        ("/..", "/"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("/api/%2e%2e/api/v1", "/api/v1"),
        ("/a//b///c/", "/a/b/c/"),
    ],
)
def test_non_canonical_shapes_redirect_to_the_clean_path(raw: str, location: str) -> None:
    assert normalise(raw) == Redirect(location)


def test_redirect_keeps_the_query() -> None:
    assert normalise("//api/v1/pods", "watch=1&labelSelector=a%3Db") == Redirect(
        "/api/v1/pods?watch=1&labelSelector=a%3Db"
    )


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ("/", "/"),
        ("/api/v1/pods", "/api/v1/pods"),
        ("/api/v1/pods/", "/api/v1/pods/"),
        ("/api/v1/namespaces/default/services/https:web:443/proxy/a%20b", None),
        ("/%61pi", "/api"),
        ("/caf%C3%A9", "/café"),
        ("/a...b/.hidden/..x", "/a...b/.hidden/..x"),
    ],
)
def test_canonical_paths_are_decoded_once(raw: str, path: str | None) -> None:
    result = normalise(raw)
    assert isinstance(result, Canonical)
    if path is not None:
        assert result.path == path
    # Re-encoding gives a spelling that decodes back to the same path.
    again = normalise(encode_path(result.path))
    assert again == result


@pytest.mark.parametrize(
    "raw",
    ["/a%2Fb", "/a%2fb", "/a%00", "/a%0d%0aX-Injected:%201", "/a%", "/a%G1", "*", "api/v1"],
)
def test_refused_paths(raw: str) -> None:
    with pytest.raises(PathRefused):
        normalise(raw)


def test_encode_path_escapes_what_must_be_escaped() -> None:
    assert encode_path("/a b/c?d#e/%/ü") == "/a%20b/c%3Fd%23e/%25/%C3%BC"
    assert encode_path("/api/v1/services/https:web:443/proxy/x@y;z=1,2") == (
        "/api/v1/services/https:web:443/proxy/x@y;z=1,2"
    )


# --- routing: kubectl's TestPathHandling, through the pure router -----------------------


@pytest.mark.parametrize(
    ("prefix", "path", "forwarded"),
    [
        ("/api/", "/metrics", None),
        ("/api/", "/api/metrics", "/api/metrics"),
        ("/api/", "/api/v1/pods/", "/api/v1/pods/"),
        ("/", "/metrics", "/metrics"),
        ("/", "/api/v1/pods/", "/api/v1/pods/"),
        ("/custom/", "/metrics", None),
        ("/custom/", "/api/metrics", None),
        ("/custom/", "/api/v1/pods/", None),
        ("/custom/", "/custom/api/metrics", "/api/metrics"),
        ("/custom/", "/custom/api/v1/pods/", "/api/v1/pods/"),
        ("/custom/", "/custom/api/v1/services/", "/api/v1/services/"),
        ("/", "/", ""),
        ("/custom/", "/custom/", ""),
        # A prefix starting with /api is not stripped (upstream's quirk, kept).
        ("/apis-proxy/", "/apis-proxy/api/v1/pods", "/apis-proxy/api/v1/pods"),
    ],
)
def test_upstream_path_handling(prefix: str, path: str, forwarded: str | None) -> None:
    route = Router(api_prefix=prefix).route(path)
    if forwarded is None:
        assert route.kind is RouteKind.NOT_FOUND
    else:
        assert route == Route(RouteKind.API, forwarded)


def test_prefix_without_its_slash_redirects() -> None:
    router = Router(api_prefix="/custom/", www_prefix="/static/")
    assert router.route("/custom", "a=1") == Route(RouteKind.REDIRECT, "/custom/?a=1")
    assert router.route("/static") == Route(RouteKind.REDIRECT, "/static/")


def test_static_prefix_wins_over_a_shorter_api_prefix() -> None:
    router = Router(api_prefix="/", www_prefix="/static/")
    assert router.route("/static/css/a.css") == Route(RouteKind.STATIC, "css/a.css")
    assert router.route("/staticx") == Route(RouteKind.API, "/staticx")
    assert Router(api_prefix="/").route("/static/a") == Route(RouteKind.API, "/static/a")


def test_cluster_routes() -> None:
    router = Router(api_prefix="/", clusters=("a", "b", "arn:aws:eks:eu:1:cluster/prod"))
    assert router.route("/clusters/a/api/v1/pods") == Route(RouteKind.API, "/api/v1/pods", "a")
    assert router.route("/clusters/b/") == Route(RouteKind.API, "/", "b")
    assert router.route("/clusters/b") == Route(RouteKind.API, "", "b")
    assert router.route("/clusters/arn:aws:eks:eu:1:cluster/prod/api") == Route(
        RouteKind.API, "/api", "arn:aws:eks:eu:1:cluster/prod"
    )
    for missing in ("/clusters/c/api", "/clusters/ab/api", "/api/v1/pods", "/clusters/"):
        assert router.route(missing).kind is RouteKind.NOT_FOUND, missing
    prefixed = Router(api_prefix="/k8s/", clusters=("a",))
    assert prefixed.route("/k8s/clusters/a/api") == Route(RouteKind.API, "/api", "a")


@pytest.mark.parametrize(
    ("server_path", "path", "joined"),
    [("", "/api", "/api"), ("", "", "/"), ("/base/", "/api", "/base/api"), ("/base/", "", "/base/"),
     ("/base", "/api", "/base/api"), ("/base", "api", "/base/api")],
)  # fmt: skip
def test_join_server_path(server_path: str, path: str, joined: str) -> None:
    assert join_server_path(server_path, path) == joined


@pytest.mark.parametrize(
    ("path", "query", "watch"),
    [("/api/v1/pods", "watch=true", True), ("/api/v1/pods", "watch=1&x=y", True),
     ("/api/v1/pods", "watch=false", False), ("/api/v1/watch/pods", "", True),
     ("/api/v1/namespaces/a/pods/p/log", "follow=true", True), ("/api/v1/pods", "", False)],
)  # fmt: skip
def test_is_watch(path: str, query: str, watch: bool) -> None:
    assert is_watch(path, query) is watch
