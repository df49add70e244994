#!/bin/sh
# Start node-proxy with the iptables backend the node itself uses.
#
# iptables has two kernel backends (legacy x_tables and nf_tables) and rules written
# through one are invisible to the other, so the image must use whichever the
# kubelet and the rest of the node use. The kubelet marks its choice with the
# KUBE-IPTABLES-HINT chain in the mangle table; without it, the backend holding
# more rules wins. NODE_PROXY_IPTABLES=legacy|nft skips the guess.
set -eu

rules() {
    # Number of rules (lines starting with "-") the given save tools print.
    for tool in "$@"; do
        "$tool" 2>/dev/null || true
    done | grep -c '^-' || true
}

has_hint() {
    "$1" -t mangle 2>/dev/null | grep -q '^:KUBE-IPTABLES-HINT'
}

backend="${NODE_PROXY_IPTABLES:-}"
if [ -z "$backend" ]; then
    if has_hint iptables-nft-save || has_hint ip6tables-nft-save; then
        backend=nft
    elif has_hint iptables-legacy-save || has_hint ip6tables-legacy-save; then
        backend=legacy
    elif [ "$(rules iptables-legacy-save ip6tables-legacy-save)" -gt \
           "$(rules iptables-nft-save ip6tables-nft-save)" ]; then
        backend=legacy
    else
        backend=nft
    fi
fi
case "$backend" in
    nft|legacy) ;;
    *) echo "node-proxy-entrypoint: NODE_PROXY_IPTABLES must be nft or legacy" >&2; exit 2 ;;
esac

# Debian's alternatives switch iptables, iptables-save and iptables-restore together.
update-alternatives --quiet --set iptables "/usr/sbin/iptables-$backend"
update-alternatives --quiet --set ip6tables "/usr/sbin/ip6tables-$backend"
echo "node-proxy-entrypoint: iptables backend: $backend" >&2

exec node-proxy "$@"
