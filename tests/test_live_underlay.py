"""A routed underlay built for real (topologies/two_racks.yaml: two racks joined by two routers over a core segment).

- the routers equal their plan: addresses, MTUs, forwarding on, static routes, rules; every link's switch port
  is on its segment's switch with the planned MTU;
- nodes reach each other across racks through the routers on every backend;
- vxlan (DirectRouting) and udp connect every pod to every pod; host-gw connects pods within a rack and not
  across: the routes flanneld would add to the other rack are missing, the kernel refuses them exactly as it
  refuses flanneld's ("Nexthop has invalid gateway", errno ENETUNREACH), and flanneld's log line is there;
- a cluster whose emu process is killed with SIGKILL leaves routers and switches that ``emu clean``'s per-cluster
  step removes, and nothing else.
(live == plan for the nodes on this topology is in tests/test_live_state.py.)
"""

import json
import os
import signal
import subprocess
import sys
import time
from ipaddress import ip_interface
from pathlib import Path
from typing import Any, Dict, List

import pytest
from conftest import (
    REPO,
    STATE_ROOT,
    Ownership,
    cluster_fixture,
    kernel_snapshot,
    leftovers,
    load_spec,
    read_state,
    requires_root,
    start_time,
)

from emu.apply.clean import clean_state
from emu.plan.iptables import normalize_save

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

TOPOLOGY = "two_racks.yaml"
racks = cluster_fixture(TOPOLOGY)


def _json(target, argv: List[str]) -> Any:  # type: ignore[no-untyped-def]
    result = target.exec(argv)
    assert result.returncode == 0, f"{target.name}: {' '.join(argv)}: {result.stderr}"
    return json.loads(result.stdout or "[]")


def _sys(name: str, attribute: str) -> str:
    path = Path("/sys/class/net") / name / attribute
    return os.path.basename(os.readlink(path)) if path.is_symlink() else path.read_text().strip()


def test_routers_equal_their_plan(racks) -> None:  # type: ignore[no-untyped-def]
    for router in racks.routers:
        plan = racks.plan.router(router.name)
        addrs = {a["ifname"]: a for a in _json(router, ["ip", "-json", "addr"])}
        for port in plan.ports:
            info = addrs[port.dev]
            inet = [f"{i['local']}/{i['prefixlen']}" for i in info["addr_info"] if i["family"] == "inet"]
            assert inet == [port.address], f"{router.name} {port.dev}"
            assert (info["address"], info["mtu"]) == (port.mac, port.mtu)
            assert "UP" in info["flags"] and "LOWER_UP" in info["flags"]
            segment = racks.plan.segment(port.segment)
            assert _sys(port.switch_port, "master") == segment.switch
            assert int(_sys(port.switch_port, "mtu")) == port.mtu
        routes = _json(router, ["ip", "-json", "route"])
        static = {(r["dst"], r.get("gateway", ""), r["dev"]) for r in routes if r.get("protocol") != "kernel"}
        assert static == {(r.dst, r.via or "", r.dev) for r in plan.routes}, router.name
        assert router.exec(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        saved = router.exec(["iptables-save"]).stdout
        assert normalize_save(saved) == normalize_save(plan.iptables), router.name


def test_node_links_are_on_their_segments_switch(racks) -> None:  # type: ignore[no-untyped-def]
    for node in racks.plan.nodes:
        segment = racks.plan.segment_of(node)
        assert _sys(node.link.switch_port, "master") == segment.switch
        assert int(_sys(node.link.switch_port, "mtu")) == node.link.mtu
    assert sorted(racks.state.switches) == sorted(s.switch for s in racks.plan.segments)


def _reaches(src, address: str) -> bool:  # type: ignore[no-untyped-def]
    return src.exec(["ping", "-c", "1", "-W", "1", address], timeout=10).returncode == 0


def test_nodes_reach_each_other_through_the_routers(racks) -> None:  # type: ignore[no-untyped-def]
    node_1, node_3 = racks.node("node-1"), racks.node("node-3")
    trace = node_1.exec(["ip", "route", "get", node_3.ip]).stdout
    assert "via 192.168.56.1 dev eth0" in trace, trace
    assert _reaches(node_1, node_3.ip) and _reaches(node_3, node_1.ip)
    hops = node_1.exec(["ping", "-c", "1", "-W", "1", node_3.ip]).stdout
    assert "ttl=62" in hops, hops  # two routers on the way


def test_pods_connect_as_the_backend_does_on_a_routed_underlay(racks) -> None:  # type: ignore[no-untyped-def]
    segment = {n.name: n.segment for n in racks.plan.nodes}
    got: Dict[str, bool] = {}
    for src in racks.pods:
        for dst in racks.pods:
            if src.name != dst.name:
                got[f"{src.name}->{dst.name}"] = _reaches(src, dst.ip)
    for pair, reached in got.items():
        src, dst = (racks.pod(name) for name in pair.split("->"))
        same_rack = segment[src.node] == segment[dst.node]
        expected = same_rack or racks.backend != "host-gw"
        assert reached == expected, f"{racks.backend}: {pair} {'reached' if reached else 'not reached'}: {got}"


def test_host_gw_routes_to_the_other_rack_are_refused_as_flanneld_s(racks) -> None:  # type: ignore[no-untyped-def]
    from emu.apply.routers import flanneld_log

    if racks.backend != "host-gw":  # the other backends reach the other rack through their device: nothing fails
        for node in racks.nodes:
            assert not racks.plan.node(node.name).failed_routes, node.name
            assert "Error adding route" not in flanneld_log(racks.state.directory, node.name)
        return
    for node in racks.nodes:
        plan = racks.plan.node(node.name)
        assert plan.failed_routes, node.name
        live = {r["dst"] for r in _json(node, ["ip", "-json", "route"])}
        for failed in plan.failed_routes:
            assert failed.route.dst not in live, f"{node.name}: {failed.route} should be missing"
            tried = node.exec(["ip", "route", "add", failed.route.dst, "via", failed.route.via, "dev", "eth0"])
            assert tried.returncode != 0 and "invalid gateway" in tried.stderr, tried.stderr
        log = flanneld_log(racks.state.directory, node.name)
        for failed in plan.failed_routes:
            assert (f"Error adding route to {{Ifindex: {_ifindex(node)} Dst: {failed.route.dst} Src: <nil> "
                    f"Gw: {failed.route.via} Flags: [] Table: 0 Realm: 0}}: network is unreachable") in log, log
        # a pod's packet to the other rack follows the node's default route to its router, which drops it
        remote = next(p for p in racks.pods if racks.plan.node(p.node).segment != plan.segment)
        via = node.exec(["ip", "route", "get", remote.ip]).stdout
        assert f"via {racks.plan.segment_of(plan).gateway} dev eth0" in via, via


def _ifindex(node) -> int:  # type: ignore[no-untyped-def]
    return int(_json(node, ["ip", "-json", "link", "show", "eth0"])[0]["ifindex"])


BUILDER = """
import sys
sys.path.insert(0, sys.argv[1])
from dataclasses import replace
from emu.controller import Cluster
from emu.plan.build import build_plan
from emu.spec.load import load
spec, _ = load([sys.argv[2]])
cluster = Cluster(build_plan(replace(spec, name=sys.argv[3])))
cluster.start()
print("built", flush=True)
import time
time.sleep(300)
"""


def test_kill_9_then_emu_clean_removes_routers_and_switches(tmp_path: Path) -> None:
    """SIGKILL the emu process of a running routed cluster: its routers, nodes and every segment's switch stay
    behind; ``emu clean`` removes exactly them."""
    spec = load_spec(TOPOLOGY, "vxlan", name=f"racks9-lt{os.getpid()}")
    from emu.plan.build import build_plan

    plan = build_plan(spec)
    before = kernel_snapshot()
    owned = Ownership()
    owned.add_plan(plan)
    builder = subprocess.Popen([sys.executable, "-c", BUILDER, str(REPO), str(REPO / "topologies" / TOPOLOGY),
                                spec.name], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    try:
        line = builder.stdout.readline() if builder.stdout else ""
        assert line.strip() == "built", line + (builder.stdout.read() if builder.stdout else "")
        os.kill(builder.pid, signal.SIGKILL)
        builder.wait()
        time.sleep(0.2)
        state = read_state(plan.tag)
        assert state is not None
        owned.add_state(state.processes)
        roles = {p.role for p in state.processes if start_time(p.pid) == p.start}
        assert {"router", "node", "switch"} <= roles, roles
        left = kernel_snapshot()
        switches = [s.switch for s in plan.segments]
        assert all(s in left.links for s in switches), "the segments' switches should be left behind"
        # what `emu clean` does for each dead cluster, for this one only (other engineers' runs share the machine)
        removed = "\n".join(clean_state(state, STATE_ROOT / plan.tag, verbose=False))
        for switch in switches:
            assert f"link {switch}" in removed, removed
        for router in plan.routers:
            assert f"(router {router.name})" in removed, removed
    finally:
        if builder.poll() is None:
            builder.kill()
            builder.wait()
    assert leftovers(before, kernel_snapshot(), owned) == []
    assert not any(name.startswith(plan.tag) for name in os.listdir("/sys/class/net"))


def test_link_addresses_are_the_planned_networks(racks) -> None:  # type: ignore[no-untyped-def]
    for node in racks.nodes:
        plan = racks.plan.node(node.name)
        network = str(ip_interface(plan.link.address).network)
        assert network == racks.plan.segment_of(plan).cidr


def test_trace_follows_the_packet_through_the_routers(racks) -> None:  # type: ignore[no-untyped-def]
    """emu trace on the live cluster: every predicted hop seen, switches and routers included; on host-gw the
    packet ends at the rack's router, as the plan says, with flanneld's refused route as the reason."""
    from emu.trace.verify import trace

    result = trace(racks, "web-node-1", "web-node-3", count=3)
    kinds = {hop.hop.location_kind for hop in result.hops}
    assert result.first_not_seen is None, [(h.hop.index, h.hop.action, h.evidence) for h in result.hops if not h.seen]
    assert "router" in kinds and "switch" in kinds
    if racks.backend == "host-gw":
        assert not result.prediction.delivered and result.prediction.hops[-1].location == "tor-a"
        assert any("network is unreachable" in note for note in result.prediction.notes)
    else:
        assert result.prediction.delivered
