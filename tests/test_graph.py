"""``emu graph`` from the plan alone (no root): every planned object is drawn, in every format, with its details;
one node's drawing; a trace's hops on it; the verb's files and exit statuses; the labs' handout pictures.

The same drawings in a real browser: tests/test_graph_browser.py.
"""

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import List, Set

import pytest

from emu.graph import FORMATS, draw, format_of, render
from emu.graph.layout import layout
from emu.graph.model import Graph, build_graph
from emu.graph.text import identifier
from emu.labs import load_lab
from emu.plan.build import build_plan
from emu.plan.model import Plan
from emu.registry import BACKENDS
from emu.spec.load import load
from emu.trace.predict import predict
from emu.trace.result import HopResult, TraceResult

ROOT = Path(__file__).resolve().parent.parent


def shipped_topologies() -> List[List[Path]]:
    """Every topology the project ships: topologies/*.yaml and each lab's files."""
    found = [[p] for p in sorted((ROOT / "topologies").glob("*.yaml"))]
    for lab in sorted(p for p in (ROOT / "labs").iterdir() if (p / "check.py").is_file()):
        found.append(load_lab(lab).topology)
    return found


TOPOLOGIES = shipped_topologies()
TOPOLOGY_IDS = [f"{p[0].parent.name}/{p[0].stem}" for p in TOPOLOGIES]


def plan_of(files: List[Path], backend: str = "") -> Plan:
    spec, _warnings = load([str(f) for f in files])
    return build_plan(spec, backend=backend or None)


def planned_ids(plan: Plan, node: str = "") -> Set[str]:
    """The element id of every object of the plan the drawing must show (of one node, when given)."""
    ids = {f"switch:{s.switch}" for s in plan.segments if not node or s.name == plan.segment_of(plan.node(node)).name}
    if not node:
        ids |= {f"router:{r.name}" for r in plan.routers}
        ids |= {f"dev:{r.name}:{p.dev}" for r in plan.routers for p in r.ports}
    for n in plan.nodes:
        if node and n.name != node:
            continue
        ids |= {f"node:{n.name}", f"dev:{n.name}:{n.link.dev}"} | {f"dev:{n.name}:{d.name}" for d in n.devices}
    for pod in plan.pods:
        if node and pod.node != node:
            continue
        ids.add(f"pod:{pod.name}")
        ids |= {f"ctr:{pod.name}/{c.name}" for c in pod.containers}
        if not pod.host_network:
            ids |= {f"podif:{pod.name}", f"dev:{pod.node}:{pod.host_veth}"}
    nodes_pods = {p.name for p in plan.pods if not node or p.node == node}
    for service in plan.services:
        if not node or any(e.pod in nodes_pods for port in service.ports for e in port.endpoints):
            ids.add(f"svc:{service.namespace}/{service.name}")
    return ids


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("files", TOPOLOGIES, ids=TOPOLOGY_IDS)
def test_every_planned_object_is_drawn_in_every_format(files: List[Path], backend: str) -> None:
    plan = plan_of(files, backend)
    graph = build_graph(plan)
    expected = planned_ids(plan)
    assert {e.id for e in graph.elements} == expected
    assert len({e.id for e in graph.elements}) == len(graph.elements), "element ids must be unique"
    for element in graph.elements:
        assert not element.parent or element.parent in graph.index, element
    placed = layout(graph)
    assert set(placed.boxes) == expected
    for element in graph.elements:  # children inside their parents, everything inside the picture
        box = placed.boxes[element.id]
        assert 0 <= box.x and box.right <= placed.width and 0 <= box.y and box.bottom <= placed.height, element.id
        if element.parent:
            outer = placed.boxes[element.parent]
            assert outer.x <= box.x and box.right <= outer.right and outer.y <= box.y and box.bottom <= outer.bottom
    for output_format in ("html", "svg"):
        text = render(plan, output_format)
        drawn = set(re.findall(r'<g [^>]*data-emu-id="([^"]+)"', text))
        assert drawn == {e.id.replace("&", "&amp;") for e in graph.elements}, output_format
    for output_format in ("dot", "mermaid"):
        text = render(plan, output_format)
        missing = [i for i in expected if not re.search(rf"\b{re.escape(identifier(i))}\b", text)]
        assert missing == [], output_format
    assert len({identifier(i) for i in expected}) == len(expected), "DOT/Mermaid identifiers must be distinct"


def test_pods_are_wired_to_their_bridge_and_nodes_to_the_switch() -> None:
    plan = plan_of([ROOT / "topologies" / "two_nodes.yaml"])
    graph = build_graph(plan)
    edges = {(e.src, e.dst, e.kind) for e in graph.edges}
    pod = plan.pod("web-1")
    assert (f"podif:{pod.name}", f"dev:node-2:{pod.host_veth}", "veth") in edges
    assert (f"dev:node-2:{pod.host_veth}", "dev:node-2:cni0", "port") in edges
    assert ("dev:node-2:flannel.1", "dev:node-2:eth0", "encap") in edges
    assert ("dev:node-2:eth0", f"switch:{plan.switch}", "link") in edges
    endpoints = {e.dst for e in graph.edges if e.kind == "endpoint" and e.src == "svc:default/web"}
    assert endpoints == {"pod:web-0", "pod:web-1"}


def test_host_gw_routes_cni0_straight_to_eth0() -> None:
    graph = build_graph(plan_of([ROOT / "topologies" / "two_nodes.yaml"], "host-gw"))
    assert ("dev:node-1:cni0", "dev:node-1:eth0") in {(e.src, e.dst) for e in graph.edges if e.kind == "route"}
    assert not [e for e in graph.elements if e.role == "overlay"]


def test_details_carry_addresses_macs_and_routes() -> None:
    plan = plan_of([ROOT / "topologies" / "two_nodes.yaml"])
    graph = build_graph(plan)
    pod = plan.pod("client-0")
    eth0 = dict(graph.element("podif:client-0").details)
    assert eth0["MAC"] == pod.mac and eth0["address"] == f"{pod.ip}/{pod.prefixlen}" and eth0["MTU"] == "1450"
    assert "default via 10.244.1.1 dev eth0" in eth0["routes"]
    vxlan = dict(graph.element("dev:node-1:flannel.1").details)
    node = plan.node("node-1")
    assert vxlan["MAC"] == node.devices[1].mac
    assert str(node.routes[0]) in vxlan["routes"] and str(node.neighbours[0]) in vxlan["neighbours"]
    assert str(node.fdb[0]) in vxlan["FDB"]
    shell = dict(graph.element("ctr:client-0/shell").details)
    assert shell["command"] == "sleep infinity"
    text = render(plan, "svg")
    assert json.dumps([list(p) for p in graph.element("podif:client-0").details]).replace('"', "&quot;") in text


def test_one_node() -> None:
    plan = plan_of([ROOT / "topologies" / "two_nodes.yaml"])
    graph = build_graph(plan, "node-2")
    assert {e.id for e in graph.elements} == planned_ids(plan, "node-2")
    assert "pod:client-0" not in graph.index and "svc:default/web" in graph.index
    assert {e.dst for e in graph.edges if e.kind == "endpoint" and e.src == "svc:default/web"} == {"pod:web-1"}
    with pytest.raises(KeyError, match="no node named 'node-9'"):
        build_graph(plan, "node-9")


def _marks(graph: Graph):  # type: ignore[no-untyped-def]
    return {m.element: m for m in graph.marks}


def test_a_predicted_trace_marks_every_hop() -> None:
    plan = plan_of([ROOT / "topologies" / "two_nodes.yaml"])
    prediction = predict(plan, "client-0", "web-1", None, None)
    graph = draw(plan, trace=prediction)
    marks = _marks(graph)
    assert sorted(h for m in graph.marks for h in m.hops) == [h.index for h in prediction.hops]
    for element in ("podif:client-0", "dev:node-1:flannel.1", "dev:node-1:eth0", f"switch:{plan.switch}",
                    "dev:node-2:flannel.1", "dev:node-2:cni0", "podif:web-1"):
        assert marks[element].state == "predicted", element
    assert not any(m.last_seen for m in graph.marks)
    assert graph.trace[0].startswith("trace client-0 (10.244.1.2) -> web-1 (10.244.2.2): icmp")
    text = render(plan, "svg", trace=prediction)
    assert 'data-emu-mark="dev:node-1:flannel.1"' in text and "mark-predicted" in text


def test_a_live_trace_marks_where_the_packet_was_last_seen() -> None:
    plan = plan_of([ROOT / "topologies" / "two_nodes.yaml"])
    prediction = predict(plan, "client-0", "web-1", None, None)
    lost = next(h.index for h in prediction.hops if h.device == "flannel.1" and h.location == "node-1")
    hops = [HopResult(h, h.index < lost, "counters") for h in prediction.hops]
    result = TraceResult(prediction, hops, sent=5, expected=5, answered=0, client="5 sent, 0 answered",
                         first_not_seen=lost, reason="no neighbour entry for 10.244.2.0 on flannel.1")
    graph = draw(plan, trace=result)
    marks = _marks(graph)
    assert marks["dev:node-1:flannel.1"].state == "not-seen"
    assert marks["podif:web-1"].state == "not-seen" and marks["podif:client-0"].state == "seen"
    last = [m.element for m in graph.marks if m.last_seen]
    before = prediction.hops[lost - 2]
    assert last == [f"node:{before.location}" if not before.device else f"dev:{before.location}:{before.device}"]
    assert any("first hop NOT SEEN" in line and "no neighbour entry" in line for line in graph.trace)
    for output_format in FORMATS:
        text = render(plan, output_format, trace=result)
        assert "last seen" in text, output_format
    html = render(plan, "html", trace=result)
    assert f'data-emu-last-seen="{last[0]}"' in html and 'data-emu-element="dev:node-1:flannel.1"' in html


def test_format_by_suffix() -> None:
    assert [format_of(p) for p in ("a.html", "a.SVG", "a.dot", "a.gv", "a.mmd", "a")] == \
        ["html", "svg", "dot", "dot", "mermaid", "html"]


def test_the_page_fetches_nothing() -> None:
    html = render(plan_of([ROOT / "topologies" / "guestbook.yaml"]), "html")
    assert "default-src 'none'" in html
    assert not re.search(r"(src|href)=", html), "the page must not refer to anything outside it"
    assert re.findall(r"https?://[^\"' ]+", html) == ["http://www.w3.org/2000/svg"]


def emu(*args: str) -> "subprocess.CompletedProcess[str]":
    return subprocess.run([sys.executable, "-m", "emu", *args], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=60)


def test_the_verb(tmp_path: Path) -> None:
    out = tmp_path / "g" / "two.svg"
    done = emu("graph", "topologies/two_nodes.yaml", "-o", str(out), "--backend", "udp")
    assert done.returncode == 0, done.stderr
    assert out.read_text().startswith("<?xml") and "dev:node-1:flannel0" in out.read_text()
    done = emu("graph", "topologies/two_nodes.yaml", "--format", "dot", "--node", "node-1")
    assert done.returncode == 0 and done.stdout.startswith('graph "cluster two-nodes, node node-1"')
    bad = emu("graph", "topologies/two_nodes.yaml", "--node", "node-9")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "emu graph: --node: no node named 'node-9' (one of node-1, node-2)"]
    bad = emu("graph", "topologies/missing.yaml")
    assert bad.returncode == 2 and "missing.yaml" in bad.stderr and "Traceback" not in bad.stderr
    predicted = emu("trace", "topologies/two_nodes.yaml", "client-0", "web", "--predict", "--graph",
                    str(tmp_path / "t.html"))
    assert predicted.returncode == 0, predicted.stderr
    assert 'data-emu-mark="podif:client-0"' in (tmp_path / "t.html").read_text()


LAB_PICTURES = sorted((ROOT / "labs").glob("*/topology.svg"))


def test_every_lab_handout_embeds_its_picture() -> None:
    labs = sorted(p for p in (ROOT / "labs").iterdir() if (p / "check.py").is_file())
    assert [p.parent for p in LAB_PICTURES] == labs
    for lab in labs:
        assert "](topology.svg)" in (lab / "README.md").read_text(), lab.name


@pytest.mark.parametrize("picture", LAB_PICTURES, ids=[p.parent.name for p in LAB_PICTURES])
def test_lab_pictures_are_up_to_date(picture: Path) -> None:
    """Regenerate with: python -m emu graph labs/<lab>/topology.yaml [manifests...] -o labs/<lab>/topology.svg"""
    lab = load_lab(picture.parent)
    assert picture.read_text() == render(plan_of(lab.topology, lab.backend or ""), "svg"), \
        f"{picture} is out of date: python -m emu graph {' '.join(str(p.relative_to(ROOT)) for p in lab.topology)} " \
        f"-o {picture.relative_to(ROOT)}"
