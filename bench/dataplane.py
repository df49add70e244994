"""node-proxy's pure pipeline and the kernel's load time, per backend.

For each backend, a fresh child process builds the synthetic cluster, translates it
and renders it (timed separately), and reports its own peak RSS; the parent then
loads the plan into a fresh network namespace with the kernel tool and times that.
Target: translate + render <= 25% of the kernel's load time; peak RSS <= 300 MiB.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.cluster import NODE, NODE_IP, make_cluster
from kubenet.model import IPFamily
from kubenet.options import DetectLocalMode, LocalDetector, RenderOptions
from kubenet.render import ProxyMode, render
from kubenet.translate import node_info, translate

OPTIONS = RenderOptions(
    node_name=NODE,
    ip_family=IPFamily.IPV4,
    node_ips=(NODE_IP,),
    local_detector=LocalDetector(DetectLocalMode.CLUSTER_CIDR, ("10.128.0.0/10",)),
)


def _pipeline(mode: str, services: int, endpoints: int, out: str) -> dict[str, Any]:
    """Runs in a child process: generate, translate, render, write the plan."""
    cluster = make_cluster(services, endpoints)
    start = time.perf_counter()
    translation = translate(cluster.services, cluster.slices, node_info(cluster.node, NODE))
    translated = time.perf_counter()
    plan = render(translation.service_map, OPTIONS, ProxyMode(mode))
    text = plan.restore if mode == "iptables" else plan.text  # type: ignore[union-attr]
    rendered = time.perf_counter()
    Path(out).write_text(text)
    return {
        "services": services,
        "endpoints": cluster.endpoint_count,
        "skipped": len(translation.skipped),
        "translate_s": translated - start,
        "render_s": rendered - translated,
        "plan_lines": text.count("\n"),
        "plan_bytes": len(text.encode()),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "jumps": len(getattr(plan, "jumps", ())),
    }


def _kernel_load_s(cmd: list[str], plan_file: str) -> float | None:
    """Seconds ``cmd`` takes to load the plan into a fresh namespace."""
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which(cmd[0]) is None:
        return None
    ns = f"kn-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        with open(plan_file, "rb") as stdin:
            start = time.perf_counter()
            subprocess.run(["ip", "netns", "exec", ns, *cmd], stdin=stdin, check=True)
            return time.perf_counter() - start
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run(services: int, endpoints: int, modes: list[str]) -> list[dict[str, Any]]:
    rows = []
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="kubenet-bench-") as tmp:
        for mode in modes:
            plan_file = os.path.join(tmp, f"{mode}.txt")
            with ctx.Pool(1) as pool:
                row = pool.apply(_pipeline, (mode, services, endpoints, plan_file))
            row["backend"] = mode
            if mode == "iptables":
                # The same text through both iptables backends: iptables-nft 1.8.9 is
                # much slower than legacy at this size with --noflush.
                load = _kernel_load_s(["iptables-nft-restore", "-w", "--noflush"], plan_file)
                row["kernel_load_legacy_s"] = _kernel_load_s(
                    ["iptables-legacy-restore", "-w", "--noflush"], plan_file
                )
            else:
                load = _kernel_load_s(["nft", "-f", "-"], plan_file)
            row["kernel_load_s"] = load
            pure = row["translate_s"] + row["render_s"]
            row["pure_share"] = pure / load if load else None
            row["meets_target"] = (
                load is not None and pure <= 0.25 * load and row["peak_rss_mib"] <= 300
            )
            rows.append(row)
    return rows


COLUMNS = [
    ("backend", "backend"),
    ("services", "services"),
    ("endpoints", "endpoints"),
    ("translate_s", "translate s"),
    ("render_s", "render s"),
    ("plan_lines", "plan lines"),
    ("plan_bytes", "plan bytes"),
    ("peak_rss_mib", "peak RSS MiB"),
    ("kernel_load_s", "kernel load s"),
    ("kernel_load_legacy_s", "iptables-legacy load s"),
    ("pure_share", "(translate+render)/load"),
    ("meets_target", "target met"),
]
