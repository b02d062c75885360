"""The predicted path of one packet through a Plan, hop by hop: pure data, no root, no kernel.

This module owns the *prediction* half of ``emu trace``: it resolves the two ends of a trace (a pod, a node, a
Service or a bare address) against a Plan, checks the question (protocol, port, size), and has
``emu.trace.walk.Walk`` walk the packet through the planned dataplane the way the kernel would, using nothing but
plan data. The parts:

- ``emu.trace.model``: the records (``Place``, ``Hop``, ``Prediction``, ...) and ``TraceInputError``;
- ``emu.trace.routing``: each namespace's routing table and the longest-prefix ``lookup``;
- ``emu.trace.walk``: the walk itself (pods, the bridge, kube-proxy, flannel's devices, the underlay);
- ``emu.trace.verdicts``: the add-ons' verdicts on the packet (NetworkPolicy) as hops where the kernel decides.

Every hop is a ``Hop`` record: where it happens (pod, node or switch), on which device, in which direction the
device's packet counter must grow (``rx``/``tx``), what happens in words, and for routing and kube-proxy decisions
the route or rule chosen, so that ``emu.trace.verify`` can mark it seen or not from kernel evidence. When the plan
itself says the packet dies (no route, no pod behind an address, a Service port without endpoints) the last hop
is a ``drop`` hop saying why. ``Prediction.to_dict`` is the stable JSON form (``format: emu-trace/v1``).
"""

from __future__ import annotations

from ipaddress import IPv4Address
from typing import Optional, Tuple

from emu.plan.model import Plan
from emu.trace.model import (
    FORMAT,
    PROTOCOLS,
    STEPS,
    Hop,
    Place,
    Prediction,
    RouteChoice,
    ServiceChoice,
    TraceInputError,
)
from emu.trace.routing import lookup, route_table
from emu.trace.verdicts import with_verdicts
from emu.trace.walk import Walk

__all__ = ["TraceInputError", "Place", "RouteChoice", "ServiceChoice", "Hop", "Prediction", "predict", "resolve",
           "route_table", "lookup", "PROTOCOLS", "STEPS", "FORMAT"]

_PAYLOAD = {"icmp": 56, "tcp": 1, "udp": 9}  # bytes of payload the live client sends by default
_HEADERS = {"icmp": 28, "tcp": 52, "udp": 28}  # IP + ICMP/UDP header; IP + TCP with timestamps


# ------------------------------------------------------------------------------------------------ resolving


def resolve(plan: Plan, name: str) -> Place:
    """A pod, node or Service name, or an IPv4 address (of one of them or not), as a Place.

    A hostNetwork pod is its node's namespace: it resolves to the node, under the pod's name.
    """
    for pod in plan.pods:
        if pod.name == name:
            if pod.host_network:
                return Place(pod.name, "node", pod.ip, pod.node)
            return Place(pod.name, "pod", pod.ip, pod.node)
    for node in plan.nodes:
        if node.name == name:
            return Place(node.name, "node", node.ip, node.name)
    for service in plan.services:
        if service.name == name:
            return Place(service.name, "service", service.cluster_ip)
    try:
        address = str(IPv4Address(name))
    except ValueError:
        known = [p.name for p in plan.pods] + [n.name for n in plan.nodes] + [s.name for s in plan.services]
        raise TraceInputError(f"{name!r} is not a pod, node or Service of cluster {plan.cluster}, nor an IPv4 "
                              f"address (known: {', '.join(known)})") from None
    for pod in plan.pods:
        if pod.ip == address and not pod.host_network:
            return Place(pod.name, "pod", address, pod.node)
    for node in plan.nodes:
        if node.ip == address:
            return Place(node.name, "node", address, node.name)
    for service in plan.services:
        if service.cluster_ip == address:
            return Place(service.name, "service", address)
    return Place(address, "address", address)


def _split_port(text: str) -> Tuple[str, Optional[int]]:
    """``NAME:PORT`` or ``IP:PORT`` -> (NAME, PORT); anything else -> (text, None)."""
    if text.count(":") == 1:
        head, tail = text.split(":")
        if tail.isdigit():
            return head, int(tail)
    return text, None


def _protocol_and_port(
    plan: Plan, target: Place, dst_name: str, proto: Optional[str], port: Optional[int]
) -> Tuple[str, Optional[int]]:
    """The protocol and destination port of a trace to ``target``: as asked, else from the Service (tcp, or udp
    when its first port is), else icmp; no port for icmp. Raises TraceInputError for a wrong one."""
    if proto is not None:
        proto = proto.lower()
        if proto not in PROTOCOLS:
            raise TraceInputError(f"--proto must be one of {', '.join(PROTOCOLS)}, not {proto!r}")
    else:
        proto = "tcp" if (port is not None or target.kind == "service") else "icmp"
        if target.kind == "service" and port is None:
            service = next(s for s in plan.services if s.name == target.name)
            if service.ports and service.ports[0].protocol == "UDP":
                proto = "udp"
    if proto == "icmp":
        return proto, None
    if port is None:
        service = next((s for s in plan.services if s.cluster_ip == target.ip), None)
        ports = [p.port for p in service.ports if p.protocol.lower() == proto] if service else []
        if not ports:
            raise TraceInputError(f"--proto {proto} needs a port: give --port P (or {dst_name}:P)")
        return proto, ports[0]
    if not 1 <= port <= 65535:
        raise TraceInputError(f"--port must be 1..65535, not {port}")
    return proto, port


# -------------------------------------------------------------------------------------------------- predict


def predict(
    plan: Plan,
    src: str,
    dst: str,
    port: Optional[int] = None,
    proto: Optional[str] = None,
    endpoint: Optional[str] = None,
    size: Optional[int] = None,
) -> Prediction:
    """The predicted hops of a packet from ``src`` to ``dst`` in ``plan``.

    src: a pod or node name (a hostNetwork pod is its node).
    dst: a pod, node or Service name or an IPv4 address, optionally with ``:PORT``.
    port: the destination port (tcp/udp); a Service's first port of the protocol by default.
    proto: "icmp", "tcp" or "udp"; default tcp for a Service or when a port is given, else icmp.
    endpoint: for a Service, the endpoint to follow (pod name, pod IP, ``ip:port`` or KUBE-SEP chain); default the
        first in rule order (the live trace follows the one kube-proxy really picked).
    size: for icmp, the payload bytes (ping -s); the IP packet is 28 bytes more.
    Raises TraceInputError for an unknown name, a wrong protocol or a missing port.
    """
    dst_name, dst_port = _split_port(dst)
    if port is None:
        port = dst_port
    source = resolve(plan, src)
    if source.kind not in ("pod", "node"):
        raise TraceInputError(f"the source must be a pod or a node, and {src!r} is a {source.kind}")
    target = resolve(plan, dst_name)
    proto, port = _protocol_and_port(plan, target, dst_name, proto, port)
    if size is not None and proto != "icmp":
        raise TraceInputError("--size is the ICMP payload (ping -s): use it with --proto icmp")
    if size is not None and not 0 <= size <= 65507:
        raise TraceInputError(f"--size must be 0..65507 bytes, not {size}")
    ip_size = _HEADERS[proto] + (size if size is not None else _PAYLOAD[proto])

    walk = Walk(plan, proto, port, ip_size, endpoint)
    walk.dst_ip = target.ip
    if source.kind == "pod":
        walk.from_pod(plan.pod(source.name))
    else:
        walk.from_node(plan.node(source.node))
    final = target
    service = next((h.service for h in walk.hops if h.service is not None), None)
    if service is not None:
        pod = plan.pod(service.pod)
        final = Place(pod.name, "pod", pod.ip, pod.node)
    # the filter table sees the source pod's own address (a masquerade comes after it) and the DNAT's result
    sender = source.ip if source.kind == "pod" else walk.src_ip
    hops, passed = with_verdicts(plan, walk.hops, sender, walk.dst_ip, walk.port, proto)
    return Prediction(
        src=source,
        dst=target,
        target=final,
        proto=proto,
        port=port,
        size=ip_size,
        backend=plan.backend,
        cluster=plan.cluster,
        hops=tuple(hops),
        delivered=walk.delivered and passed,
        notes=tuple(walk.notes),
    )

