"""The live dataplane equals the Plan: every node's and pod's kernel state, read back and compared field by field.

On a routed underlay (two_racks.yaml: vxlan with DirectRouting) this is flannel's rule, node by node: a plain
route to each node of the node's own rack, VXLAN to the other rack.

``emu plan`` promises that a student can predict the dataplane and then check it live; this is that check.
Every expected value comes from ``cluster.plan`` (never hard-coded here): devices with their addresses, MACs,
MTUs and VXLAN parameters, routes, permanent neighbours, FDB entries, cni0's ports with hairpin on, sysctls,
/run/flannel/subnet.env, the whole iptables document, the nftables tables, and each pod's eth0 and routes.
"""

import json
from ipaddress import ip_interface
from typing import Any, Dict, List, Set, Tuple

import pytest
from conftest import cluster_fixture, requires_root

from emu.plan.iptables import normalize_save
from emu.plan.model import Route

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

cluster = cluster_fixture(["two_nodes.yaml", "three_nodes_vxlan.yaml", "two_racks.yaml", "kube_proxy_nftables.yaml"])


def _json(target, argv: List[str]) -> Any:  # type: ignore[no-untyped-def]
    result = target.exec(argv)
    assert result.returncode == 0, f"{target.name}: {' '.join(argv)}: {result.stderr}"
    return json.loads(result.stdout or "[]")


def _route_key(route: Route) -> Tuple[str, str, str, bool]:
    return (route.dst, route.via or "", route.dev, route.onlink)


def _live_routes(entries: List[Dict[str, Any]]) -> Set[Tuple[str, str, str, bool]]:
    """The routes that are not the kernel's connected ones, in the Plan's terms."""
    return {
        (r["dst"], r.get("gateway", ""), r["dev"], "onlink" in r.get("flags", []))
        for r in entries
        if r.get("protocol") != "kernel"
    }


def _connected(entries: List[Dict[str, Any]]) -> Set[Tuple[str, str]]:
    return {(r["dst"], r["dev"]) for r in entries if r.get("protocol") == "kernel"}


def _links(node) -> Dict[str, Dict[str, Any]]:  # type: ignore[no-untyped-def]
    return {link["ifname"]: link for link in _json(node, ["ip", "-json", "-d", "link"])}


def test_node_devices_and_addresses(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        plan = cluster.plan.node(node.name)
        links = _links(node)
        addrs = {a["ifname"]: a for a in _json(node, ["ip", "-json", "addr"])}
        expected = {("lo", "127.0.0.1/8"), (plan.link.dev, plan.link.address)}
        expected |= {(d.name, a) for d in plan.devices for a in d.addresses}
        live = {
            (name, f"{info['local']}/{info['prefixlen']}")
            for name, a in addrs.items()
            for info in a.get("addr_info", [])
            if info["family"] == "inet"
        }
        assert live == expected, f"{node.name}: IPv4 addresses"

        eth = links[plan.link.dev]
        assert (eth["address"], eth["mtu"]) == (plan.link.mac, plan.link.mtu), f"{node.name}: underlay {plan.link.dev}"
        assert "UP" in eth["flags"]
        for device in plan.devices:
            assert device.name in links, f"{node.name}: no device {device.name}"
            link = links[device.name]
            assert link["linkinfo"]["info_kind"] == device.kind, f"{node.name}: {device.name} kind"
            assert link["mtu"] == device.mtu, f"{node.name}: {device.name} MTU"
            if device.mac:
                assert link["address"] == device.mac, f"{node.name}: {device.name} MAC"
            assert "UP" in link["flags"], f"{node.name}: {device.name} is down"
            if device.kind == "vxlan":
                data = link["linkinfo"]["info_data"]
                assert data["id"] == int(device.option("id"))
                assert data["port"] == int(device.option("dstport"))
                assert data["local"] == device.option("local")
                assert data["link"] == device.option("dev")
                assert data["learning"] == (device.option("learning") == "on"), f"{node.name}: {device.name} learning"


def test_node_routes(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        plan = cluster.plan.node(node.name)
        routes = _json(node, ["ip", "-json", "route"])
        # The backend's routes, the Service range standing in for a node's default route, and on a routed
        # underlay the node's default route via its segment's gateway.
        planned = tuple(plan.routes) + tuple(plan.service_routes) + tuple(plan.underlay_routes)
        assert _live_routes(routes) == {_route_key(r) for r in planned}, f"{node.name}: routes"
        # The connected routes of every address with a prefix shorter than /32.
        connected = {
            (str(ip_interface(a).network), d.name) for d in plan.devices for a in d.addresses if "/32" not in a
        }
        connected.add((str(ip_interface(plan.link.address).network), plan.link.dev))
        assert _connected(routes) == connected, f"{node.name}: connected routes"


def test_node_neighbours_and_fdb(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        plan = cluster.plan.node(node.name)
        neigh = _json(node, ["ip", "-json", "neigh", "show", "nud", "permanent"])
        assert {(n["dst"], n["lladdr"], n["dev"]) for n in neigh} == {
            (n.ip, n.lladdr, n.dev) for n in plan.neighbours
        }, f"{node.name}: permanent neighbours"
        for device in plan.devices:
            if device.kind != "vxlan":
                continue
            fdb = _json(node, ["bridge", "-json", "fdb", "show", "dev", device.name])
            assert {(e["mac"], e.get("dst", "")) for e in fdb} == {
                (e.lladdr, e.dst) for e in plan.fdb if e.dev == device.name
            }, f"{node.name}: FDB of {device.name}"
            assert all(e.get("state") == "permanent" for e in fdb), f"{node.name}: {fdb}"
        if cluster.backend == "vxlan":
            remote = len(cluster.plan.nodes) - 1
            # flannel: "1 route, 1 arp entry and 1 FDB entry per host" (with DirectRouting, hosts on the node's own
            # segment get a plain route instead of the ARP and FDB entries)
            direct = [r for r in plan.routes if r.dev == plan.link.dev]
            assert (len(plan.routes), len(plan.neighbours), len(plan.fdb)) == (remote, remote - len(direct),
                                                                              remote - len(direct))
            assert all(ip_interface(f"{r.via}/32").ip in ip_interface(plan.link.address).network for r in direct)


def test_cni0_ports_are_the_pods_veths_with_hairpin(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        links = _links(node)
        pods = [p for p in cluster.plan.pods_on(node.name) if not p.host_network]
        ports = {name for name, link in links.items() if link.get("master") == "cni0"}
        assert ports == {p.host_veth for p in pods}, f"{node.name}: ports of cni0"
        for pod in pods:
            link = links[pod.host_veth]
            info = link["linkinfo"]
            assert info["info_kind"] == "veth" and info.get("info_slave_kind") == "bridge"
            assert info["info_slave_data"]["hairpin"] is True, f"{pod.host_veth} ({pod.name}): hairpin is off"
            assert (link["address"], link["mtu"]) == (pod.host_veth_mac, pod.mtu), f"{pod.host_veth} ({pod.name})"
            assert "UP" in link["flags"]


def test_pod_eth0_and_routes(cluster) -> None:  # type: ignore[no-untyped-def]
    for pod in cluster.pods:
        plan = cluster.plan.pod(pod.name)
        links = {link["ifname"]: link for link in _json(pod, ["ip", "-json", "addr"])}
        eth = links[plan.ifname]
        assert (eth["address"], eth["mtu"]) == (plan.mac, plan.mtu), f"{pod.name}: {plan.ifname}"
        assert "UP" in eth["flags"] and "UP" in links["lo"]["flags"]
        inet = [(a["local"], a["prefixlen"]) for a in eth["addr_info"] if a["family"] == "inet"]
        assert inet == [(plan.ip, plan.prefixlen)], f"{pod.name}: addresses"
        assert set(links) == {"lo", plan.ifname}, f"{pod.name}: devices"
        routes = _json(pod, ["ip", "-json", "route"])
        assert _live_routes(routes) == {_route_key(r) for r in plan.routes}, f"{pod.name}: routes"
        network = str(ip_interface(f"{plan.ip}/{plan.prefixlen}").network)
        assert _connected(routes) == {(network, plan.ifname)}


def test_node_sysctls_and_subnet_env(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        plan = cluster.plan.node(node.name)
        for key, value in plan.sysctls:
            got = node.exec(["sysctl", "-n", key])
            assert got.stdout.strip() == value, f"{node.name}: {key}"
        env = node.exec(["cat", "/run/flannel/subnet.env"])
        assert env.returncode == 0 and env.stdout == plan.subnet_env, f"{node.name}: /run/flannel/subnet.env"


def test_node_iptables(cluster) -> None:  # type: ignore[no-untyped-def]
    for node in cluster.nodes:
        saved = node.exec(["iptables-save"])
        assert saved.returncode == 0, saved.stderr
        assert normalize_save(saved.stdout) == normalize_save(cluster.plan.node(node.name).iptables), node.name


def test_node_nftables(cluster) -> None:  # type: ignore[no-untyped-def]
    """Each planned nftables table lists back as planned; a node whose plan has none has no kube-proxy table."""
    from emu.plan.nftables import normalize_listing, render

    for node in cluster.nodes:
        tables = cluster.plan.node(node.name).nftables
        for table in tables:
            listed = node.exec(["nft", "list", "table", table.family, table.name])
            assert listed.returncode == 0, listed.stderr
            assert normalize_listing(listed.stdout) == normalize_listing(render(table)), node.name
        if not tables:
            names = node.exec(["nft", "list", "tables"])
            assert names.returncode == 0 and "kube-proxy" not in names.stdout, names.stdout
