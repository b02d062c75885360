"""The drawing of a cluster as plain data: what ``emu graph`` shows, made from a Plan alone (pure, no root).

A ``Graph`` is a tree of ``Element`` records (the underlay switch, nodes with their devices and pods, pods with
their ``eth0`` and containers, Services) and the ``Edge`` records between them (veth pairs, bridge ports, the
routing inside a node, the underlay links, a Service's endpoints). Every element has a stable id that the
renderers put in their output (``data-emu-id`` in SVG and HTML, a sanitised node name in DOT and Mermaid), and
its details (addresses, MACs, MTU, routes, neighbour and FDB entries, commands) as (key, value) pairs for hover
text. ``emu.graph.layout`` places the elements; ``svg``, ``html``, ``dot`` and ``mermaid`` write them;
``emu.graph.overlay`` adds a trace's hops as ``Mark`` records.

Ids: ``switch:<name>`` (a segment's switch; the single underlay is one segment), ``router:<router>``,
``dev:<router>:<port>``, ``node:<node>``, ``dev:<node>:<device>`` (eth0, cni0, a backend's device, a pod's host
veth), ``pod:<pod>``, ``podif:<pod>`` (the pod's eth0), ``ctr:<pod>/<container>``, ``svc:<namespace>/<name>``.
"""

from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Tuple

from emu.plan.model import Device, NodePlan, Plan, PodPlan, RouterPlan, ServicePlan

__all__ = ["Element", "Edge", "Mark", "Graph", "build_graph", "KINDS", "ROLES"]

Details = Tuple[Tuple[str, str], ...]

#: Element kinds, outermost first.
KINDS = ("switch", "router", "node", "device", "pod", "container", "service")
#: What a device is for (``Element.role``): the node's (or a router's) underlay link, the CNI bridge, a flannel
#: backend's device, a pod's host-side veth, a pod's own eth0.
ROLES = ("underlay", "bridge", "overlay", "veth", "pod-eth0")


@dataclass(frozen=True)
class Element:
    """One thing drawn.

    id: stable, unique (see the module docstring); kind: one of KINDS; label: its short caption (one or two
    lines joined by newlines); parent: the id of the element it is drawn in ("" for the outermost); role: a
    device's role (ROLES); details: hover text as (key, value) pairs, a value may have several lines.
    """

    id: str
    kind: str
    label: str
    parent: str = ""
    role: str = ""
    details: Details = ()


@dataclass(frozen=True)
class Edge:
    """A line between two elements: kind "veth" (a pod's eth0 and its host veth), "port" (a veth on cni0),
    "route" (the node's routing between cni0 and where it sends pod traffic out), "encap" (a backend device over
    the underlay device), "link" (a node's eth0 and the switch), "endpoint" (a Service and one of its pods)."""

    src: str
    dst: str
    kind: str
    label: str = ""

    @property
    def id(self) -> str:
        return f"{self.kind}:{self.src}->{self.dst}"


@dataclass(frozen=True)
class Mark:
    """A trace's hops at one element.

    element: the element's id; hops: the hop numbers there, in order; state: "seen", "not-seen" (the first hop
    not seen and what follows it) or "predicted" (no live evidence); last_seen: the element where the packet was
    last seen (the last hop seen before the first one not seen, or the path's end); notes: what happened there,
    one line per hop.
    """

    element: str
    hops: Tuple[int, ...]
    state: str
    last_seen: bool = False
    notes: Tuple[str, ...] = ()


@dataclass(frozen=True)
class Graph:
    """The drawing: title and subtitle lines, the elements (parents before children), the edges, and the marks
    of a trace overlay (with its title and verdict in ``trace``)."""

    title: str
    subtitle: str
    elements: Tuple[Element, ...]
    edges: Tuple[Edge, ...]
    marks: Tuple[Mark, ...] = ()
    trace: Tuple[str, ...] = ()
    index: Dict[str, Element] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.index.update({e.id: e for e in self.elements})

    def element(self, element_id: str) -> Element:
        return self.index[element_id]

    def children(self, parent: str, kind: Optional[str] = None) -> List[Element]:
        return [e for e in self.elements if e.parent == parent and (kind is None or e.kind == kind)]

    def of_kind(self, kind: str) -> List[Element]:
        return [e for e in self.elements if e.kind == kind]

    def mark(self, element_id: str) -> Optional[Mark]:
        for mark in self.marks:
            if mark.element == element_id:
                return mark
        return None

    def with_marks(self, marks: Iterable[Mark], trace: Iterable[str]) -> "Graph":
        return replace(self, marks=tuple(marks), trace=tuple(trace), index={})


# ------------------------------------------------------------------------------------------------- building


def build_graph(plan: Plan, node: Optional[str] = None) -> Graph:
    """The drawing of ``plan`` (of one node, its switch and the Services with endpoints on it, when ``node``)."""
    nodes = [n for n in plan.nodes if node is None or n.name == node]
    if node is not None and not nodes:
        raise KeyError(f"no node named {node!r} (nodes: {', '.join(n.name for n in plan.nodes)})")
    elements: List[Element] = []
    edges: List[Edge] = []
    wanted = {plan.segment_of(n).name for n in nodes} if node is not None else None
    segments = [s for s in plan.segments if wanted is None or s.name in wanted]
    for segment in segments:
        routed = len(plan.segments) > 1
        label = f"segment {segment.name}: switch {segment.switch}" if routed else f"switch {segment.switch}"
        details = [("underlay", segment.cidr), ("MTU", str(segment.mtu))]
        if segment.gateway:
            details.append(("gateway", segment.gateway))
        details.append(("what", "a Linux bridge in the root namespace: an L2 network of the underlay"))
        elements.append(Element(f"switch:{segment.switch}", "switch", f"{label}\n{segment.cidr}",
                                details=tuple(details)))
    for node_plan in nodes:
        _node(plan, node_plan, elements, edges)
        edges.append(Edge(_dev(node_plan.name, node_plan.link.dev), f"switch:{plan.segment_of(node_plan).switch}",
                          "link", node_plan.link.switch_port))
    if node is None:
        for router in plan.routers:
            _router(plan, router, elements, edges)
    drawn = {e.id for e in elements}
    for service in plan.services:
        _service(service, drawn, elements, edges, keep_unattached=node is None)
    options = " ".join(f"{k}={v}" for k, v in plan.backend_options)
    underlay = (f"underlay {len(plan.segments)} segments, {len(plan.routers)} routers" if plan.underlay is not None
                else f"underlay {plan.underlay_cidr} (MTU {plan.underlay_mtu})")
    subtitle = (f"flannel {plan.backend}{' (' + options + ')' if options else ''} · kube-proxy {plan.proxy_mode} · "
                f"pod network {plan.pod_cidr} (MTU {plan.pod_mtu}) · Services {plan.service_cidr} · {underlay}")
    title = f"cluster {plan.cluster}" + (f", node {node}" if node else "")
    return Graph(title, subtitle, tuple(elements), tuple(edges))


def _dev(node: str, device: str) -> str:
    return f"dev:{node}:{device}"


def _router(plan: Plan, router: RouterPlan, elements: List[Element], edges: List[Edge]) -> None:
    router_id = f"router:{router.name}"
    details = [("routes", _lines(router.routes) or "(connected only)"),
               ("sysctls", "\n".join(f"{k}={v}" for k, v in router.sysctls)),
               ("fragmentation needed", router.fragmentation_needed)]
    addresses = " · ".join(p.address for p in router.ports)
    elements.append(Element(router_id, "router", f"router {router.name}\n{addresses}", details=tuple(details)))
    for port in router.ports:
        segment = plan.segment(port.segment)
        elements.append(Element(_dev(router.name, port.dev), "device", f"{port.dev}\n{port.address}", router_id,
                                "underlay", (("segment", port.segment), ("address", port.address), ("MAC", port.mac),
                                             ("MTU", str(port.mtu)), ("switch port", port.switch_port))))
        edges.append(Edge(_dev(router.name, port.dev), f"switch:{segment.switch}", "link", port.switch_port))


def _node(plan: Plan, node: NodePlan, elements: List[Element], edges: List[Edge]) -> None:
    node_id = f"node:{node.name}"
    details: List[Tuple[str, str]] = [("underlay IP", node.ip), ("pod subnet", node.subnet)]
    if node.segment:
        details.append(("segment", node.segment))
    details.append(("routes", _lines(node.underlay_routes + node.routes + node.service_routes) or "(connected only)"))
    if node.failed_routes:
        details.append(("refused routes", "\n".join(f"{f.route}: {f.error}" for f in node.failed_routes)))
    if node.neighbours:
        details.append(("neighbours", _lines(node.neighbours)))
    if node.fdb:
        details.append(("FDB", _lines(node.fdb)))
    details.append(("sysctls", "\n".join(f"{k}={v}" for k, v in node.sysctls)))
    if node.udp is not None:
        table = "\n".join(f"{subnet} -> {ip}:{node.udp.port}" for subnet, ip in node.udp.table)
        details.append(("flanneld (udp)", f"{node.udp.tun} <-> udp {node.udp.listen_ip}:{node.udp.port}\n{table}"))
    label = f"node {node.name}\n{node.ip} · pods {node.subnet}"
    elements.append(Element(node_id, "node", label, details=tuple(details)))
    link = node.link
    elements.append(Element(_dev(node.name, link.dev), "device", f"{link.dev}\n{link.address}", node_id, "underlay", (
        ("kind", "veth to the switch (the node's NIC)"), ("address", link.address), ("MAC", link.mac),
        ("MTU", str(link.mtu)), ("switch port", link.switch_port),
        ("routes", _lines(_routes_of(node, link.dev)) or f"{plan.segment_of(node).cidr} (connected)"))))
    bridge = next((d for d in node.devices if d.kind == "bridge"), None)
    overlays = [d for d in node.devices if d.kind != "bridge"]
    for device in node.devices:
        role = "bridge" if device.kind == "bridge" else "overlay"
        elements.append(Element(_dev(node.name, device.name), "device", _device_label(device), node_id, role,
                                _device_details(node, device)))
    for device in overlays:
        edges.append(Edge(_dev(node.name, device.name), _dev(node.name, link.dev), "encap", _encap_label(node, device)))
    if bridge is not None:
        targets = overlays or [None]
        for device in targets:
            edges.append(Edge(_dev(node.name, bridge.name), _dev(node.name, device.name if device else link.dev),
                              "route", "routed"))
    for pod in plan.pods_on(node.name):
        _pod(node, pod, bridge, elements, edges)


def _pod(node: NodePlan, pod: PodPlan, bridge: Optional[Device], elements: List[Element], edges: List[Edge]) -> None:
    pod_id = f"pod:{pod.name}"
    labels = ", ".join(f"{k}={v}" for k, v in pod.labels)
    if pod.host_network:
        elements.append(Element(pod_id, "pod", f"pod {pod.name}\nhostNetwork ({pod.ip})", f"node:{node.name}",
                                details=(("network", f"the node's own ({pod.ip})"), ("labels", labels or "(none)"))))
    else:
        elements.append(Element(pod_id, "pod", f"pod {pod.name}\n{pod.ip}/{pod.prefixlen}", f"node:{node.name}",
                                details=(("namespace", pod.namespace), ("IP", f"{pod.ip}/{pod.prefixlen}"),
                                         ("labels", labels or "(none)"), ("node", node.name))))
        elements.append(Element(f"podif:{pod.name}", "device", pod.ifname, pod_id, "pod-eth0", (
            ("kind", f"veth, peer {pod.host_veth} in {node.name}"), ("address", f"{pod.ip}/{pod.prefixlen}"),
            ("MAC", pod.mac), ("MTU", str(pod.mtu)), ("routes", _lines(pod.routes)))))
        veth = _dev(node.name, pod.host_veth)
        elements.append(Element(veth, "device", pod.host_veth, f"node:{node.name}", "veth", (
            ("kind", f"veth, peer {pod.ifname} of pod {pod.name}"), ("MAC", pod.host_veth_mac),
            ("MTU", str(pod.mtu)), ("master", bridge.name if bridge else "(none)"))))
        edges.append(Edge(f"podif:{pod.name}", veth, "veth", "veth pair"))
        if bridge is not None:
            edges.append(Edge(veth, _dev(node.name, bridge.name), "port", ""))
    for container in pod.containers:
        command = " ".join(container.argv) + ("  (placeholder: no command given)" if container.placeholder else "")
        ports = ", ".join(f"{port}/{proto}" + (f" ({name})" if name else "") for port, proto, name in container.ports)
        details = [("image", container.image), ("command", command or "(none)")]
        if ports:
            details.append(("ports", ports))
        if container.mounts:
            details.append(("mounts", "\n".join(f"{m.volume} -> {m.path}" for m in container.mounts)))
        label = container.name + (f" :{','.join(str(p[0]) for p in container.ports)}" if container.ports else "")
        elements.append(Element(f"ctr:{pod.name}/{container.name}", "container", label, pod_id,
                                details=tuple(details)))


def _service(service: ServicePlan, drawn: Iterable[str], elements: List[Element], edges: List[Edge],
             keep_unattached: bool) -> None:
    present = set(drawn)
    service_id = f"svc:{service.namespace}/{service.name}"
    links: Dict[str, List[str]] = {}
    lines = []
    for port in service.ports:
        endpoints = ", ".join(f"{e.ip}:{e.port} ({e.pod})" for e in port.endpoints) or "<none>"
        node_port = f" nodePort {port.node_port}" if port.node_port else ""
        lines.append(f"{port.name + ' ' if port.name else ''}{port.port}/{port.protocol}{node_port} -> {endpoints}")
        for endpoint in port.endpoints:
            links.setdefault(f"pod:{endpoint.pod}", []).append(f"{port.port}->{endpoint.port}/{port.protocol}")
    attached = [pod for pod in links if pod in present]
    if not attached and not keep_unattached:
        return
    ports = ",".join(f"{p.port}/{p.protocol}" for p in service.ports)
    elements.append(Element(service_id, "service", f"svc {service.name}\n{service.cluster_ip} {ports}", details=(
        ("type", service.type), ("ClusterIP", service.cluster_ip), ("ports", "\n".join(lines) or "(none)"),
        ("session affinity", service.session_affinity))))
    for pod in attached:
        edges.append(Edge(service_id, pod, "endpoint", ", ".join(links[pod])))


def _device_label(device: Device) -> str:
    address = " ".join(device.addresses)
    extra = f" VNI {device.option('id')}" if device.option("id") else ""
    return f"{device.name}\n{address}{extra}".rstrip()


def _device_details(node: NodePlan, device: Device) -> Details:
    details = [("kind", device.kind), ("MTU", str(device.mtu))]
    if device.mac:
        details.append(("MAC", device.mac))
    if device.addresses:
        details.append(("addresses", " ".join(device.addresses)))
    if device.options:
        details.append(("options", " ".join(f"{k} {v}" for k, v in device.options)))
    routes = _lines(_routes_of(node, device.name))
    if device.kind == "bridge":
        routes = "\n".join(line for line in (f"{node.subnet} dev {device.name} (connected)", routes) if line)
    if routes:
        details.append(("routes", routes))
    neighbours = [n for n in node.neighbours if n.dev == device.name]
    if neighbours:
        details.append(("neighbours", _lines(neighbours)))
    fdb = [f for f in node.fdb if f.dev == device.name]
    if fdb:
        details.append(("FDB", _lines(fdb)))
    return tuple(details)


def _encap_label(node: NodePlan, device: Device) -> str:
    """How a backend's device sends over the underlay: the kernel's encapsulation (a UDP port), or a daemon's."""
    if device.option("dstport"):
        return f"{device.kind} UDP {device.option('dstport')}"
    if node.udp is not None and node.udp.tun == device.name:
        return f"flanneld UDP {node.udp.port}"
    return device.kind


def _routes_of(node: NodePlan, device: str) -> Tuple:
    return tuple(r for r in node.underlay_routes + node.routes + node.service_routes if r.dev == device)


def _lines(items: Iterable) -> str:
    return "\n".join(str(item) for item in items)
