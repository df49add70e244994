"""What a running lab recorded about itself, in one JSON file.

The supervisor writes the file as it builds (namespaces first, as soon as they
exist, so that even a build interrupted half-way can be undone) and marks it ready
at the end. Every other command reads it: ``lab curl`` to find the namespaces and
the API server, ``lab down`` to know which processes to stop and which namespaces
to delete, also when the supervisor itself is gone.

The folder is ``/run/kubenet-lab`` (``KUBENET_LAB_DIR`` overrides it, as the tests
do): under ``/run`` it is gone after a reboot, exactly like the namespaces it names.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

DEFAULT_DIR = Path("/run/kubenet-lab")
STATE_FILE = "state.json"


def lab_dir() -> Path:
    """Where the lab keeps its state, logs, kubeconfig and certificates."""
    return Path(os.environ.get("KUBENET_LAB_DIR") or DEFAULT_DIR)


@dataclass(frozen=True)
class LabState:
    """One lab, as recorded."""

    mode: str
    supervisor_pid: int
    #: Role (``node``, ``client``, ``pod-a``, ...) to network namespace name.
    namespaces: Mapping[str, str] = field(default_factory=dict)
    #: Process name (``node-proxy``, ``pod-a``, ...) to pid, for processes outside
    #: the supervisor; each runs in one of the namespaces above.
    pids: Mapping[str, int] = field(default_factory=dict)
    api_url: str = ""
    ca_path: str = ""
    token: str = ""
    kubeconfig: str = ""
    ready: bool = False

    def with_namespaces(self, namespaces: Mapping[str, str]) -> LabState:
        return replace(self, namespaces=dict(namespaces))

    def with_pid(self, name: str, pid: int) -> LabState:
        return replace(self, pids={**self.pids, name: pid})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LabState:
        return cls(
            mode=str(data["mode"]),
            supervisor_pid=int(data["supervisor_pid"]),
            namespaces={str(k): str(v) for k, v in data.get("namespaces", {}).items()},
            pids={str(k): int(v) for k, v in data.get("pids", {}).items()},
            api_url=str(data.get("api_url", "")),
            ca_path=str(data.get("ca_path", "")),
            token=str(data.get("token", "")),
            kubeconfig=str(data.get("kubeconfig", "")),
            ready=bool(data.get("ready", False)),
        )

    def netns(self, role: str) -> str:
        """The namespace of a role; KeyError names the roles there are."""
        try:
            return self.namespaces[role]
        except KeyError:
            known = ", ".join(sorted(self.namespaces))
            raise KeyError(f"no {role!r} in the lab (there are: {known})") from None


def save(state: LabState, directory: Path | None = None) -> Path:
    """Write the state atomically (a reader never sees half a file); the file is root's."""
    folder = directory or lab_dir()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / STATE_FILE
    tmp = folder / f".{STATE_FILE}.{os.getpid()}"
    # The file carries the API server's admin token: readable by its owner only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(state.to_json(), out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(tmp, path)
    return path


def load(directory: Path | None = None) -> LabState | None:
    """The recorded lab, or None when there is none (or the file is unreadable)."""
    path = (directory or lab_dir()) / STATE_FILE
    try:
        return LabState.from_json(json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove(directory: Path | None = None) -> None:
    """Delete the state file (the folder's other files are the lab's logs and keys)."""
    (directory or lab_dir()).joinpath(STATE_FILE).unlink(missing_ok=True)
