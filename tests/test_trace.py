"""``emu trace``: the predicted path of a packet (pure, no root) and its live check (root).

Without root: for every backend (vxlan, host-gw, udp) the predicted hops of pod -> pod across nodes, pod -> pod on
one node, pod -> Service (both endpoints), node -> pod and pod -> node, computed from the plan alone: the exact
sequence of steps, devices, counter directions and the routes, encapsulations and kube-proxy chains named; the
drops the plan itself predicts (ICMP to a ClusterIP, a Service without endpoints, an address no pod holds); bad
questions; the JSON form, the text and the diagram.

With root (one cluster per backend for the module): real packets mark every predicted hop seen on a healthy
cluster, for icmp, tcp (through the Service, following the endpoint kube-proxy picked) and udp; after a route is
deleted in node-1 the first hop NOT SEEN is node-1's routing decision and the reason names the missing route;
``emu trace --format json --diagram`` works end to end.
"""

import json
import os
import subprocess
import sys
import textwrap
from ipaddress import IPv4Network
from pathlib import Path

import pytest
from conftest import BACKENDS as LIVE_BACKENDS
from conftest import cluster_fixture, requires_matplotlib, requires_root

from emu.plan.build import build_plan
from emu.proxy import iptables as kubeproxy
from emu.spec.load import load
from emu.trace.predict import TraceInputError, lookup, predict, route_table
from emu.trace.render import draw, to_text

ROOT = Path(__file__).resolve().parent.parent
TWO_NODES = str(ROOT / "topologies" / "two_nodes.yaml")
BACKENDS = ("vxlan", "host-gw", "udp")

CROSS_NODE_STEPS = {
    "vxlan": ["route", "leave-pod", "bridge-in", "bridge-up", "route", "encap", "underlay-out", "switch",
              "underlay-in", "decap", "route", "bridge-out", "bridge-forward", "deliver"],
    "host-gw": ["route", "leave-pod", "bridge-in", "bridge-up", "route", "underlay-out", "switch", "underlay-in",
                "route", "bridge-out", "bridge-forward", "deliver"],
    "udp": ["route", "leave-pod", "bridge-in", "bridge-up", "route", "tun", "underlay-out", "switch",
            "underlay-in", "tun-in", "route", "bridge-out", "bridge-forward", "deliver"],
}


def plan_of(backend: str, path: str = TWO_NODES):  # type: ignore[no-untyped-def]
    spec, _ = load([path])
    return build_plan(spec, backend)


def steps(prediction) -> list:  # type: ignore[no-untyped-def]
    return [h.step for h in prediction.hops]


# ------------------------------------------------------------------------------------------- prediction


@pytest.mark.parametrize("backend", BACKENDS)
def test_cross_node_hops(backend: str) -> None:
    plan = plan_of(backend)
    p = predict(plan, "client-0", "web-1")
    assert (p.proto, p.port, p.delivered) == ("icmp", None, True)
    assert steps(p) == CROSS_NODE_STEPS[backend]
    assert [h.index for h in p.hops] == list(range(1, len(p.hops) + 1))
    assert [loc for loc, _ in p.locations()] == ["client-0", "node-1", plan.switch, "node-2", "web-1"]
    client, web = plan.pod("client-0"), plan.pod("web-1")
    by_step = {h.step: h for h in p.hops}
    assert (by_step["leave-pod"].device, by_step["leave-pod"].direction) == ("eth0", "tx")
    assert (by_step["bridge-in"].device, by_step["bridge-in"].direction) == (client.host_veth, "rx")
    assert (by_step["bridge-forward"].device, by_step["bridge-forward"].direction) == (web.host_veth, "tx")
    assert (by_step["deliver"].location, by_step["deliver"].direction) == ("web-1", "rx")
    assert by_step["switch"].device == plan.node("node-2").link.switch_port
    node_route = [h for h in p.hops if h.step == "route" and h.location == "node-1"][0]
    assert node_route.route.iif == "cni0" and node_route.route.kind == "planned"
    out = by_step["underlay-out"]
    assert (out.location, out.device, out.direction) == ("node-1", "eth0", "tx")
    if backend == "vxlan":
        assert "route 10.244.2.0/24 via 10.244.2.0 dev flannel.1 onlink matched" in node_route.action
        assert "vxlan encapsulation: outer 192.168.56.11 -> 192.168.56.12 UDP dport 8472 VNI 1" in \
            by_step["encap"].action
        assert by_step["encap"].expects == (
            ("neigh", str(plan.node("node-1").neighbours[0])), ("fdb", str(plan.node("node-1").fdb[0])))
        assert out.size == by_step["encap"].size + 50 and out.capture == \
            "udp and dst port 8472 and dst host 192.168.56.12"
        assert (by_step["decap"].location, by_step["decap"].device) == ("node-2", "flannel.1")
    elif backend == "host-gw":
        assert "route 10.244.2.0/24 via 192.168.56.12 dev eth0 matched" in node_route.action
        assert "host-gw: forwarded to 192.168.56.12" in out.action and "no encapsulation" in out.action
    else:
        assert "route 10.244.0.0/16 dev flannel0 matched" in node_route.action
        assert by_step["tun"].device == "flannel0"
        assert "udp encapsulation by flanneld: UDP 192.168.56.11 -> 192.168.56.12:8285" in out.action
        assert by_step["tun-in"].location == "node-2"
    last_route = [h for h in p.hops if h.step == "route"][-1]
    assert last_route.location == "node-2" and last_route.route.kind == "connected"
    assert last_route.route.text.startswith("10.244.2.0/24 dev cni0")


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_node_is_bridged(backend: str) -> None:
    plan = plan_of(backend)
    p = predict(plan, "client-0", "web-0")
    assert steps(p) == ["route", "leave-pod", "bridge-in", "bridge-forward", "deliver"]
    assert p.hops[0].route.kind == "connected" and "no router" in p.hops[1].action
    assert p.hops[3].device == plan.pod("web-0").host_veth and "forwards by MAC" in p.hops[3].action
    assert {h.location for h in p.hops} == {"client-0", "node-1", "web-0"}


@pytest.mark.parametrize("backend", BACKENDS)
def test_pod_to_service_follows_each_endpoint(backend: str) -> None:
    plan = plan_of(backend)
    described = kubeproxy.describe([_kube(plan)])[0]
    first = predict(plan, "client-0", "web")
    assert (first.proto, first.port) == ("tcp", 80)
    assert first.service.svc_chain == described["svc_chain"]
    assert [a[0] for a in first.service.alternatives] == [e["sep_chain"] for e in described["endpoints"]]
    for endpoint in described["endpoints"]:
        p = predict(plan, "client-0", "web", endpoint=endpoint["pod"])
        hop = next(h for h in p.hops if h.step == "kube-proxy")
        assert hop.location == "node-1" and hop.service.chain == "PREROUTING"
        assert f"KUBE-SERVICES -> {described['svc_chain']} -> {endpoint['sep_chain']}" in hop.action
        assert f"DNAT to {endpoint['dnat']}" in hop.action
        assert (p.target.name, p.port, p.service.dnat) == (endpoint["pod"], 80, endpoint["dnat"])
        assert p.hops[-1].step == "deliver" and p.hops[-1].location == endpoint["pod"]
        if endpoint["node"] == "node-1":  # br_netfilter: DNAT on the bridge, forwarded by the bridge itself
            assert steps(p) == ["route", "leave-pod", "bridge-in", "kube-proxy", "route", "bridge-forward", "deliver"]
        else:
            assert steps(p)[:5] == ["route", "leave-pod", "bridge-in", "kube-proxy", "bridge-up"]
            assert steps(p)[5:] == CROSS_NODE_STEPS[backend][4:]
    assert predict(plan, "client-0", "web", endpoint=described["endpoints"][1]["dnat"]).service.sep_chain == \
        described["endpoints"][1]["sep_chain"]
    with pytest.raises(TraceInputError, match="not an endpoint"):
        predict(plan, "client-0", "web", endpoint="client-0")


def _kube(plan):  # type: ignore[no-untyped-def]
    from emu.plan.services import kube_services

    return kube_services(plan.services)[0]


@pytest.mark.parametrize("backend", BACKENDS)
def test_node_to_pod(backend: str) -> None:
    plan = plan_of(backend)
    p = predict(plan, "node-1", "web-1")
    assert p.src.kind == "node" and p.hops[0].step == "route" and p.hops[0].route.iif == ""
    assert steps(p) == CROSS_NODE_STEPS[backend][4:]
    local = predict(plan, "node-1", "web-0")
    assert steps(local) == ["route", "bridge-out", "bridge-forward", "deliver"]
    assert local.hops[0].route.text.startswith("10.244.1.0/24 dev cni0")
    service = predict(plan, "node-2", "web", endpoint="web-0")
    assert service.hops[0].step == "kube-proxy" and service.hops[0].service.chain == "OUTPUT"
    assert service.hops[-1].location == "web-0"


def test_pod_to_node_is_masqueraded_and_delivered_locally() -> None:
    plan = plan_of("vxlan")
    p = predict(plan, "client-0", "node-2")
    assert "FLANNEL-POSTRTG" in next(h for h in p.hops if h.step == "underlay-out").action
    assert p.hops[-1].step == "route" and p.hops[-1].route.kind == "local" and p.delivered
    own = predict(plan, "client-0", "node-1")
    assert own.hops[-1].location == "node-1" and own.hops[-1].route.kind == "local"


def test_drops_the_plan_predicts(tmp_path: Path) -> None:
    plan = plan_of("vxlan")
    ping_service = predict(plan, "client-0", "web", proto="icmp")
    assert not ping_service.delivered and ping_service.hops[-1].step == "drop"
    assert "no KUBE-SERVICES rule for icmp" in next(h for h in ping_service.hops if h.step == "kube-proxy").action
    assert any("ClusterIP" in n for n in ping_service.notes)
    nobody = predict(plan, "client-0", "10.244.2.77")
    assert not nobody.delivered and "no pod on node-2 has 10.244.2.77" in nobody.hops[-1].action
    outside = predict(plan, "node-1", "172.16.0.1")
    assert not outside.delivered and "no route to 172.16.0.1 in node-1" in outside.hops[-1].action
    topology = tmp_path / "lonely.yaml"
    topology.write_text(textwrap.dedent("""\
        apiVersion: emu/v1
        kind: Cluster
        name: lonely
        nodes: [{name: node-1}]
        ---
        apiVersion: v1
        kind: Pod
        metadata: {name: client}
        spec: {containers: [{name: shell, command: ["sleep", "infinity"]}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: ghost}
        spec: {selector: {app: nobody}, ports: [{port: 80}]}
        """))
    rejected = predict(plan_of("vxlan", str(topology)), "client", "ghost")
    assert not rejected.delivered and "has no endpoints" in rejected.hops[-1].action


def test_bad_questions() -> None:
    plan = plan_of("vxlan")
    with pytest.raises(TraceInputError, match="not a pod, node or Service"):
        predict(plan, "client-0", "nowhere")
    with pytest.raises(TraceInputError, match="source must be a pod or a node"):
        predict(plan, "web", "client-0")
    with pytest.raises(TraceInputError, match="needs a port"):
        predict(plan, "client-0", "web-1", proto="udp")
    with pytest.raises(TraceInputError, match="--size"):
        predict(plan, "client-0", "web", size=100)
    assert predict(plan, "client-0", "web-1:8080").proto == "tcp"
    assert predict(plan, "client-0", "web-1", size=1372).size == 1400


def test_longest_prefix_match() -> None:
    plan = plan_of("vxlan")
    table = route_table(plan, "node-1")
    assert lookup(table, "10.244.1.1").kind == "local"
    assert lookup(table, "10.244.1.9").dev == "cni0"
    assert lookup(table, "10.244.2.9").network == IPv4Network("10.244.2.0/24")
    assert lookup(table, "192.168.56.12").dev == "eth0"
    assert lookup(table, "8.8.8.8") is None  # nodes have no default route: nothing leaves the emulation
    pod_table = route_table(plan, "client-0")
    assert str(lookup(pod_table, "10.244.9.9").network) == "10.244.0.0/16"
    assert str(lookup(pod_table, "10.96.0.10").network) == "0.0.0.0/0"


def test_json_text_and_diagram(tmp_path: Path) -> None:
    plan = plan_of("vxlan")
    p = predict(plan, "client-0", "web", endpoint="web-1")
    data = json.loads(json.dumps(p.to_dict(), sort_keys=True))
    assert data["format"] == "emu-trace/v1" and data["delivered"] is True
    assert data["hops"][0]["index"] == 1 and {"location", "device", "direction", "step", "action", "drop"} <= set(
        data["hops"][0])
    assert p.to_dict() == predict(plan, "client-0", "web", endpoint="web-1").to_dict()  # deterministic
    text = to_text(p)
    assert "  1. client-0" in text and "predicted: delivered" in text
    pytest.importorskip("matplotlib")
    for name in ("trace.png", "trace.svg"):
        path = draw(p, str(tmp_path / name))
        assert path.stat().st_size > 1000
    with pytest.raises(TraceInputError):
        draw(p, str(tmp_path / "trace.gif"))


def test_predict_imports_no_mininet() -> None:
    code = "import sys, emu.trace.predict, emu.trace.render; sys.exit('mininet' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=str(ROOT)).returncode == 0


# ---------------------------------------------------------------------------------------------------- live

two_nodes = cluster_fixture("two_nodes.yaml", LIVE_BACKENDS)


def _trace(cluster, src, dst, **kwargs):  # type: ignore[no-untyped-def]
    from emu.trace.verify import trace

    return trace(cluster, src, dst, **kwargs)


def _explain(result) -> str:  # type: ignore[no-untyped-def]
    return to_text(result)


@requires_root
@pytest.mark.root
@pytest.mark.parametrize("src,dst,kwargs", [
    ("client-0", "web-1", {}),
    ("client-0", "web-0", {}),
    ("node-1", "web-1", {}),
    ("client-0", "web", {}),
    ("client-0", "web-1", {"proto": "udp", "port": 9999}),
], ids=["cross-node", "same-node", "node-to-pod", "pod-to-service", "udp"])
def test_live_every_hop_seen(two_nodes, src, dst, kwargs) -> None:  # type: ignore[no-untyped-def]
    result = _trace(two_nodes, src, dst, **kwargs)
    assert result.ok, _explain(result)
    assert all(h.seen for h in result.hops)
    predicted = predict(two_nodes.plan, src, dst, kwargs.get("port"), kwargs.get("proto"),
                        endpoint=result.prediction.service.sep_chain if result.prediction.service else None)
    assert steps(result.prediction) == steps(predicted)
    if dst == "web-1" and src == "client-0" and not kwargs:
        assert steps(result.prediction) == CROSS_NODE_STEPS[two_nodes.backend]
        underlay = next(h for h in result.hops if h.hop.step == "underlay-out")
        bare = "IP 10.244.1.2 > 10.244.2.2" if two_nodes.backend == "host-gw" else "IP 192.168.56.11."
        assert underlay.capture.startswith(f"tcpdump -ni eth0: {bare}"), underlay.capture  # encapsulated or not
    if dst == "web":
        assert result.prediction.target.name in two_nodes.service("web").endpoint_pods
        assert result.answered == 1


@requires_root
@pytest.mark.root
def test_live_deleted_route_is_the_first_hop_not_seen(two_nodes) -> None:  # type: ignore[no-untyped-def]
    node = two_nodes.node("node-1")
    subnet = IPv4Network(two_nodes.plan.node("node-2").subnet)
    route = next(r for r in two_nodes.plan.node("node-1").routes
                 if r.dst != "default" and subnet.subnet_of(IPv4Network(r.dst)))
    deleted = node.exec(["ip", "route", "del", route.dst])
    assert deleted.returncode == 0, deleted.stderr
    try:
        result = _trace(two_nodes, "client-0", "web-1")
    finally:
        restored = node.exec(["ip", "route", "add"] + str(route).split())
        assert restored.returncode == 0, restored.stderr
    assert not result.ok
    index = result.first_not_seen
    hop = result.hops[index - 1].hop
    assert (hop.step, hop.location) == ("route", "node-1"), _explain(result)
    assert all(h.seen for h in result.hops[: index - 1]), _explain(result)
    assert f"no route to {route.dst} in node-1: the packet is dropped after cni0" in result.reason
    assert "NOT SEEN" in to_text(result)
    assert _trace(two_nodes, "client-0", "web-1").ok  # and back to normal


@requires_root
@pytest.mark.root
def test_live_trace_to_a_deleted_pod_follows_the_address_it_had() -> None:
    """A pod deleted while the cluster runs: the trace still knows its address, says so, and the packet is not
    delivered; a deleted pod cannot be a source."""
    from conftest import make_cluster

    from emu.errors import EmuError

    with make_cluster("two_nodes.yaml", "vxlan") as cluster:
        address = cluster.pod("web-1").ip
        cluster.delete_pod("web-1")
        assert cluster.former_pod("web-1") is not None and cluster.former_pod("client-0") is None
        result = _trace(cluster, "client-0", "web-1")
        assert f"pod web-1 is not running: tracing to the address it had, {address}" in result.notes
        assert not result.ok
        with pytest.raises(EmuError, match="not running"):
            _trace(cluster, "web-1", "client-0")


@requires_root
@requires_matplotlib
@pytest.mark.root
def test_live_cli_json_and_diagram(tmp_path: Path) -> None:
    diagram = tmp_path / "trace.svg"
    topology = ROOT / "labs" / "3-cross-node" / "topology.yaml"
    proc = subprocess.run(
        [sys.executable, "-m", "emu", "trace", str(topology), "client", "web", "--format", "json",
         "--diagram", str(diagram)],
        cwd=str(ROOT), capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr + proc.stdout
    data = json.loads(proc.stdout)
    assert data["format"] == "emu-trace/v1" and data["ok"] is True and data["first_not_seen"] is None
    assert [h["step"] for h in data["hops"]] == CROSS_NODE_STEPS["vxlan"]
    assert all(h["seen"] for h in data["hops"])
    assert diagram.is_file() and diagram.read_text().lstrip().startswith("<?xml")


# ------------------------------------------------------------------------------------- kube-proxy's nftables mode


def test_pod_to_service_in_nftables_mode() -> None:
    """The same walk, kube-proxy's nftables rules deciding: the verdict map, numgen, the endpoint chain."""
    from emu.plan.build import build_plan
    from emu.proxy import nftables as kubeproxy_nft

    plan = build_plan(plan_of("vxlan").spec, proxy_mode="nftables")
    described = kubeproxy_nft.describe([_kube(plan)])[0]
    for endpoint in described["endpoints"]:
        p = predict(plan, "client-0", "web", endpoint=endpoint["pod"])
        hop = next(h for h in p.hops if h.step == "kube-proxy")
        assert hop.service.proxy_mode == "nftables" and hop.service.sep_chain == endpoint["sep_chain"]
        assert f"@service-ips {p.service.cluster_ip} . tcp . 80 -> goto" in hop.action
        assert f"goto {described['svc_chain']} -> numgen random mod 2 = {endpoint['index']}" in hop.action
        assert f"goto {endpoint['sep_chain']} (share 1/2) DNAT to {endpoint['dnat']}" in hop.action
        assert p.hops[-1].step == "deliver" and p.hops[-1].location == endpoint["pod"]
    other_port = predict(plan, "client-0", "web:81")
    assert not other_port.delivered and "cluster-ips-check" in other_port.hops[-2].action
    assert "rejected: Service web has no port 81/tcp" in other_port.hops[-1].action


@requires_root
@pytest.mark.root
def test_live_service_in_nftables_mode_reads_the_counters_it_puts_and_takes_them_away() -> None:
    import dataclasses
    import os

    from conftest import load_spec

    from emu.controller import Cluster
    from emu.plan.build import build_plan
    from emu.plan.nftables import normalize_listing, render

    spec = load_spec("two_nodes.yaml", "vxlan", name=f"trace-nft-{os.getpid()}")
    with Cluster(build_plan(dataclasses.replace(spec), proxy_mode="nftables")) as cluster:
        result = _trace(cluster, "client-0", "web")
        assert result.ok, _explain(result)
        hop = next(h for h in result.hops if h.hop.step == "kube-proxy")
        assert hop.evidence.startswith(f"nft counters: {hop.hop.service.svc_chain} +1;"), hop.evidence
        assert f"{result.prediction.service.sep_chain} +1" in hop.evidence
        for node in cluster.nodes:  # the counter rules are gone again
            table = cluster.plan.node(node.name).nftables[0]
            listed = node.exec(["nft", "list", "table", "ip", "kube-proxy"])
            assert normalize_listing(listed.stdout) == normalize_listing(render(table))
