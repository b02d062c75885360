"""Reading YAML safely, keeping the line of every field.

Owns the step from bytes on disk to plain Python data plus a map from field path to line number, so that every
later error can say ``FILE:LINE: field.path: ...``. Guards against what a hostile file can do to a loader:
huge files, binary or non-UTF-8 bytes, duplicate keys, and alias bombs ("billion laughs").
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Tuple

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the interpreter
    raise SystemExit(
        "emu: PyYAML is missing for this Python (" + __import__("sys").executable + "): run ./install.sh, "
        "or use the system Python (sudo python -m emu ...), or pip install pyyaml"
    ) from None

from emu.spec.errors import Problem

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_VALUES = 200_000  # scalars + collections after alias expansion

FieldPath = Tuple[Any, ...]


@dataclass
class Document:
    """One YAML document of a file: its data and the line of each field path."""

    file: str
    index: int
    data: Any
    lines: Dict[FieldPath, int] = field(default_factory=dict)

    def line(self, path: FieldPath) -> int:
        """The line of ``path``, or of its nearest ancestor that has one."""
        path = tuple(path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


class _TooLarge(Exception):
    pass


class _DuplicateKey(Exception):
    def __init__(self, key: Any, line: int, first: int) -> None:
        super().__init__(key)
        self.key, self.line, self.first = key, line, first


def _convert(loader: Any, node: Any, path: FieldPath, lines: Dict[FieldPath, int], budget: List[int]) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge()
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: Dict[Any, Any] = {}
        key_lines: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if isinstance(key, (list, dict)):
                key = str(key)
            line = key_node.start_mark.line + 1
            if key in result:
                raise _DuplicateKey(key, line, key_lines[key])
            key_lines[key] = line
            lines[path + (key,)] = line
            result[key] = _convert(loader, value_node, path + (key,), lines, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, path + (i,), lines, budget) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def read_documents(path: str) -> Tuple[List[Document], List[Problem]]:
    """Read every YAML document of ``path``; problems instead of exceptions."""
    name = str(path)
    p = Path(path)
    if not p.exists():
        return [], [Problem(name, None, "", "no such file", "give the path of a YAML topology file")]
    if p.is_dir():
        return [], [Problem(name, None, "", "is a directory", "give a YAML file, e.g. topologies/two_nodes.yaml")]
    try:
        size = p.stat().st_size
        if size > MAX_FILE_BYTES:
            return [], [
                Problem(
                    name, None, "", f"file is {size} bytes", f"a topology file must be under {MAX_FILE_BYTES} bytes"
                )
            ]
        raw = p.read_bytes()
    except OSError as exc:
        return [], [Problem(name, None, "", f"cannot read: {exc.strerror}", "check the path and its permissions")]
    if b"\x00" in raw:
        return [], [Problem(name, None, "", "binary file (contains NUL bytes)", "give a YAML text file")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [Problem(name, line, "", f"not UTF-8 (byte 0x{raw[exc.start]:02x})", "save the file as UTF-8")]
    if not text.strip():
        return [], [Problem(name, None, "", "file is empty", "describe a cluster: see topologies/two_nodes.yaml")]

    documents: List[Document] = []
    loader = yaml.SafeLoader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: Dict[FieldPath, int] = {}
            budget = [MAX_VALUES]
            data = _convert(loader, node, (), lines, budget)
            documents.append(Document(name, index, data, lines))
            index += 1
    except _TooLarge:
        return [], [Problem(name, None, "", f"document expands to more than {MAX_VALUES} values", "avoid alias bombs")]
    except _DuplicateKey as dup:
        return [], [
            Problem(name, dup.line, str(dup.key), f"duplicate key (first given on line {dup.first})", "keep one")
        ]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        return [], [Problem(name, line, "", f"YAML syntax error: {problem}", "fix the YAML syntax")]
    except RecursionError:
        return [], [Problem(name, None, "", "document nests too deeply", "flatten the structure")]
    finally:
        loader.dispose()
    documents = [d for d in documents if d.data is not None]
    if not documents:
        return [], [Problem(name, None, "", "file has no YAML documents", "describe a cluster")]
    return documents, []
