"""The kube-proxy plan against the kernel: load each rendered document into a fresh network namespace with
iptables-restore and check that iptables-save prints back exactly the plan (modulo comments and counters).

Needs root and iptables (the nf_tables flavour, 1.8.x, is what emu targets); skipped otherwise. Every
namespace is named emutest-kp-<pid>-<n> and deleted in teardown, even when a test fails.
"""

import itertools
import os
import shutil
import subprocess
from typing import Dict, Iterator, List

import pytest
from conftest import root_fixture

from emu.plan.iptables import normalize_save, parse_save, render_restore
from emu.proxy.iptables import Endpoint, Service, ServicePort, kube_proxy_tables

CIDR = "10.244.0.0/16"
NODE_IP = "192.168.56.11"


def _missing() -> str:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: loads iptables rules into a new network namespace"
    for tool in ("ip", "iptables-restore", "iptables-save"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install iptables iproute2)"
    return ""


pytestmark = [pytest.mark.skipif(bool(_missing()), reason=_missing() or "ok"), pytest.mark.root]

_counter = itertools.count()


def run(argv: List[str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)


@root_fixture()
def netns() -> Iterator[str]:
    name = f"emutest-kp-{os.getpid()}-{next(_counter)}"
    made = run(["ip", "netns", "add", name])
    if made.returncode != 0:
        pytest.skip(f"cannot create a network namespace here: {made.stderr.strip()}")
    try:
        yield name
    finally:
        run(["ip", "netns", "delete", name])


def restore(ns: str, document: str, *extra: str) -> subprocess.CompletedProcess:
    return run(["ip", "netns", "exec", ns, "iptables-restore", *extra], document)


def save(ns: str) -> str:
    out = run(["ip", "netns", "exec", ns, "iptables-save"])
    assert out.returncode == 0, out.stderr
    return out.stdout


def load_and_compare(ns: str, document: str) -> None:
    tested = restore(ns, document, "--test")
    assert tested.returncode == 0, f"iptables-restore --test refused the plan:\n{tested.stderr}\n{document}"
    loaded = restore(ns, document)
    assert loaded.returncode == 0, f"iptables-restore refused the plan:\n{loaded.stderr}\n{document}"
    assert normalize_save(save(ns)) == normalize_save(document)


# ------------------------------------------------------------------------------------------- inputs


def ep(pod: str, ip: str, port: int = 8080, node: str = "node1") -> Endpoint:
    return Endpoint(pod, ip, port, node)


def three() -> Service:
    return Service("default", "web", "ClusterIP", "10.96.0.10", (ServicePort("http", "TCP", 80, "8080", None, (
        ep("web-0", "10.244.1.2"), ep("web-1", "10.244.2.2", node="node2"), ep("web-2", "10.244.1.3"))),))


def nodeport() -> Service:
    return Service("default", "front", "NodePort", "10.96.0.11", (
        ServicePort("http", "TCP", 80, "http", 30080, (ep("f-0", "10.244.1.4", 80), ep("f-1", "10.244.2.4", 80))),
        ServicePort("metrics", "TCP", 9100, "9100", 30091, (ep("f-0", "10.244.1.4", 9100),)),
    ))


def empty() -> List[Service]:
    return [
        Service("default", "nobody", "ClusterIP", "10.96.0.12", (ServicePort("", "TCP", 80, "80"),)),
        Service("default", "nobody-np", "NodePort", "10.96.0.13", (ServicePort("", "UDP", 53, "53", 30053),)),
    ]


def sticky() -> Service:
    return Service("shop", "cart", "ClusterIP", "10.96.0.30", (ServicePort("api", "TCP", 8080, "api", None, (
        ep("c-0", "10.244.1.7", 9000), ep("c-1", "10.244.2.7", 9000), ep("c-2", "10.244.2.8", 9000))),),
        "ClientIP", 600)


def udp() -> Service:
    return Service("kube-system", "kube-dns", "ClusterIP", "10.96.0.53", (
        ServicePort("dns", "UDP", 53, "53", None, (ep("dns-0", "10.244.1.5", 53), ep("dns-1", "10.244.2.5", 53))),
        ServicePort("dns-tcp", "TCP", 53, "53", None, (ep("dns-0", "10.244.1.5", 53),)),
    ))


def many(n: int) -> Service:
    endpoints = tuple(ep(f"m-{i}", f"10.244.{1 + i // 200}.{2 + i % 200}") for i in range(n))
    return Service("default", "many", "ClusterIP", "10.96.0.40", (ServicePort("p", "TCP", 80, "80", None, endpoints),))


CASES: Dict[str, dict] = {
    "one-service-three-endpoints": {"services": [three()]},
    "nodeport": {"services": [nodeport()]},
    "no-endpoints": {"services": empty()},
    "session-affinity": {"services": [sticky()]},
    "udp": {"services": [udp()]},
    "no-services": {"services": []},
    "everything": {"services": [three(), nodeport(), *empty(), sticky(), udp(), many(12)]},
    "no-localhost-nodeports-no-random-fully": {
        "services": [nodeport()], "localhost_nodeports": False, "random_fully": False},
    "large-cluster-mode": {"services": [sticky(), nodeport()], "large_cluster_endpoints": 2},
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_plan_loads_and_reads_back_identically(netns, case):
    kw = dict(CASES[case])
    services = kw.pop("services")
    document = render_restore(kube_proxy_tables(services, CIDR, NODE_IP, **kw))
    load_and_compare(netns, document)


def test_full_reload_replaces_the_previous_rules(netns):
    # emu reloads the whole document on every change: scaling 3 -> 1 endpoints must leave no stale chain.
    before = render_restore(kube_proxy_tables([three(), sticky()], CIDR, NODE_IP))
    load_and_compare(netns, before)
    scaled = three()
    port = scaled.ports[0]
    scaled = Service(scaled.namespace, scaled.name, scaled.type, scaled.cluster_ip, (
        ServicePort(port.name, port.protocol, port.port, port.target, None, port.endpoints[:1]),))
    after = render_restore(kube_proxy_tables([scaled], CIDR, NODE_IP))
    load_and_compare(netns, after)
    assert len([c for c in parse_save(save(netns))["nat"].chains if c.name.startswith("KUBE-SEP-")]) == 1


# Literal rules from kube-proxy's own expected output (kubernetes/kubernetes
# pkg/proxy/iptables/proxier_test.go, TestOverallIPTablesRulesWithMultipleServices, v1.28-v1.30), in the
# argument order kube-proxy hands to iptables-restore, for its services ns1/svc1 (ClusterIP, one endpoint),
# ns3/svc3 (NodePort 3003) and ns6/svc6 (no endpoints). Loaded into the kernel they must read back exactly
# like emu's plan for the same Services.
UPSTREAM = """\
*filter
:KUBE-SERVICES - [0:0]
:KUBE-FORWARD - [0:0]
-A KUBE-SERVICES -m comment --comment "ns6/svc6:p80 has no endpoints" -m tcp -p tcp -d 172.30.0.46 --dport 80 -j REJECT
-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark 0x4000/0x4000 -j ACCEPT
-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
COMMIT
*nat
:KUBE-NODEPORTS - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-EXT-X27LE4BHSL4DOUIK - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-OYPFS5VJICHGATKP - [0:0]
:KUBE-SEP-SXIVWICOYRO3J4NJ - [0:0]
:KUBE-SVC-X27LE4BHSL4DOUIK - [0:0]
:KUBE-SVC-XPGD46QRK7WJZT7O - [0:0]
-A KUBE-NODEPORTS -m comment --comment ns3/svc3:p80 -m tcp -p tcp --dport 3003 -j KUBE-EXT-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 -j KUBE-SVC-XPGD46QRK7WJZT7O
-A KUBE-SERVICES -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-EXT-X27LE4BHSL4DOUIK -m comment --comment "masquerade traffic for ns3/svc3:p80 external destinations" -j KUBE-MARK-MASQ
-A KUBE-EXT-X27LE4BHSL4DOUIK -j KUBE-SVC-X27LE4BHSL4DOUIK
-A KUBE-MARK-MASQ -j MARK --or-mark 0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --xor-mark 0x4000
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -s 10.180.0.3 -j KUBE-MARK-MASQ
-A KUBE-SEP-OYPFS5VJICHGATKP -m comment --comment ns3/svc3:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.3:80
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -s 10.180.0.1 -j KUBE-MARK-MASQ
-A KUBE-SEP-SXIVWICOYRO3J4NJ -m comment --comment ns1/svc1:p80 -m tcp -p tcp -j DNAT --to-destination 10.180.0.1:80
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 cluster IP" -m tcp -p tcp -d 172.30.0.43 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-X27LE4BHSL4DOUIK -m comment --comment "ns3/svc3:p80 -> 10.180.0.3:80" -j KUBE-SEP-OYPFS5VJICHGATKP
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 cluster IP" -m tcp -p tcp -d 172.30.0.41 --dport 80 ! -s 10.0.0.0/8 -j KUBE-MARK-MASQ
-A KUBE-SVC-XPGD46QRK7WJZT7O -m comment --comment "ns1/svc1:p80 -> 10.180.0.1:80" -j KUBE-SEP-SXIVWICOYRO3J4NJ
COMMIT
"""


def test_plan_equals_kube_proxys_own_output_in_the_kernel(netns):
    loaded = restore(netns, UPSTREAM)
    assert loaded.returncode == 0, loaded.stderr
    upstream = parse_save(save(netns))
    services = [
        Service("ns1", "svc1", "ClusterIP", "172.30.0.41", (ServicePort("p80", "TCP", 80, "80", None, (
            Endpoint("pod1", "10.180.0.1", 80, "node1"),)),)),
        Service("ns3", "svc3", "NodePort", "172.30.0.43", (ServicePort("p80", "TCP", 80, "80", 3003, (
            Endpoint("pod3", "10.180.0.3", 80, "node1"),)),)),
        Service("ns6", "svc6", "ClusterIP", "172.30.0.46", (ServicePort("p80", "TCP", 80, "80"),)),
    ]
    # kube-proxy's unit tests use a fake iptables without --random-fully.
    ours = parse_save(render_restore(kube_proxy_tables(services, "10.0.0.0/8", NODE_IP, random_fully=False)))
    compared = 0
    for table in ("filter", "nat"):
        for chain in upstream[table].chains:
            if chain.name.startswith("KUBE-"):
                assert ours[table].rules_of(chain.name) == upstream[table].rules_of(chain.name), chain.name
                compared += 1
    assert compared == 11
