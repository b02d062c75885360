"""Printing a Plan for people (``emu plan --format text``) and programs (``--format json``).

The text form is grouped by node and written like the output of the tools a student will use on the live
cluster (``ip -br addr``, ``ip route``, ``ip neigh``, ``bridge fdb``, ``iptables-save``, ``nft list table``), so
the plan can be predicted, then checked line by line.
"""

import json
from typing import Any, List, Optional

from emu import registry
from emu.plan.model import NodePlan, Plan, PodPlan, RouterPlan
from emu.plan.nftables import render


def to_json(plan: Plan, node: Optional[str] = None) -> str:
    data = plan.to_dict()
    if node is not None:
        data["nodes"] = [n for n in data["nodes"] if n["name"] == node]
        data["pods"] = [p for p in data["pods"] if p["node"] == node]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def to_text(plan: Plan, node: Optional[str] = None, iptables: bool = True, nftables: bool = True) -> str:
    out: List[str] = []
    options = " ".join(f"{k}={v}" for k, v in plan.backend_options)
    out.append(
        f"cluster {plan.cluster}: backend {plan.backend}{(' (' + options + ')') if options else ''}, "
        f"kube-proxy {plan.proxy_mode} mode"
    )
    if plan.underlay is None:
        out.append(
            f"  pod network {plan.pod_cidr} (/{plan.subnet_len} per node, pod MTU {plan.pod_mtu}), "
            f"services {plan.service_cidr}, underlay {plan.underlay_cidr} (MTU {plan.underlay_mtu}) "
            f"on switch {plan.switch}"
        )
    else:
        out.append(
            f"  pod network {plan.pod_cidr} (/{plan.subnet_len} per node, pod MTU {plan.pod_mtu}), "
            f"services {plan.service_cidr}, underlay: {len(plan.segments)} segments, {len(plan.routers)} routers"
        )
        for segment in plan.segments:
            members = [n.name for n in plan.nodes if n.segment == segment.name]
            members += [r.name for r in plan.routers if any(p.segment == segment.name for p in r.ports)]
            gateway = f", gateway {segment.gateway}" if segment.gateway else ", no router"
            out.append(
                f"  segment {segment.name}: {segment.cidr} MTU {segment.mtu} on switch {segment.switch}{gateway}: "
                + ", ".join(members)
            )
    for n in plan.nodes:
        if node is None or n.name == node:
            out.append("")
            out.extend(_node_text(plan, n, iptables, nftables))
    for router in plan.routers:
        if node is None:
            out.append("")
            out.extend(router_text(router))
    if plan.services and node is None:
        out.append("")
        out.append("services")
        for s in plan.services:
            for p in s.ports:
                eps = ", ".join(f"{e.ip}:{e.port} ({e.pod})" for e in p.endpoints) or "<none>"
                node_port = f" nodePort {p.node_port}" if p.node_port else ""
                out.append(
                    f"  {s.name}{':' + p.name if p.name else ''}  {s.type}  {s.cluster_ip}:{p.port}/{p.protocol}"
                    f"{node_port} -> {eps}"
                )
            if s.external_name:
                out.append(f"  {s.name}  ExternalName -> {s.external_name}")
            elif not s.ports:
                out.append(f"  {s.name}  {s.type}  {s.cluster_ip}  (no ports)")
    for name, fragment in plan.addons:
        lines = registry.addon_hook(name, "plan_text")(fragment) if node is None else []
        if lines:
            out.append("")
            out.extend(lines)
    return "\n".join(out) + "\n"


def router_text(router: RouterPlan) -> List[str]:
    """A router: its interfaces (with their shaping), its static routes, what it does with "fragmentation needed"."""
    out = [f"router {router.name}  ({', '.join(p.segment for p in router.ports)})"]
    out.append("  interfaces (ip -br addr):")
    for p in router.ports:
        out.append(f"    {p.dev:<12} {p.address:<18} {p.mac} mtu {p.mtu} <-> {p.switch_port} ({p.segment})"
                   + _shaping(p))
    out.append("  routes (ip route, besides the connected ones):")
    out.extend(f"    {r}" for r in router.routes)
    if not router.routes:
        out.append("    (none)")
    out.append("  sysctls: " + ", ".join(f"{k}={v}" for k, v in router.sysctls))
    if router.fragmentation_needed == "drop":
        out.append("  ICMP fragmentation needed: dropped (sent and forwarded): path MTU discovery fails through it")
        out.extend(f"    {line}" for line in router.iptables.splitlines() if line.startswith("-A"))
    return out


def _node_text(plan: Plan, n: NodePlan, iptables: bool, nftables: bool) -> List[str]:
    segment = f"  segment {n.segment}" if n.segment else ""
    out = [f"node {n.name}  {n.ip}  subnet {n.subnet}{segment}"]
    out.append(
        f"  underlay: {n.link.dev} {n.link.address} {n.link.mac} mtu {n.link.mtu} <-> {n.link.switch_port}"
        + _shaping(n.link)
    )
    out.append("  devices (ip -br addr):")
    out.append(f"    {n.link.dev:<12} {n.link.address}")
    for d in n.devices:
        extra = " ".join(f"{k} {v}" for k, v in d.options)
        out.append(
            f"    {d.name:<12} {' '.join(d.addresses):<18} {d.kind} mtu {d.mtu}"
            + (f" {d.mac}" if d.mac else "")
            + (f" ({extra})" if extra else "")
        )
    pods = plan.pods_on(n.name)
    for p in pods:
        if not p.host_network:
            out.append(f"    {p.host_veth:<12} {'':<18} veth master cni0 mtu {p.mtu} -> pod {p.name} {p.ifname}")
    out.append("  routes (ip route, besides the connected ones):")
    for r in n.underlay_routes:
        out.append(f"    {r}  (the node's gateway on segment {n.segment})")
    for r in n.routes:
        out.append(f"    {r}")
    for r in n.service_routes:
        out.append(f"    {r}  (Service range: a real node's default route)")
    if not n.routes + n.service_routes + n.underlay_routes:
        out.append("    (none)")
    if n.failed_routes:
        out.append(f"  routes {plan.backend} cannot add (the kernel refuses them; flanneld logs the error):")
        for failed in n.failed_routes:
            out.append(f"    {failed.route}: {failed.error} ({failed.reason})")
    if n.neighbours:
        out.append("  neighbours (ip neigh):")
        out.extend(f"    {x}" for x in n.neighbours)
    if n.fdb:
        out.append("  forwarding database (bridge fdb):")
        out.extend(f"    {x}" for x in n.fdb)
    if n.udp:
        out.append(f"  flannel udp daemon: {n.udp.tun} <-> udp {n.udp.listen_ip}:{n.udp.port}")
        out.extend(f"    {subnet} -> {ip}:{n.udp.port}" for subnet, ip in n.udp.table)
    out.append("  sysctls: " + ", ".join(f"{k}={v}" for k, v in n.sysctls))
    out.append("  /run/flannel/subnet.env: " + " ".join(n.subnet_env.split()))
    out.append("  pods:")
    if not pods:
        out.append("    (none)")
    for p in pods:
        out.extend(_pod_text(p))
    if iptables:
        out.append("  iptables-save:")
        out.extend(f"    {line}" for line in n.iptables.splitlines())
        if n.ipsets:
            out.append("  ipsets (ipset restore, loaded before iptables-restore):")
            out.extend(f"    {line}" for line in n.ipsets.splitlines())
    if nftables:
        for table in n.nftables:
            out.append(f"  nft list table {table.prefix}:")
            out.extend(f"    {line}" for line in render(table).splitlines())  # nft's own tabs
    return out


def _shaping(link: Any) -> str:
    """A link's shaping (a node's Link or a RouterPort: bw, delay, jitter, loss), as ``  [bw 100 Mbit/s, ...]``."""
    parts = []
    if link.bw is not None:
        parts.append(f"bw {link.bw:g} Mbit/s")
    for key in ("delay", "jitter"):
        if getattr(link, key):
            parts.append(f"{key} {getattr(link, key)}")
    if link.loss is not None:
        parts.append(f"loss {link.loss:g}%")
    return ("  [" + ", ".join(parts) + "]") if parts else ""


def _pod_text(p: PodPlan) -> List[str]:
    if p.host_network:
        head = f"    {p.name}  hostNetwork (node's {p.ip})"
        lines = [head]
    else:
        lines = [f"    {p.name}  {p.ifname} {p.ip}/{p.prefixlen} {p.mac} mtu {p.mtu}  (peer {p.host_veth})"]
        lines.extend(f"      route {r}" for r in p.routes)
    if p.resolv_conf:
        lines.append(f"      /etc/resolv.conf ({p.dns_policy}): " + "; ".join(p.resolv_conf.strip().splitlines()))
    for c in p.containers:
        cmd = " ".join(c.argv) + ("  (placeholder: no command given)" if c.placeholder else "")
        ports = ", ".join(f"{port}/{proto}" + (f" ({name})" if name else "") for port, proto, name in c.ports)
        lines.append(f"      container {c.name}: {cmd}" + (f"  ports {ports}" if ports else ""))
    return lines
