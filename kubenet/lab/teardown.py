"""``lab down``: stop everything a lab started and delete everything it made.

It works from the state file alone, so it takes down a healthy lab (asking the
supervisor to unwind in order) as well as the remains of one whose supervisor was
killed: recorded processes still running are killed, recorded namespaces still
present are emptied of processes and deleted, and the lab's files are removed.
A recorded pid is only signalled while ``/proc/<pid>/cmdline`` still shows the lab
program it was, so a pid the kernel has since given to something else is left alone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kubenet.lab.state import STATE_FILE, LabState, lab_dir, load

#: What each recorded process runs, as its command line shows it.
SUPERVISOR = "kubenet.lab.supervisor"
_PROGRAMS = {"node-proxy": "kubenet.cli.node_proxy"}
_POD_PROGRAM = "kubenet.lab.podserver"
#: The files and folders a lab writes into its folder.
LAB_FILES = (STATE_FILE, "kubeconfig", "apiserver", "supervisor.log", "node-proxy.log")


@dataclass(frozen=True)
class Removed:
    """What ``down`` stopped and deleted."""

    processes: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    files: tuple[str, ...] = ()

    @property
    def anything(self) -> bool:
        return bool(self.processes or self.namespaces or self.files)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def is_running(pid: int, program: str) -> bool:
    """Whether ``pid`` is alive and still runs ``program`` (a module name)."""
    return pid > 0 and program in _cmdline(pid)


def _wait_gone(pids: Iterable[int], timeout: float) -> bool:
    pending = set(pids)
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        pending = {p for p in pending if os.path.exists(f"/proc/{p}") and _cmdline(p)}
        if pending:
            time.sleep(0.05)
    return not pending


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    return int(stat.rpartition(")")[2].split()[1])


def _signal(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def namespaces_present() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    return {line.split()[0] for line in listing.stdout.splitlines() if line.strip()}


def _pids_in(netns: str) -> list[int]:
    found = subprocess.run(
        ["ip", "netns", "pids", netns], capture_output=True, text=True, check=False
    )
    return [int(p) for p in found.stdout.split() if p.isdigit()]


def program_of(name: str) -> str:
    """The program a recorded process runs: node-proxy, or a pod's server."""
    return _PROGRAMS.get(name, _POD_PROGRAM)


def supervisor_running(state: LabState) -> bool:
    return is_running(state.supervisor_pid, SUPERVISOR)


def down(folder: Path | None = None, *, timeout: float = 20.0) -> Removed:
    """Take the recorded lab down; what was removed (nothing, when no lab was up)."""
    folder = folder or lab_dir()
    state = load(folder)
    processes: list[str] = []
    namespaces: list[str] = []
    if state is not None:
        processes, namespaces = _stop(state, timeout)
    files = _remove_files(folder)
    return Removed(tuple(processes), tuple(namespaces), tuple(files))


def _stop(state: LabState, timeout: float) -> tuple[list[str], list[str]]:
    stopped: list[str] = []
    present = namespaces_present()
    found = [netns for netns in state.namespaces.values() if netns in present]
    recorded = set(state.pids.values()) | {state.supervisor_pid}

    # Whatever a person started inside the lab (``lab exec``) would keep a namespace
    # alive after its name is gone: stop it first. The supervisor's own children are
    # left to it.
    for netns in found:
        for pid in _pids_in(netns):
            if pid in recorded or _parent(pid) == state.supervisor_pid:
                continue
            command = _cmdline(pid).strip()[:60] or "?"
            if _signal(pid, signal.SIGKILL):
                stopped.append(f"pid {pid} in {netns} ({command})")

    # A live supervisor unwinds in order: node-proxy, API server, pods, namespaces.
    supervisor = state.supervisor_pid
    if is_running(supervisor, SUPERVISOR):
        _signal(supervisor, signal.SIGTERM)
        if not _wait_gone([supervisor], timeout):
            _signal(supervisor, signal.SIGKILL)
            _wait_gone([supervisor], 5.0)
        stopped.append(f"supervisor (pid {supervisor})")

    # Whatever it could not stop, or what outlived a supervisor that was killed.
    leftovers = [
        (name, pid) for name, pid in state.pids.items() if is_running(pid, program_of(name))
    ]
    for name, pid in leftovers:
        _signal(pid, signal.SIGKILL)
        stopped.append(f"{name} (pid {pid})")
    _wait_gone([pid for _, pid in leftovers], 5.0)

    # Namespaces the supervisor did not get to delete.
    present = namespaces_present()
    for netns in found:
        if netns in present:
            for pid in _pids_in(netns):
                _signal(pid, signal.SIGKILL)
            subprocess.run(["ip", "netns", "delete", netns], capture_output=True, check=False)
    return stopped, found


def _remove_files(folder: Path) -> list[str]:
    removed = []
    for name in LAB_FILES:
        path = folder / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        elif path.exists():
            path.unlink(missing_ok=True)
            removed.append(str(path))
    for path in sorted(folder.glob("pod-*.log")):
        path.unlink(missing_ok=True)
        removed.append(str(path))
    for path in sorted(folder.glob(f".{STATE_FILE}.*")):
        path.unlink(missing_ok=True)
    # The folder itself, when the lab's files were all it held.
    with contextlib.suppress(OSError):
        folder.rmdir()
    return removed
