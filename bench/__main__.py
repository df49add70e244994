"""``python -m bench [dataplane] [nodeproxy] [apiproxy] [--services N] [--endpoints M]``.

Runs the suites (all of them by default), prints their tables, writes their JSON
under bench/results/. The apiproxy suite needs nginx, wrk and curl (``./dev.sh bench``
installs them); without them it says so and the other suites still run.
"""

from __future__ import annotations

import argparse
import sys

from bench import apiproxy, dataplane, nodeproxy
from bench.report import print_table, write_json


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    suites = ["dataplane", "nodeproxy", "apiproxy"]
    parser.add_argument("suite", nargs="*", default=suites, choices=suites)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--modes", default="iptables,nftables")
    parser.add_argument(
        "--single-restore",
        action="store_true",
        help="nodeproxy: also time iptables-restore of the whole ruleset at once (slow)",
    )
    args = parser.parse_args(argv)
    if "dataplane" in args.suite:
        modes = [m for m in args.modes.split(",") if m]
        rows = dataplane.run(args.services, args.endpoints, modes)
        print_table(
            f"node-proxy pipeline: {args.services} Services x {args.endpoints} endpoints",
            rows,
            dataplane.COLUMNS,
        )
        path = write_json("dataplane", {"rows": rows})
        print(f"wrote {path}")
    if "nodeproxy" in args.suite:
        modes = [m for m in args.modes.split(",") if m]
        rows = nodeproxy.run(args.services, args.endpoints, modes, args.single_restore)
        print_table(
            f"node-proxy run: {args.services} Services x {args.endpoints} endpoints",
            rows,
            nodeproxy.COLUMNS,
        )
        path = write_json("nodeproxy", {"rows": rows})
        print(f"wrote {path}")
    if "apiproxy" in args.suite:
        try:
            apiproxy.main([])
        except SystemExit as missing:  # a tool it needs is not installed
            print(f"apiproxy suite skipped: {missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
