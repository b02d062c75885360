"""Reading YAML safely, keeping the line of every field.

Owns the step from bytes on disk to plain Python data plus a map from field path to line number, so that every
later error can say ``FILE:LINE: field.path: ...``. Guards against what a hostile file can do to a loader: huge
files, files that never end (``/dev/zero``, FIFOs), binary or non-UTF-8 bytes, tabs, duplicate keys (every one is
reported, the first value is kept), alias bombs ("billion laughs"), recursive aliases and deep nesting. A syntax
error is located by the field path the parser had reached, so it reads like any other problem.

Only the standard library and PyYAML's SafeLoader are used: no tag ever constructs a Python object.
"""

import errno
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

from emu.spec.errors import Problem, dotted

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


_YAML_TAG = "tag:yaml.org,2002:"
PLAIN_TAGS = {_YAML_TAG + t for t in ("null", "bool", "int", "float", "str", "timestamp", "map", "seq")}


class _TooLarge(Exception):
    pass


class _BadTag(Exception):
    def __init__(self, path: FieldPath, line: int, tag: str) -> None:
        super().__init__(tag)
        self.path, self.line = path, line
        self.tag = "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag


def _convert(
    loader: Any,
    node: Any,
    path: FieldPath,
    lines: Dict[FieldPath, int],
    budget: List[int],
    duplicates: List[Tuple[FieldPath, int, int]],
) -> Any:
    """Build plain data from a composed node, recording lines, counting values and collecting duplicate keys."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooLarge()
    lines.setdefault(path, node.start_mark.line + 1)
    if node.tag not in PLAIN_TAGS:  # !!python/object, !!binary, !!set, !Ref, ...: nothing emu reads
        raise _BadTag(path, node.start_mark.line + 1, node.tag)
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        result: Dict[Any, Any] = {}
        key_lines: Dict[Any, int] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.tag not in PLAIN_TAGS:
                    raise _BadTag(path, key_node.start_mark.line + 1, key_node.tag)
                key = loader.construct_object(key_node, deep=True)
            else:  # a mapping or list used as a key: never a field emu knows
                key = f"<{key_node.id} key>"
            line = key_node.start_mark.line + 1
            if key in key_lines:
                duplicates.append((path + (key,), line, key_lines[key]))
                continue
            key_lines[key] = line
            lines[path + (key,)] = line
            result[key] = _convert(loader, value_node, path + (key,), lines, budget, duplicates)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, path + (i,), lines, budget, duplicates) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def _path_at_error(text: str, index: Optional[int]) -> FieldPath:
    """The field path the YAML parser had reached at character ``index`` (or where it failed, if sooner)."""
    # Each frame: ["map", key, awaiting_key] or ["seq", index].
    stack: List[List[Any]] = []

    def enter_value() -> None:
        if stack and stack[-1][0] == "seq":
            stack[-1][1] += 1

    def leave_value() -> None:
        if stack and stack[-1][0] == "map":
            stack[-1][2] = True

    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if index is not None and event.start_mark.index >= index:
                break
            if isinstance(event, yaml.DocumentStartEvent):
                stack = []
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                is_map = isinstance(event, yaml.MappingStartEvent)
                if stack and stack[-1][0] == "map" and stack[-1][2]:
                    stack[-1][1], stack[-1][2] = f"<{'mapping' if is_map else 'sequence'} key>", False
                else:
                    enter_value()
                stack.append(["map", None, True] if is_map else ["seq", -1])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                if stack:
                    stack.pop()
                leave_value()
            elif isinstance(event, (yaml.ScalarEvent, yaml.AliasEvent)):
                if stack and stack[-1][0] == "map" and stack[-1][2]:
                    stack[-1][1] = getattr(event, "value", "*alias")
                    stack[-1][2] = False
                else:
                    enter_value()
                    leave_value()
    except yaml.YAMLError:
        pass
    path: List[Any] = []
    for frame in stack:
        if frame[0] == "map":
            if frame[1] is None:
                break
            path.append(frame[1])
        elif frame[1] >= 0:
            path.append(frame[1])
    return tuple(path)


def _syntax_problem(name: str, text: str, exc: yaml.YAMLError) -> Problem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else None
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    context = getattr(exc, "context", None)
    message = f"YAML syntax error: {problem}"
    if context and "scanning for the next token" not in context:
        message += f" {context}"
    hint = "fix the YAML syntax"
    if "'\\t'" in problem or (line is not None and "\t" in _line_text(text, line)):
        hint = "indent with spaces; YAML does not allow tabs for indentation"
    elif "mapping values are not allowed" in problem:
        hint = "check the indentation, and quote values that contain ': '"
    elif "found undefined alias" in problem:
        hint = "define the anchor (&name) before using it (*name)"
    path = _path_at_error(text, mark.index if mark is not None else None)
    return Problem(name, line, dotted(path) if path else "", message, hint)


def _line_text(text: str, line: int) -> str:
    lines = text.splitlines()
    return lines[line - 1] if 0 < line <= len(lines) else ""


def _read_bytes(p: Path, name: str) -> Tuple[Optional[bytes], List[Problem]]:
    """The file's bytes, refusing anything that is not a regular file of bounded size."""
    try:
        if not p.exists():
            return None, [Problem(name, None, "", "no such file", "give the path of a YAML topology file")]
        if p.is_dir():
            return None, [Problem(name, None, "", "is a directory", "give a YAML file, e.g. topologies/two_nodes.yaml")]
        if not p.is_file():
            return None, [
                Problem(name, None, "", "not a regular file", "give a YAML file, not a device, FIFO or socket")
            ]
        with p.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except ValueError:  # an embedded NUL byte
        return None, [Problem(name, None, "", "the path contains a NUL byte", "give the path of a YAML file")]
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return None, [Problem(name, None, "", "the path is too long", "give the path of a YAML file")]
        return None, [Problem(name, None, "", f"cannot read: {exc.strerror}", "check the path and its permissions")]
    if len(raw) > MAX_FILE_BYTES:
        size = f"{p.stat().st_size} bytes" if p.stat().st_size > MAX_FILE_BYTES else f"over {MAX_FILE_BYTES} bytes"
        return None, [
            Problem(name, None, "", f"file is {size}", f"a topology file must be under {MAX_FILE_BYTES} bytes")
        ]
    return raw, []


def read_documents(path: str) -> Tuple[List[Document], List[Problem]]:
    """Read every YAML document of ``path``; problems instead of exceptions.

    A file whose text cannot be parsed gives no documents. Duplicate keys are reported but do not stop the
    reading: the documents come back with the first value of each key, so later checks still run.
    """
    name = str(path)
    raw, problems = _read_bytes(Path(path), name)
    if raw is None:
        return [], problems
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        return [], [Problem(name, line, "", "binary file (contains NUL bytes)", "give a YAML text file")]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return [], [Problem(name, line, "", f"not UTF-8 (byte 0x{raw[exc.start]:02x})", "save the file as UTF-8")]
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        return [], [Problem(name, None, "", "file is empty", "describe a cluster: see topologies/two_nodes.yaml")]

    fast = getattr(yaml, "CSafeLoader", None)
    if fast is not None:  # libyaml: the same documents, marks and tags, several times faster on big files
        try:
            return _documents(name, text, fast, problems)
        except yaml.YAMLError:
            pass  # a broken file: read it again with PyYAML's own parser, whose messages the problems quote
    return _documents(name, text, yaml.SafeLoader, problems)


def _documents(
    name: str, text: str, loader_class: Any, problems: List[Problem]
) -> Tuple[List[Document], List[Problem]]:
    """``read_documents``' work with one YAML loader class; YAMLError escapes only from the libyaml one."""
    documents: List[Document] = []
    duplicates: List[Tuple[FieldPath, int, int]] = []
    loader = loader_class(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            lines: Dict[FieldPath, int] = {}
            budget = [MAX_VALUES]
            found: List[Tuple[FieldPath, int, int]] = []
            data = _convert(loader, node, (), lines, budget, found)
            duplicates.extend(found)
            documents.append(Document(name, index, data, lines))
            index += 1
    except _TooLarge:
        return [], [
            Problem(
                name,
                None,
                "",
                f"a document expands to more than {MAX_VALUES} values",
                "an alias bomb? use few aliases (*name), or split the file",
            )
        ]
    except _BadTag as bad:
        return [], [
            Problem(
                name,
                bad.line,
                dotted(bad.path),
                f"YAML tag {bad.tag} is not allowed",
                "emu reads plain YAML: strings, numbers, booleans, lists and mappings",
            )
        ]
    except yaml.YAMLError as exc:
        if loader_class is not yaml.SafeLoader:
            raise
        return [], [_syntax_problem(name, text, exc)]
    except RecursionError:
        return [], [
            Problem(name, None, "", "the document nests too deeply (or an alias refers to itself)", "flatten it")
        ]
    finally:
        loader.dispose()

    for key_path, line, first in duplicates:
        problems.append(
            Problem(name, line, dotted(key_path), f"duplicate key (first given on line {first})", "keep one of them")
        )
    documents = [d for d in documents if d.data is not None]
    if not documents and not problems:
        return [], [Problem(name, None, "", "file has no YAML documents (only comments?)", "describe a cluster")]
    return documents, problems
