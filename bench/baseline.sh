#!/bin/bash
# The same two-node pod network emu builds from topologies/cross_node.yaml, written by hand with `ip`: the
# baseline bench/dataplane.py measures emu against (see bench/README.md).
#
#   sudo bench/baseline.sh up BACKEND [kube|twin]   # BACKEND: vxlan | host-gw | udp
#   sudo bench/baseline.sh service on|off      # the Service: one DNAT rule in node 1 (10.96.0.10 -> server)
#   sudo bench/baseline.sh down                # remove everything (also after a half-done up)
#
#   emubench-n1 (192.168.56.11, 10.244.1.0/24)                    emubench-n2 (192.168.56.12, 10.244.2.0/24)
#     emubench-p-client 10.244.1.2   emubench-p-peer 10.244.1.3      emubench-p-server 10.244.2.2
#        eth0 ---- cni0 ---- eth0                                       eth0 ---- cni0
#     flannel.1 (vxlan) | routes (host-gw) | flannel0 + emu's daemon (udp)
#     eth0 ------------------ emubench-s1 [emubench-br] emubench-s2 ------------------ eth0
#                              (a Linux bridge in the root namespace, as Mininet's switch)
#
# Only what a minimal flannel-like setup needs: no iptables rules (until `service on`), no br_netfilter
# setting, no hairpin mode, default offloads and qdiscs.
#
# `up BACKEND kube` builds a second copy beside it, named emubenchk-*, with what every real Kubernetes node
# also has: kube-proxy's and flanneld's iptables rules (the very documents emu loads, taken from `emu plan`;
# they include the Service's DNAT) and net.bridge.bridge-nf-call-iptables=1 / route_localnet=1.
#
# `up BACKEND twin` builds a third copy, emubencht-*, identical to the kube one: bench/dataplane.py measures it
# against its twin (an A/A comparison) to show how far two identical setups differ on this machine.
#
# Every name starts with emubench; `down` removes every copy and stops only the processes that run inside
# these namespaces (iperf3, ping, the udp daemon).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN=/run/emubench
NODE_IP=(192.168.56.11 192.168.56.12)
VXLAN_MAC=(0a:58:ee:00:00:01 0a:58:ee:00:00:02)
CLUSTER_IP=10.96.0.10
SERVER_IP=10.244.2.2

# names PREFIX: the device and namespace names of one copy (emubench or emubenchk)
names() {
    P=$1
    BRIDGE=$P-br
    PORTS=("$P-s1" "$P-s2")
    NODES=("$P-n1" "$P-n2")
    PODS=("$P-p-client" "$P-p-peer" "$P-p-server")
}
names emubench

nsx() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

# down_copy PREFIX: remove one copy (its processes, namespaces and root-namespace links)
down_copy() {
    local ns pid dev
    names "$1"
    for ns in "${PODS[@]}" "${NODES[@]}"; do
        if [ -e "/run/netns/$ns" ]; then
            for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
    for dev in "$BRIDGE" "${PORTS[@]}"; do
        if [ -e "/sys/class/net/$dev" ]; then ip link del "$dev" 2>/dev/null || true; fi
    done
    rm -f "$RUN/udp-$1"-*
}

down() {
    down_copy emubencht
    down_copy emubenchk
    down_copy emubench
    rm -rf "$RUN"
}

# pod NAME NODE-INDEX ADDRESS MTU: a pod namespace wired to its node's cni0 (the CNI bridge plugin's work).
pod() {
    local name=$1 n=$2 addr=$3 mtu=$4 node=${NODES[$2]} host="ebv${1#"$P"-p-}"
    ip netns add "$name"
    nsx "$node" ip link add "$host" mtu "$mtu" type veth peer name eth0 mtu "$mtu" netns "$name"
    nsx "$node" ip link set "$host" master cni0 up
    nsx "$name" ip link set lo up
    nsx "$name" ip addr add "$addr/24" dev eth0
    nsx "$name" ip link set eth0 up
    nsx "$name" ip route add default via "10.244.$((n + 1)).1"
}

up() {
    local backend=$1 variant=${2:-} mtu i j n
    case "$backend" in
        vxlan) mtu=1450 ;; host-gw) mtu=1500 ;; udp) mtu=1472 ;;
        *) echo "unknown backend $backend (vxlan, host-gw, udp)" >&2; exit 2 ;;
    esac
    case "$variant" in
        "") names emubench ;; kube) names emubenchk ;; twin) names emubencht ;;
        *) echo "unknown variant $variant (kube, twin)" >&2; exit 2 ;;
    esac
    down_copy "$P"
    names "$P"
    mkdir -p "$RUN"
    trap 'down_copy "$P"; exit 130' INT TERM
    trap 'down_copy "$P"' ERR
    ip link add "$BRIDGE" type bridge
    ip link set "$BRIDGE" up
    for i in 0 1; do
        n=${NODES[$i]}
        ip netns add "$n"
        ip link add "${PORTS[$i]}" type veth peer name eth0 netns "$n"
        ip link set "${PORTS[$i]}" master "$BRIDGE" up
        nsx "$n" ip link set lo up
        nsx "$n" ip addr add "${NODE_IP[$i]}/24" dev eth0
        nsx "$n" ip link set eth0 up
        nsx "$n" sysctl -qw net.ipv4.ip_forward=1
        nsx "$n" ip link add cni0 mtu "$mtu" type bridge
        nsx "$n" ip addr add "10.244.$((i + 1)).1/24" dev cni0
        nsx "$n" ip link set cni0 up
    done
    pod "${PODS[0]}" 0 10.244.1.2 "$mtu"
    pod "${PODS[1]}" 0 10.244.1.3 "$mtu"
    pod "${PODS[2]}" 1 10.244.2.2 "$mtu"
    for i in 0 1; do
        n=${NODES[$i]}; j=$((1 - i))
        case "$backend" in
        vxlan)  # flannel.1 as flanneld programs it: 1 route, 1 neighbour and 1 FDB entry per other node
            nsx "$n" ip link add flannel.1 address "${VXLAN_MAC[$i]}" mtu 1450 type vxlan id 1 \
                local "${NODE_IP[$i]}" dev eth0 dstport 8472 nolearning
            nsx "$n" ip addr add "10.244.$((i + 1)).0/32" dev flannel.1
            nsx "$n" ip link set flannel.1 up
            nsx "$n" ip route add "10.244.$((j + 1)).0/24" via "10.244.$((j + 1)).0" dev flannel.1 onlink
            nsx "$n" ip neigh add "10.244.$((j + 1)).0" lladdr "${VXLAN_MAC[$j]}" dev flannel.1 nud permanent
            nsx "$n" bridge fdb add "${VXLAN_MAC[$j]}" dev flannel.1 dst "${NODE_IP[$j]}" self permanent
            ;;
        host-gw)
            nsx "$n" ip route add "10.244.$((j + 1)).0/24" via "${NODE_IP[$j]}" dev eth0
            ;;
        udp)  # emu's own flannel udp daemon (emu.backends.udp.daemon), started by hand in the node
            setsid ip netns exec "$n" env PYTHONPATH="$REPO" python3 -m emu.backends.udp.daemon --tun flannel0 \
                --listen "${NODE_IP[$i]}:8285" --route "10.244.$((j + 1)).0/24=${NODE_IP[$j]}" \
                --ready-file "$RUN/udp-$n.ready" --ping-unreachable </dev/null >"$RUN/udp-$n.log" 2>&1 &
            disown
            for _ in $(seq 500); do [ -e "$RUN/udp-$n.ready" ] && break; sleep 0.01; done
            [ -e "$RUN/udp-$n.ready" ] || { echo "udp daemon in $n did not start:" >&2; cat "$RUN/udp-$n.log" >&2; false; }
            nsx "$n" ip addr add "10.244.$((i + 1)).0/32" dev flannel0
            nsx "$n" ip link set flannel0 mtu 1472 up
            nsx "$n" ip route add 10.244.0.0/16 dev flannel0
            ;;
        esac
    done
    if [ "$variant" = kube ] || [ "$variant" = twin ]; then kube "$backend"; fi
    trap - INT TERM ERR
}

# kube BACKEND: what kube-proxy and flanneld add to a real node, as emu plans it for cross_node.yaml
kube() {
    local i
    for i in 1 2; do
        nsx "${NODES[$((i - 1))]}" sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.ipv4.conf.all.route_localnet=1
        (cd "$REPO" && python3 -m emu plan topologies/cross_node.yaml --backend "$1" --format json) |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["nodes"][int(sys.argv[1]) - 1]["iptables"], end="")' "$i" |
            nsx "${NODES[$((i - 1))]}" iptables-restore
    done
}

service() {
    local op
    case "$1" in on) op=-A ;; off) op=-D ;; *) echo "service on|off" >&2; exit 2 ;; esac
    for port in 5201 5202; do
        nsx "${NODES[0]}" iptables -t nat "$op" PREROUTING -d "$CLUSTER_IP/32" -p tcp --dport "$port" \
            -j DNAT --to-destination "$SERVER_IP:$port"
    done
}

case "${1:-}" in
    up) up "${2:-vxlan}" "${3:-}" ;;
    down) down ;;
    service) service "${2:-}" ;;
    *) echo "usage: $0 up vxlan|host-gw|udp [kube|twin] | service on|off | down" >&2; exit 2 ;;
esac
