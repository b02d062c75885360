"""kube-proxy's nftables mode, as pure data: the ``table ip kube-proxy`` every node of the cluster carries.

This module owns the translation Services + endpoints -> one ``emu.plan.nftables.NftTable`` per node, plus a
structured description of the same decisions (``describe``) for people, ``emu plan`` and ``emu trace``. It
imports only the standard library and the plan's models and runs nothing; the apply layer loads the table with
``nft -f`` (``emu.plan.nftables.load_script``) and changes it with the transactions of ``update_script``.

Which kube-proxy it mirrors: ``pkg/proxy/nftables/proxier.go`` of kube-proxy v1.31 (partial syncs: only what
changed is written, map elements added and deleted one by one), with the ServiceCIDR objects of v1.33 (so
``cluster-ips-check`` also drops traffic to unallocated ClusterIPs), run with its defaults: ``--cluster-cidr``
set (traffic not from a pod is ``ip saddr != <clusterCIDR>``), ``--masquerade-bit=14`` (mark ``0x4000``),
``--nodeport-addresses=primary`` (nftables mode's default: NodePorts answer at the node's own address, not
127.0.0.1), ``--masquerade-all=false``, IPv4 only, Cluster traffic policies.

What the table holds (kube-proxy's names; ``<base>`` is ``HASH8-ns/name/proto/port`` where HASH8 is the first
8 characters of base32(sha256) of the rest, and an endpoint's is ``...__ip/port``):

* base chains ``filter-prerouting``, ``filter-input``, ``filter-forward``, ``filter-output`` (priority
  dstnat - 10), ``filter-output-post-dnat`` (dstnat + 10), ``nat-prerouting``, ``nat-output`` (dstnat),
  ``nat-postrouting`` (srcnat), jumping to ``services`` (DNAT), ``masquerading`` (SNAT of marked packets),
  ``service-endpoints-check`` / ``nodeport-endpoints-check`` (REJECT for Services without endpoints, via the
  verdict maps ``no-endpoint-services`` / ``no-endpoint-nodeports`` and ``reject-chain``), ``firewall-check``
  (LoadBalancer source ranges: empty here) and ``cluster-ips-check`` (reject unknown ports of a ClusterIP, drop
  unallocated ClusterIPs);
* ``services`` looks a packet up in two verdict maps, O(1) whatever the number of Services: ``service-ips``
  (``clusterIP . proto . port : goto service-<base>``) and, for the node's own address (set ``nodeport-ips``),
  ``service-nodeports`` (``proto . nodePort : goto external-<base>``);
* per service port with endpoints: ``service-<base>`` marks traffic from outside the pod network for masquerade,
  then (ClientIP affinity) ``ip saddr @affinity-<ep base> goto endpoint-<ep base>`` per endpoint, then
  ``numgen random mod N vmap { 0 : goto endpoint-..., ... }``; ``external-<base>`` (NodePort) marks and goes on
  to it; ``endpoint-<ep base>`` marks hairpin traffic, records the client in its affinity set (a dynamic set
  with the affinity timeout) and DNATs.

Rules are written in nft's listing form, so the plan equals what ``nft list table ip kube-proxy`` prints.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emu.features import KernelNeed, Tool
from emu.plan.iptables import Table
from emu.plan.nftables import NftChain, NftElement, NftSet, NftTable
from emu.proxy.services import CheckedPort, Service, base32_prefix, check_cidr, check_ipv4, checked_ports

__all__ = [
    "NAME",
    "TABLE",
    "node_nftables",
    "kube_proxy_table",
    "describe",
    "chain_base",
    "endpoint_base",
    "hash_and_truncate",
]

NAME = "nftables"
KERNEL_NEEDS: Tuple[KernelNeed, ...] = (
    KernelNeed(
        "nftables",
        "kube-proxy's nftables mode (verdict maps, numgen, dynamic sets)",
        "printf 'add table ip emuprobe\\nadd chain ip emuprobe c\\n"
        "add set ip emuprobe s { type ipv4_addr ; flags dynamic,timeout ; timeout 10s ; }\\n"
        "add rule ip emuprobe c update @s { ip saddr } numgen random mod 2 vmap { 0 : accept, 1 : drop }\\n'"
        " | nft -f -",
    ),
)
TOOLS = (Tool("nft", "nftables"), Tool("conntrack", "conntrack"))

TABLE = "kube-proxy"
#: kube-proxy's default --masquerade-bit: the SNAT mark is 1 << 14 = 0x4000.
MASQUERADE_BIT = 14
#: Longest name base (kube-proxy: knftables.NameLengthMax 256 minus the longest prefix, 16).
_BASE_MAX = 240

# Chains and maps of kube-proxy's table (proxier.go constants).
SERVICES = "services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NODEPORT_IPS = "nodeport-ips"
CLUSTER_IPS = "cluster-ips"
SERVICE_ENDPOINTS_CHECK = "service-endpoints-check"
NODEPORT_ENDPOINTS_CHECK = "nodeport-endpoints-check"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"
REJECT_CHAIN = "reject-chain"
CLUSTER_IPS_CHECK = "cluster-ips-check"
FIREWALL_IPS = "firewall-ips"
FIREWALL_CHECK = "firewall-check"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"

#: nftablesBaseChains: (name, type, hook, priority).
BASE_CHAINS: Tuple[Tuple[str, str, str, int], ...] = (
    ("filter-prerouting", "filter", "prerouting", -110),
    ("filter-input", "filter", "input", -110),
    ("filter-forward", "filter", "forward", -110),
    ("filter-output", "filter", "output", -110),
    ("filter-output-post-dnat", "filter", "output", -90),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
)
#: nftablesJumpChains: (target, from, extra match), in order.
JUMPS: Tuple[Tuple[str, str, str], ...] = (
    (NODEPORT_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-input", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-forward", "ct state new"),
    (SERVICE_ENDPOINTS_CHECK, "filter-output", "ct state new"),
    (FIREWALL_CHECK, "filter-prerouting", "ct state new"),
    (FIREWALL_CHECK, "filter-output", "ct state new"),
    (SERVICES, "nat-output", ""),
    (SERVICES, "nat-prerouting", ""),
    (MASQUERADING, "nat-postrouting", ""),
    (CLUSTER_IPS_CHECK, "filter-forward", "ct state new"),
    (CLUSTER_IPS_CHECK, "filter-output-post-dnat", "ct state new"),
)
_SERVICE_KEY = "ipv4_addr . inet_proto . inet_service : verdict"
_PORT_KEY = "inet_proto . inet_service : verdict"


def required_sysctls() -> Dict[str, str]:
    """Sysctls kube-proxy sets for these rules: none (localhost NodePorts are iptables mode's)."""
    return {}


def node_tables(services: Sequence[Service], cluster_cidr: str, node_ip: str) -> Dict[str, Table]:
    """iptables rules of this mode: none; its rules are the node's nftables table (``node_nftables``)."""
    return {}


# ------------------------------------------------------------------------------------------------- names


@lru_cache(maxsize=1 << 17)
def hash_and_truncate(name: str) -> str:
    """kube-proxy's ``hashAndTruncate``: ``HASH8-name``, HASH8 the first 8 base32 characters of sha256(name),
    cut to 240 characters (ending in ``...``) when longer."""
    text = f"{base32_prefix(name, 8)}-{name}"
    return text[: _BASE_MAX - 3] + "..." if len(text) > _BASE_MAX else text


def chain_base(namespace: str, name: str, port_name: str, protocol: str) -> str:
    """The base of a service port's chain names: ``HASH8-ns/name/proto/port`` (``servicePortChainNameBase``)."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}")


def endpoint_base(namespace: str, name: str, port_name: str, protocol: str, ip: str, port: int) -> str:
    """The base of an endpoint's chain and affinity set: ``HASH8-ns/name/proto/port__ip/port``."""
    return hash_and_truncate(f"{namespace}/{name}/{protocol.lower()}/{port_name}__{ip}/{port}")


# ----------------------------------------------------------------------------------------- per service port


@dataclass(frozen=True)
class _PortRules:
    """What one service port adds to the table, in kube-proxy's creation order."""

    chains: Tuple[NftChain, ...]
    affinity_sets: Tuple[NftSet, ...]
    cluster_ip: NftElement
    service_ip: Optional[NftElement]
    node_port: Optional[NftElement]
    no_endpoint: Optional[NftElement]
    no_endpoint_node_port: Optional[NftElement]


@lru_cache(maxsize=1 << 17)
def _element(key: str) -> NftElement:
    """One element object per key (plans that share them compare by identity, quickly)."""
    return NftElement(key)


@lru_cache(maxsize=1 << 16)
def _port_rules(checked: CheckedPort, cidr: str) -> _PortRules:
    """The chains, affinity sets and map elements of one service port (cached: a change re-plans one port)."""
    svc, sp, spn = checked.service, checked.port, checked.spn
    proto, base = sp.protocol.lower(), chain_base(svc.namespace, svc.name, sp.name, sp.protocol)
    key = f"{svc.cluster_ip} . {proto} . {sp.port}"
    if not checked.endpoints:  # no endpoints: no chain at all, REJECT through the no-endpoint maps
        node_port = None
        if checked.node_port is not None:
            node_port = NftElement(f"{proto} . {checked.node_port}", f"goto {REJECT_CHAIN}", spn)
        return _PortRules((), (), _element(svc.cluster_ip), None, None, NftElement(key, f"goto {REJECT_CHAIN}", spn),
                          node_port)
    affinity = svc.session_affinity == "ClientIP"
    service_chain, external_chain = f"service-{base}", f"external-{base}"
    bases = [endpoint_base(svc.namespace, svc.name, sp.name, sp.protocol, e.ip, e.port) for e in checked.endpoints]
    chains: List[NftChain] = []
    for e, ep_base in zip(checked.endpoints, bases):
        rules = [f"ip saddr {e.ip} jump {MARK_MASQ}"]
        if affinity:
            rules.append(f"update @affinity-{ep_base} {{ ip saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {e.ip}:{e.port}")
        chains.append(NftChain(f"endpoint-{ep_base}", tuple(rules)))
    rules = [f"ip daddr {svc.cluster_ip} {proto} dport {sp.port} ip saddr != {cidr} jump {MARK_MASQ}"]
    if affinity:
        rules += [f"ip saddr @affinity-{b} goto endpoint-{b}" for b in bases]
    choices = ", ".join(f"{i} : goto endpoint-{b}" for i, b in enumerate(bases))
    rules.append(f"numgen random mod {len(bases)} vmap {{ {choices} }}")
    chains.append(NftChain(service_chain, tuple(rules)))
    node_port = None
    if checked.node_port is not None:
        chains.append(NftChain(external_chain, (f"jump {MARK_MASQ}", f"goto {service_chain}")))
        node_port = NftElement(f"{proto} . {checked.node_port}", f"goto {external_chain}")
    sets: Tuple[NftSet, ...] = ()
    if affinity:
        # nft gives a set that a rule updates from the packet path the size 65535 when none is set.
        sets = tuple(
            NftSet(f"affinity-{b}", "ipv4_addr", ("dynamic", "timeout"), svc.affinity_timeout, size=65535)
            for b in bases
        )
    return _PortRules(tuple(chains), sets, _element(svc.cluster_ip), NftElement(key, f"goto {service_chain}"),
                      node_port, None, None)


# -------------------------------------------------------------------------------------------------- table


@lru_cache(maxsize=8)
def _static_chains(mark: str, service_cidr: str) -> Tuple[NftChain, ...]:
    """The base chains and kube-proxy's fixed chains (``setupNFTables``), in creation order."""
    jumps: Dict[str, List[str]] = {}
    targets: List[str] = []
    for target, source, extra in JUMPS:
        jumps.setdefault(source, []).append(f"{extra} jump {target}".strip())
        if target not in targets:
            targets.append(target)
    chains = [NftChain(name, tuple(jumps.get(name, ())), ctype, hook, prio) for name, ctype, hook, prio in BASE_CHAINS]
    rules: Dict[str, Tuple[str, ...]] = {
        NODEPORT_ENDPOINTS_CHECK: (f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",),
        SERVICE_ENDPOINTS_CHECK: (f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",),
        FIREWALL_CHECK: (f"ip daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}",),
        SERVICES: (
            f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
            f"ip daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}",
        ),
        MASQUERADING: (f"meta mark & {mark} == 0x00000000 return", f"meta mark set meta mark ^ {mark}",
                       "masquerade fully-random"),
        CLUSTER_IPS_CHECK: (
            f'ip daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"',
            f'ip daddr {service_cidr} drop comment "Drop traffic to unallocated ClusterIPs"',
        ),
        MARK_MASQ: (f"meta mark set meta mark | {mark}",),
    }
    chains += [NftChain(name, rules[name]) for name in targets + [MARK_MASQ]]
    helper = "helper for @no-endpoint-services / @no-endpoint-nodeports"
    chains.append(NftChain(REJECT_CHAIN, ("reject",), comment=helper))
    return tuple(chains)


@dataclass(frozen=True)
class _ClusterPart:
    """Everything of the table that is the same on every node (all but ``nodeport-ips``)."""

    sets_before: Tuple[NftSet, ...]  # cluster-ips (the set that precedes nodeport-ips)
    sets_after: Tuple[NftSet, ...]  # the maps and affinity sets
    chains: Tuple[NftChain, ...]


def _cluster_part(ports: Sequence[CheckedPort], cidr: str, service_cidr: str) -> _ClusterPart:
    rules = [_port_rules(p, cidr) for p in ports]
    cluster_ips = {r.cluster_ip.key: r.cluster_ip for r in rules}
    maps = (
        NftSet(NO_ENDPOINT_SERVICES, _SERVICE_KEY,
               comment="vmap to drop or reject packets to services with no endpoints",
               elements=tuple(r.no_endpoint for r in rules if r.no_endpoint)),
        NftSet(NO_ENDPOINT_NODEPORTS, _PORT_KEY,
               comment="vmap to drop or reject packets to service nodeports with no endpoints",
               elements=tuple(r.no_endpoint_node_port for r in rules if r.no_endpoint_node_port)),
        NftSet(FIREWALL_IPS, _SERVICE_KEY, comment="destinations that are subject to LoadBalancerSourceRanges"),
        NftSet(SERVICE_IPS, _SERVICE_KEY, comment="ClusterIP, ExternalIP and LoadBalancer IP traffic",
               elements=tuple(r.service_ip for r in rules if r.service_ip)),
        NftSet(SERVICE_NODEPORTS, _PORT_KEY, comment="NodePort traffic",
               elements=tuple(r.node_port for r in rules if r.node_port)),
    )
    mark = "0x%08x" % (1 << MASQUERADE_BIT)
    chains = list(_static_chains(mark, service_cidr))
    for r in rules:
        chains.extend(r.chains)
    return _ClusterPart(
        (NftSet(CLUSTER_IPS, "ipv4_addr", comment="Active ClusterIPs", elements=tuple(cluster_ips.values())),),
        maps + tuple(s for r in rules for s in r.affinity_sets),
        tuple(chains),
    )


# One entry: the nodes of one plan share the cluster part (the same Services, compared by identity).
_last: List[Any] = [None, None]


def kube_proxy_table(services: Sequence[Service], cluster_cidr: str, service_cidr: str, node_ip: str) -> NftTable:
    """The ``table ip kube-proxy`` kube-proxy programs on the node at ``node_ip``.

    services: every Service of the cluster (order does not matter; the output is sorted).
    cluster_cidr: the pod network (kube-proxy's --cluster-cidr); service_cidr: the Service range (the cluster's
        ServiceCIDR), whose unallocated addresses are dropped.
    Raises ValueError for bad input, naming the Service or port.
    """
    cidr = check_cidr(cluster_cidr)
    service_range = check_cidr(service_cidr, "service_cidr")
    node = check_ipv4(node_ip, "node_ip")
    key = (cidr, service_range)
    if _last[0] is services and _last[1] is not None and _last[1][0] == key:
        part = _last[1][1]
    else:
        part = _cluster_part(checked_ports(services), cidr, service_range)
        _last[0], _last[1] = services, (key, part)
    nodeport_ips = NftSet(NODEPORT_IPS, "ipv4_addr", comment="IPs that accept NodePort traffic",
                          elements=(NftElement(node),))
    return NftTable("ip", TABLE, "rules for kube-proxy", part.sets_before + (nodeport_ips,) + part.sets_after,
                    part.chains)


def node_nftables(services: Sequence[Service], cluster_cidr: str, service_cidr: str,
                  node_ip: str) -> Tuple[NftTable, ...]:
    """The proxy mode's nftables tables in a node (the contract of ``emu.features``): kube-proxy's one table."""
    return (kube_proxy_table(services, cluster_cidr, service_cidr, node_ip),)


# ------------------------------------------------------------------------------------------ describe


def describe(services: Sequence[Service]) -> List[Dict[str, Any]]:
    """What kube-proxy does with each service port, as plain JSON-ready dicts (sorted like the rules); the same
    keys as ``emu.proxy.iptables.describe``: ``svc_chain`` is ``service-<base>``, ``ext_chain``
    ``external-<base>``, an endpoint's ``sep_chain`` its ``endpoint-<base>`` chain, ``probability`` None (numgen
    picks ``index`` with probability ``share``), ``no_endpoints`` "REJECT" (``no-endpoint-services``)."""
    out: List[Dict[str, Any]] = []
    for p in checked_ports(services):
        svc, sp, n = p.service, p.port, len(p.endpoints)
        base = chain_base(svc.namespace, svc.name, sp.name, sp.protocol)
        out.append({
            "service": f"{svc.namespace}/{svc.name}",
            "namespace": svc.namespace,
            "name": svc.name,
            "port_name": sp.name,
            "service_port": p.spn,
            "type": svc.type,
            "protocol": sp.protocol,
            "cluster_ip": svc.cluster_ip,
            "port": sp.port,
            "target": sp.target,
            "node_port": p.node_port,
            "session_affinity": svc.session_affinity,
            "affinity_timeout": svc.affinity_timeout if svc.session_affinity == "ClientIP" else None,
            "svc_chain": f"service-{base}" if n else None,
            "ext_chain": f"external-{base}" if n and p.node_port is not None else None,
            "no_endpoints": None if n else "REJECT",
            "endpoints": [
                {
                    "pod": e.pod,
                    "node": e.node,
                    "ip": e.ip,
                    "port": e.port,
                    "sep_chain": "endpoint-" + endpoint_base(svc.namespace, svc.name, sp.name, sp.protocol, e.ip,
                                                             e.port),
                    "index": i,
                    "probability": None,
                    "share": 1.0 / n,
                    "dnat": e.address,
                }
                for i, e in enumerate(p.endpoints)
            ],
        })
    return out
