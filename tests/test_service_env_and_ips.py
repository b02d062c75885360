"""Service environment variables and ClusterIPs, as the kubelet and the API server make them (pure, no root).

- A container's environment holds, for every Service of its pod's namespace (unless ``enableServiceLinks:
  false``) and always for the ``kubernetes`` Service, ``X_SERVICE_HOST``, ``X_SERVICE_PORT``,
  ``X_SERVICE_PORT_<NAME>`` and Docker's link family ``X_PORT``, ``X_PORT_<P>_<PROTO>`` with ``_PROTO``,
  ``_PORT``, ``_ADDR``: exactly the kubelet's set, nothing of other namespaces.
- ClusterIPs: a requested one is honoured; .1 (kubernetes) and .10 (cluster DNS) are never handed out; the
  tenth may be asked for by kube-system/kube-dns only; the others come from the upper band at an offset of the
  Service's own, the same from one run to the next and whatever other Services exist; a running cluster's
  Services keep their addresses and node ports when others go. Bad requests are located errors.
"""

import dataclasses
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import List

import pytest

from emu.plan import ipam
from emu.plan.build import build_plan
from emu.plan.services import pod_env, service_env
from emu.spec.errors import SpecError
from emu.spec.load import load

CLUSTER = """\
apiVersion: emu/v1
kind: Cluster
name: envs
network: {{serviceCIDR: {cidr}}}
nodes: [node-1]
addons: {{dns: false}}  # the Services of each test only (cluster DNS would add kube-dns)
"""

POD = """\
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}
spec:
  {extra}containers: [{{name: c, command: [sleep, infinity], ports: [{{containerPort: 8080, name: http}}]}}]
"""

SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  {extra}selector: {{app: web}}
  ports: [{ports}]
"""


def cluster(tmp_path: Path, docs: List[str], cidr: str = "10.96.0.0/12") -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(CLUSTER.format(cidr=cidr) + "".join(docs))
    return path


def pod(name: str, ns: str = "default", extra: str = "") -> str:
    return POD.format(name=name, ns=ns, extra=extra)


def service(name: str, ns: str = "default", ports: str = "{port: 80, targetPort: http}", extra: str = "") -> str:
    return SERVICE.format(name=name, ns=ns, ports=ports, extra=extra)


def plan_of(path: Path):  # type: ignore[no-untyped-def]
    spec, _ = load([str(path)])
    return build_plan(spec)


def test_the_variables_of_a_multi_port_service_are_the_kubelets(tmp_path: Path) -> None:
    ports = "{name: http, port: 80, targetPort: http}, {name: dns-udp, port: 53, protocol: UDP, targetPort: 53}"
    plan = plan_of(cluster(tmp_path, [pod("web"), service("my-svc", ports=ports)]))
    ip = plan.services[0].cluster_ip
    assert service_env(plan.services) == {
        "MY_SVC_SERVICE_HOST": ip,
        "MY_SVC_SERVICE_PORT": "80",
        "MY_SVC_SERVICE_PORT_HTTP": "80",
        "MY_SVC_SERVICE_PORT_DNS_UDP": "53",
        "MY_SVC_PORT": f"tcp://{ip}:80",
        "MY_SVC_PORT_80_TCP": f"tcp://{ip}:80",
        "MY_SVC_PORT_80_TCP_PROTO": "tcp",
        "MY_SVC_PORT_80_TCP_PORT": "80",
        "MY_SVC_PORT_80_TCP_ADDR": ip,
        "MY_SVC_PORT_53_UDP": f"udp://{ip}:53",
        "MY_SVC_PORT_53_UDP_PROTO": "udp",
        "MY_SVC_PORT_53_UDP_PORT": "53",
        "MY_SVC_PORT_53_UDP_ADDR": ip,
    }


def test_a_pod_gets_its_namespaces_services_and_the_kubernetes_service(tmp_path: Path) -> None:
    docs = [pod("web"), pod("other", "shop"), pod("quiet", extra="enableServiceLinks: false\n  "),
            service("web"), service("cart", "shop")]
    plan = plan_of(cluster(tmp_path, docs))
    master = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
              "KUBERNETES_SERVICE_PORT_HTTPS": "443", "KUBERNETES_PORT": "tcp://10.96.0.1:443",
              "KUBERNETES_PORT_443_TCP": "tcp://10.96.0.1:443", "KUBERNETES_PORT_443_TCP_PROTO": "tcp",
              "KUBERNETES_PORT_443_TCP_PORT": "443", "KUBERNETES_PORT_443_TCP_ADDR": "10.96.0.1"}
    web = pod_env(plan, plan.pod("web"))
    assert master.items() <= web.items() and "WEB_SERVICE_HOST" in web and "CART_SERVICE_HOST" not in web
    other = pod_env(plan, plan.pod("other"))
    assert master.items() <= other.items() and "CART_PORT" in other and "WEB_SERVICE_HOST" not in other
    assert pod_env(plan, plan.pod("quiet")) == master


def test_cluster_ips_are_the_api_servers(tmp_path: Path) -> None:
    docs = [pod("web")] + [service(f"s{i}") for i in range(30)]
    plan = plan_of(cluster(tmp_path, docs))
    ips = [IPv4Address(s.cluster_ip) for s in plan.services]
    assert len(set(ips)) == 30
    assert all(ip in IPv4Network("10.96.0.0/12") and ip >= IPv4Address("10.96.1.0") for ip in ips)  # upper band
    again = plan_of(cluster(tmp_path, docs[:1] + docs[:0:-1]))  # the same Services, the other way round
    assert {s.name: s.cluster_ip for s in again.services} == {s.name: s.cluster_ip for s in plan.services}
    alone = plan_of(cluster(tmp_path, [pod("web"), service("s7")]))
    assert alone.services[0].cluster_ip == next(s.cluster_ip for s in plan.services if s.name == "s7")


def test_the_first_and_tenth_addresses_are_never_handed_out() -> None:
    cidr = IPv4Network("10.96.0.0/28")  # 14 addresses, no static band: every one can be allocated
    ips = ipam.cluster_ips(cidr, [(f"default/s{i}", None) for i in range(12)])
    assert sorted(ips) == [ip for ip in cidr.hosts() if ip not in (IPv4Address("10.96.0.1"), IPv4Address("10.96.0.10"))]
    assert ipam.static_band(IPv4Network("10.96.0.0/12")) == 256
    assert ipam.static_band(IPv4Network("10.96.0.0/24")) == 16
    assert ipam.static_band(IPv4Network("10.96.0.0/20")) == 256


def test_cluster_dns_may_ask_for_the_tenth_address(tmp_path: Path) -> None:
    docs = [pod("web"), service("kube-dns", "kube-system", "{name: dns, port: 53, protocol: UDP}",
                                "clusterIP: 10.96.0.10\n  ")]
    plan = plan_of(cluster(tmp_path, docs))
    assert plan.services[0].cluster_ip == "10.96.0.10"


@pytest.mark.parametrize(
    "name,ns,ip,expected",
    [
        ("web", "default", "10.96.0.10", "spec.clusterIP: 10.96.0.10 is kept for cluster DNS (the kube-system/kube-dns"),
        ("kube-dns", "default", "10.96.0.10", "is kept for cluster DNS"),
        ("web", "default", "10.96.0.1", "spec.clusterIP: 10.96.0.1 is reserved for the kubernetes Service"),
        ("web", "default", "10.0.0.5", "spec.clusterIP: 10.0.0.5 is not in serviceCIDR 10.96.0.0/12"),
        ("kubernetes", "default", "", "metadata.name: default/kubernetes is the API server's own Service"),
    ],
)
def test_bad_cluster_ips_are_located_errors(tmp_path: Path, name: str, ns: str, ip: str, expected: str) -> None:
    extra = f"clusterIP: {ip}\n  " if ip else ""
    path = cluster(tmp_path, [pod("web"), service(name, ns, extra=extra)])
    with pytest.raises(SpecError) as exc:
        load([str(path)])
    lines = [str(p) for p in exc.value.errors]
    assert any(expected in line and f"{path}:" in line for line in lines), lines


def test_a_duplicate_cluster_ip_names_the_other_service(tmp_path: Path) -> None:
    docs = [pod("web"), service("a", extra="clusterIP: 10.96.0.50\n  "), service("b", extra="clusterIP: 10.96.0.50\n  ")]
    with pytest.raises(SpecError) as exc:
        load([str(cluster(tmp_path, docs))])
    assert any("10.96.0.50 is already Service default/a's" in str(p) for p in exc.value.errors)


def test_running_services_keep_their_addresses_and_node_ports(tmp_path: Path) -> None:
    """A tiny range, so that allocations collide: without memory, deleting one Service would move another."""
    docs = [pod("web")] + [service(f"s{i}", extra="type: NodePort\n  ") for i in range(8)]
    path = cluster(tmp_path, docs, cidr="10.96.0.0/28")
    spec, _ = load([str(path)])
    plan = build_plan(spec)
    from emu.plan.changes import replan

    for gone in range(8):
        smaller = dataclasses.replace(spec, services=tuple(s for i, s in enumerate(spec.services) if i != gone))
        after = {(s.name, s.cluster_ip, s.ports[0].node_port) for s in replan(plan, smaller).services}
        before = {(s.name, s.cluster_ip, s.ports[0].node_port) for s in plan.services if s.name != f"s{gone}"}
        assert after == before
