"""Checks of lab 3, pods on different nodes over flannel (see README.md beside this file).

Run them with: sudo python -m emu check 3 --answers labs/3-cross-node/answers.yaml
"""

from ipaddress import IPv4Network

from emu.labs import TaskFailed, answer, expect, ping, run_in, setup, task
from emu.plan import names

TOPOLOGY = "topology.yaml"


def _route_to_node2(cluster):
    """node-1's planned route that carries packets to node-2's pod subnet."""
    subnet = IPv4Network(cluster.plan.node("node-2").subnet)
    for route in cluster.plan.node("node-1").routes:
        if route.dst != "default" and subnet.subnet_of(IPv4Network(route.dst)):
            return route
    raise TaskFailed("the plan has no route from node-1 to node-2's pods")


@setup
def break_route(cluster):
    """node-1: the route to node-2's pod subnet deleted (ip route del ...)"""
    cluster.node("node-1").exec(["ip", "route", "del", _route_to_node2(cluster).dst])


@setup
def break_mtu(cluster):
    """node-1: the MTU of that route's device lowered to 1350 (ip link set ... mtu 1350)"""
    cluster.node("node-1").exec(["ip", "link", "set", _route_to_node2(cluster).dev, "mtu", "1350"])


@task("you found the UDP port of flannel's VXLAN traffic")
def vxlan_port(cluster, answers):
    expect(answer(answers, "vxlan_port") == "8472", "node-1 ip -d link show flannel.1 (dstport)")
    return True


@task("you found the VXLAN network identifier (VNI)")
def vni(cluster, answers):
    expect(answer(answers, "vni") == "1", "node-1 ip -d link show flannel.1 (id)")
    return True


@task("you found node-2's VTEP MAC address in node-1's forwarding database")
def vtep_mac(cluster, answers):
    expect(answer(answers, "node2_vtep_mac") == names.vtep_mac(cluster.name, "node-2"),
           "node-1 bridge fdb show dev flannel.1, and node-2 ip link show flannel.1")
    return True


@task("you found the outer destination address of client -> web packets on node-1's eth0")
def outer_dst(cluster, answers):
    expect(answer(answers, "outer_dst_ip") == cluster.plan.node("node-2").ip,
           "capture them: trace client web shows the first packet on node-1's eth0 (or task 3's tcpdump line)")
    return True


@task("you found the pods' MTU under vxlan, and the bytes VXLAN adds")
def mtu_vxlan(cluster, answers):
    expect(answer(answers, "pod_mtu_vxlan") == "1450", "client ip link show eth0")
    expect(answer(answers, "vxlan_overhead") == "50", "1500 - 1450: which headers are they?")
    return True


@task("you found the pods' MTU under host-gw")
def mtu_host_gw(cluster, answers):
    expect(answer(answers, "pod_mtu_host_gw") == "1500",
           "python -m emu plan labs/3-cross-node/topology.yaml --backend host-gw")
    return True


@task("the route you added makes client reach web")
def route_fixed(cluster, answers):
    route = _route_to_node2(cluster)
    web = cluster.pod("web").ip
    live = run_in(cluster, "node-1", ["ip", "route", "get", web]).stdout
    expect(f"dev {route.dev}" in live, f"node-1 routes {web} as: {' '.join(live.split()[:6]) or 'no route'}; "
           f"the plan has {route}")
    result = ping(cluster, "client", "web")
    expect(result.returncode == 0, f"client cannot ping web ({web}): {_summary(result)}")
    return True


@task("your MTU fix lets a 1400-byte ping with DF through from client to web")
def mtu_fixed(cluster, answers):
    run_in(cluster, "client", ["ip", "route", "flush", "cache"])  # forget path MTUs learnt before the fix
    result = ping(cluster, "client", "web", size=1372, dont_fragment=True)
    expect(result.returncode == 0, f"ping -M do -s 1372 (1400 bytes with the headers) does not get through: "
           f"{_summary(result)}")
    return True


def _summary(result):
    """ping's most telling line: an error ('Frag needed', 'Unreachable', 'message too long') or its statistics."""
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    telling = [line for line in lines if any(w in line for w in ("rag needed", "nreachable", "too long", "error"))]
    return (telling or [line for line in lines if "transmitted" in line] or ["no output"])[0]
