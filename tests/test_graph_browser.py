"""``emu graph`` in a real browser: headless Chromium (tests/browser.py) loads the page of every shipped topology.

For each: the page asks for nothing but itself; every node, pod, container and device of the plan, the switch
and every Service is an element of the DOM with a rendered size inside the drawing; pointing at a pod's eth0
shows its MAC, address and routes; a screenshot is produced. Also the standalone SVG, and a page with a trace
drawn on it (the hop list outlines its element when pointed at). No root needed.
"""

from pathlib import Path
from typing import Dict, List

import pytest
from browser import Browser, chromium_problem
from test_graph import TOPOLOGIES, TOPOLOGY_IDS, plan_of, planned_ids

from emu.graph import render
from emu.trace.predict import predict

pytestmark = pytest.mark.skipif(bool(chromium_problem()), reason=chromium_problem() or "chromium here")

DRAWN = """(() => {
  const canvas = document.querySelector('svg.emu-graph').getBoundingClientRect();
  const out = {};
  for (const el of document.querySelectorAll('svg [data-emu-id]')) {
    const r = el.getBoundingClientRect();
    const inside = r.left >= canvas.left - 1 && r.right <= canvas.right + 1 && r.top >= canvas.top - 1
      && r.bottom <= canvas.bottom + 1;
    const shown = getComputedStyle(el).visibility !== 'hidden' && getComputedStyle(el).display !== 'none';
    out[el.getAttribute('data-emu-id')] = [r.width, r.height, inside && shown, r.left + r.width / 2,
      r.top + r.height / 2];
  }
  return out;
})()"""


@pytest.fixture(scope="module")
def browser():  # type: ignore[no-untyped-def]
    with Browser() as chromium:
        yield chromium


def drawn(browser: Browser) -> Dict[str, List[float]]:
    return browser.evaluate(DRAWN)


def point_at(browser: Browser, element_id: str) -> None:
    """Scroll the element into view and move the mouse onto its middle."""
    x, y = browser.evaluate(f"(() => {{ const e = document.querySelector('[data-emu-id=\"{element_id}\"]');"
                            " e.scrollIntoView({block: 'center', inline: 'center'});"
                            " const r = e.getBoundingClientRect(); return [r.left + r.width / 2, "
                            "r.top + r.height / 2]; })()")
    browser.hover(x, y)


@pytest.mark.parametrize("files", TOPOLOGIES, ids=TOPOLOGY_IDS)
def test_every_planned_object_is_drawn_in_chromium(browser: Browser, files: List[Path], tmp_path: Path) -> None:
    plan = plan_of(files)
    page = tmp_path / "graph.html"
    page.write_text(render(plan, "html"))
    browser.requests.clear()
    browser.open(page)
    assert browser.evaluate("document.documentElement.getAttribute('data-emu-ready')") == "yes"
    assert browser.requests == [page.resolve().as_uri()], "the page must ask for nothing but itself"
    boxes = drawn(browser)
    expected = planned_ids(plan)
    assert set(boxes) == expected
    flat = [i for i, (w, h, visible, _x, _y) in boxes.items() if w < 4 or h < 4 or not visible]
    assert flat == [], "elements not drawn (no size, hidden or outside the drawing)"
    pod = next((p for p in plan.pods if not p.host_network), None)
    if pod is not None:  # a pod's eth0: its MAC, address and routes
        target, expect = f"podif:{pod.name}", [f"MAC: {pod.mac}", f"{pod.ip}/{pod.prefixlen}",
                                                f"via {pod.gateway} dev {pod.ifname}"]
    else:  # a cluster without pods: a node's eth0
        link = plan.nodes[0].link
        target, expect = f"dev:{plan.nodes[0].name}:{link.dev}", [f"MAC: {link.mac}", link.address]
    point_at(browser, target)
    panel = browser.evaluate("[document.getElementById('emu-details').getAttribute('data-emu-for'), "
                             "document.getElementById('emu-details').innerText, "
                             "getComputedStyle(document.getElementById('emu-details')).display]")
    assert panel[0] == target and panel[2] == "block"
    assert [e for e in expect if e not in panel[1]] == [], panel[1]
    shot = browser.screenshot()
    assert shot.startswith(b"\x89PNG\r\n\x1a\n") and len(shot) > 5000
    (tmp_path / "graph.png").write_bytes(shot)


def test_the_standalone_svg_in_chromium(browser: Browser, tmp_path: Path) -> None:
    plan = plan_of(TOPOLOGIES[0])
    page = tmp_path / "graph.svg"
    page.write_text(render(plan, "svg"))
    browser.open(page)
    boxes = drawn(browser)
    assert set(boxes) == planned_ids(plan)
    assert all(w >= 4 and h >= 4 and visible for w, h, visible, _x, _y in boxes.values())
    assert browser.screenshot().startswith(b"\x89PNG")


def test_a_trace_on_the_page(browser: Browser, tmp_path: Path) -> None:
    files = [f for f in TOPOLOGIES if f[0].name == "two_nodes.yaml"][0]
    plan = plan_of(files)
    prediction = predict(plan, "client-0", "web-1", None, None)
    page = tmp_path / "trace.html"
    page.write_text(render(plan, "html", trace=prediction))
    browser.open(page)
    marked = browser.evaluate("[...document.querySelectorAll('[data-emu-mark]')]"
                              ".map(e => [e.getAttribute('data-emu-mark'), e.getBoundingClientRect().width])")
    assert {m for m, _w in marked} >= {"podif:client-0", "dev:node-1:flannel.1", "podif:web-1"}
    assert all(w > 4 for _m, w in marked)
    hops = browser.evaluate("document.querySelectorAll('#emu-hops li').length")
    assert hops == len(prediction.hops)
    item = browser.evaluate("(() => { const li = [...document.querySelectorAll('#emu-hops li')]"
                            ".find(l => l.getAttribute('data-emu-element') === 'dev:node-1:flannel.1');"
                            " li.scrollIntoView(); const r = li.getBoundingClientRect();"
                            " return [r.left + 5, r.top + r.height / 2]; })()")
    browser.hover(*item)
    outlined = browser.evaluate("document.querySelector('[data-emu-id=\"dev:node-1:flannel.1\"]')"
                                ".classList.contains('emu-hover')")
    assert outlined
    assert browser.screenshot().startswith(b"\x89PNG")
