"""``api-proxy serve``: kubectl proxy's flags and defaults, its output, its exit codes."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import urllib3

from kubenet.testing.apiserver.server import ServerConfig, ThreadedApiServer, running_apiserver

# kubenet.cli is the repository's cli/ folder installed under the package (see
# pyproject.toml); type checkers do not follow that mapping, so import it by name.
_errors: Any = importlib.import_module("kubenet.cli._errors")
cli: Any = importlib.import_module("kubenet.cli.api_proxy")
run = _errors.run
app = cli.app
FILTER_WARNING: str = cli.FILTER_WARNING
parse_duration = cli.parse_duration
_go_bools = cli._go_bools

ROOT = Path(__file__).resolve().parents[2]


def api_proxy(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(app, "api-proxy", list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--no-such-flag"], "No such option"),
        (["serve", "--reject-paths", "ok,("], "--reject-paths: invalid regular expression"),
        (["serve", "-u", "/tmp/x.sock", "-p", "9000"],
         "cannot set --unix-socket and --port at the same time"),
        (["serve", "--kubeconfig", "/nonexistent/kubeconfig"],
         "stat /nonexistent/kubeconfig: no such file or directory"),
        (["serve", "--keepalive", "ten"], "--keepalive: invalid duration 'ten'"),
        (["serve", "--tls-cert-file", "/x.crt"], "--tls-cert-file and --tls-private-key-file"),
        (["serve", "--contexts", "a,b", "--context", "a"], "--contexts cannot be combined"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, out, err = api_proxy(capsys, *args)
    assert out == ""
    assert code == 2
    assert err.startswith("api-proxy: error: ") and message in err, err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_durations_as_go_parses_them() -> None:
    assert parse_duration("0", "--x") == 0
    assert parse_duration("0s", "--x") == 0
    assert parse_duration("1m30s", "--x") == 90
    assert parse_duration("250ms", "--x") == 0.25
    assert parse_duration("1.5h", "--x") == 5400
    assert parse_duration("5", "--request-timeout", bare_seconds=True) == 5


def test_go_style_booleans() -> None:
    argv = ["serve", "--disable-filter=true", "--read-only=false", "--append-server-path=1"]
    assert _go_bools(argv) == ["serve", "--disable-filter", "--append-server-path"]
    assert _go_bools(["--www=/x"]) == ["--www=/x"]


KUBECTL = shutil.which("kubectl")


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not on PATH")
def test_flag_names_and_defaults_match_kubectl_proxy() -> None:
    help_text = subprocess.run(
        [str(KUBECTL), "proxy", "--help"], capture_output=True, text=True, check=True
    ).stdout
    theirs = dict(re.findall(r"^\s+(?:-\w, )?--([\w-]+)=(.*):$", help_text, re.M))
    import typer.main

    group: Any = typer.main.get_command(app)
    command = group.commands["serve"]
    ours = {
        opt.lstrip("-"): param
        for param in command.params
        for opt in param.opts
        if opt.startswith("--")
    }
    short = {opt: param.name for param in command.params for opt in param.opts if len(opt) == 2}
    for flag, default in theirs.items():
        assert flag in ours, f"--{flag} is missing"
        value = ours[flag].default
        go = default.strip("'")
        if isinstance(value, bool):
            assert str(value).lower() == go, flag
        elif flag == "keepalive":
            assert parse_duration(str(value), flag) == parse_duration(go, flag)
        else:
            assert str(value) == go, flag
    for letter, name in (
        ("-p", "port"),
        ("-w", "www"),
        ("-P", "www_prefix"),
        ("-u", "unix_socket"),
        ("-s", "server"),
    ):
        assert short[letter] == name
    # kubectl's global connection flags, with their defaults ('' is "not set").
    global_help = subprocess.run(
        [str(KUBECTL), "options"], capture_output=True, text=True, check=True
    ).stdout
    globals_ = dict(re.findall(r"^\s+(?:-\w, )?--([\w-]+)=(.*):$", global_help, re.M))
    for flag in ("kubeconfig", "context", "cluster", "user", "server", "token",
                 "certificate-authority", "client-certificate", "client-key",
                 "insecure-skip-tls-verify", "tls-server-name", "as", "as-group", "as-uid",
                 "request-timeout"):  # fmt: skip
        assert flag in ours, f"--{flag} is missing"
        go = globals_[flag].strip("'")
        value = ours[flag].default
        if go in ("", "[]"):
            assert value in (None, ""), flag
        elif go in ("true", "false"):
            assert str(value).lower() == go, flag
        else:
            assert str(value) == go, flag


@pytest.fixture
def apiserver() -> Iterator[ThreadedApiServer]:
    with running_apiserver(ServerConfig()) as server:
        yield server


_STARTED: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Iterator[None]:
    """A failing assertion must not leave a proxy running."""
    yield
    while _STARTED:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.wait(5)


def start(*args: str) -> tuple[subprocess.Popen[str], str]:
    """``python -m kubenet.cli.api_proxy serve ARGS``; returns the process and address."""
    process = subprocess.Popen(
        [sys.executable, "-m", "kubenet.cli.api_proxy", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    _STARTED.append(process)
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.startswith("Starting to serve on "):
        process.kill()
        raise AssertionError(
            f"unexpected start: {line!r} {process.stderr.read() if process.stderr else ''}"
        )
    return process, line.removeprefix("Starting to serve on ").strip()


def stop(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        code = process.wait(10)
    finally:
        process.kill()
    assert process.stderr is not None
    return code, process.stderr.read()


def test_serve_prints_its_address_and_exits_0_on_sigterm(apiserver: ThreadedApiServer) -> None:
    process, address = start("--kubeconfig", str(apiserver.kubeconfig), "-p", "0")
    assert re.fullmatch(r"127\.0\.0\.1:\d+", address)
    resp = urllib3.request("GET", f"http://{address}/api/v1/namespaces/default", timeout=5)
    assert resp.status == 200
    resp = urllib3.request("GET", f"http://{address}/api", headers={"Host": "evil.com"}, timeout=5)
    assert (resp.status, resp.data) == (403, b"Forbidden\n")
    code, err = stop(process)
    assert code == 0, err
    assert err == ""


def test_disabled_filter_warns_like_kubectl_and_sigint_exits_0(
    apiserver: ThreadedApiServer, tmp_path: Path
) -> None:
    process, address = start(
        "--kubeconfig", str(apiserver.kubeconfig), "-p", "0", "--disable-filter=true"
    )
    resp = urllib3.request("GET", f"http://{address}/api", headers={"Host": "evil.com"}, timeout=5)
    assert resp.status == 200
    code, err = stop(process, signal.SIGINT)
    assert code == 0
    assert FILTER_WARNING in err and err.startswith("W")
    # Over a unix socket kubectl does not warn.
    socket_path = tmp_path / "p.sock"
    process, address = start(
        "--kubeconfig", str(apiserver.kubeconfig), "-u", str(socket_path), "--disable-filter"
    )
    assert address == str(socket_path)
    assert os.stat(socket_path).st_mode & 0o077 == 0  # private, as kubectl makes it
    code, err = stop(process)
    assert (code, err) == (0, "")


def test_read_only_access_log_and_metrics(apiserver: ThreadedApiServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        metrics_port = s.getsockname()[1]
    process, address = start(
        "--kubeconfig", str(apiserver.kubeconfig), "-p", "0", "--read-only",
        "--access-log", "-", "--metrics-address", f"127.0.0.1:{metrics_port}",
    )  # fmt: skip
    try:
        assert urllib3.request("GET", f"http://{address}/api/v1/pods", timeout=5).status == 200
        assert urllib3.request("DELETE", f"http://{address}/api/v1/pods", timeout=5).status == 403
        time.sleep(0.1)
        metrics = urllib3.request("GET", f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
        assert b'apiproxy_rejected_requests_total{reason="filter"} 1.0' in metrics.data
    finally:
        code, _ = stop(process)
    assert code == 0
    assert process.stdout is not None
    lines = process.stdout.read().splitlines()
    assert [line.split(" ")[1:4] for line in lines] == [
        ["GET", "/api/v1/pods", "200"],
        ["DELETE", "/api/v1/pods", "403"],
    ]
    assert all(line.endswith(" kubenet-token") for line in lines)
