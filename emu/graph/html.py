"""``emu graph --format html``: one self-contained page, the SVG drawing with details on hover.

Nothing is fetched: the styles and the script are inline, nothing in the page refers to anything outside it (the
one URL is the SVG namespace's name, which is never fetched), and its Content-Security-Policy
(``default-src 'none'``) forbids the browser any request, so the page works on a machine without network and
shows the same everywhere. Hovering (or focusing) an element shows its details in a panel
that follows the pointer (``#emu-details``: its label, then each detail: addresses, MACs, MTU, routes, neighbour
and FDB entries, commands); clicking one pins the panel. With a trace overlay the page lists the hops beside the
drawing; hovering a hop outlines its element.
"""

from html import escape

from emu.graph.layout import layout
from emu.graph.model import Graph
from emu.graph.svg import to_svg

__all__ = ["to_html", "CSP"]

CSP = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"

_PAGE_STYLE = """
body { margin: 0; font-family: "DejaVu Sans", sans-serif; background: #fafafa; color: #111; }
main { padding: 12px; }
#emu-canvas { display: inline-block; background: #fff; border: 1px solid #ccc; }
#emu-details { position: fixed; display: none; max-width: 520px; padding: 8px 10px; background: #fffff0;
  border: 1px solid #555; box-shadow: 2px 2px 6px rgba(0,0,0,.25); font: 12px "DejaVu Sans Mono", monospace;
  white-space: pre-wrap; pointer-events: none; z-index: 10; }
#emu-details.pinned { pointer-events: auto; border-width: 2px; }
#emu-details .key { font-weight: bold; }
#emu-hops { font: 12px "DejaVu Sans Mono", monospace; }
#emu-hops h3 { font-size: 13px; margin: 10px 0 4px; }
#emu-hops ol { list-style: none; margin: 0; padding: 0; }
#emu-hops li { cursor: default; padding: 1px 0; white-space: pre; }
#emu-hops li:hover { background: #ffe9a8; }
[data-emu-id] { cursor: pointer; }
[data-emu-id].emu-hover > rect { stroke: #000; stroke-width: 2.5; }
footer { padding: 0 12px 12px; font-size: 12px; color: #555; }
"""

_SCRIPT = """
(function () {
  var panel = document.getElementById('emu-details');
  var pinned = null;
  function show(el, x, y) {
    var details = JSON.parse(el.getAttribute('data-emu-details') || '[]');
    panel.textContent = '';
    var head = document.createElement('div');
    head.className = 'key';
    head.textContent = el.querySelector('text').textContent.replace(/\\s+/g, ' ').trim();
    panel.appendChild(head);
    details.forEach(function (pair) {
      var row = document.createElement('div');
      var key = document.createElement('span');
      key.className = 'key';
      key.textContent = pair[0] + ': ';
      row.appendChild(key);
      row.appendChild(document.createTextNode(pair[1]));
      panel.appendChild(row);
    });
    panel.setAttribute('data-emu-for', el.getAttribute('data-emu-id'));
    panel.style.display = 'block';
    place(x, y);
  }
  function place(x, y) {
    var w = panel.offsetWidth, h = panel.offsetHeight;
    panel.style.left = Math.max(4, Math.min(x + 14, window.innerWidth - w - 4)) + 'px';
    panel.style.top = Math.max(4, Math.min(y + 14, window.innerHeight - h - 4)) + 'px';
  }
  function target(event) {
    var node = event.target;
    while (node && node.getAttribute && !node.getAttribute('data-emu-id')) { node = node.parentNode; }
    return node && node.getAttribute ? node : null;
  }
  var current = null;
  document.addEventListener('mouseover', function (event) {
    var el = target(event);
    if (current && current !== el) { current.classList.remove('emu-hover'); }
    current = el;
    if (!el) { if (!pinned) { panel.style.display = 'none'; } return; }
    el.classList.add('emu-hover');
    if (!pinned) { show(el, event.clientX, event.clientY); }
  });
  document.addEventListener('mousemove', function (event) {
    if (!pinned && panel.style.display === 'block') { place(event.clientX, event.clientY); }
  });
  document.addEventListener('click', function (event) {
    var el = target(event);
    pinned = el && pinned !== el ? el : null;
    panel.classList.toggle('pinned', !!pinned);
    if (el) { show(el, event.clientX, event.clientY); } else { panel.style.display = 'none'; }
  });
  Array.prototype.forEach.call(document.querySelectorAll('#emu-hops li'), function (li) {
    li.addEventListener('mouseover', function () {
      var el = document.querySelector('[data-emu-id="' + li.getAttribute('data-emu-element') + '"]');
      if (el) { el.classList.add('emu-hover'); }
    });
    li.addEventListener('mouseout', function () {
      var el = document.querySelector('[data-emu-id="' + li.getAttribute('data-emu-element') + '"]');
      if (el) { el.classList.remove('emu-hover'); }
    });
  });
  document.documentElement.setAttribute('data-emu-ready', 'yes');
})();
"""


def to_html(graph: Graph) -> str:
    """The page: title, the SVG drawing, the trace's hops when there is one, and the hover script."""
    svg = to_svg(graph, layout(graph), standalone=False)
    hops = ""
    if graph.marks:
        element_of = {hop: mark.element for mark in graph.marks for hop in mark.hops}
        items = []
        for line in graph.trace[1:]:
            number = line.strip().split(".", 1)[0]
            element = element_of.get(int(number)) if number.isdigit() else None
            attribute = f' data-emu-element="{escape(element)}"' if element else ""
            items.append(f"<li{attribute}>{escape(line)}</li>")
        hops = (f'<section id="emu-hops"><h3>{escape(graph.trace[0])}</h3><ol>{"".join(items)}</ol></section>'
                if graph.trace else "")
    return f"""<!DOCTYPE html>
<html lang="en" data-emu-format="emu-graph/v1">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>{escape(graph.title)}</title>
<style>{_PAGE_STYLE}</style>
</head>
<body>
<main>
<div id="emu-canvas">
{svg}</div>
{hops}
</main>
<footer>{escape(graph.subtitle)} · hover an element for its details, click to pin them · made by emu graph</footer>
<div id="emu-details" role="tooltip"></div>
<script>{_SCRIPT}</script>
</body>
</html>
"""
