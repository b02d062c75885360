"""The Plan layer: flannel's counts as invariants, IPAM, names, MTUs, determinism, purity (no root needed)."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from ipaddress import IPv4Address, IPv4Network, ip_interface
from pathlib import Path

import pytest

from emu.plan import ipam, names
from emu.plan.build import build_plan
from emu.plan.render import to_json, to_text
from emu.spec.load import load

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ("vxlan", "host-gw", "udp")


def cluster_yaml(nodes: int, backend: str = "vxlan", pods_per_node: int = 2, extra: str = "") -> str:
    node_list = "\n".join(f"  - name: node-{i + 1}" for i in range(nodes))
    return textwrap.dedent(
        f"""\
        apiVersion: emu/v1
        kind: Cluster
        name: test-{nodes}
        network:
          backend: {{Type: {backend}}}
        addons: {{dns: false}}
        nodes:
        """
    ) + node_list + textwrap.dedent(
        f"""
        ---
        apiVersion: apps/v1
        kind: Deployment
        metadata: {{name: web}}
        spec:
          replicas: {nodes * pods_per_node}
          selector: {{matchLabels: {{app: web}}}}
          template:
            metadata: {{labels: {{app: web}}}}
            spec:
              containers:
                - name: http
                  command: ["python3", "-m", "http.server", "8080"]
                  ports: [{{containerPort: 8080}}]
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: web}}
        spec:
          selector: {{app: web}}
          ports: [{{port: 80, targetPort: 8080}}]
        """
    ) + extra


def plan_for(tmp_path: Path, text: str, backend=None):  # type: ignore[no-untyped-def]
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    spec, _ = load([str(path)])
    return build_plan(spec, backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("nodes", range(2, 11))
def test_flannel_counts_per_node(tmp_path: Path, nodes: int, backend: str) -> None:
    """flannel vxlan: '1 route, 1 arp entry and 1 FDB entry per host'; host-gw: 1 route per remote host;
    udp: 1 route for the whole Network and a daemon table entry per remote host."""
    plan = plan_for(tmp_path, cluster_yaml(nodes, backend))
    for node in plan.nodes:
        remote = [n for n in plan.nodes if n.name != node.name]
        if backend == "vxlan":
            assert len(node.routes) == nodes - 1
            assert len(node.neighbours) == nodes - 1
            assert len(node.fdb) == nodes - 1
            for other in remote:
                gateway = str(IPv4Network(other.subnet).network_address)
                route = next(r for r in node.routes if r.dst == other.subnet)
                assert (route.via, route.dev, route.onlink) == (gateway, "flannel.1", True)
                vtep = next(d for d in other.devices if d.kind == "vxlan")
                assert any(n.ip == gateway and n.lladdr == vtep.mac for n in node.neighbours)
                assert any(f.lladdr == vtep.mac and f.dst == other.ip for f in node.fdb)
            vxlan = [d for d in node.devices if d.kind == "vxlan"]
            assert [d.name for d in vxlan] == ["flannel.1"]
            assert vxlan[0].addresses == (f"{IPv4Network(node.subnet).network_address}/32",)
            assert vxlan[0].option("learning") == "off" and vxlan[0].option("dstport") == "8472"
        elif backend == "host-gw":
            assert len(node.routes) == nodes - 1
            assert not node.neighbours and not node.fdb
            assert {(r.dst, r.via, r.dev) for r in node.routes} == {(o.subnet, o.ip, "eth0") for o in remote}
        else:
            assert [str(r) for r in node.routes] == [f"{plan.pod_cidr} dev flannel0"]
            assert node.udp is not None and len(node.udp.table) == nodes - 1
            assert dict(node.udp.table) == {o.subnet: o.ip for o in remote}
            assert node.udp.port == 8285


def test_leases_skip_the_first_subnet_and_bridge_gets_dot_one(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, cluster_yaml(3))
    assert [n.subnet for n in plan.nodes] == ["10.244.1.0/24", "10.244.2.0/24", "10.244.3.0/24"]
    for node in plan.nodes:
        bridge = next(d for d in node.devices if d.name == "cni0")
        assert bridge.addresses == (f"{IPv4Network(node.subnet).network_address + 1}/24",)
        assert f"FLANNEL_SUBNET={IPv4Network(node.subnet).network_address + 1}/24" in node.subnet_env
        pods = plan.pods_on(node.name)
        first = IPv4Network(node.subnet).network_address + 2
        assert [p.ip for p in pods] == [str(first + i) for i in range(len(pods))]


@pytest.mark.parametrize("backend,mtu", [("vxlan", 1450), ("udp", 1472), ("host-gw", 1500)])
def test_pod_mtu_per_backend(tmp_path: Path, backend: str, mtu: int) -> None:
    plan = plan_for(tmp_path, cluster_yaml(2), backend)
    assert plan.pod_mtu == mtu
    assert {p.mtu for p in plan.pods} == {mtu}
    assert all(f"FLANNEL_MTU={mtu}" in n.subnet_env for n in plan.nodes)


def test_direct_routing_uses_plain_routes_on_one_l2_network(tmp_path: Path) -> None:
    text = cluster_yaml(3).replace("backend: {Type: vxlan}", "backend: {Type: vxlan, DirectRouting: true}")
    plan = plan_for(tmp_path, text)
    for node in plan.nodes:
        assert all(r.dev == "eth0" and not r.onlink for r in node.routes)
        assert not node.neighbours and not node.fdb


def test_pod_routes_follow_flannels_cni_config(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, cluster_yaml(2))
    for pod in plan.pods:
        assert [(r.dst, r.via) for r in pod.routes] == [("default", pod.gateway), (plan.pod_cidr, pod.gateway)]
        assert pod.mac == names.mac_from_ip(IPv4Address(pod.ip))


def test_names_fit_ifnamsiz_and_are_unique(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, cluster_yaml(10, pods_per_node=20))
    veths = [p.host_veth for p in plan.pods]
    assert len(set(veths)) == len(veths)
    every = veths + [plan.switch] + [n.link.switch_port for n in plan.nodes]
    assert all(names.valid_ifname(n) and len(n.encode()) <= 15 for n in every)
    assert all(n.link.switch_port.startswith(plan.tag) for n in plan.nodes)
    macs = [p.mac for p in plan.pods] + [p.host_veth_mac for p in plan.pods]
    assert len(set(macs)) == len(macs)


def test_plan_is_deterministic_byte_for_byte(tmp_path: Path) -> None:
    text = cluster_yaml(4)
    first = plan_for(tmp_path, text)
    second = plan_for(tmp_path, text)
    assert to_json(first) == to_json(second)
    assert to_text(first) == to_text(second)
    # and in a fresh interpreter (no hash randomisation leaks in)
    path = tmp_path / "cluster.yaml"
    outputs = [
        subprocess.run(
            [sys.executable, "-m", "emu", "plan", str(path), "--format", "json"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        for seed in ("1", "2")
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["format"] == "emu-plan/v1"


def test_ipam_edge_cases() -> None:
    assert ipam.node_subnets(IPv4Network("10.244.0.0/16"), 24, 2) == [
        IPv4Network("10.244.1.0/24"),
        IPv4Network("10.244.2.0/24"),
    ]
    with pytest.raises(ipam.IpamError):
        ipam.node_subnets(IPv4Network("10.244.0.0/23"), 24, 2)  # only one subnet after the skipped first
    with pytest.raises(ipam.IpamError):
        ipam.node_subnets(IPv4Network("10.244.0.0/24"), 24, 1)
    pool = ipam.HostLocal(IPv4Network("10.244.1.0/30"))
    assert pool.allocate() == IPv4Address("10.244.1.2")
    with pytest.raises(ipam.IpamError):
        pool.allocate()  # .3 is the broadcast address
    with pytest.raises(ipam.IpamError):
        ipam.gateway(IPv4Network("10.244.1.0/31"))
    cidr = IPv4Network("10.96.0.0/12")
    ips = ipam.cluster_ips(cidr, [("default/a", None), ("default/b", IPv4Address("10.96.0.20")), ("default/c", None)])
    assert ips[1] == IPv4Address("10.96.0.20") and all(ip >= IPv4Address("10.96.1.0") for ip in ips[::2])
    with pytest.raises(ipam.IpamError):  # 14 addresses, less kubernetes' and cluster DNS's
        ipam.cluster_ips(IPv4Network("10.96.0.0/28"), [(f"default/s{i}", None) for i in range(13)])


def test_services_get_endpoints_and_cluster_ips(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, cluster_yaml(3))
    (service,) = plan.services
    assert IPv4Address(service.cluster_ip) in IPv4Network("10.96.0.0/12")
    assert IPv4Address(service.cluster_ip) >= IPv4Address("10.96.1.0")  # the API server's dynamic band
    endpoints = service.ports[0].endpoints
    assert sorted(e.ip for e in endpoints) == sorted(p.ip for p in plan.pods)
    assert {e.port for e in endpoints} == {8080}
    for node in plan.nodes:
        assert "KUBE-SVC-" in node.iptables and "FLANNEL-POSTRTG" in node.iptables
        assert node.iptables.count("-j DNAT --to-destination") == len(endpoints)


def test_flannel_masquerade_rules_name_the_node_subnet(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, cluster_yaml(2))
    for node in plan.nodes:
        assert f"-A FLANNEL-POSTRTG -s {node.subnet} -d {plan.pod_cidr}" in node.iptables
        assert f"-A FLANNEL-FWD -s {plan.pod_cidr}" in node.iptables


@pytest.mark.root
@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("iptables-restore"), reason="needs root and iptables")
def test_every_node_document_is_accepted_by_iptables_restore(tmp_path: Path) -> None:
    for backend in BACKENDS:
        plan = plan_for(tmp_path, cluster_yaml(3), backend)
        for node in plan.nodes:
            result = subprocess.run(
                ["unshare", "--net", "iptables-restore", "--test"],
                input=node.iptables,
                text=True,
                stderr=subprocess.PIPE,
            )
            assert result.returncode == 0, result.stderr


def test_shipped_topologies_plan_in_every_backend() -> None:
    for path in sorted((ROOT / "topologies").glob("*.yaml")):
        spec, _ = load([str(path)])
        for backend in BACKENDS:
            plan = build_plan(spec, backend)
            assert len(plan.nodes) == len(spec.nodes)
            assert all(ip_interface(n.link.address).ip == IPv4Address(n.ip) for n in plan.nodes)


def test_spec_and_plan_layers_do_not_import_mininet_or_run_commands() -> None:
    code = (
        "import sys, subprocess\n"
        "calls = []\n"
        "subprocess.Popen.__init__ = lambda *a, **k: calls.append(a)\n"
        "from emu.spec.load import load\n"
        "from emu.plan.build import build_plan\n"
        "from emu.plan.render import to_text, to_json\n"
        "spec, _ = load(['topologies/two_nodes.yaml'])\n"
        "plan = build_plan(spec)\n"
        "to_text(plan); to_json(plan)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('mininet', 'emu') and "
        "(m.startswith('mininet') or m.startswith('emu.apply'))]\n"
        "assert not bad, bad\n"
        "assert not calls, calls\n"
        "print('pure')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "pure"
