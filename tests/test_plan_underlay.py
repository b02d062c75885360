"""Routed underlays as plan data (no root): segments, routers and their routes, and flannel's rules on them.

flannel's rules checked node by node against the plan: vxlan's DirectRouting takes a plain route via the remote
node's IP exactly when that IP is on the node's own segment (``ip.DirectRouting``: ``ip route get`` answers
without a gateway), VXLAN (route, neighbour and FDB entry) otherwise; host-gw adds routes only to nodes on its
segment and plans the others as refused by the kernel; udp's daemon reaches every node. The single-switch plans
are held to their golden files by tests/test_golden_plans.py.
"""

import json
import textwrap
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_interface
from pathlib import Path
from typing import Any, Dict

import pytest

from emu.plan import names
from emu.plan.build import build_plan
from emu.plan.render import to_json, to_text
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent
TWO_RACKS = ROOT / "topologies" / "two_racks.yaml"


def plan_of(path: Path, backend: Any = None):  # type: ignore[no-untyped-def]
    spec, _warnings = load([str(path)])
    return build_plan(spec, backend)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def segment_of(plan) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    return {n.name: n.segment for n in plan.nodes}


def test_two_racks_segments_switches_and_ports() -> None:
    plan = plan_of(TWO_RACKS)
    assert [(s.name, s.cidr, s.mtu) for s in plan.segments] == [
        ("rack-a", "192.168.56.0/24", 1500), ("rack-b", "192.168.57.0/24", 1500), ("core", "10.255.0.0/29", 1500)
    ]
    assert [s.switch for s in plan.segments] == [names.segment_switch("two-racks", i) for i in range(3)]
    assert plan.switch == ""  # no single switch
    # nodes first on their segment's switch, then the routers' links
    ports = {n.name: n.link.switch_port for n in plan.nodes}
    s1, s2, s3 = (s.switch for s in plan.segments)
    assert ports == {"node-1": f"{s1}-1", "node-2": f"{s1}-2", "node-3": f"{s2}-1", "node-4": f"{s2}-2"}
    assert [p.switch_port for p in plan.router("tor-a").ports] == [f"{s1}-3", f"{s3}-1"]
    assert [p.switch_port for p in plan.router("tor-b").ports] == [f"{s2}-3", f"{s3}-2"]
    every = [s.switch for s in plan.segments] + list(ports.values())
    every += [p.switch_port for r in plan.routers for p in r.ports]
    assert len(set(every)) == len(every)
    assert all(name.startswith(plan.tag) and len(name) <= names.IFNAMSIZ for name in every)


def test_nodes_take_their_segments_addresses_and_gateway() -> None:
    plan = plan_of(TWO_RACKS)
    addresses = {n.name: n.link.address for n in plan.nodes}
    assert addresses == {"node-1": "192.168.56.11/24", "node-2": "192.168.56.12/24",
                         "node-3": "192.168.57.11/24", "node-4": "192.168.57.12/24"}
    gateways = {s.name: s.gateway for s in plan.segments}
    assert gateways["rack-a"] == "192.168.56.1" and gateways["rack-b"] == "192.168.57.1"
    for node in plan.nodes:
        assert [str(r) for r in node.underlay_routes] == [f"default via {gateways[node.segment]} dev eth0"]


def test_routers_forward_with_static_routes_to_the_segments_they_are_not_on() -> None:
    plan = plan_of(TWO_RACKS)
    tor_a, tor_b = plan.router("tor-a"), plan.router("tor-b")
    assert [(p.dev, p.segment, p.address) for p in tor_a.ports] == [
        ("eth0", "rack-a", "192.168.56.1/24"), ("eth1", "core", "10.255.0.1/29")]
    assert [str(r) for r in tor_a.routes] == ["192.168.57.0/24 via 10.255.0.2 dev eth1"]
    assert [str(r) for r in tor_b.routes] == ["192.168.56.0/24 via 10.255.0.1 dev eth1"]
    assert ("net.ipv4.ip_forward", "1") in tor_a.sysctls
    assert tor_a.iptables == ""  # fragmentationNeeded: send


def test_a_chain_of_routers_routes_every_segment_by_the_first_hop(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        apiVersion: emu/v1
        kind: Cluster
        name: chain
        underlay:
          segments:
            - {name: s1, cidr: 10.1.0.0/24}
            - {name: s2, cidr: 10.2.0.0/24}
            - {name: s3, cidr: 10.3.0.0/24}
            - {name: s4, cidr: 10.4.0.0/24}
          routers:
            - {name: r1, links: [{segment: s1}, {segment: s2}]}
            - {name: r2, links: [{segment: s2}, {segment: s3}]}
            - {name: r3, fragmentationNeeded: drop, links: [{segment: s3}, {segment: s4}]}
        nodes:
          - {name: a, segment: s1}
          - {name: b, segment: s4}
        """)
    plan = plan_of(path)
    routes = {r.name: [str(x) for x in r.routes] for r in plan.routers}
    assert routes["r1"] == ["10.3.0.0/24 via 10.2.0.2 dev eth1", "10.4.0.0/24 via 10.2.0.2 dev eth1"]
    assert routes["r2"] == ["10.1.0.0/24 via 10.2.0.1 dev eth0", "10.4.0.0/24 via 10.3.0.2 dev eth1"]
    assert routes["r3"] == ["10.1.0.0/24 via 10.3.0.1 dev eth0", "10.2.0.0/24 via 10.3.0.1 dev eth0"]
    assert "--icmp-type 3/4 -j DROP" in plan.router("r3").iptables
    assert plan.router("r3").iptables.count("-j DROP") == 2  # sent and forwarded
    # the first router on a segment is its gateway; routers take the first host addresses
    assert [s.gateway for s in plan.segments] == ["10.1.0.1", "10.2.0.1", "10.3.0.1", "10.4.0.1"]


@pytest.mark.parametrize("direct_routing", [True, False])
def test_vxlan_direct_routing_follows_flannels_rule_node_by_node(direct_routing: bool) -> None:
    spec, _warnings = load([str(TWO_RACKS)])
    if not direct_routing:
        backend = replace(spec.network.backend, options=replace(spec.network.backend.options, direct_routing=False))
        spec = replace(spec, network=replace(spec.network, backend=backend))
    plan = build_plan(spec)
    network = {n.name: ip_interface(n.link.address).network for n in plan.nodes}
    for node in plan.nodes:
        by_dst = {r.dst: r for r in node.routes}
        remote = [n for n in plan.nodes if n.name != node.name]
        assert len(node.routes) == len(remote)  # one route per remote host, either way
        for other in remote:
            route = by_dst[other.subnet]
            on_link = IPv4Address(other.ip) in network[node.name]
            if direct_routing and on_link:
                assert (route.dev, route.via, route.onlink) == ("eth0", other.ip, False), (node.name, other.name)
                assert all(f.dst != other.ip for f in node.fdb)
            else:
                gateway = str(IPv4Network(other.subnet).network_address)
                assert (route.dev, route.via, route.onlink) == ("flannel.1", gateway, True), (node.name, other.name)
                assert any(f.dst == other.ip for f in node.fdb)
                assert any(n.ip == gateway for n in node.neighbours)
        vxlan = [n for n in remote if not (direct_routing and IPv4Address(n.ip) in network[node.name])]
        assert len(node.neighbours) == len(node.fdb) == len(vxlan)  # "1 arp entry and 1 FDB entry per host"


def test_host_gw_routes_only_within_a_segment_and_plans_the_rest_as_refused() -> None:
    plan = plan_of(TWO_RACKS, "host-gw")
    segment = segment_of(plan)
    for node in plan.nodes:
        same = {n.subnet for n in plan.nodes if n.name != node.name and segment[n.name] == segment[node.name]}
        other = {n.subnet for n in plan.nodes if segment[n.name] != segment[node.name]}
        assert {r.dst for r in node.routes} == same
        assert {f.route.dst for f in node.failed_routes} == other
        for failed in node.failed_routes:
            assert failed.error == "network is unreachable"
            assert IPv4Address(failed.route.via) not in ip_interface(node.link.address).network
        assert node.devices[0].mtu == 1500  # no encapsulation


def test_udp_reaches_every_node_whatever_the_segment() -> None:
    plan = plan_of(TWO_RACKS, "udp")
    for node in plan.nodes:
        assert node.udp is not None and len(node.udp.table) == len(plan.nodes) - 1
        assert not node.failed_routes


def test_host_gw_log_line_is_flanneld_s() -> None:
    from emu.backends import host_gw

    failed = plan_of(TWO_RACKS, "host-gw").node("node-1").failed_routes[0]
    lines = host_gw.failure_log(failed, 2)
    assert lines[0] == ("I", "route_network.go:93] Subnet added: 10.244.3.0/24 via 192.168.57.11")
    assert lines[1] == ("E", "route_network.go:168] Error adding route to {Ifindex: 2 Dst: 10.244.3.0/24 Src: <nil> "
                             "Gw: 192.168.57.11 Flags: [] Table: 0 Realm: 0}: network is unreachable")


def test_each_segment_s_mtu_makes_its_nodes_pod_mtu(tmp_path: Path) -> None:
    path = write(tmp_path, """\
        apiVersion: emu/v1
        kind: Cluster
        name: jumbo
        underlay:
          segments:
            - {name: small, cidr: 10.1.0.0/24}
            - {name: jumbo, cidr: 10.2.0.0/24, mtu: 9000}
          routers:
            - {name: r1, links: [{segment: small}, {segment: jumbo}]}
        nodes:
          - {name: a, segment: small}
          - {name: b, segment: jumbo}
        ---
        apiVersion: apps/v1
        kind: DaemonSet
        metadata: {name: x}
        spec:
          selector: {matchLabels: {app: x}}
          template:
            metadata: {labels: {app: x}}
            spec: {containers: [{name: c}]}
        """)
    plan = plan_of(path)
    mtu = {n.name: (n.link.mtu, n.devices[0].mtu, next(d.mtu for d in n.devices if d.kind == "vxlan"))
           for n in plan.nodes}
    assert mtu == {"a": (1500, 1450, 1450), "b": (9000, 8950, 8950)}  # flannel: each node's eth0 - 50
    assert {p.node: p.mtu for p in plan.pods} == {"a": 1450, "b": 8950}
    assert "FLANNEL_MTU=8950" in plan.node("b").subnet_env
    assert [p.mtu for p in plan.router("r1").ports] == [1500, 9000]


def test_json_has_the_routed_underlay_and_single_switch_plans_do_not() -> None:
    routed = json.loads(to_json(plan_of(TWO_RACKS)))
    assert [s["name"] for s in routed["underlay"]["segments"]] == ["rack-a", "rack-b", "core"]
    assert [r["name"] for r in routed["underlay"]["routers"]] == ["tor-a", "tor-b"]
    node = routed["nodes"][0]
    assert node["segment"] == "rack-a" and node["underlay_routes"][0]["dst"] == "default"
    assert "failed_routes" not in node  # vxlan fails nowhere
    flat = json.loads(to_json(plan_of(ROOT / "topologies" / "two_nodes.yaml")))
    assert "underlay" not in flat
    assert not {"segment", "underlay_routes", "failed_routes"} & set(flat["nodes"][0])


def test_text_shows_segments_routers_and_refused_routes() -> None:
    text = to_text(plan_of(TWO_RACKS, "host-gw"), iptables=False)
    assert "segment rack-a: 192.168.56.0/24 MTU 1500" in text
    assert "router tor-a  (rack-a, core)" in text
    assert "192.168.57.0/24 via 10.255.0.2 dev eth1" in text
    assert "10.244.3.0/24 via 192.168.57.11 dev eth0: network is unreachable" in text


def test_the_routed_example_in_the_docs_is_valid(tmp_path: Path) -> None:
    """docs/topology.md shows every field of a routed underlay; it must stay valid, and mean what it says."""
    text = (ROOT / "docs" / "topology.md").read_text()
    example = text.split("<!-- example: routed -->", 1)[1].split("```yaml\n", 1)[1].split("```", 1)[0]
    plan = plan_of(write(tmp_path, example))
    assert [s.name for s in plan.segments] == ["rack-a", "rack-b"]
    assert plan.node("node-1").link.address == "192.168.56.11/24" and plan.node("node-1").link.bw == 500
    assert plan.node("node-2").link.address == "192.168.57.20/24" and plan.node("node-2").link.bw == 1000
    spine = plan.router("spine")
    assert [p.address for p in spine.ports] == ["192.168.56.1/24", "192.168.57.1/24"]
    assert [p.bw for p in spine.ports] == [None, 100]
