#!/usr/bin/env bash
# One-command set-up and use on a fresh Debian/Ubuntu machine (run as root, or with sudo).
#
#   ./dev.sh demo    install everything, render and trace the Services in examples/, then run
#                    node-proxy for real in a lab of network namespaces (MODE=iptables|nftables)
#   ./dev.sh test    install everything, then run lint, type checks and the whole test suite
#   ./dev.sh bench   install everything (and nginx, wrk for api-proxy's), then run the benchmarks
#
# Installs the kernel tools with apt (iptables, nftables, conntrack, ipset, ipvsadm,
# iproute2, kubectl's Debian package when /usr/bin/kubectl is missing) and the
# project with its test and docs extras into ./.venv.
set -euo pipefail
cd "$(dirname "$0")"

need_root() {
  if [ "$(id -u)" != 0 ]; then
    echo "dev.sh: run as root (the kernel tests build network namespaces): sudo ./dev.sh $1" >&2
    exit 2
  fi
}

install_system() {
  local pkgs=(iptables nftables conntrack ipset ipvsadm iproute2 python3-venv)
  local missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ! command -v kubectl >/dev/null 2>&1; then missing+=(kubernetes-client); fi
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # kubectl is best effort: its tests skip with a reason when it is absent.
    apt-get install -y -qq "${missing[@]}" >/dev/null || apt-get install -y -qq "${missing[@]/kubernetes-client/}" >/dev/null
  fi
}

install_python() {
  local py=${PYTHON:-python3}
  if [ ! -x .venv/bin/python ]; then "$py" -m venv .venv; fi
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[test,docs]'
}

demo() {
  local np=.venv/bin/node-proxy
  echo "== node-proxy render --from examples/ --proxy-mode nftables --hostname-override node-a --cluster-cidr 10.244.0.0/16"
  "$np" render --from examples/ --proxy-mode nftables --hostname-override node-a --cluster-cidr 10.244.0.0/16 --ip-family ipv4
  echo
  echo "== node-proxy trace: a client outside the cluster to the web Service's ClusterIP (iptables)"
  "$np" trace --from examples/ --hostname-override node-a --cluster-cidr 10.244.0.0/16 \
    --src 10.180.0.2 --dst 10.96.0.10 --dport 80 --protocol tcp
  echo
  echo "== node-proxy trace: the same packet through the nftables rules, as JSON"
  "$np" trace --from examples/ --hostname-override node-a --cluster-cidr 10.244.0.0/16 \
    --proxy-mode nftables --src 10.180.0.2 --dst 10.96.0.10 --dport 80 -o json
  echo
  echo "== node-proxy trace: a Service without endpoints is refused"
  "$np" trace --from examples/ --hostname-override node-a --cluster-cidr 10.244.0.0/16 \
    --src 10.244.1.4 --dst 10.96.0.20 --dport 80
  echo
  echo "== the live job: node-proxy run in a lab of network namespaces, fed by the embedded API server"
  trap '"$np" lab down >/dev/null 2>&1 || true' EXIT
  "$np" lab up --proxy-mode "${MODE:-nftables}"
  echo "== node-proxy lab curl web --count 12: real HTTP from the client namespace to web's ClusterIP"
  "$np" lab curl web --count 12
  echo "== node-proxy lab scale web 1: the EndpointSlice changes through the API, node-proxy follows"
  "$np" lab scale web 1
  sleep 2
  "$np" lab curl web --count 6
  echo "== node-proxy lab down"
  "$np" lab down
  trap - EXIT
}

case "${1:-}" in
  demo)
    need_root demo
    install_system
    install_python
    demo
    ;;
  test)
    need_root test
    install_system
    install_python
    .venv/bin/ruff check kubenet cli tests bench noxfile.py
    .venv/bin/mypy
    shift
    exec .venv/bin/python -m pytest "$@"
    ;;
  bench)
    need_root bench
    install_system
    for p in nginx-light wrk curl; do
      dpkg -s "$p" >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$p" >/dev/null
    done
    install_python
    shift
    exec .venv/bin/python -m bench "$@"
    ;;
  *)
    echo "usage: ./dev.sh demo | ./dev.sh test [pytest args] | ./dev.sh bench [suites]" >&2
    exit 2
    ;;
esac
