"""A fresh environment for one page of the docs: a network namespace, a shell, a folder.

Every page runs in a bash of its own, entered into a new network namespace
(``nsenter --net``, so only the network is private: ``ip netns`` and the lab work
as on the host). Fixed ports in the docs (6443, 8001) never collide with anything
else on the machine, and a service-proxy request to a pod address that exists
nowhere fails at once instead of leaving the host. The shell keeps its working
directory and variables from one command to the next, as a person's terminal does;
``sudo`` is a pass-through (the test already runs as root), and ``node-proxy``,
``api-proxy`` and ``python`` are the ones of the environment under test.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kubenet.testing.netns import Netns

REPO = Path(__file__).resolve().parents[2]
DONE = "__KUBENET_DOCS_DONE__"


@dataclass(frozen=True)
class Result:
    status: int
    lines: list[str]


def _shims(folder: Path) -> Path:
    """node-proxy, api-proxy and python of the environment under test, first on PATH."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    python = sys.executable
    scripts = {
        "python": f'exec {python} "$@"\n',
        "python3": f'exec {python} "$@"\n',
        # The lab is its own app until node-proxy mounts it as `node-proxy lab`.
        "node-proxy": (
            'if [ "$1" = lab ] && ! '
            f"{python} -c 'import sys, typer.main; from kubenet.cli.node_proxy import app; "
            'sys.exit(0 if "lab" in typer.main.get_command(app).commands else 1)\'; then\n'
            f'  shift; exec {python} -m kubenet.lab "$@"\n'
            "fi\n"
            f'exec {python} -m kubenet.cli.node_proxy "$@"\n'
        ),
        "api-proxy": f'exec {python} -m kubenet.cli.api_proxy "$@"\n',
    }
    for name, body in scripts.items():
        path = bin_dir / name
        path.write_text("#!/bin/sh\n" + body)
        path.chmod(0o755)
    return bin_dir


class DocShell:
    """One page's shell; :meth:`close` stops everything it started."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.work = root / "work"
        self.work.mkdir()
        shutil.copytree(REPO / "examples", self.work / "examples")
        (root / "home").mkdir()
        self.lab_dir = root / "lab"
        self.env = {
            "PATH": f"{_shims(root)}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME": str(root / "home"),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
            "COLUMNS": "100",
            "KUBENET_LAB_DIR": str(self.lab_dir),
        }
        self.netns = Netns("docs")
        self.netns.ip(["link set lo up"])
        self._background = 0
        self._pending = b""
        self._proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.netns.name}", "--",
             "bash", "--noprofile", "--norc"],
            cwd=self.work,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self._send('exec 2>&1\nsudo() { "$@"; }\n')

    def _send(self, text: str) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(text.encode())
        self._proc.stdin.flush()

    def _line(self, deadline: float) -> str | None:
        """The next output line, or None at the deadline. Reads the pipe unbuffered:
        a buffered reader could hold the last line while select() waits for more."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(left, 0))
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("the shell ended")
            self._pending += chunk
        line, _, self._pending = self._pending.partition(b"\n")
        return line.decode("utf-8", "replace")

    def run(self, command: str, timeout: float = 120.0) -> Result:
        """Run one command in the shell; its exit status and output lines."""
        self._send(f'{{ {command}\n}} < /dev/null\necho "{DONE} $?"\n')
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            line = self._line(deadline)
            if line is None:
                raise TimeoutError(f"{command!r} still runs after {timeout:.0f}s: {lines}")
            before, done, status = line.partition(DONE)
            if done:
                # Output without a final newline ends on the marker's line.
                if before:
                    lines.append(before)
                return Result(int(status), lines)
            lines.append(line)

    def background(self, command: str, wait: str, timeout: float = 60.0) -> Result:
        """Start a long-running command; return once its output contains ``wait``."""
        self._background += 1
        log = self.root / f"background-{self._background}.log"
        started = self.run(f"{{ {command}\n}} > {log} 2>&1 < /dev/null &")
        assert started.status == 0, started
        deadline = time.monotonic() + timeout
        while True:
            text = log.read_text(errors="replace") if log.exists() else ""
            if wait in text:
                return Result(0, text.splitlines())
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command!r} did not print {wait!r}: {text!r}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the shell and its jobs, take any lab down, delete the namespace."""
        if self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        for pid in subprocess.run(
            ["ip", "netns", "pids", self.netns.name], capture_output=True, text=True, check=False
        ).stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        if (self.lab_dir / "state.json").exists():
            subprocess.run(
                [sys.executable, "-m", "kubenet.lab", "down"],
                env={**os.environ, "KUBENET_LAB_DIR": str(self.lab_dir)},
                capture_output=True,
                check=False,
                timeout=60,
            )
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()
        self.netns.close()
