"""Printing a Plan for people (``emu plan --format text``) and programs (``--format json``).

The text form is grouped by node and written like the output of the tools a student will use on the live
cluster (``ip -br addr``, ``ip route``, ``ip neigh``, ``bridge fdb``, ``iptables-save``), so the plan can be
predicted, then checked line by line.
"""

import json
from typing import List, Optional

from emu import registry
from emu.plan.model import NodePlan, Plan, PodPlan


def to_json(plan: Plan, node: Optional[str] = None) -> str:
    data = plan.to_dict()
    if node is not None:
        data["nodes"] = [n for n in data["nodes"] if n["name"] == node]
        data["pods"] = [p for p in data["pods"] if p["node"] == node]
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def to_text(plan: Plan, node: Optional[str] = None, iptables: bool = True) -> str:
    out: List[str] = []
    options = " ".join(f"{k}={v}" for k, v in plan.backend_options)
    out.append(f"cluster {plan.cluster}: backend {plan.backend}{(' (' + options + ')') if options else ''}")
    out.append(
        f"  pod network {plan.pod_cidr} (/{plan.subnet_len} per node, pod MTU {plan.pod_mtu}), "
        f"services {plan.service_cidr}, underlay {plan.underlay_cidr} (MTU {plan.underlay_mtu}) "
        f"on switch {plan.switch}"
    )
    for n in plan.nodes:
        if node is None or n.name == node:
            out.append("")
            out.extend(_node_text(plan, n, iptables))
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


def _node_text(plan: Plan, n: NodePlan, iptables: bool) -> List[str]:
    out = [f"node {n.name}  {n.ip}  subnet {n.subnet}"]
    out.append(
        f"  underlay: {n.link.dev} {n.link.address} {n.link.mac} mtu {n.link.mtu} <-> {n.link.switch_port}"
        + _shaping(n)
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
    for r in n.routes:
        out.append(f"    {r}")
    for r in n.service_routes:
        out.append(f"    {r}  (Service range: a real node's default route)")
    if not n.routes + n.service_routes:
        out.append("    (none)")
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
    return out


def _shaping(n: NodePlan) -> str:
    parts = []
    if n.link.bw is not None:
        parts.append(f"bw {n.link.bw:g} Mbit/s")
    for key in ("delay", "jitter"):
        if getattr(n.link, key):
            parts.append(f"{key} {getattr(n.link, key)}")
    if n.link.loss is not None:
        parts.append(f"loss {n.link.loss:g}%")
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
