"""Cluster DNS, pure: the spec's DNS fields, the records the plan gives each DNS pod, the kubelet's resolv.conf.

No root: these read topologies and plan them. The live server answering the same records is tests/test_live_dns.py.
"""

import textwrap
from pathlib import Path
from typing import Dict, List, Set, Tuple

import pytest

from emu.addons.dns.records import Record, dnsmasq_conf, hosts_file
from emu.plan.build import build_plan
from emu.plan.changes import replan
from emu.plan.resolv import kubelet_resolv_conf
from emu.spec.errors import SpecError
from emu.spec.load import load
from emu.spec.model import DnsConfig

ROOT = Path(__file__).resolve().parent.parent
DNS_TOPOLOGY = ROOT / "topologies" / "dns.yaml"


def records_of(plan) -> Set[Tuple[str, str, str]]:  # type: ignore[no-untyped-def]
    return {(r.name, r.type, r.data) for r in plan.addon("dns").records}


@pytest.fixture(scope="module")
def dns_plan():  # type: ignore[no-untyped-def]
    spec, _ = load([str(DNS_TOPOLOGY)])
    return build_plan(spec)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_kube_dns_is_a_kube_system_deployment_of_two_spread_pods_behind_the_tenth_service_address(dns_plan) -> None:  # type: ignore[no-untyped-def]
    fragment = dns_plan.addon("dns")
    service = next(s for s in dns_plan.services if s.name == "kube-dns")
    assert (service.namespace, service.cluster_ip) == ("kube-system", "10.96.0.10")
    assert {(p.protocol, p.port) for p in service.ports} == {("UDP", 53), ("TCP", 53)}
    assert [s.pod for s in fragment.servers] == ["kube-dns-0", "kube-dns-1"]
    assert len({s.node for s in fragment.servers}) == 2  # spread over two nodes
    assert {e.pod for p in service.ports for e in p.endpoints} == {"kube-dns-0", "kube-dns-1"}
    dns_pod = dns_plan.pod("kube-dns-0")
    assert dns_pod.namespace == "kube-system" and dns_pod.resolv_conf == ""  # dnsPolicy Default
    assert dns_pod.containers[0].argv[:3] == ("python3", "-m", "emu.addons.dns.nanny")


def test_dns_pods_come_after_the_users_pods(dns_plan) -> None:  # type: ignore[no-untyped-def]
    names = [p.name for p in dns_plan.pods]
    assert names[-2:] == ["kube-dns-0", "kube-dns-1"]
    assert dns_plan.pod("client-node-1").ip == "10.244.1.2"  # the first address, as without cluster DNS


@pytest.mark.parametrize(
    "record",
    [
        ("dns-version.cluster.local", "TXT", '"1.1.0"'),
        ("web.default.svc.cluster.local", "A", "10.96.0.11"),
        ("11.0.96.10.in-addr.arpa", "PTR", "web.default.svc.cluster.local."),
        ("_http._tcp.web.default.svc.cluster.local", "SRV", "0 100 80 web.default.svc.cluster.local."),
        ("api.other.svc.cluster.local", "A", "10.96.0.12"),
        ("search.default.svc.cluster.local", "CNAME", "www.example.com."),
        ("db.default.svc.cluster.local", "A", "10.244.1.4"),
        ("db.default.svc.cluster.local", "A", "10.244.3.3"),
        ("db-0.db.default.svc.cluster.local", "A", "10.244.1.4"),
        ("4.1.244.10.in-addr.arpa", "PTR", "db-0.db.default.svc.cluster.local."),
        ("_postgres._tcp.db.default.svc.cluster.local", "SRV", "0 100 5432 db-2.db.default.svc.cluster.local."),
        ("10-244-1-2.default.pod.cluster.local", "A", "10.244.1.2"),
        ("10-244-1-5.other.pod.cluster.local", "A", "10.244.1.5"),
        ("kube-dns.kube-system.svc.cluster.local", "A", "10.96.0.10"),
    ],
)
def test_every_record_form_of_the_specification_is_planned(dns_plan, record) -> None:  # type: ignore[no-untyped-def]
    assert record in records_of(dns_plan)


def test_what_must_not_exist_does_not(dns_plan) -> None:  # type: ignore[no-untyped-def]
    names = {name for name, _type, _data in records_of(dns_plan)}
    assert not any(n.startswith("db.default") and t != "A" for n, t, _ in records_of(dns_plan))  # no ClusterIP PTR
    assert "api.default.svc.cluster.local" not in names  # a Service exists only in its own namespace
    assert not any(".node-3." in n or "192-168" in n for n in names)  # no record for the hostNetwork pod
    srv = [r for r in records_of(dns_plan) if r[1] == "SRV" and ".api." in r[0]]
    assert srv == []  # an unnamed port has no SRV record


def test_every_address_has_one_ptr_and_the_hosts_file_lists_it_first(dns_plan) -> None:  # type: ignore[no-untyped-def]
    records = dns_plan.addon("dns").records
    ptrs: Dict[str, List[str]] = {}
    for r in records:
        if r.type == "PTR":
            ptrs.setdefault(r.name, []).append(r.data)
    assert all(len(targets) == 1 for targets in ptrs.values())
    first: Dict[str, str] = {}
    for line in hosts_file(records).splitlines():
        ip, name = line.split("\t")
        first.setdefault(ip, name)
    assert first["10.244.1.4"] == "db-0.db.default.svc.cluster.local"  # not db.default.svc..., not the pod name
    assert first["10.96.0.11"] == "web.default.svc.cluster.local"


def test_dnsmasq_conf_holds_the_srv_cname_txt_and_the_local_zones(dns_plan) -> None:  # type: ignore[no-untyped-def]
    conf = dnsmasq_conf(dns_plan.addon("dns").records, "cluster.local").splitlines()
    assert "local=/cluster.local/" in conf and "local=/in-addr.arpa/" in conf
    assert "srv-host=_http._tcp.web.default.svc.cluster.local,web.default.svc.cluster.local,80,0,100" in conf
    assert "cname=search.default.svc.cluster.local,www.example.com" in conf
    assert "txt-record=dns-version.cluster.local,1.1.0" in conf
    assert not any(line.startswith(("server=", "address=")) for line in conf)  # nothing is forwarded


def test_records_follow_the_pods(dns_plan) -> None:  # type: ignore[no-untyped-def]
    spec = dns_plan.spec
    gone = type(spec)(**{**spec.__dict__, "pods": tuple(p for p in spec.pods if p.name != "db-1")})
    after = records_of(replan(dns_plan, gone))
    assert ("db-1.db.default.svc.cluster.local", "A", "10.244.2.4") in records_of(dns_plan)
    assert not any("db-1" in name or data == "10.244.2.4" for name, _t, data in after)
    assert ("db.default.svc.cluster.local", "A", "10.244.1.4") in after


def test_resolv_conf_per_dns_policy(dns_plan) -> None:  # type: ignore[no-untyped-def]
    assert dns_plan.pod("api-0").resolv_conf == (
        "nameserver 10.96.0.10\nsearch other.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
    )
    assert dns_plan.pod("tools").resolv_conf == (
        "nameserver 10.96.0.10\nsearch other.svc.cluster.local\noptions ndots:2 edns0\n"
    )
    assert dns_plan.pod("agent").resolv_conf == ""  # hostNetwork: the node's resolver


@pytest.mark.parametrize(
    "policy,host_network,config,cluster_dns,expected",
    [
        ("ClusterFirst", False, None, None, ""),  # no cluster DNS: the kubelet falls back to Default
        ("Default", False, None, "10.96.0.10", ""),
        ("ClusterFirst", True, None, "10.96.0.10", ""),
        (
            "ClusterFirstWithHostNet",
            True,
            None,
            "10.96.0.10",
            "nameserver 10.96.0.10\nsearch ns.svc.z svc.z z\noptions ndots:5\n",
        ),
        (
            "ClusterFirst",
            False,
            DnsConfig(("192.0.2.1", "192.0.2.2", "192.0.2.3"), ("svc.z", "extra.example"), (("ndots", "2"),)),
            "10.96.0.10",
            "nameserver 10.96.0.10\nnameserver 192.0.2.1\nnameserver 192.0.2.2\n"
            "search ns.svc.z svc.z z extra.example\noptions ndots:2\n",
        ),
        ("Default", False, DnsConfig(("192.0.2.1",), (), ()), "10.96.0.10", "nameserver 192.0.2.1\n"),
    ],
)
def test_kubelet_resolv_conf(policy, host_network, config, cluster_dns, expected) -> None:  # type: ignore[no-untyped-def]
    assert kubelet_resolv_conf("ns", policy, host_network, config, cluster_dns, "z") == expected


def test_cluster_domain_and_disabling(tmp_path: Path) -> None:
    text = """\
        apiVersion: emu/v1
        kind: Cluster
        name: zone
        network: {{clusterDomain: corp.example, serviceCIDR: 10.100.0.0/16}}
        nodes: [node-1]
        {addons}
        ---
        apiVersion: v1
        kind: Pod
        metadata: {{name: app, labels: {{app: a}}}}
        spec: {{containers: [{{name: app}}]}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {{name: app}}
        spec: {{selector: {{app: a}}, ports: [{{port: 80}}]}}
        """
    spec, _ = load([str(write(tmp_path, text.format(addons="")))])
    plan = build_plan(spec)
    app_ip = next(s.cluster_ip for s in plan.services if s.name == "app")
    assert ("app.default.svc.corp.example", "A", app_ip) in records_of(plan)
    assert plan.pod("app").resolv_conf.splitlines()[:2] == [
        "nameserver 10.100.0.10",
        "search default.svc.corp.example svc.corp.example corp.example",
    ]
    spec, _ = load([str(write(tmp_path, text.format(addons="addons: {dns: false}")))])
    plan = build_plan(spec)
    assert plan.addon("dns") is None and [p.name for p in plan.pods] == ["app"]
    assert [s.name for s in plan.services] == ["app"] and plan.pod("app").resolv_conf == ""


def test_headless_without_ready_pods_has_no_name_and_a_statefulset_names_its_pods(tmp_path: Path) -> None:
    text = """\
        apiVersion: emu/v1
        kind: Cluster
        name: sts
        nodes: [node-1, node-2]
        ---
        apiVersion: apps/v1
        kind: StatefulSet
        metadata: {name: kv, namespace: data}
        spec:
          serviceName: kv
          replicas: 2
          selector: {matchLabels: {app: kv}}
          template:
            metadata: {labels: {app: kv}}
            spec: {containers: [{name: kv}]}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: kv, namespace: data}
        spec: {clusterIP: None, selector: {app: kv}}
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: empty}
        spec: {clusterIP: None, selector: {app: nothing}}
        """
    spec, warnings = load([str(write(tmp_path, text))])
    plan = build_plan(spec)
    kv0 = plan.pod("kv-0")
    assert (kv0.hostname, kv0.subdomain) == ("kv-0", "kv")
    assert "kv-0.kv.data.svc.cluster.local\tkv-0" in kv0.hosts_file
    names = {name for name, _t, _d in records_of(plan)}
    assert {"kv.data.svc.cluster.local", "kv-0.kv.data.svc.cluster.local", "kv-1.kv.data.svc.cluster.local"} <= names
    assert not any(n.startswith("empty.") for n in names)  # no ready endpoint: NXDOMAIN
    assert next(s for s in plan.services if s.name == "kv").cluster_ip == "None"
    assert "KV_SERVICE_HOST" not in str(plan.pod("kv-0").containers[0].env)


def test_headless_and_external_name_services_get_no_kube_proxy_rules(dns_plan) -> None:  # type: ignore[no-untyped-def]
    rules = dns_plan.node("node-1").iptables
    assert "default/db" not in rules and "default/search" not in rules
    assert "default/web:http" in rules and "kube-system/kube-dns:dns" in rules


def test_a_users_service_cannot_take_the_cluster_dns_address(tmp_path: Path) -> None:
    text = """\
        apiVersion: emu/v1
        kind: Cluster
        name: clash
        nodes: [node-1]
        ---
        apiVersion: v1
        kind: Service
        metadata: {name: mine}
        spec: {clusterIP: 10.96.0.10, selector: {app: x}, ports: [{port: 53}]}
        """
    with pytest.raises(SpecError) as exc:
        load([str(write(tmp_path, text))])
    lines = [str(p) for p in exc.value.errors]
    assert any(":9: spec.clusterIP: 10.96.0.10 is kept for cluster DNS" in line for line in lines), lines


def test_plan_text_shows_the_records_each_dns_pod_serves(dns_plan) -> None:  # type: ignore[no-untyped-def]
    from emu.plan.render import to_text

    text = to_text(dns_plan, iptables=False)
    assert "cluster DNS: zone cluster.local, Service kube-system/kube-dns 10.96.0.10:53 (UDP, TCP)" in text
    assert "    _postgres._tcp.db.default.svc.cluster.local. 5 IN SRV 0 100 5432 db-0.db.default.svc.cluster.local." in text
    assert str(Record("a.b", "A", "1.2.3.4")) == "a.b. 5 IN A 1.2.3.4"


def test_trace_to_a_service_name_predicts_the_dns_exchange_first(dns_plan) -> None:  # type: ignore[no-untyped-def]
    from emu.trace.dns import exchange, search_order

    found = exchange(dns_plan, "client-node-1", "web")
    assert found is not None
    assert (found.queries, found.answer) == (("web.default.svc.cluster.local",), "10.96.0.11")
    assert found.query.proto == "udp" and found.query.port == 53 and found.query.dst.name == "kube-dns"
    assert found.query.delivered and found.query.target.name in ("kube-dns-0", "kube-dns-1")
    other = exchange(dns_plan, "client-node-1", "api.other")
    assert other is not None and other.queries == ("api.other.default.svc.cluster.local", "api.other.svc.cluster.local")
    assert exchange(dns_plan, "client-node-1", "web-0") is None  # a pod name: no lookup
    assert exchange(dns_plan, "agent", "web") is None  # hostNetwork: the node's resolver
    assert search_order("example.com", ["a.b", "b"], 5) == ["example.com.a.b", "example.com.b", "example.com"]
    assert search_order("a.b.c.d.e.f", ["x"], 5) == ["a.b.c.d.e.f", "a.b.c.d.e.f.x"]
    assert search_order("web.default.svc.cluster.local.", ["x"], 5) == ["web.default.svc.cluster.local"]
