"""kubenet.lab.state: the lab's record survives the process that wrote it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubenet.lab.state import LabState, lab_dir, load, remove, save


def test_state_round_trips_through_the_file(tmp_path: Path) -> None:
    state = (
        LabState(mode="nftables", supervisor_pid=42)
        .with_namespaces({"node": "kn-node-1", "client": "kn-client-2"})
        .with_pid("node-proxy", 43)
    )
    save(state, tmp_path)
    assert load(tmp_path) == state


def test_the_file_is_private_because_it_holds_a_token(tmp_path: Path) -> None:
    path = save(LabState(mode="iptables", supervisor_pid=1, token="secret"), tmp_path / "lab")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_no_file_or_a_broken_file_is_no_lab(tmp_path: Path) -> None:
    assert load(tmp_path) is None
    (tmp_path / "state.json").write_text("{not json")
    assert load(tmp_path) is None
    remove(tmp_path)
    assert not (tmp_path / "state.json").exists()


def test_netns_names_the_known_roles_when_asked_for_another() -> None:
    state = LabState(mode="iptables", supervisor_pid=1, namespaces={"node": "kn-node-1"})
    assert state.netns("node") == "kn-node-1"
    with pytest.raises(KeyError, match="there are: node"):
        state.netns("pod-z")


def test_lab_dir_is_under_run_unless_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBENET_LAB_DIR", raising=False)
    assert lab_dir() == Path("/run/kubenet-lab")
    monkeypatch.setenv("KUBENET_LAB_DIR", "/tmp/elsewhere")
    assert lab_dir() == Path("/tmp/elsewhere")
    assert os.environ["KUBENET_LAB_DIR"] == "/tmp/elsewhere"
