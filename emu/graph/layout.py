"""Where each element of a Graph is drawn: boxes and the lines between them, in pixels (pure, deterministic).

The picture reads like the source note's figures: Services along the top; the nodes side by side, each with its
pods in a grid (a pod holds its containers and, at its foot, its ``eth0``; the pod's host veth sits under it),
``cni0`` as a bar below the pods, the backend's device and the node's ``eth0`` at the node's foot; the underlay
switch as a bar under all nodes. Text is monospace, so a label's width is known without a font. Lines are
polylines: a veth pair straight down, a bridge port down the gutter beside its pod's cell, a Service's endpoint
straight to the pod.
"""

from dataclasses import dataclass
from typing import Dict, List, Tuple

from emu.graph.model import Element, Graph

__all__ = ["Box", "Layout", "layout", "FONT_SIZE", "LINE_HEIGHT", "CHAR_WIDTH"]

FONT_SIZE = 11
CHAR_WIDTH = 6.7  # monospace, 11 px
LINE_HEIGHT = 14
PAD = 8
GAP = 16
NODE_GAP = 40
MAX_COLUMNS = 4
MARGIN = 20
HEADER = 64  # the title and subtitle
SERVICE_ROW = 70  # height of the Services' row, with room for their lines

Point = Tuple[float, float]


@dataclass(frozen=True)
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2

    @property
    def bottom(self) -> float:
        return self.y + self.h

    @property
    def right(self) -> float:
        return self.x + self.w


@dataclass(frozen=True)
class Layout:
    width: float
    height: float
    boxes: Dict[str, Box]
    paths: Dict[str, List[Point]]


def text_width(label: str) -> float:
    return max(len(line) for line in label.split("\n")) * CHAR_WIDTH + 2 * PAD


def text_height(label: str) -> float:
    return len(label.split("\n")) * LINE_HEIGHT + PAD


# --------------------------------------------------------------------------------------------- measuring


@dataclass
class _Pod:
    element: Element
    eth0: str  # "" for a hostNetwork pod
    veth: str
    containers: List[Element]
    w: float = 0.0
    h: float = 0.0  # the pod's box
    cell_h: float = 0.0  # the pod and its veth


def _measure_pod(graph: Graph, pod: Element) -> _Pod:
    containers = graph.children(pod.id, "container")
    eth0 = next((e.id for e in graph.children(pod.id, "device")), "")
    veth = next((e.dst for e in graph.edges if e.kind == "veth" and e.src == eth0), "") if eth0 else ""
    widths = [text_width(pod.label), 150.0] + [text_width(c.label) + 2 * PAD for c in containers]
    if veth:
        widths.append(text_width(graph.element(veth).label))
    measured = _Pod(pod, eth0, veth, containers)
    measured.w = max(widths)
    measured.h = text_height(pod.label) + len(containers) * (LINE_HEIGHT + 8) + PAD + (26 if eth0 else 0)
    measured.cell_h = measured.h + (GAP + 22 if veth else 0)
    return measured


def _device_row(graph: Graph, node: Element) -> Tuple[List[Element], List[Element], List[Element]]:
    """A node's bridge(s), backend devices and underlay device."""
    devices = graph.children(node.id, "device")
    return ([d for d in devices if d.role == "bridge"], [d for d in devices if d.role == "overlay"],
            [d for d in devices if d.role == "underlay"])


# --------------------------------------------------------------------------------------------- placing


def layout(graph: Graph) -> Layout:
    """Place every element of ``graph``; boxes by element id, polylines by edge id."""
    boxes: Dict[str, Box] = {}
    services = graph.of_kind("service")
    top = MARGIN + HEADER + (SERVICE_ROW + 30 if services else 0)
    switch_of = _switch_of_nodes(graph)
    switches = graph.of_kind("switch")
    order = {s.id: i for i, s in enumerate(switches)}
    nodes = sorted(graph.of_kind("node"), key=lambda n: order.get(switch_of.get(n.id, ""), 0))
    x, previous = MARGIN, None
    spans: Dict[str, List[float]] = {}
    bottoms: List[float] = []
    gutters: Dict[str, float] = {}
    for node in nodes:
        switch = switch_of.get(node.id, "")
        if previous is not None and switch != previous:
            x += NODE_GAP  # a wider gap between the segments
        width, bottom = _place_node(graph, node, x, top, boxes, gutters)
        span = spans.setdefault(switch, [x, x + width])
        span[1] = x + width
        x += width + NODE_GAP
        bottoms.append(bottom)
        previous = switch
    right = max(x - NODE_GAP, MARGIN + 300)
    y = (max(bottoms) if bottoms else top) + 50
    for switch in switches:
        if switch.id in spans:
            x0, x1 = spans[switch.id]
            boxes[switch.id] = Box(x0, y, x1 - x0, text_height(switch.label))
    y = max((b.bottom for b in boxes.values()), default=y)
    routers = graph.of_kind("router")
    if routers:
        y, right = _place_routers(graph, routers, y + 60, boxes, right)
        rest = [s for s in switches if s.id not in boxes]
        for switch in rest:  # segments only routers are on: under the routers that reach them
            ends = [boxes[e.src] for e in graph.edges if e.kind == "link" and e.dst == switch.id and e.src in boxes]
            x0 = min((b.x for b in ends), default=MARGIN)
            x1 = max((b.right for b in ends), default=right)
            boxes[switch.id] = Box(x0 - PAD, y + 50, max(x1 - x0 + 2 * PAD, text_width(switch.label)),
                                   text_height(switch.label))
    sx = MARGIN
    for service in services:
        w = text_width(service.label)
        boxes[service.id] = Box(sx, MARGIN + HEADER, w, text_height(service.label))
        sx += w + GAP
    right = max(right, sx - GAP, max((b.right for b in boxes.values()), default=right))
    height = max((b.bottom for b in boxes.values()), default=top) + MARGIN + 40
    width = max(right + MARGIN, MARGIN * 2 + len(graph.subtitle) * CHAR_WIDTH, MARGIN * 2 + len(graph.title) * 9.5,
                MARGIN * 2 + max((len(line) for line in graph.trace), default=0) * CHAR_WIDTH)
    paths = {edge.id: _route(edge.kind, edge.src, edge.dst, boxes, gutters) for edge in graph.edges
             if edge.src in boxes and edge.dst in boxes}
    return Layout(width, height, boxes, paths)


def _switch_of_nodes(graph: Graph) -> Dict[str, str]:
    """node id -> the id of the switch its underlay link goes to."""
    found: Dict[str, str] = {}
    for edge in graph.edges:
        if edge.kind == "link" and edge.src in graph.index:
            parent = graph.element(edge.src).parent
            if parent.startswith("node:"):
                found[parent] = edge.dst
    return found


def _place_routers(graph: Graph, routers: List[Element], y: float, boxes: Dict[str, Box],
                   right: float) -> Tuple[float, float]:
    """Routers in a row under the switches, each near the switches it is on, its ports side by side; the
    bottom of the row and the drawing's right edge."""
    x = MARGIN
    bottom = y
    for router in routers:
        ports = graph.children(router.id, "device")
        widths = [text_width(p.label) for p in ports]
        w = max(text_width(router.label), sum(widths) + GAP * (len(ports) - 1) + 2 * PAD)
        near = [boxes[e.dst].cx for p in ports for e in graph.edges
                if e.kind == "link" and e.src == p.id and e.dst in boxes]
        x = max(x, (sum(near) / len(near) - w / 2) if near else x)
        h = text_height(router.label) + 2 * LINE_HEIGHT + 2 * PAD
        boxes[router.id] = Box(x, y, w, h)
        px = x + PAD
        for port, pw in zip(ports, widths):
            boxes[port.id] = Box(px, y + h - 2 * LINE_HEIGHT - PAD, pw, 2 * LINE_HEIGHT + 4)
            px += pw + GAP
        x += w + NODE_GAP
        bottom = max(bottom, y + h)
        right = max(right, x - NODE_GAP)
    return bottom, right


def _place_node(graph: Graph, node: Element, x: float, top: float, boxes: Dict[str, Box],
                gutters: Dict[str, float]) -> Tuple[float, float]:
    """Place a node and everything in it at (x, top); its width and its box's bottom."""
    pods = [_measure_pod(graph, p) for p in graph.children(node.id, "pod")]
    bridges, overlays, underlays = _device_row(graph, node)
    columns = max(1, min(MAX_COLUMNS, len(pods)))
    cell_w = max([p.w for p in pods], default=150.0)
    grid_w = columns * cell_w + (columns - 1) * GAP
    row_devices = overlays + underlays
    devices_w = sum(text_width(d.label) for d in row_devices) + GAP * max(0, len(row_devices) - 1)
    inner_w = max(grid_w, devices_w, text_width(node.label), 240.0)
    header_h = text_height(node.label) + PAD
    y = top + header_h
    rows = [pods[i:i + columns] for i in range(0, len(pods), columns)]
    for row in rows:
        row_h = max(p.cell_h for p in row)
        for column, pod in enumerate(row):
            cx = x + PAD + column * (cell_w + GAP)
            _place_pod(graph, pod, cx, y, cell_w, boxes)
            gutters[pod.veth] = cx + cell_w + GAP / 2 if row is not rows[-1] else 0.0
        y += row_h + GAP
    if not pods:
        y += GAP
    for bridge in bridges:
        boxes[bridge.id] = Box(x + PAD, y + 6, inner_w, text_height(bridge.label))
        y = boxes[bridge.id].bottom + 28
    dx = x + PAD
    row_h = max([text_height(d.label) for d in row_devices], default=0.0)
    for device in overlays:
        boxes[device.id] = Box(dx, y, text_width(device.label), row_h)
        dx += text_width(device.label) + GAP
    for device in underlays:  # the underlay device at the node's right-hand foot
        w = text_width(device.label)
        boxes[device.id] = Box(max(dx, x + PAD + inner_w - w), y, w, row_h)
    bottom = y + row_h + PAD
    boxes[node.id] = Box(x, top, inner_w + 2 * PAD, bottom - top)
    return inner_w + 2 * PAD, bottom


def _place_pod(graph: Graph, pod: _Pod, x: float, y: float, cell_w: float, boxes: Dict[str, Box]) -> None:
    boxes[pod.element.id] = Box(x, y, cell_w, pod.h)
    cy = y + text_height(pod.element.label)
    for container in pod.containers:
        boxes[container.id] = Box(x + PAD, cy, cell_w - 2 * PAD, LINE_HEIGHT + 4)
        cy += LINE_HEIGHT + 8
    if pod.eth0:
        w = text_width(graph.element(pod.eth0).label) + 10
        boxes[pod.eth0] = Box(x + (cell_w - w) / 2, y + pod.h - 26, w, 20)
    if pod.veth:
        w = text_width(graph.element(pod.veth).label)
        boxes[pod.veth] = Box(x + (cell_w - w) / 2, y + pod.h + GAP, w, 22)


def _route(kind: str, src: str, dst: str, boxes: Dict[str, Box], gutters: Dict[str, float]) -> List[Point]:
    a, b = boxes[src], boxes[dst]
    if kind == "port" and gutters.get(src):  # down the gutter beside the pod's cell, to cni0
        gutter = gutters[src]
        return [(a.cx, a.bottom), (a.cx, a.bottom + 6), (gutter, a.bottom + 6), (gutter, b.y)]
    if kind == "link":  # to the switch bar, above or below
        x = min(max(a.cx, b.x + 6), b.right - 6)
        return [(x, a.bottom), (x, b.y)] if b.y >= a.bottom else [(x, a.y), (x, b.bottom)]
    if kind in ("veth", "port", "route"):
        x = a.cx if b.x <= a.cx <= b.right else b.cx
        return [(x, a.bottom), (x, b.y)]
    if kind == "encap":
        return [(a.right, a.cy), (b.x, b.cy)]
    return [(a.cx, a.bottom), (b.cx, b.y)]  # a Service's endpoint
