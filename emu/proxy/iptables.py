"""kube-proxy's iptables mode, as pure data: the Service rules every node of the cluster carries.

This module owns the translation Services + endpoints -> iptables tables (``emu.plan.iptables.Table``), plus a
structured description of the same decisions (``describe``) for people, ``emu plan`` and ``emu trace``.
It imports only the standard library and runs nothing; the apply layer loads
``render_restore(kube_proxy_tables(...))`` (merged with flannel's rules) into each node.

Which kube-proxy it mirrors: ``pkg/proxy/iptables/proxier.go`` of kube-proxy v1.28-v1.30 (the layout with
``KUBE-EXT-<hash>`` chains introduced in v1.24, ``KUBE-PROXY-FIREWALL``, and the ``KUBE-FORWARD`` INVALID drop),
run with its defaults: ``--cluster-cidr`` set (so the "not from a pod" test is ``! -s <clusterCIDR>``),
``--masquerade-bit=14`` (mark ``0x4000``), ``--iptables-localhost-nodeports=true`` (switchable), no
``--nodeport-addresses``, ``--masquerade-all=false``, ``nf_conntrack_tcp_be_liberal=0``, IPv4 only.
Chain names use kube-proxy's own hash, so they equal a real cluster's: ``KUBE-SVC-``/``KUBE-EXT-`` +
base32(sha256("ns/name:port" + protocol))[:16], ``KUBE-SEP-`` + the same over "... + ip:port".

What is built, per service port ``ns/name:port`` (kube-proxy's ServicePortName string):

* with endpoints: nat ``KUBE-SERVICES`` matches clusterIP:port and jumps to ``KUBE-SVC-X``, which marks
  traffic from outside the cluster CIDR for masquerade, then (ClientIP affinity: ``-m recent --rcheck``
  rules first) spreads new connections over ``KUBE-SEP-Y`` chains with ``statistic --mode random``
  (probabilities 1/n, 1/(n-1), ..., last rule unconditional, so each endpoint gets 1/n); each ``KUBE-SEP-Y``
  marks hairpin traffic (the pod reaching itself) for masquerade and DNATs to podIP:targetPort.
  NodePort: ``KUBE-NODEPORTS`` (reached from the last rule of ``KUBE-SERVICES`` for local destination
  addresses) jumps to ``KUBE-EXT-X``, which marks for masquerade and jumps to ``KUBE-SVC-X``.
* without endpoints: no nat chain at all; filter ``KUBE-SERVICES`` (and ``KUBE-EXTERNAL-SERVICES`` for the
  NodePort) REJECT new connections with icmp-port-unreachable, so a client is refused at once.
* always: the jump rules from the built-in chains, ``KUBE-POSTROUTING`` (masquerade marked packets, with
  ``--random-fully`` - iptables 1.8.9 here accepts it), ``KUBE-MARK-MASQ``, filter ``KUBE-FORWARD``.

With Cluster traffic policy (the only one modelled) the rules are identical on every node. Not modelled:
LoadBalancer/externalIPs/source ranges, Local traffic policies (KUBE-SVL), topology hints, SCTP, IPv6,
partial syncs, the mangle-table canary chains. Large-cluster mode (more than 1,000 endpoints in total: the
per-endpoint comments are dropped) is reproduced.

Rules are written in iptables-save's canonical form (see ``emu.plan.iptables``), not in the argument order
kube-proxy passes to iptables-restore, so a plan can be compared line for line with a live ``iptables-save``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emu.features import KernelNeed, Tool
from emu.plan.iptables import Chain, Table, save_quote
from emu.proxy.services import (
    Endpoint,
    Service,
    ServicePort,
    check_cidr,
    check_ipv4,
    checked_ports,
    hash16,
    service_port_name,
)

__all__ = [
    "Endpoint",
    "ServicePort",
    "Service",
    "kube_proxy_tables",
    "describe",
    "service_port_name",
    "service_port_chain",
    "external_chain",
    "endpoint_chain",
    "probabilities",
    "required_sysctls",
    "MASQUERADE_BIT",
    "LARGE_CLUSTER_ENDPOINTS",
]

NAME = "iptables"
KERNEL_NEEDS: Tuple[KernelNeed, ...] = ()
TOOLS = (Tool("iptables-restore", "iptables"), Tool("iptables-save", "iptables"), Tool("conntrack", "conntrack"))

#: kube-proxy's default --masquerade-bit: the SNAT mark is 1 << 14 = 0x4000.
MASQUERADE_BIT = 14
#: Above this many endpoints in total kube-proxy enters "large cluster mode" and drops per-endpoint comments.
LARGE_CLUSTER_ENDPOINTS = 1000

# kube-proxy's chain names (proxier.go constants).
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's chain; kube-proxy ensures the jumps to it and its localnet rule

# xt_recent --mask as iptables-save prints it for an IPv4 rule.
_RECENT_TAIL = "--mask 255.255.255.255 --rsource"


def service_port_chain(namespace: str, name: str, port_name: str, protocol: str) -> str:
    """The ``KUBE-SVC-<hash>`` chain of a service port (proxier.go ``servicePortPolicyClusterChain``)."""
    return "KUBE-SVC-" + hash16(service_port_name(namespace, name, port_name) + protocol.lower())


def external_chain(namespace: str, name: str, port_name: str, protocol: str) -> str:
    """The ``KUBE-EXT-<hash>`` chain of a service port (same hash as its KUBE-SVC chain)."""
    return "KUBE-EXT-" + hash16(service_port_name(namespace, name, port_name) + protocol.lower())


def endpoint_chain(namespace: str, name: str, port_name: str, protocol: str, endpoint_ip_port: str) -> str:
    """The ``KUBE-SEP-<hash>`` chain of one endpoint (``ip:port``) of a service port."""
    text = service_port_name(namespace, name, port_name) + protocol.lower() + endpoint_ip_port
    return "KUBE-SEP-" + hash16(text)


# --------------------------------------------------------------------------------------- probabilities


def _probability(k: int) -> str:
    """``--probability`` for "1 in k", as iptables-save prints it back.

    kube-proxy writes ``fmt.Sprintf("%0.10f", 1.0/k)``; libxt_statistic stores
    ``lround(0x80000000 * p)`` and prints ``%.11f`` of stored / 0x80000000 (so 1/3 reads back as
    0.33333333349).
    """
    written = float("%.10f" % (1.0 / k))
    stored = math.floor(written * 0x80000000 + 0.5)
    return "%.11f" % (stored / 0x80000000)


def probabilities(n: int) -> List[Optional[str]]:
    """The ``--probability`` strings of the n load-balancing rules: 1/n, 1/(n-1), ..., 1/2, then None.

    The last rule has no statistic match and takes whatever is left, so every endpoint ends up with 1/n.
    """
    if n < 0:
        raise ValueError(f"number of endpoints must be >= 0, not {n}")
    return [_probability(n - i) for i in range(n - 1)] + ([None] if n else [])


# One entry: the nodes of one plan share their rules (the same Services, compared by identity; the rules do not
# depend on the node). Callers never modify the tables (``merge_tables`` copies).
_last: List[Any] = [None, None]


def node_tables(services: Sequence[Service], cluster_cidr: str, node_ip: str) -> Dict[str, Table]:
    """The proxy mode's rules in a node (the contract of ``emu.features``): kube-proxy's defaults."""
    check_ipv4(node_ip, "node_ip")
    if _last[0] is services and _last[1] is not None and _last[1][0] == cluster_cidr:
        return _last[1][1]
    tables = kube_proxy_tables(services, cluster_cidr, node_ip)
    _last[0], _last[1] = services, (cluster_cidr, tables)
    return tables


def required_sysctls(localhost_nodeports: bool = True) -> Dict[str, str]:
    """Sysctls kube-proxy sets in each node for these rules (the apply layer writes them)."""
    # proxier.go NewProxier: route_localnet=1 so NodePorts answer on 127.0.0.1 (issue 90259).
    return {"net.ipv4.conf.all.route_localnet": "1"} if localhost_nodeports else {}


# ------------------------------------------------------------------------------------ validated model


@dataclass(frozen=True)
class _EndpointPlan:
    endpoint: Endpoint
    chain: str
    probability: Optional[str]


@dataclass(frozen=True)
class _PortPlan:
    service: Service
    port: ServicePort
    spn: str
    proto: str  # lower case, as in rules
    svc_chain: str
    ext_chain: str
    node_port: Optional[int]
    endpoints: Tuple[_EndpointPlan, ...]


def _ipv4(value: str, what: str) -> str:
    return check_ipv4(value, what)


def _plan_ports(services: Sequence[Service]) -> List[_PortPlan]:
    """Validate the input and compute every name and probability, in kube-proxy-deterministic order."""
    plans: List[_PortPlan] = []
    for checked in checked_ports(services):
        svc, sp = checked.service, checked.port
        probs = probabilities(len(checked.endpoints))
        eplans = tuple(
            _EndpointPlan(ep, endpoint_chain(svc.namespace, svc.name, sp.name, sp.protocol, ep.address), p)
            for ep, p in zip(checked.endpoints, probs)
        )
        plans.append(_PortPlan(
            service=svc,
            port=sp,
            spn=checked.spn,
            proto=sp.protocol.lower(),
            svc_chain=service_port_chain(svc.namespace, svc.name, sp.name, sp.protocol),
            ext_chain=external_chain(svc.namespace, svc.name, sp.name, sp.protocol),
            node_port=checked.node_port,
            endpoints=eplans,
        ))
    return plans


# -------------------------------------------------------------------------------------------- tables


def _comment(text: str) -> str:
    return f"-m comment --comment {save_quote(text)}"


def kube_proxy_tables(
    services: Sequence[Service],
    cluster_cidr: str,
    node_ip: str,
    *,
    localhost_nodeports: bool = True,
    random_fully: bool = True,
    masquerade_bit: int = MASQUERADE_BIT,
    large_cluster_endpoints: int = LARGE_CLUSTER_ENDPOINTS,
) -> Dict[str, Table]:
    """The filter and nat tables kube-proxy programs on a node for ``services``.

    services: every Service of the cluster (order does not matter; the output is sorted).
    cluster_cidr: the pod network (kube-proxy's --cluster-cidr), e.g. "10.244.0.0/16".
    node_ip: the node's IPv4 address; validated only: with default --nodeport-addresses and no
        LoadBalancer source ranges kube-proxy's rules do not depend on it, and are the same on every node.
    localhost_nodeports: kube-proxy's --iptables-localhost-nodeports (default true: NodePorts also answer on
        127.0.0.1, kubelet's KUBE-FIREWALL localnet rule is added; needs ``required_sysctls()``).
    random_fully: add ``--random-fully`` to the MASQUERADE rule, as kube-proxy does when iptables has it.
    masquerade_bit: kube-proxy's --masquerade-bit (mark = 1 << bit).
    large_cluster_endpoints: above this many endpoints in total, per-endpoint comments are left out.
    Returns {"filter": Table, "nat": Table}; render with ``emu.plan.iptables.render_restore``.
    """
    cidr = check_cidr(cluster_cidr)
    _ipv4(node_ip, "node_ip")
    if not 0 <= masquerade_bit <= 31:
        raise ValueError(f"masquerade_bit must be 0..31, not {masquerade_bit}")
    mark = "0x%x" % (1 << masquerade_bit)
    plans = _plan_ports(services)
    large = sum(len(p.endpoints) for p in plans) > large_cluster_endpoints

    filter_rules, nat_rules = _jump_and_masquerade_rules(mark, localhost_nodeports, random_fully)
    nat_chains: List[str] = []
    for p in plans:
        port_filter, port_nat, chains = _service_port_rules(p, cidr, large)
        filter_rules += port_filter
        nat_rules += port_nat
        nat_chains += chains
    # Tail call to KUBE-NODEPORTS: must stay the last rule of KUBE-SERVICES.
    not_loopback = "" if localhost_nodeports else " ! -d 127.0.0.0/8"
    nat_rules.append(
        f"-A {KUBE_SERVICES}{not_loopback} "
        f"{_comment('kubernetes service nodeports; NOTE: this must be the last rule in this chain')}"
        f" -m addrtype --dst-type LOCAL -j {KUBE_NODEPORTS}")
    # KUBE-FORWARD: drop INVALID (kubernetes issue 74839), accept marked and established traffic.
    filter_rules += [
        f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID -j DROP",
        f"-A {KUBE_FORWARD} {_comment('kubernetes forwarding rules')} -m mark --mark {mark}/{mark} -j ACCEPT",
        f"-A {KUBE_FORWARD} {_comment('kubernetes forwarding conntrack rule')}"
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
    ]

    # Built-in chains are declared with policy "-": kube-proxy never sets a policy, the node keeps its own.
    filter_chains = [Chain(n) for n in ("INPUT", "FORWARD", "OUTPUT", KUBE_SERVICES, KUBE_EXTERNAL_SERVICES,
                                        KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL, KUBE_FIREWALL)]
    nat = [Chain(n) for n in ["PREROUTING", "OUTPUT", "POSTROUTING", KUBE_SERVICES, KUBE_NODEPORTS,
                              KUBE_POSTROUTING, KUBE_MARK_MASQ] + nat_chains]
    return {
        "filter": Table("filter", filter_chains, filter_rules),
        "nat": Table("nat", nat, nat_rules),
    }


def _jump_and_masquerade_rules(mark: str, localhost_nodeports: bool, random_fully: bool) -> Tuple[List[str], List[str]]:
    """The filter and nat rules every node has whatever its Services: the jumps from the built-in chains, the
    masquerade chains and kubelet's localnet rule."""
    # Jumps from the built-in chains. kube-proxy *prepends* each jump of iptablesJumpChains in turn, so
    # a chain ends up with them in reverse order; kubelet's KUBE-FIREWALL jumps predate kube-proxy's.
    new = "-m conntrack --ctstate NEW "
    lb_fw = f"{new}{_comment('kubernetes load balancer firewall')} -j {KUBE_PROXY_FIREWALL}"
    ext = f"{new}{_comment('kubernetes externally-visible service portals')} -j {KUBE_EXTERNAL_SERVICES}"
    portals_new = f"{new}{_comment('kubernetes service portals')} -j {KUBE_SERVICES}"
    portals = f"{_comment('kubernetes service portals')} -j {KUBE_SERVICES}"
    filter_rules: List[str] = [
        f"-A INPUT {lb_fw}",
        f"-A INPUT {_comment('kubernetes health check service ports')} -j {KUBE_NODEPORTS}",
        f"-A INPUT {ext}",
        f"-A INPUT -j {KUBE_FIREWALL}",
        f"-A FORWARD {lb_fw}",
        f"-A FORWARD {_comment('kubernetes forwarding rules')} -j {KUBE_FORWARD}",
        f"-A FORWARD {portals_new}",
        f"-A FORWARD {ext}",
        f"-A OUTPUT {lb_fw}",
        f"-A OUTPUT {portals_new}",
        f"-A OUTPUT -j {KUBE_FIREWALL}",
    ]
    nat_rules: List[str] = [
        f"-A PREROUTING {portals}",
        f"-A OUTPUT {portals}",
        f"-A POSTROUTING {_comment('kubernetes postrouting rules')} -j {KUBE_POSTROUTING}",
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
        # --xor-mark M, as iptables-save prints it: clear the mark so a re-traversal is not masqueraded again.
        f"-A {KUBE_POSTROUTING} -j MARK --set-xmark {mark}/0x0",
        f"-A {KUBE_POSTROUTING} {_comment('kubernetes service traffic requiring SNAT')} -j MASQUERADE"
        + (" --random-fully" if random_fully else ""),
        # --or-mark M, as iptables-save prints it.
        f"-A {KUBE_MARK_MASQ} -j MARK --set-xmark {mark}/{mark}",
    ]
    if localhost_nodeports:
        filter_rules.append(
            f"-A {KUBE_FIREWALL} ! -s 127.0.0.0/8 -d 127.0.0.0/8 {_comment('block incoming localnet connections')}"
            " -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP")
    return filter_rules, nat_rules


def _service_port_rules(p: "_PortPlan", cidr: str, large: bool) -> Tuple[List[str], List[str], List[str]]:
    """One service port's filter rules, nat rules and nat chains: REJECT without endpoints; else KUBE-SERVICES'
    match, KUBE-EXT for a NodePort, KUBE-SVC (masquerade from outside the pod network, affinity, random pick) and a
    KUBE-SEP per endpoint (hairpin masquerade, DNAT)."""

    def ep_comment(text: str) -> str:
        # Per-endpoint comments, which kube-proxy leaves out in large-cluster mode.
        return "" if large else " " + _comment(text)

    filter_rules: List[str] = []
    nat_rules: List[str] = []
    nat_chains: List[str] = []
    cip, port, proto, spn = p.service.cluster_ip, p.port.port, p.proto, p.spn
    if not p.endpoints:
        # No endpoints: nothing in nat; refuse new connections in filter (proxier.go: "has no endpoints").
        why = _comment(f"{spn} has no endpoints")
        filter_rules.append(f"-A {KUBE_SERVICES} -d {cip}/32 -p {proto} {why} -m {proto} --dport {port}"
                            " -j REJECT --reject-with icmp-port-unreachable")
        if p.node_port is not None:
            filter_rules.append(f"-A {KUBE_EXTERNAL_SERVICES} -p {proto} {why} -m addrtype --dst-type LOCAL"
                                f" -m {proto} --dport {p.node_port} -j REJECT --reject-with icmp-port-unreachable")
        return filter_rules, [], []
    cluster_ip_comment = _comment(f"{spn} cluster IP")
    nat_rules.append(f"-A {KUBE_SERVICES} -d {cip}/32 -p {proto} {cluster_ip_comment} -m {proto}"
                     f" --dport {port} -j {p.svc_chain}")
    if p.node_port is not None:
        nat_chains.append(p.ext_chain)
        nat_rules += [
            f"-A {KUBE_NODEPORTS} -p {proto} {_comment(spn)} -m {proto} --dport {p.node_port} -j {p.ext_chain}",
            f"-A {p.ext_chain} {_comment(f'masquerade traffic for {spn} external destinations')}"
            f" -j {KUBE_MARK_MASQ}",
            f"-A {p.ext_chain} -j {p.svc_chain}",
        ]
    # KUBE-SVC: masquerade what does not come from a pod, then pick an endpoint.
    nat_chains.append(p.svc_chain)
    nat_rules.append(f"-A {p.svc_chain} ! -s {cidr} -d {cip}/32 -p {proto} {cluster_ip_comment} -m {proto}"
                     f" --dport {port} -j {KUBE_MARK_MASQ}")
    affinity = p.service.session_affinity == "ClientIP"
    if affinity:
        for e in p.endpoints:
            nat_rules.append(
                f"-A {p.svc_chain}{ep_comment(f'{spn} -> {e.endpoint.address}')} -m recent --rcheck"
                f" --seconds {p.service.affinity_timeout} --reap --name {e.chain} {_RECENT_TAIL} -j {e.chain}")
    for e in p.endpoints:
        stat = f" -m statistic --mode random --probability {e.probability}" if e.probability else ""
        nat_rules.append(f"-A {p.svc_chain}{ep_comment(f'{spn} -> {e.endpoint.address}')}{stat} -j {e.chain}")
    # KUBE-SEP: hairpin masquerade, then DNAT (recording the client for affinity).
    for e in p.endpoints:
        nat_chains.append(e.chain)
        recent = f" -m recent --set --name {e.chain} {_RECENT_TAIL}" if affinity else ""
        nat_rules += [
            f"-A {e.chain} -s {e.endpoint.ip}/32{ep_comment(spn)} -j {KUBE_MARK_MASQ}",
            f"-A {e.chain} -p {proto}{ep_comment(spn)}{recent} -m {proto} -j DNAT"
            f" --to-destination {e.endpoint.address}",
        ]
    return filter_rules, nat_rules, nat_chains


# ------------------------------------------------------------------------------------------ describe


def describe(services: Sequence[Service]) -> List[Dict[str, Any]]:
    """What kube-proxy does with each service port, as plain JSON-ready dicts (sorted like the rules).

    Per service port: ``service`` ("ns/name"), ``port_name``, ``service_port`` (kube-proxy's "ns/name:port"),
    ``type``, ``protocol``, ``cluster_ip``, ``port``, ``target``, ``node_port``, ``session_affinity``,
    ``affinity_timeout`` (None unless ClientIP), ``svc_chain`` and ``ext_chain`` (None when not created),
    ``no_endpoints`` ("REJECT" when the service port has no endpoints, else None) and ``endpoints``: per
    endpoint, in rule order, ``pod``, ``node``, ``ip``, ``port``, ``sep_chain``, ``probability`` (the string
    on its rule, None for the last), ``share`` (overall fraction of new connections, 1/n) and ``dnat``
    (the ``--to-destination`` value). Headless services are left out, as kube-proxy ignores them.
    """
    out: List[Dict[str, Any]] = []
    for p in _plan_ports(services):
        svc, n = p.service, len(p.endpoints)
        out.append({
            "service": f"{svc.namespace}/{svc.name}",
            "namespace": svc.namespace,
            "name": svc.name,
            "port_name": p.port.name,
            "service_port": p.spn,
            "type": svc.type,
            "protocol": p.port.protocol,
            "cluster_ip": svc.cluster_ip,
            "port": p.port.port,
            "target": p.port.target,
            "node_port": p.node_port,
            "session_affinity": svc.session_affinity,
            "affinity_timeout": svc.affinity_timeout if svc.session_affinity == "ClientIP" else None,
            "svc_chain": p.svc_chain if n else None,
            "ext_chain": p.ext_chain if n and p.node_port is not None else None,
            "no_endpoints": None if n else "REJECT",
            "endpoints": [
                {
                    "pod": e.endpoint.pod,
                    "node": e.endpoint.node,
                    "ip": e.endpoint.ip,
                    "port": e.endpoint.port,
                    "sep_chain": e.chain,
                    "probability": e.probability,
                    "share": 1.0 / n,
                    "dnat": e.endpoint.address,
                }
                for e in p.endpoints
            ],
        })
    return out
