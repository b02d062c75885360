"""Unit tests of kube-proxy's nftables mode (emu.proxy.nftables), the nftables document model
(emu.plan.nftables), the conntrack entries kube-proxy deletes (emu.proxy.conntrack) and the mode's plumbing
through the spec and the plan.

Pure: no root, no kernel. tests/test_kubeproxy_nft.py loads the same tables into a real network namespace and
reads them back; tests/test_live_services.py runs a cluster in this mode.
"""

import dataclasses
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from emu.plan.nftables import (
    NftChain,
    NftElement,
    NftSet,
    NftTable,
    load_script,
    normalize_listing,
    priority_text,
    render,
    time_text,
    update_script,
)
from emu.proxy.conntrack import Flows, stale_flows
from emu.proxy.nftables import chain_base, describe, endpoint_base, hash_and_truncate, kube_proxy_table
from emu.proxy.services import Endpoint, Service, ServicePort

ROOT = Path(__file__).resolve().parent.parent
CIDR = "10.244.0.0/16"
SERVICES = "10.96.0.0/12"
NODE_IP = "192.168.56.11"


def ep(pod: str, ip: str, port: int = 8080, node: str = "node1") -> Endpoint:
    return Endpoint(pod=pod, ip=ip, port=port, node=node)


def web(n: int = 3, type_: str = "ClusterIP", node_port: Optional[int] = None, affinity: str = "None",
        protocol: str = "TCP", name: str = "web", ip: str = "10.96.0.10") -> Service:
    endpoints = tuple(ep(f"{name}-{i}", f"10.244.{1 + i % 2}.{10 + i}") for i in range(n))
    port = ServicePort("http", protocol, 80, "8080", node_port, endpoints)
    return Service("default", name, type_, ip, (port,), affinity, 300)


def table(*services: Service) -> NftTable:
    return kube_proxy_table(list(services), CIDR, SERVICES, NODE_IP)


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name, expected", [
    # pkg/proxy/nftables/proxier_test.go, TestOverallNFTablesRules
    (("ns1", "svc1", "p80", "TCP"), "ULMVA6XW-ns1/svc1/tcp/p80"),
    (("ns2", "svc2", "p80", "TCP"), "42NFTM6N-ns2/svc2/tcp/p80"),
    (("ns3", "svc3", "p80", "TCP"), "4AT6LBPK-ns3/svc3/tcp/p80"),
    (("ns5", "svc5", "p80", "TCP"), "HVFWP5L3-ns5/svc5/tcp/p80"),
])
def test_service_chain_names_are_kube_proxys(name, expected) -> None:
    assert chain_base(*name) == expected


@pytest.mark.parametrize("name, expected", [
    (("ns1", "svc1", "p80", "TCP", "10.180.0.1", 80), "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"),
    (("ns4", "svc4", "p80", "TCP", "10.180.0.4", 80), "UNZV3OEC-ns4/svc4/tcp/p80__10.180.0.4/80"),
    (("ns4", "svc4", "p80", "TCP", "10.180.0.5", 80), "5RFCDDV7-ns4/svc4/tcp/p80__10.180.0.5/80"),
    (("ns5", "svc5", "p80", "TCP", "10.180.0.3", 80), "GTK6MW7G-ns5/svc5/tcp/p80__10.180.0.3/80"),
])
def test_endpoint_chain_names_are_kube_proxys(name, expected) -> None:
    assert endpoint_base(*name) == expected


def test_long_names_are_cut_to_240_characters_with_a_mark() -> None:
    long = chain_base("n" * 63, "s" * 63, "p" * 63, "TCP")
    assert len(long) == 8 + 1 + 63 * 3 + 3 + len("tcp") <= 240  # never cut: kube-proxy's own arithmetic
    assert len(endpoint_base("n" * 63, "s" * 63, "p" * 63, "TCP", "10.0.0.1", 65535)) == 220  # IPv4: never cut
    cut = hash_and_truncate("x" * 300)
    assert len(cut) == 240 and cut.endswith("...") and cut.startswith(hash_and_truncate("x" * 300)[:9])


# ------------------------------------------------------------------------------------------------ table


def test_base_chains_hooks_priorities_and_jumps() -> None:
    t = table(web())
    assert (t.family, t.name, t.comment) == ("ip", "kube-proxy", "rules for kube-proxy")
    base = {c.name: (c.type, c.hook, c.priority) for c in t.chains if c.base}
    assert base == {
        "filter-prerouting": ("filter", "prerouting", -110),
        "filter-input": ("filter", "input", -110),
        "filter-forward": ("filter", "forward", -110),
        "filter-output": ("filter", "output", -110),
        "filter-output-post-dnat": ("filter", "output", -90),
        "nat-prerouting": ("nat", "prerouting", -100),
        "nat-output": ("nat", "output", -100),
        "nat-postrouting": ("nat", "postrouting", 100),
    }
    assert t.chain("nat-prerouting").rules == ("jump services",)
    assert t.chain("nat-output").rules == ("jump services",)
    assert t.chain("nat-postrouting").rules == ("jump masquerading",)
    assert t.chain("filter-input").rules == ("ct state new jump nodeport-endpoints-check",
                                             "ct state new jump service-endpoints-check")
    assert t.chain("filter-forward").rules == ("ct state new jump service-endpoints-check",
                                               "ct state new jump cluster-ips-check")


def test_masquerade_mark_is_bit_14() -> None:
    t = table(web())
    assert t.chain("mark-for-masquerade").rules == ("meta mark set meta mark | 0x00004000",)
    assert t.chain("masquerading").rules == (
        "meta mark & 0x00004000 == 0x00000000 return",
        "meta mark set meta mark ^ 0x00004000",
        "masquerade fully-random",
    )


def test_a_service_is_one_verdict_map_element_and_numgen_spreads_over_its_endpoints() -> None:
    t = table(web(3))
    base = chain_base("default", "web", "http", "TCP")
    assert t.set("service-ips").elements == (NftElement("10.96.0.10 . tcp . 80", f"goto service-{base}"),)
    assert t.set("cluster-ips").elements == (NftElement("10.96.0.10"),)
    rules = t.chain(f"service-{base}").rules
    assert rules[0] == "ip daddr 10.96.0.10 tcp dport 80 ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
    ends = [endpoint_base("default", "web", "http", "TCP", f"10.244.{1 + i % 2}.{10 + i}", 8080) for i in range(3)]
    ends.sort(key=lambda b: b.split("__")[1])  # kube-proxy's order: by ip:port string
    assert rules[1] == "numgen random mod 3 vmap { " + ", ".join(
        f"{i} : goto endpoint-{b}" for i, b in enumerate(ends)) + " }"
    for b in ends:
        ip, port = b.split("__")[1].split("/")
        assert t.chain(f"endpoint-{b}").rules == (
            f"ip saddr {ip} jump mark-for-masquerade",  # hairpin: a pod reaching itself is masqueraded
            f"meta l4proto tcp dnat to {ip}:{port}",
        )


def test_the_services_chain_is_two_lookups_whatever_the_number_of_services() -> None:
    few = table(*(web(1, name=f"s{i}", ip=f"10.96.0.{10 + i}") for i in range(3)))
    many = table(*(web(1, name=f"s{i}", ip=f"10.96.{i // 200}.{10 + i % 200}") for i in range(600)))
    assert few.chain("services").rules == many.chain("services").rules == (
        "ip daddr . meta l4proto . th dport vmap @service-ips",
        "ip daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
    )
    assert len(many.set("service-ips").elements) == 600


def test_no_endpoints_rejects_through_the_no_endpoint_maps_and_makes_no_chain() -> None:
    t = table(web(0, "NodePort", 30080))
    assert t.set("service-ips").elements == () and t.set("service-nodeports").elements == ()
    assert t.set("no-endpoint-services").elements == (
        NftElement("10.96.0.10 . tcp . 80", "goto reject-chain", "default/web:http"),)
    assert t.set("no-endpoint-nodeports").elements == (
        NftElement("tcp . 30080", "goto reject-chain", "default/web:http"),)
    assert not [c for c in t.chains if "/" in c.name]
    assert t.chain("reject-chain").rules == ("reject",)
    assert t.chain("service-endpoints-check").rules == (
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services",)


def test_nodeport_goes_through_the_external_chain_and_only_at_the_nodes_address() -> None:
    t = table(web(2, "NodePort", 30080))
    base = chain_base("default", "web", "http", "TCP")
    assert t.set("service-nodeports").elements == (NftElement("tcp . 30080", f"goto external-{base}"),)
    assert t.chain(f"external-{base}").rules == ("jump mark-for-masquerade", f"goto service-{base}")
    assert t.set("nodeport-ips").elements == (NftElement(NODE_IP),)
    other = kube_proxy_table([web(2, "NodePort", 30080)], CIDR, SERVICES, "192.168.56.12")
    assert other.set("nodeport-ips").elements == (NftElement("192.168.56.12"),)
    assert other.chains == t.chains  # the rest is the same on every node


def test_client_ip_affinity_uses_one_dynamic_set_per_endpoint_with_the_timeout() -> None:
    t = table(web(2, affinity="ClientIP"))
    base = chain_base("default", "web", "http", "TCP")
    sets = [s for s in t.sets if s.name.startswith("affinity-")]
    assert [(s.type, s.flags, s.timeout) for s in sets] == [("ipv4_addr", ("dynamic", "timeout"), 300)] * 2
    rules = t.chain(f"service-{base}").rules
    for s in sets:
        endpoint = "endpoint-" + s.name[len("affinity-"):]
        assert f"ip saddr @{s.name} goto {endpoint}" in rules
        assert f"update @{s.name} {{ ip saddr }}" in t.chain(endpoint).rules
    assert rules[-1].startswith("numgen random mod 2 vmap")


def test_cluster_ips_check_rejects_unknown_ports_and_drops_unallocated_addresses() -> None:
    assert table(web()).chain("cluster-ips-check").rules == (
        'ip daddr @cluster-ips reject comment "Reject traffic to invalid ports of ClusterIPs"',
        'ip daddr 10.96.0.0/12 drop comment "Drop traffic to unallocated ClusterIPs"',
    )


def test_udp_and_several_ports_of_one_service() -> None:
    dns = Service("kube-system", "kube-dns", "ClusterIP", "10.96.0.53", (
        ServicePort("dns", "UDP", 53, "53", None, (ep("a", "10.244.1.5", 53),)),
        ServicePort("dns-tcp", "TCP", 53, "53", None, (ep("a", "10.244.1.5", 53),)),
    ))
    t = table(dns)
    assert [e.key for e in t.set("service-ips").elements] == ["10.96.0.53 . udp . 53", "10.96.0.53 . tcp . 53"]
    assert t.set("cluster-ips").elements == (NftElement("10.96.0.53"),)  # once, for both ports
    base = endpoint_base("kube-system", "kube-dns", "dns", "UDP", "10.244.1.5", 53)
    assert t.chain(f"endpoint-{base}").rules[-1] == "meta l4proto udp dnat to 10.244.1.5:53"


def test_same_input_same_table_and_order_does_not_matter() -> None:
    services = [web(3, name="a", ip="10.96.0.10"), web(0, name="b", ip="10.96.0.11"),
                web(2, "NodePort", 30001, "ClientIP", name="c", ip="10.96.0.12")]
    first = table(*services)
    for seed in range(5):
        shuffled = list(services)
        random.Random(seed).shuffle(shuffled)
        assert kube_proxy_table(shuffled, CIDR, SERVICES, NODE_IP) == first


@pytest.mark.parametrize("cidr, service_cidr, node_ip, match", [
    ("10.244.1.0/16", SERVICES, NODE_IP, "cluster_cidr"),
    (CIDR, "10.96.0.1/12", NODE_IP, "service_cidr"),
    (CIDR, SERVICES, "node-1", "node_ip"),
])
def test_bad_input_is_refused(cidr, service_cidr, node_ip, match) -> None:
    with pytest.raises(ValueError, match=match):
        kube_proxy_table([web()], cidr, service_cidr, node_ip)


def test_describe_names_the_chains_of_the_table() -> None:
    services = [web(2, "NodePort", 30080), web(0, name="empty", ip="10.96.0.11")]
    t = table(*services)
    names = {c.name for c in t.chains}
    for info in describe(services):
        if info["no_endpoints"]:
            assert info["svc_chain"] is None and info["endpoints"] == []
            continue
        assert {info["svc_chain"], info["ext_chain"]} <= names
        assert [e["index"] for e in info["endpoints"]] == [0, 1]
        assert all(e["sep_chain"] in names and e["share"] == 0.5 for e in info["endpoints"])


# ------------------------------------------------------------------------------------------ model, texts


def test_priorities_and_durations_are_spelled_as_nft_lists_them() -> None:
    assert priority_text("prerouting", -100) == "dstnat"
    assert priority_text("prerouting", -110) == "dstnat - 10"
    assert priority_text("prerouting", -90) == "dstnat + 10"
    assert priority_text("input", -110) == "-110"  # dstnat has no name outside prerouting
    assert priority_text("output", -100) == "-100"
    assert priority_text("postrouting", 100) == "srcnat"
    assert priority_text("output", 0) == "filter"
    assert priority_text("forward", -150) == "mangle"
    assert [time_text(s) for s in (10800, 90, 86400, 3661)] == ["3h", "1m30s", "1d", "1h1m1s"]


def test_render_is_nft_list_table_and_normalizing_sorts_elements() -> None:
    t = table(web(2, "NodePort", 30080, "ClientIP"))
    text = render(t)
    assert text.startswith('table ip kube-proxy {\n\tcomment "rules for kube-proxy"\n\tset cluster-ips {')
    assert "\t\ttype filter hook prerouting priority dstnat - 10; policy accept;\n" in text
    assert "\t\tsize 65535\n\t\tflags dynamic,timeout\n\t\ttimeout 5m\n" in text
    reordered = dataclasses.replace(t, sets=tuple(
        dataclasses.replace(s, elements=tuple(reversed(s.elements))) for s in reversed(t.sets)))
    assert normalize_listing(render(reordered)) == normalize_listing(text)
    dropped = dataclasses.replace(t, sets=t.sets[1:])
    assert normalize_listing(render(dropped)) != normalize_listing(text)


def test_normalizing_drops_the_runtime_elements_of_dynamic_sets() -> None:
    listed = ("table ip t {\n\tset d {\n\t\ttype ipv4_addr\n\t\tsize 65535\n\t\tflags dynamic,timeout\n"
              "\t\ttimeout 3h\n\t\telements = { 10.244.1.2 timeout 3h expires 2h59m58s,\n"
              "\t\t\t     10.244.1.3 timeout 3h expires 2h59m57s }\n\t}\n}\n")
    planned = render(NftTable("ip", "t", sets=(NftSet("d", "ipv4_addr", ("dynamic", "timeout"), 10800, 65535),)))
    assert normalize_listing(listed) == normalize_listing(planned)


def test_load_script_creates_what_rules_and_elements_refer_to_before_them() -> None:
    lines = load_script(table(web(2, "NodePort", 30080, "ClientIP"))).splitlines()
    assert lines[:3] == ["add table ip kube-proxy", "delete table ip kube-proxy",
                         'add table ip kube-proxy { comment "rules for kube-proxy" ; }']
    first_rule = next(i for i, line in enumerate(lines) if line.startswith("add rule"))
    first_element = next(i for i, line in enumerate(lines) if line.startswith("add element"))
    last_chain = max(i for i, line in enumerate(lines) if line.startswith("add chain"))
    last_set = max(i for i, line in enumerate(lines) if line.startswith(("add set", "add map")))
    assert last_set < last_chain < first_rule < first_element
    assert "add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }" in lines
    assert not any(line.startswith("add element") and "affinity-" in line for line in lines)


def test_update_changes_only_what_differs_and_never_flushes_the_table() -> None:
    old = table(web(3, name="a", ip="10.96.0.10"), web(2, name="b", ip="10.96.0.11"))
    new = table(web(2, name="a", ip="10.96.0.10"), web(2, name="b", ip="10.96.0.11"))
    update = update_script(old, new)
    script = update.script.splitlines()
    gone = "endpoint-" + endpoint_base("default", "a", "http", "TCP", "10.244.1.12", 8080)
    service_a = "service-" + chain_base("default", "a", "http", "TCP")
    assert f"flush chain ip kube-proxy {service_a}" in script
    assert f"flush chain ip kube-proxy {gone}" in script
    assert update.cleanup == f"delete chain ip kube-proxy {gone}\n"
    assert not any("table" in line.split()[1] for line in script)  # no flush/delete/add of the table
    assert not any("service-" + chain_base("default", "b", "http", "TCP") in line for line in script)
    assert not any("element" in line for line in script)  # the verdict map keeps its element
    assert update_script(new, new).empty


def test_update_when_a_service_gains_its_first_endpoint() -> None:
    old, new = table(web(0)), table(web(1))
    script = update_script(old, new).script
    assert "delete element ip kube-proxy no-endpoint-services { 10.96.0.10 . tcp . 80 }" in script
    base = chain_base("default", "web", "http", "TCP")
    assert f"add element ip kube-proxy service-ips {{ 10.96.0.10 . tcp . 80 : goto service-{base} }}" in script
    assert script.index(f"add chain ip kube-proxy service-{base}") < script.index("add element ip kube-proxy service")


def test_update_that_cannot_be_partial_replaces_the_table() -> None:
    old = NftTable("ip", "t", chains=(NftChain("c", (), "filter", "input", 0),))
    new = NftTable("ip", "t", chains=(NftChain("c", (), "filter", "input", 10),))
    update = update_script(old, new)
    assert update.full and update.script == load_script(new)
    assert update_script(old, None).script == "add table ip t\ndelete table ip t\n"


def test_bad_tables_are_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        NftTable("ip", "t", chains=(NftChain("c"), NftChain("c")))
    with pytest.raises(ValueError, match="name"):
        NftTable("ip", "t", chains=(NftChain("has space"),))
    with pytest.raises(ValueError, match="one non-empty line"):
        NftTable("ip", "t", chains=(NftChain("c", ("accept\ndrop",)),))
    with pytest.raises(ValueError, match="family"):
        NftTable("bridge", "t")


# ------------------------------------------------------------------------------------------------ conntrack


def udp(n: int, node_port: Optional[int] = None) -> Service:
    return web(n, "NodePort" if node_port else "ClusterIP", node_port, protocol="UDP")


def test_a_removed_udp_endpoint_loses_its_flows() -> None:
    flows = stale_flows([udp(3)], [udp(2)])
    assert flows == (Flows("udp", orig_dst="10.96.0.10", reply_src="10.244.1.12"),)
    assert flows[0].argv() == ["conntrack", "-D", "-p", "udp", "--orig-dst", "10.96.0.10",
                               "--reply-src", "10.244.1.12"]


def test_a_removed_nodeport_endpoint_loses_its_nodeport_flows_too() -> None:
    assert stale_flows([udp(2, 30053)], [udp(1, 30053)]) == (
        Flows("udp", orig_dst="10.96.0.10", reply_src="10.244.2.11"),
        Flows("udp", orig_port_dst=30053, reply_src="10.244.2.11"),
    )


def test_a_udp_service_that_gets_its_first_endpoint_loses_every_flow() -> None:
    assert stale_flows([udp(0, 30053)], [udp(1, 30053)]) == (
        Flows("udp", orig_dst="10.96.0.10"), Flows("udp", orig_port_dst=30053))


def test_tcp_and_unchanged_services_keep_their_flows() -> None:
    assert stale_flows([web(3)], [web(2)]) == ()
    assert stale_flows([udp(2)], [udp(2)]) == ()
    assert stale_flows([udp(1)], [udp(2)]) == ()


# ------------------------------------------------------------------------------------------ spec and plan


def test_the_mode_is_read_from_the_topology_and_overridden_by_build_plan(tmp_path: Path) -> None:
    from emu.plan.build import build_plan
    from emu.spec.load import load

    text = (ROOT / "topologies" / "two_nodes.yaml").read_text()
    assert "kubeProxy" not in text
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("network:\n", "network:\n  kubeProxy: {mode: nftables}\n", 1))
    spec, _ = load([str(path)])
    assert spec.network.proxy_mode == "nftables"
    plan = build_plan(spec)
    assert plan.proxy_mode == "nftables"
    assert all(n.nftables and n.nftables[0].name == "kube-proxy" for n in plan.nodes)
    assert all("KUBE-" not in n.iptables for n in plan.nodes)  # flanneld's rules only
    assert all(("net.ipv4.conf.all.route_localnet", "1") not in n.sysctls for n in plan.nodes)
    back = build_plan(spec, proxy_mode="iptables")
    assert back.proxy_mode == "iptables" and not any(n.nftables for n in back.nodes)
    assert all("KUBE-SERVICES" in n.iptables for n in back.nodes)


def test_plan_json_names_the_mode_only_when_it_is_not_the_default() -> None:
    from emu.plan.build import build_plan
    from emu.spec.load import load

    spec, _ = load([str(ROOT / "topologies" / "two_nodes.yaml")])
    default = build_plan(spec).to_dict()
    assert "proxy_mode" not in default and all("nftables" not in n for n in default["nodes"])
    data = build_plan(spec, proxy_mode="nftables").to_dict()
    assert data["proxy_mode"] == "nftables"
    table_data = data["nodes"][0]["nftables"][0]
    assert table_data["name"] == "kube-proxy" and table_data["family"] == "ip"
    json.dumps(data)


def test_emu_plan_prints_the_table_as_nft_list_table_would() -> None:
    out = subprocess.run([sys.executable, "-m", "emu", "plan", "topologies/two_nodes.yaml", "--proxy-mode",
                          "nftables", "--node", "node-1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "kube-proxy nftables mode" in out.stdout.splitlines()[0]
    assert "  nft list table ip kube-proxy:\n    table ip kube-proxy {\n" in out.stdout
    assert "numgen random mod" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "emu", "plan", "topologies/two_nodes.yaml", "--proxy-mode", "ipvs"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid choice: 'ipvs'" in bad.stderr


def test_a_replan_recomputes_only_the_rules_that_changed() -> None:
    """The nodes share their Services' chains, and a re-plan after one change rebuilds one Service's chains: the
    others are the very same objects (what keeps 10,000 Services cheap to re-plan)."""
    from emu.plan.build import build_plan
    from emu.plan.changes import diff, replan
    from emu.spec.load import load

    spec, _ = load([str(ROOT / "topologies" / "services_three_nodes.yaml")])
    plan = build_plan(spec, proxy_mode="nftables")
    one, two = (n.nftables[0] for n in plan.nodes[:2])
    assert one.chains is two.chains
    victim = next(p.name for p in spec.pods if p.name.startswith("churn-"))
    after = replan(plan, dataclasses.replace(spec, pods=tuple(p for p in spec.pods if p.name != victim)))
    before_chains = {c.name: c for c in plan.nodes[0].nftables[0].chains}
    changed = [c.name for c in after.nodes[0].nftables[0].chains if before_chains.get(c.name) is not c]
    assert changed and all("/churn/" in name for name in changed)
    assert {n.name for n in diff(plan, after).changed_nodes} == {n.name for n in plan.nodes}



def test_doctor_says_ipvs_is_not_built_and_what_the_kernel_lacks_for_it() -> None:
    from emu.doctor import IPVS_NEEDS, _verdicts

    assert [n.name for n in IPVS_NEEDS] == ["ip_vs", "dummy"]
    lacking = _verdicts({"root": True, "ip_vs": False, "dummy": False})
    assert "  kube-proxy ipvs      not built by emu (this kernel lacks ip_vs and dummy)" in lacking
    having = _verdicts({"root": True, "ip_vs": True, "dummy": True})
    assert "  kube-proxy ipvs      not built by emu" in having
