"""The shape of the code, checked from its source (AST, no import): layers, cycles, feature ownership, sizes.

docs/architecture.md draws the layers; this test holds the code to them:
- every import of an ``emu`` module points down the layers (or stays in its own), at module level or inside a
  function alike, and the import graph has no cycle;
- an import inside a function is there only to keep Mininet (an optional, root-only dependency) away from the
  verbs that need no root, or in the package root's lazy API and the CLI's verb dispatch;
- a flannel backend's name appears in code only in its module and the registry (tests and docs aside);
- no module over 500 lines, no function over 80 lines without a ``# long:`` comment at its top saying why.
"""

import ast
from pathlib import Path
from typing import Dict, List, Optional, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "emu"

#: Layers from the bottom up; a module belongs to the layer of its longest matching prefix.
LAYERS: List[Tuple[str, Tuple[str, ...]]] = [
    ("base", ("emu.errors", "emu.types", "emu.features")),
    (
        "models",
        (
            "emu.spec.errors",
            "emu.spec.yamlsrc",
            "emu.spec.model",
            "emu.spec.reader",
            "emu.spec.kube_fields",
            "emu.plan.model",
            "emu.plan.names",
            "emu.plan.ipam",
            "emu.plan.iptables",
            "emu.plan.nftables",
            "emu.plan.resolv",
        ),
    ),
    ("features", ("emu.backends", "emu.proxy", "emu.addons", "emu.registry")),
    ("spec", ("emu.spec",)),
    ("plan", ("emu.plan", "emu.graph")),
    ("apply", ("emu.apply",)),
    ("controller", ("emu.controller",)),
    (
        "verbs",
        (
            "emu",
            "emu.cli",
            "emu.session",
            "emu.shell",
            "emu.doctor",
            "emu.experiment",
            "emu.trace",
            "emu.labs",
            "emu.graph.command",
            "emu.control",
            "emu.faults",
        ),
    ),
]
#: Layers beside the stack: they may import only the base layer (and themselves), and only verbs import them.
SIDE_LAYERS: Dict[str, Tuple[str, ...]] = {"measure": ("emu.measure",), "report": ("emu.report",)}
#: Where an import inside a function needs no Mininet-related reason.
LAZY_API = {"emu", "emu.cli", "emu.__main__"}
#: The flannel backends' names, and the only modules whose code may spell them.
BACKEND_NAMES = {"vxlan", "host-gw", "host_gw"}
BACKEND_OWNERS = ("emu.backends", "emu.registry")
MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


SOURCES: Dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
TREES: Dict[str, ast.Module] = {name: ast.parse(path.read_text(), str(path)) for name, path in SOURCES.items()}


def layer_of(module: str) -> str:
    best, best_len = "", -1
    for name, prefixes in list(LAYERS) + list(SIDE_LAYERS.items()):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


RANK = {name: i for i, (name, _) in enumerate(LAYERS)}


def _resolve(module: str, node: ast.AST) -> List[str]:
    """The emu modules an import statement names (``from emu.plan import names`` names ``emu.plan.names``)."""
    out: List[str] = []
    if isinstance(node, ast.Import):
        out = [a.name for a in node.names if a.name == "emu" or a.name.startswith("emu.")]
    elif isinstance(node, ast.ImportFrom) and node.module and (node.module == "emu" or node.module.startswith("emu.")):
        for alias in node.names:
            full = f"{node.module}.{alias.name}"
            out.append(full if full in SOURCES else node.module)
    return [m for m in out if m in SOURCES]


class Import:
    def __init__(self, source: str, target: str, line: int, in_function: bool) -> None:
        self.source, self.target, self.line, self.in_function = source, target, line, in_function

    def __repr__(self) -> str:
        return f"{SOURCES[self.source].relative_to(ROOT)}:{self.line}: {self.source} -> {self.target}"


def imports() -> List[Import]:
    found: List[Import] = []
    for module, tree in TREES.items():
        functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        inside = {id(sub) for f in functions for sub in ast.walk(f)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not _type_checking_only(tree, node):
                for target in _resolve(module, node):
                    if target != module:
                        found.append(Import(module, target, node.lineno, id(node) in inside))
    return found


def _type_checking_only(tree: ast.Module, node: ast.AST) -> bool:
    """Imports under ``if TYPE_CHECKING:`` are for type checkers only: never executed, no arrow."""
    for block in ast.walk(tree):
        if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING":
            if any(sub is node for stmt in block.body for sub in ast.walk(stmt)):
                return True
    return False


IMPORTS = imports()


def test_every_module_has_a_layer() -> None:
    assert [m for m in SOURCES if not layer_of(m)] == []


def test_imports_point_down_the_layers() -> None:
    upward = []
    for imp in IMPORTS:
        src, dst = layer_of(imp.source), layer_of(imp.target)
        if src in SIDE_LAYERS:
            ok = dst in ("base", src)
        elif dst in SIDE_LAYERS:
            ok = src == "verbs"
        else:
            ok = RANK[dst] <= RANK[src]
        if not ok:
            upward.append(f"{imp} ({src} -> {dst})")
    assert upward == [], "imports pointing up the layers:\n" + "\n".join(upward)


def _mininet_modules() -> Set[str]:
    """Modules that import Mininet, directly or through other emu modules at module level."""
    needs = {m for m, tree in TREES.items() if any(_names_mininet(n) for n in ast.walk(tree))}
    graph: Dict[str, Set[str]] = {}
    for imp in IMPORTS:
        if not imp.in_function:
            graph.setdefault(imp.source, set()).add(imp.target)
    changed = True
    while changed:
        changed = False
        for module, targets in graph.items():
            if module not in needs and targets & needs:
                needs.add(module)
                changed = True
    return needs


def _names_mininet(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name.split(".")[0] == "mininet" for a in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mininet"


def test_imports_inside_functions_only_keep_mininet_optional() -> None:
    mininet = _mininet_modules()
    lazy = [
        str(imp)
        for imp in IMPORTS
        if imp.in_function and imp.source not in LAZY_API and imp.target not in mininet
    ]
    assert lazy == [], "imports inside functions that no optional dependency explains:\n" + "\n".join(lazy)


def test_the_import_graph_has_no_cycle() -> None:
    graph: Dict[str, Set[str]] = {}
    for imp in IMPORTS:
        graph.setdefault(imp.source, set()).add(imp.target)
    state: Dict[str, int] = {}  # 1 visiting, 2 done

    def visit(module: str, path: List[str]) -> Optional[List[str]]:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path + [module, target]
            if target not in state:
                found = visit(target, path + [module])
                if found:
                    return found
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module, [])
            assert cycle is None, "import cycle: " + " -> ".join(cycle[cycle.index(cycle[-1]) :])


def _docstrings(tree: ast.Module) -> Set[int]:
    """ids of the string constants that are docstrings (documentation, not code)."""
    out: Set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def test_backend_names_live_only_in_their_modules_and_the_registry() -> None:
    found = []
    for module, tree in TREES.items():
        if any(module == o or module.startswith(o + ".") for o in BACKEND_OWNERS):
            continue
        docs = _docstrings(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                words = set(node.value.replace(",", " ").replace("'", " ").replace('"', " ").split())
                if words & BACKEND_NAMES:
                    found.append(f"{SOURCES[module].relative_to(ROOT)}:{node.lineno}: {node.value!r:.70}")
    assert found == [], "backend names outside their modules and the registry:\n" + "\n".join(found)


@pytest.mark.parametrize("module", sorted(SOURCES), ids=sorted(SOURCES))
def test_modules_and_functions_are_small(module: str) -> None:
    path = SOURCES[module]
    lines = path.read_text().splitlines()
    assert len(lines) <= MAX_FILE_LINES, f"{path.relative_to(ROOT)} has {len(lines)} lines (at most {MAX_FILE_LINES})"
    long = []
    for node in ast.walk(TREES[module]):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            top = "\n".join(lines[node.lineno - 1 : node.lineno + 12])
            if length > MAX_FUNCTION_LINES and "# long:" not in top:
                long.append(f"{node.name} at line {node.lineno}: {length} lines")
    assert long == [], f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines without a reason:\n" + "\n".join(long)
