"""Unit tests of the kube-proxy plan (emu.proxy.iptables) and the iptables document model (emu.plan.iptables).

Pure: no root, no kernel. The same rules are loaded into a real network namespace by
tests/test_kubeproxy_restore.py.
"""

import json
import random
import subprocess
import sys
from typing import List, Optional

import pytest

from emu.plan.iptables import (
    Chain,
    Table,
    merge_tables,
    normalize_save,
    parse_save,
    render_restore,
    save_quote,
)
from emu.proxy.iptables import (
    Endpoint,
    Service,
    ServicePort,
    describe,
    endpoint_chain,
    external_chain,
    kube_proxy_tables,
    probabilities,
    required_sysctls,
    service_port_chain,
    service_port_name,
)

CIDR = "10.244.0.0/16"
NODE_IP = "192.168.56.11"


def ep(pod: str, ip: str, port: int = 8080, node: str = "node1") -> Endpoint:
    return Endpoint(pod=pod, ip=ip, port=port, node=node)


def web(n: int = 3, type_: str = "ClusterIP", node_port: Optional[int] = None,
        affinity: str = "None", timeout: int = 10800, protocol: str = "TCP") -> Service:
    endpoints = tuple(ep(f"web-{i}", f"10.244.{1 + i % 2}.{10 + i}") for i in range(n))
    port = ServicePort("http", protocol, 80, "8080", node_port, endpoints)
    return Service("default", "web", type_, "10.96.0.10", (port,), affinity, timeout)


def tables(*services: Service, **kw):
    return kube_proxy_tables(list(services), CIDR, NODE_IP, **kw)


def nat_rules(t, chain: str) -> List[str]:
    return t["nat"].rules_of(chain)


def filter_rules(t, chain: str) -> List[str]:
    return t["filter"].rules_of(chain)


# ------------------------------------------------------------------------------------------- names

# Expected names are taken from kube-proxy's own test, kubernetes/kubernetes
# pkg/proxy/iptables/proxier_test.go, TestOverallIPTablesRulesWithMultipleServices (v1.28-v1.30): its
# expected iptables-save dump names these chains for services ns1/svc1 .. ns5/svc5, port "p80", TCP.
UPSTREAM_SVC = [
    ("ns1", "svc1", "KUBE-SVC-XPGD46QRK7WJZT7O"),
    ("ns2", "svc2", "KUBE-SVC-GNZBNJ2PO5MGZ6GT"),
    ("ns3", "svc3", "KUBE-SVC-X27LE4BHSL4DOUIK"),
    ("ns4", "svc4", "KUBE-SVC-4SW47YFZTEDKD3PK"),
    ("ns5", "svc5", "KUBE-SVC-NUKIZ6OKUXPJNT4C"),
]
UPSTREAM_SEP = [
    ("ns1", "svc1", "10.180.0.1:80", "KUBE-SEP-SXIVWICOYRO3J4NJ"),
    ("ns2", "svc2", "10.180.0.2:80", "KUBE-SEP-RS4RBKLTHTF2IUXJ"),
    ("ns3", "svc3", "10.180.0.3:80", "KUBE-SEP-OYPFS5VJICHGATKP"),
    ("ns4", "svc4", "10.180.0.4:80", "KUBE-SEP-UKSFD7AGPMPPLUHC"),
    ("ns4", "svc4", "10.180.0.5:80", "KUBE-SEP-C6EBXVWJJZMIWKLZ"),
    ("ns5", "svc5", "10.180.0.3:80", "KUBE-SEP-I77PXRDZVX7PMWMN"),
]


@pytest.mark.parametrize("ns,name,expected", UPSTREAM_SVC)
def test_service_chain_hash_matches_kube_proxy(ns, name, expected):
    assert service_port_chain(ns, name, "p80", "TCP") == expected
    # KUBE-EXT-<hash> shares the service port's hash (same dump: KUBE-EXT-X27LE4BHSL4DOUIK for ns3/svc3).
    assert external_chain(ns, name, "p80", "TCP") == "KUBE-EXT-" + expected[len("KUBE-SVC-"):]


@pytest.mark.parametrize("ns,name,address,expected", UPSTREAM_SEP)
def test_endpoint_chain_hash_matches_kube_proxy(ns, name, address, expected):
    assert endpoint_chain(ns, name, "p80", "TCP", address) == expected


def test_well_known_kubernetes_service_chain():
    # The apiserver Service every cluster has: `iptables-save` on any kube-proxy node shows this chain.
    assert service_port_chain("default", "kubernetes", "https", "TCP") == "KUBE-SVC-NPX46M4PTMTKRN6Y"


def test_protocol_and_port_name_are_part_of_the_hash():
    assert service_port_name("ns", "svc", "") == "ns/svc"
    assert service_port_name("ns", "svc", "dns") == "ns/svc:dns"
    tcp = service_port_chain("ns", "svc", "dns", "TCP")
    assert tcp != service_port_chain("ns", "svc", "dns", "UDP")
    assert tcp != service_port_chain("ns", "svc", "", "TCP")
    for name in (tcp, endpoint_chain("ns", "svc", "dns", "TCP", "10.244.1.2:53")):
        assert len(name) <= 28  # iptables' chain name limit


# ----------------------------------------------------------------------------------- probabilities


def overall_shares(probs: List[Optional[str]]) -> List[float]:
    """Chance that each rule is the one taken: p_i times the chance that every earlier rule missed."""
    shares, remaining = [], 1.0
    for p in probs:
        chance = 1.0 if p is None else float(p)
        shares.append(remaining * chance)
        remaining *= 1.0 - chance
    return shares


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 10])
def test_probabilities_give_every_endpoint_one_nth(n):
    probs = probabilities(n)
    assert len(probs) == n
    assert probs[-1] is None and all(p is not None for p in probs[:-1])
    shares = overall_shares(probs)
    for share in shares:
        assert share == pytest.approx(1.0 / n, abs=1e-9)
    assert sum(shares) == pytest.approx(1.0, abs=1e-12)


def test_probability_strings_are_iptables_save_form():
    # kube-proxy writes "%0.10f" (0.3333333333); iptables stores it in 1/2^31 steps and prints "%.11f".
    assert probabilities(0) == []
    assert probabilities(1) == [None]
    assert probabilities(2) == ["0.50000000000", None]
    assert probabilities(3) == ["0.33333333349", "0.50000000000", None]
    assert probabilities(4)[0] == "0.25000000000"


def test_statistic_rules_use_the_probability_strings():
    t = tables(web(3))
    svc = service_port_chain("default", "web", "http", "TCP")
    lb = [r for r in nat_rules(t, svc) if "KUBE-SEP-" in r]
    assert len(lb) == 3
    for rule, p in zip(lb, probabilities(3)):
        if p is None:
            assert "statistic" not in rule
        else:
            assert f"-m statistic --mode random --probability {p} -j KUBE-SEP-" in rule


# ------------------------------------------------------------------------------------ rule content


def test_cluster_ip_capture_masquerade_and_dnat():
    t = tables(web(3))
    svc = service_port_chain("default", "web", "http", "TCP")
    assert (f'-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP"'
            f" -m tcp --dport 80 -j {svc}") in nat_rules(t, "KUBE-SERVICES")
    # Traffic to the clusterIP not coming from a pod is marked for SNAT.
    assert nat_rules(t, svc)[0] == (
        f'-A {svc} ! -s {CIDR} -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http cluster IP"'
        " -m tcp --dport 80 -j KUBE-MARK-MASQ")
    # The jump to KUBE-NODEPORTS is the last rule of KUBE-SERVICES.
    assert nat_rules(t, "KUBE-SERVICES")[-1].endswith("-m addrtype --dst-type LOCAL -j KUBE-NODEPORTS")


def test_hairpin_and_dnat_rule_per_endpoint():
    service = web(4)
    t = tables(service)
    for e in service.ports[0].endpoints:
        sep = endpoint_chain("default", "web", "http", "TCP", f"{e.ip}:{e.port}")
        rules = nat_rules(t, sep)
        assert rules == [
            f'-A {sep} -s {e.ip}/32 -m comment --comment "default/web:http" -j KUBE-MARK-MASQ',
            f'-A {sep} -p tcp -m comment --comment "default/web:http" -m tcp -j DNAT'
            f" --to-destination {e.ip}:{e.port}",
        ]
        assert Chain(sep) in t["nat"].chains


def test_postrouting_mark_masq_and_forward():
    t = tables(web(1))
    assert nat_rules(t, "KUBE-POSTROUTING") == [
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        " --random-fully",
    ]
    assert nat_rules(t, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000"]
    for chain in ("PREROUTING", "OUTPUT"):
        assert nat_rules(t, chain) == [
            f'-A {chain} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES']
    assert nat_rules(t, "POSTROUTING") == [
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING']
    forward = filter_rules(t, "KUBE-FORWARD")
    assert forward[0] == "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP"
    assert "-m mark --mark 0x4000/0x4000 -j ACCEPT" in forward[1]
    assert "--ctstate RELATED,ESTABLISHED -j ACCEPT" in forward[2]
    assert any(r.endswith("-j KUBE-FORWARD") for r in filter_rules(t, "FORWARD"))
    no_rf = tables(web(1), random_fully=False, masquerade_bit=15)
    assert nat_rules(no_rf, "KUBE-POSTROUTING")[-1].endswith("-j MASQUERADE")
    assert nat_rules(no_rf, "KUBE-MARK-MASQ") == ["-A KUBE-MARK-MASQ -j MARK --set-xmark 0x8000/0x8000"]


def test_no_endpoints_rejects_and_builds_no_nat_chains():
    t = tables(web(0, "NodePort", 30080))
    svc = service_port_chain("default", "web", "http", "TCP")
    ext = external_chain("default", "web", "http", "TCP")
    nat_names = t["nat"].chain_names()
    assert svc not in nat_names and ext not in nat_names
    assert not any(name.startswith("KUBE-SEP-") for name in nat_names)
    assert not any("10.96.0.10" in r for r in t["nat"].rules)
    assert nat_rules(t, "KUBE-NODEPORTS") == []
    assert filter_rules(t, "KUBE-SERVICES") == [
        '-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/web:http has no endpoints"'
        " -m tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable"]
    assert filter_rules(t, "KUBE-EXTERNAL-SERVICES") == [
        '-A KUBE-EXTERNAL-SERVICES -p tcp -m comment --comment "default/web:http has no endpoints"'
        " -m addrtype --dst-type LOCAL -m tcp --dport 30080 -j REJECT --reject-with icmp-port-unreachable"]
    # The filter chains are reached for new connections from INPUT, FORWARD and OUTPUT, as kube-proxy does.
    for chain, target in (("INPUT", "KUBE-EXTERNAL-SERVICES"), ("FORWARD", "KUBE-EXTERNAL-SERVICES"),
                          ("FORWARD", "KUBE-SERVICES"), ("OUTPUT", "KUBE-SERVICES")):
        assert any(r.startswith(f"-A {chain} -m conntrack --ctstate NEW ") and r.endswith(f"-j {target}")
                   for r in filter_rules(t, chain)), (chain, target)


def test_nodeport_rules_only_for_nodeport_services():
    cluster_ip = tables(web(2))
    assert nat_rules(cluster_ip, "KUBE-NODEPORTS") == []
    assert not any(n.startswith("KUBE-EXT-") for n in cluster_ip["nat"].chain_names())

    t = tables(web(2, "NodePort", 30080))
    svc = service_port_chain("default", "web", "http", "TCP")
    ext = external_chain("default", "web", "http", "TCP")
    assert nat_rules(t, "KUBE-NODEPORTS") == [
        f'-A KUBE-NODEPORTS -p tcp -m comment --comment "default/web:http" -m tcp --dport 30080 -j {ext}']
    assert nat_rules(t, ext) == [
        f'-A {ext} -m comment --comment "masquerade traffic for default/web:http external destinations"'
        " -j KUBE-MARK-MASQ",
        f"-A {ext} -j {svc}",
    ]


def test_nodeport_port_must_match_service_type():
    with pytest.raises(ValueError, match="node_port"):
        tables(web(1, "NodePort", None))
    with pytest.raises(ValueError, match="node_port"):
        tables(web(1, "ClusterIP", 30080))


def test_session_affinity_rules():
    service = web(3, affinity="ClientIP", timeout=600)
    t = tables(service)
    svc = service_port_chain("default", "web", "http", "TCP")
    rules = nat_rules(t, svc)[1:]  # after the masquerade rule
    seps = [endpoint_chain("default", "web", "http", "TCP", f"{e.ip}:{e.port}")
            for e in sorted(service.ports[0].endpoints, key=lambda e: f"{e.ip}:{e.port}")]
    # First one "recent" check per endpoint, then the random spread.
    for rule, sep in zip(rules[:3], seps):
        assert (f"-m recent --rcheck --seconds 600 --reap --name {sep} --mask 255.255.255.255 --rsource"
                f" -j {sep}") in rule
    assert all("recent" not in r for r in rules[3:]) and len(rules) == 6
    for sep in seps:
        dnat = nat_rules(t, sep)[1]
        assert f"-m recent --set --name {sep} --mask 255.255.255.255 --rsource -m tcp -j DNAT" in dnat
    assert not any("recent" in r for r in tables(web(3))["nat"].rules)


def test_udp_service():
    t = tables(web(2, protocol="UDP"))
    svc = service_port_chain("default", "web", "http", "UDP")
    assert any(r.startswith("-A KUBE-SERVICES -d 10.96.0.10/32 -p udp ") and "-m udp --dport 80" in r
               for r in nat_rules(t, "KUBE-SERVICES"))
    assert all("-p udp" in r for r in nat_rules(t, svc)[:1])
    assert not any("tcp" in r for r in t["nat"].rules if "10.96.0.10" in r)


def test_endpoints_sorted_like_kube_proxy():
    # kube-proxy sorts endpoints by their "ip:port" string, so .10 comes before .2.
    port = ServicePort("p", "TCP", 80, "80", None, (ep("b", "10.244.1.2", 80), ep("a", "10.244.1.10", 80)))
    info = describe([Service("ns", "s", "ClusterIP", "10.96.1.1", (port,))])
    assert [e["dnat"] for e in info[0]["endpoints"]] == ["10.244.1.10:80", "10.244.1.2:80"]


def test_large_cluster_mode_drops_endpoint_comments():
    t = tables(web(2), large_cluster_endpoints=1)
    svc = service_port_chain("default", "web", "http", "TCP")
    assert "comment" in nat_rules(t, svc)[0]  # the cluster IP rule keeps its comment
    assert all("comment" not in r for r in nat_rules(t, svc)[1:])
    assert all("comment" not in r for r in t["nat"].rules if r.startswith("-A KUBE-SEP-"))


def test_localhost_nodeports_switch():
    on = tables(web(1))
    assert any("block incoming localnet connections" in r for r in filter_rules(on, "KUBE-FIREWALL"))
    assert required_sysctls() == {"net.ipv4.conf.all.route_localnet": "1"}
    off = tables(web(1), localhost_nodeports=False)
    assert filter_rules(off, "KUBE-FIREWALL") == []
    assert nat_rules(off, "KUBE-SERVICES")[-1].startswith("-A KUBE-SERVICES ! -d 127.0.0.0/8 -m comment")
    assert required_sysctls(False) == {}


def test_headless_service_is_ignored():
    headless = Service("default", "db", "ClusterIP", "None", (ServicePort("", "TCP", 5432, "5432"),))
    assert tables(headless, web(1)) == tables(web(1))
    assert describe([headless]) == []


@pytest.mark.parametrize("bad,match", [
    (Service("d", "s", "LoadBalancer", "10.96.0.1", (ServicePort("p", "TCP", 80, "80"),)), "type"),
    (Service("d", "s", "ClusterIP", "10.96.0.1", (ServicePort("p", "SCTP", 80, "80"),)), "protocol"),
    (Service("d", "s", "ClusterIP", "10.96.0.1", (ServicePort("p", "TCP", 0, "80"),)), "port"),
    (Service("d", "s", "ClusterIP", "10.96.0.300", (ServicePort("p", "TCP", 80, "80"),)), "cluster_ip"),
    (Service("d", "s", "ClusterIP", "10.96.0.1", (ServicePort("p", "TCP", 80, "80"),), "Sticky"), "affinity"),
    (Service("d", "s", "ClusterIP", "10.96.0.1", (ServicePort("p", "TCP", 80, "80", None, (
        ep("a", "10.244.1.2", 80), ep("b", "10.244.1.2", 80))),)), "twice"),
])
def test_bad_input_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        tables(bad)


def test_bad_cluster_cidr_or_node_ip_is_refused():
    with pytest.raises(ValueError, match="cluster_cidr"):
        kube_proxy_tables([web(1)], "10.244.1.0/16", NODE_IP)
    with pytest.raises(ValueError, match="node_ip"):
        kube_proxy_tables([web(1)], CIDR, "node1")


# ---------------------------------------------------------------------------------- determinism


def cluster() -> List[Service]:
    return [
        web(3, "NodePort", 30080),
        Service("default", "empty", "ClusterIP", "10.96.0.20", (ServicePort("", "TCP", 80, "80"),)),
        Service("kube-system", "kube-dns", "ClusterIP", "10.96.0.53", (
            ServicePort("dns", "UDP", 53, "53", None, (ep("dns-a", "10.244.1.5", 53), ep("dns-b", "10.244.2.5", 53))),
            ServicePort("dns-tcp", "TCP", 53, "53", None, (ep("dns-a", "10.244.1.5", 53),)),
        )),
        Service("shop", "cart", "ClusterIP", "10.96.0.30", (
            ServicePort("api", "TCP", 8080, "api", None, (ep("c1", "10.244.2.7", 9000), ep("c2", "10.244.1.7", 9000))),
        ), "ClientIP", 300),
    ]


def shuffled(services: List[Service], seed: int) -> List[Service]:
    rng = random.Random(seed)
    out = []
    for s in services:
        ports = []
        for p in s.ports:
            eps = list(p.endpoints)
            rng.shuffle(eps)
            ports.append(ServicePort(p.name, p.protocol, p.port, p.target, p.node_port, tuple(eps)))
        rng.shuffle(ports)
        out.append(Service(s.namespace, s.name, s.type, s.cluster_ip, tuple(ports), s.session_affinity,
                           s.affinity_timeout))
    rng.shuffle(out)
    return out


def test_same_input_same_text_and_order_does_not_matter():
    text = render_restore(kube_proxy_tables(cluster(), CIDR, NODE_IP))
    assert text == render_restore(kube_proxy_tables(cluster(), CIDR, NODE_IP))
    for seed in range(5):
        assert render_restore(kube_proxy_tables(shuffled(cluster(), seed), CIDR, NODE_IP)) == text
        assert describe(shuffled(cluster(), seed)) == describe(cluster())


def test_plan_layer_imports_nothing_heavy():
    code = ("import sys, emu.proxy.iptables, emu.plan.iptables; "
            "bad = [m for m in ('mininet', 'subprocess', 'yaml') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------- describe


def test_describe_matches_tables():
    services = cluster()
    info = describe(services)
    json.dumps(info)  # JSON-ready
    t = kube_proxy_tables(services, CIDR, NODE_IP)
    nat_chains = set(t["nat"].chain_names())
    assert [d["service_port"] for d in info] == [
        "default/empty", "default/web:http", "kube-system/kube-dns:dns", "kube-system/kube-dns:dns-tcp",
        "shop/cart:api"]
    by_name = {d["service_port"]: d for d in info}
    empty = by_name["default/empty"]
    assert empty["svc_chain"] is None and empty["endpoints"] == [] and empty["no_endpoints"] == "REJECT"
    webd = by_name["default/web:http"]
    assert webd["svc_chain"] == service_port_chain("default", "web", "http", "TCP")
    assert webd["ext_chain"] == external_chain("default", "web", "http", "TCP")
    assert webd["node_port"] == 30080 and webd["no_endpoints"] is None
    assert [e["probability"] for e in webd["endpoints"]] == probabilities(3)
    assert by_name["shop/cart:api"]["affinity_timeout"] == 300 and webd["affinity_timeout"] is None
    for d in info:
        if d["svc_chain"]:
            assert d["svc_chain"] in nat_chains
        for e in d["endpoints"]:
            assert e["sep_chain"] in nat_chains
            assert e["share"] == pytest.approx(1 / len(d["endpoints"]))
            assert any(r.endswith(f"--to-destination {e['dnat']}") for r in t["nat"].rules_of(e["sep_chain"]))


# ------------------------------------------------------------------------------- iptables module


def test_save_quote_follows_iptables_save():
    assert save_quote("KUBE-SVC_x-1") == "KUBE-SVC_x-1"
    assert save_quote("ns1/svc1:p80") == '"ns1/svc1:p80"'
    assert save_quote("a b") == '"a b"'
    assert save_quote('say "hi"') == '"say \\"hi\\""'


def test_render_layout_is_iptables_save_layout():
    t = {
        "nat": Table("nat", [Chain("ZED"), Chain("ALPHA")], ["-A ZED -j ALPHA", "-A OUTPUT -j ZED",
                                                             "-A ALPHA -j RETURN", "-A ZED -j RETURN"]),
        "filter": Table("filter", [Chain("FORWARD", "DROP")], ["-A FORWARD -j ACCEPT"]),
    }
    assert render_restore(t) == (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n-A FORWARD -j ACCEPT\nCOMMIT\n"
        "*nat\n:PREROUTING ACCEPT [0:0]\n:INPUT ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n"
        ":ALPHA - [0:0]\n:ZED - [0:0]\n-A OUTPUT -j ZED\n-A ALPHA -j RETURN\n-A ZED -j ALPHA\n-A ZED -j RETURN\n"
        "COMMIT\n")


def test_render_refuses_mistakes():
    with pytest.raises(ValueError, match="undeclared chain"):
        render_restore({"nat": Table("nat", [], ["-A NOPE -j RETURN"])})
    with pytest.raises(ValueError, match="undeclared chain"):
        render_restore({"nat": Table("nat", [], ["-A OUTPUT -j KUBE-MISSING"])})
    with pytest.raises(ValueError, match="unknown iptables table"):
        render_restore({"broute": Table("broute", [], [])})
    with pytest.raises(ValueError):
        Chain("X" * 29)
    with pytest.raises(ValueError):
        render_restore({"nat": Table("nat", [Chain("USER", "ACCEPT")], [])})


def test_merge_tables():
    kp = {"filter": Table("filter", [Chain("FORWARD"), Chain("KUBE-FORWARD")],
                          ["-A FORWARD -j KUBE-FORWARD", "-A KUBE-FORWARD -j ACCEPT"])}
    fl = {"filter": Table("filter", [Chain("FLANNEL-FWD"), Chain("FORWARD", "ACCEPT")],
                          ["-A FORWARD -j FLANNEL-FWD", "-A FLANNEL-FWD -j ACCEPT"]),
          "nat": Table("nat", [Chain("FLANNEL-POSTRTG")], ["-A FLANNEL-POSTRTG -j RETURN"])}
    merged = merge_tables(kp, fl)
    assert list(merged) == ["filter", "nat"]
    assert merged["filter"].chains == [Chain("FORWARD", "ACCEPT"), Chain("KUBE-FORWARD"), Chain("FLANNEL-FWD")]
    assert merged["filter"].rules_of("FORWARD") == ["-A FORWARD -j KUBE-FORWARD", "-A FORWARD -j FLANNEL-FWD"]
    assert len(kp["filter"].rules) == 2  # inputs untouched
    with pytest.raises(ValueError, match="policies"):
        merge_tables(fl, {"filter": Table("filter", [Chain("FORWARD", "DROP")], [])})


def test_normalize_and_parse_round_trip():
    text = render_restore(kube_proxy_tables(cluster(), CIDR, NODE_IP))
    saved = ("# Generated by iptables-save v1.8.9 (nf_tables) on Mon\n"
             + text.replace(":INPUT ACCEPT [0:0]", ":INPUT ACCEPT [12:3456]")
             + "# Completed on Mon\n\n")
    assert normalize_save(saved) == normalize_save(text) == text
    assert normalize_save("[3:180] -A X -j RETURN\n") == "-A X -j RETURN\n"
    assert render_restore(parse_save(saved)) == text
