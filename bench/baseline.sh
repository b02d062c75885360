#!/bin/bash
# The same two-node pod network emu builds from topologies/cross_node.yaml, written by hand with `ip`: the
# baseline bench/dataplane.py measures emu against (see bench/README.md).
#
#   sudo bench/baseline.sh up BACKEND [kube|twin] [-- ARGS]  # BACKEND: vxlan | host-gw | udp | udp-ref
#   sudo bench/baseline.sh service on|off      # the Service: one DNAT rule in node 1 (10.96.0.10 -> server)
#   sudo bench/baseline.sh shape MBIT|off      # the underlay links shaped as emu's underlay.link.bw does
#   sudo bench/baseline.sh down                # remove everything (also after a half-done up)
#
# udp runs emu's own daemon (emu.backends.udp.daemon); udp-ref runs bench/udp_reference.c, the C forwarder
# with the structure of flannel's proxy.c that bench/udp_daemon.py measures emu against (compiled with cc on
# first use, into /run/emubench). ARGS after -- go to either daemon (e.g. -- --offload auto, -- --sock-buf N).
#
#   emubench-n1 (192.168.56.11, 10.244.1.0/24)                    emubench-n2 (192.168.56.12, 10.244.2.0/24)
#     emubench-p-client 10.244.1.2   emubench-p-peer 10.244.1.3      emubench-p-server 10.244.2.2
#        eth0 ---- cni0 ---- eth0                                       eth0 ---- cni0
#     flannel.1 (vxlan) | routes (host-gw) | flannel0 + emu's daemon (udp) or the C reference (udp-ref)
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
UDP_REF_SRC="$REPO/bench/udp_reference.c"
UDP_REF_BIN="$RUN/udp_reference"
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

# build_reference: compile the C reference forwarder (again when its source is newer than the binary)
build_reference() {
    if [ ! -x "$UDP_REF_BIN" ] || [ "$UDP_REF_SRC" -nt "$UDP_REF_BIN" ]; then
        command -v cc >/dev/null || { echo "udp-ref needs a C compiler (cc): apt-get install gcc" >&2; exit 1; }
        cc -O2 -Wall -o "$UDP_REF_BIN.tmp" "$UDP_REF_SRC"
        mv "$UDP_REF_BIN.tmp" "$UDP_REF_BIN"
    fi
}

# start_udp NODE-INDEX ARGS...: a udp daemon (emu's, or the reference) in node i, then flanneld's configureIface
start_udp() {
    local i=$1 n=${NODES[$1]} j=$((1 - $1)); shift
    setsid ip netns exec "$n" "$@" --tun flannel0 --listen "${NODE_IP[$i]}:8285" \
        --route "10.244.$((j + 1)).0/24=${NODE_IP[$j]}" --ready-file "$RUN/udp-$n.ready" \
        "${DAEMON_ARGS[@]}" </dev/null >"$RUN/udp-$n.log" 2>&1 &
    disown
    for _ in $(seq 500); do [ -e "$RUN/udp-$n.ready" ] && break; sleep 0.01; done
    [ -e "$RUN/udp-$n.ready" ] || { echo "udp daemon in $n did not start:" >&2; cat "$RUN/udp-$n.log" >&2; false; }
    nsx "$n" ip addr add "10.244.$((i + 1)).0/32" dev flannel0
    nsx "$n" ip link set flannel0 mtu 1472 up
    nsx "$n" ip route add 10.244.0.0/16 dev flannel0
}

up() {
    local backend=$1 variant=${2:-} mtu i j n
    case "$backend" in
        vxlan) mtu=1450 ;; host-gw) mtu=1500 ;; udp|udp-ref) mtu=1472 ;;
        *) echo "unknown backend $backend (vxlan, host-gw, udp, udp-ref)" >&2; exit 2 ;;
    esac
    case "$variant" in
        "") names emubench ;; kube) names emubenchk ;; twin) names emubencht ;;
        *) echo "unknown variant $variant (kube, twin)" >&2; exit 2 ;;
    esac
    down_copy "$P"
    names "$P"
    mkdir -p "$RUN"
    if [ "$backend" = udp-ref ]; then build_reference; fi
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
            start_udp "$i" env PYTHONPATH="$REPO" python3 -m emu.backends.udp.daemon --ping-unreachable
            ;;
        udp-ref)  # the C reference forwarder (proxy.c's structure)
            start_udp "$i" "$UDP_REF_BIN"
            ;;
        esac
    done
    if [ "$variant" = kube ] || [ "$variant" = twin ]; then kube "${backend%-ref}"; fi
    trap - INT TERM ERR
}

# shape MBIT|off: what Mininet's TCLink does for underlay.link.bw, on both ends of every node's link of every
# copy: an HTB root qdisc (handle 5:, default class 1) and one class at the rate with a 15 kB burst
shape() {
    local prefix k
    for prefix in emubench emubenchk emubencht; do
        names "$prefix"
        for k in 0 1; do
            [ -e "/run/netns/${NODES[$k]}" ] || continue
            shape_dev "$MBIT" eth0 ip netns exec "${NODES[$k]}"
            shape_dev "$MBIT" "${PORTS[$k]}"
        done
    done
}

# shape_dev MBIT|off DEVICE [PREFIX-COMMAND...]: (re)shape one device (the prefix runs tc in a namespace)
shape_dev() {
    local mbit=$1 dev=$2; shift 2
    "$@" tc qdisc del dev "$dev" root 2>/dev/null || true
    if [ "$mbit" != off ]; then
        "$@" tc qdisc add dev "$dev" root handle 5:0 htb default 1
        # (tc warns that the class's quantum is big above about 100 Mbit/s, as under Mininet: harmless, dropped)
        local out
        if ! out=$("$@" tc class add dev "$dev" parent 5:0 classid 5:1 htb rate "${mbit}Mbit" burst 15k 2>&1); then
            echo "$out" >&2
            return 1
        fi
    fi
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

# DAEMON_ARGS: whatever follows -- on the command line (extra arguments for the udp daemons)
DAEMON_ARGS=()
ARGS=()
while [ $# -gt 0 ]; do
    if [ "$1" = -- ]; then shift; DAEMON_ARGS=("$@"); break; fi
    ARGS+=("$1"); shift
done
set -- "${ARGS[@]}"

case "${1:-}" in
    up) up "${2:-vxlan}" "${3:-}" ;;
    down) down ;;
    service) service "${2:-}" ;;
    shape)
        case "${2:-}" in
            off) MBIT=off ;;
            *[!0-9]*|"") echo "shape MBIT|off (MBIT: a whole number of Mbit/s)" >&2; exit 2 ;;
            *) MBIT=$2 ;;
        esac
        shape ;;
    *) echo "usage: $0 up vxlan|host-gw|udp|udp-ref [kube|twin] [-- DAEMON ARGS] | service on|off | shape MBIT|off | down" >&2
       exit 2 ;;
esac
