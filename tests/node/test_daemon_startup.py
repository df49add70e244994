"""node-proxy run refuses a proxy mode the kernel cannot do, cleanly, before anything else."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kubenet.dataplane.ipvs import missing_ipvs
from kubenet.testing.netns import Netns, missing_kernel_support


@pytest.mark.kernel
def test_ipvs_mode_without_ipvs_exits_2_with_one_line() -> None:
    missing = missing_kernel_support()
    if missing:
        pytest.skip(missing)
    with Netns("ipvsrun") as ns:
        if missing_ipvs(ns.name) is None:
            pytest.skip("this kernel has IPVS: the refusal cannot be shown here")
        done = subprocess.run(
            [
                "ip", "netns", "exec", ns.name, sys.executable, "-m", "kubenet.cli.node_proxy",
                "run", "--proxy-mode", "ipvs", "--master", "http://127.0.0.1:1",
                "--hostname-override", "n1",
                "--healthz-bind-address", "", "--metrics-bind-address", "",
            ],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[-1]] and "Traceback" not in done.stderr
    assert lines[0].startswith("node-proxy: error: --proxy-mode ipvs: ")
    assert "IPVS" in lines[0]
