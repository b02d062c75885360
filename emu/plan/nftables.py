"""A small model of nftables rulesets: tables -> sets/maps (with elements) and chains (with rules), and its texts.

This module owns the *shape* of every nftables ruleset emu plans (kube-proxy's nftables mode in
``emu.proxy.nftables``); it knows nothing about Kubernetes. It is pure: standard library only, nothing runs here.
The apply layer loads ``load_script`` into a node with one ``nft -f`` (one netlink transaction: all or nothing)
and changes it with ``update_script``.

Three texts of one ``NftTable``:

* ``render(table)``: the table as ``nft list table`` prints it (nftables 1.0.x): sets and maps first, then
  chains, each in declaration order; a base chain's ``type ... hook ... priority ...; policy accept;`` line with
  the priority spelled as nft spells it (``dstnat - 10``, ``srcnat``, ``-110``); a timeout as ``3h``. Rules are
  kept as written, so they must be written in nft's listing form (``meta mark set meta mark | 0x00004000``, not
  ``mark set mark or 0x4000``): a table then reads back from the kernel exactly as planned, except for the order
  of set elements, which the kernel keeps in hash order (``normalize_listing`` sorts them on both sides).
* ``load_script(table)``: the commands that create the table from nothing, replacing any older one, in the form
  kube-proxy's knftables writes (``add table``, ``add set``, ``add chain``, ``add rule``, ``add element``):
  everything a rule or an element refers to is created before it.
* ``update_script(old, new)``: the smallest transaction that turns ``old`` into ``new`` while traffic flows,
  as kube-proxy's partial syncs do: new sets and chains added, changed chains flushed and refilled, elements
  added and deleted one by one, removed chains flushed (deleted in a second transaction, ``cleanup``: before
  Linux 6.2 a chain a deleted map element pointed to stays busy for a moment) and removed sets deleted. A
  change the transaction cannot express (another family, a base chain's hook or a set's type) replaces the
  whole table instead, as ``load_script`` does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "NftElement",
    "NftSet",
    "NftChain",
    "NftTable",
    "NftUpdate",
    "render",
    "load_script",
    "update_script",
    "normalize_listing",
    "priority_text",
    "time_text",
]

#: nft's limit on table, chain and set names (NFT_NAME_MAXLEN, with the terminating NUL).
MAX_NAME = 255
_NAME = re.compile(r"[A-Za-z_.][A-Za-z0-9_./-]*")
FAMILIES = ("ip", "ip6", "inet")
HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
#: nft's standard priorities of the ip family: (name, value, hooks it may be named in; empty = every hook).
_STANDARD_PRIORITIES: Tuple[Tuple[str, int, Tuple[str, ...]], ...] = (
    ("raw", -300, ()),
    ("mangle", -150, ()),
    ("dstnat", -100, ("prerouting",)),
    ("filter", 0, ()),
    ("security", 50, ()),
    ("srcnat", 100, ("postrouting",)),
)


@dataclass(frozen=True)
class NftElement:
    """One element of a set or map: its key (``10.96.0.10 . tcp . 80``), its value in a map (a verdict such as
    ``goto service-...``) and an optional comment."""

    key: str
    value: str = ""
    comment: str = ""

    def text(self) -> str:
        comment = f' comment "{self.comment}"' if self.comment else ""
        return f"{self.key}{comment}" + (f" : {self.value}" if self.value else "")


@dataclass(frozen=True)
class NftSet:
    """A named set, or a map when its type has a ``:`` (``ipv4_addr . inet_proto . inet_service : verdict``).

    flags: e.g. ("dynamic", "timeout") for a set filled from the packet path; timeout: seconds (0: none);
    size: the size nft lists (it gives 65535 to a set a rule updates, when none is set).
    """

    name: str
    type: str
    flags: Tuple[str, ...] = ()
    timeout: int = 0
    size: int = 0
    comment: str = ""
    elements: Tuple[NftElement, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "set")

    @property
    def kind(self) -> str:
        return "map" if " : " in self.type else "set"

    @property
    def dynamic(self) -> bool:
        """Filled by packets (``update @set``): its elements are runtime state, never planned."""
        return "dynamic" in self.flags


@dataclass(frozen=True)
class NftChain:
    """A chain and its rules (in nft's listing form). A base chain has a type (``filter``, ``nat``), a hook and
    a numeric priority; a regular chain has none and runs only when a rule jumps to it."""

    name: str
    rules: Tuple[str, ...] = ()
    type: str = ""
    hook: str = ""
    priority: int = 0
    policy: str = "accept"
    comment: str = ""

    def __post_init__(self) -> None:
        _check_name(self.name, "chain")
        if self.hook and (self.hook not in HOOKS or self.type not in ("filter", "nat", "route")):
            raise ValueError(f"chain {self.name}: bad base chain type {self.type!r} / hook {self.hook!r}")
        for rule in self.rules:
            if "\n" in rule or not rule.strip():
                raise ValueError(f"chain {self.name}: a rule must be one non-empty line: {rule!r}")

    @property
    def base(self) -> bool:
        return bool(self.hook)

    def spec(self) -> str:
        """The ``{ type ... ; }`` part of ``add chain`` (empty for a regular chain)."""
        parts = []
        if self.base:
            parts.append(f"type {self.type} hook {self.hook} priority {self.priority} ;")
        if self.comment:
            parts.append(f'comment "{self.comment}" ;')
        return "{ " + " ".join(parts) + " }" if parts else ""


@dataclass(frozen=True)
class NftTable:
    """One nftables table: its family (``ip``), name, comment, sets and maps, and chains, in declaration order."""

    family: str
    name: str
    comment: str = ""
    sets: Tuple[NftSet, ...] = ()
    chains: Tuple[NftChain, ...] = ()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"nftables family must be one of {FAMILIES}, not {self.family!r}")
        _check_name(self.name, "table")
        names = [item.name for item in self.sets] + [item.name for item in self.chains]
        if len(set(names)) != len(names):  # sets and chains check their own names when they are made
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"table {self.name}: {', '.join(twice)} declared twice")

    @property
    def prefix(self) -> str:
        """``ip kube-proxy``: how commands name the table."""
        return f"{self.family} {self.name}"

    def set(self, name: str) -> NftSet:
        for item in self.sets:
            if item.name == name:
                return item
        raise KeyError(f"table {self.name} has no set or map {name!r}")

    def chain(self, name: str) -> NftChain:
        for item in self.chains:
            if item.name == name:
                return item
        raise KeyError(f"table {self.name} has no chain {name!r}")


@dataclass(frozen=True)
class NftUpdate:
    """What ``update_script`` gives: the main transaction, and the deletion of the chains it emptied (run after
    it, as a transaction of its own); both empty when nothing changes."""

    script: str
    cleanup: str = ""
    full: bool = False  # the main transaction replaces the whole table

    @property
    def empty(self) -> bool:
        return not self.script and not self.cleanup


def _check_name(name: str, what: str) -> None:
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise ValueError(f"bad nftables {what} name {name!r} (letters, digits, _ . / -; at most {MAX_NAME})")


# ------------------------------------------------------------------------------------------------ spelling


def priority_text(hook: str, value: int) -> str:
    """A base chain's priority as ``nft list`` prints it in the ip family: a standard priority's name (``srcnat``)
    or name and offset within 10 of it (``dstnat - 10``) when the name is valid for ``hook``, else the number."""
    for name, number, hooks in _STANDARD_PRIORITIES:
        if hooks and hook not in hooks:
            continue
        offset = value - number
        if offset == 0:
            return name
        if -10 <= offset <= 10:
            return f"{name} {'+' if offset > 0 else '-'} {abs(offset)}"
    return str(value)


def time_text(seconds: int) -> str:
    """A duration as nft prints it: ``3h``, ``1m30s``, ``1d``."""
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(parts) or "0s"


def _element_order(element: NftElement) -> Tuple[Tuple[int, object], ...]:
    """A readable order for elements (numbers and addresses by value); the kernel lists them in hash order."""
    key: List[Tuple[int, object]] = []
    for part in element.key.split(" . "):
        if re.fullmatch(r"\d+(\.\d+){3}(/\d+)?", part):
            key.append((0, tuple(int(x) for x in re.split(r"[./]", part))))
        elif part.isdigit():
            key.append((1, int(part)))
        else:
            key.append((2, part))
    return tuple(key)


def _elements_text(item: NftSet) -> List[str]:
    """``elements = { ... }`` laid out as nft does: one map or concatenation element a line, two plain ones."""
    texts = [e.text() for e in sorted(item.elements, key=_element_order)]
    per_line = 1 if item.kind == "map" or " . " in item.type else 2
    lines = []
    for start in range(0, len(texts), per_line):
        lines.append(", ".join(texts[start:start + per_line]))
    indent = "\n\t\t\t     "
    return ["\t\telements = { " + ("," + indent).join(lines) + " }"]


def _set_text(item: NftSet) -> List[str]:
    out = [f"\t{item.kind} {item.name} {{", f"\t\ttype {item.type}"]
    if item.size:
        out.append(f"\t\tsize {item.size}")
    if item.flags:
        out.append(f"\t\tflags {','.join(item.flags)}")
    if item.timeout:
        out.append(f"\t\ttimeout {time_text(item.timeout)}")
    if item.comment:
        out.append(f'\t\tcomment "{item.comment}"')
    if item.elements:
        out += _elements_text(item)
    return out + ["\t}"]


def _chain_text(chain: NftChain) -> List[str]:
    out = [f"\tchain {chain.name} {{"]
    if chain.base:
        priority = priority_text(chain.hook, chain.priority)
        out.append(f"\t\ttype {chain.type} hook {chain.hook} priority {priority}; policy {chain.policy};")
    if chain.comment:
        out.append(f'\t\tcomment "{chain.comment}"')
    out += [f"\t\t{rule}" for rule in chain.rules]
    return out + ["\t}"]


def render(table: NftTable) -> str:
    """The table as ``nft list table FAMILY NAME`` prints it (elements in a readable order, not hash order)."""
    out = [f"table {table.prefix} {{"]
    if table.comment:
        out.append(f'\tcomment "{table.comment}"')
    blocks = [_set_text(s) for s in table.sets] + [_chain_text(c) for c in table.chains]
    for i, block in enumerate(blocks):
        if i:
            out.append("")
        out += block
    return "\n".join(out) + "\n}\n"


# ------------------------------------------------------------------------------------------------ commands


def _add_set(table: NftTable, item: NftSet) -> str:
    parts = [f"type {item.type} ;"]
    if item.flags:
        parts.append(f"flags {','.join(item.flags)} ;")
    if item.timeout:
        parts.append(f"timeout {item.timeout}s ;")
    if item.comment:
        parts.append(f'comment "{item.comment}" ;')
    return f"add {item.kind} {table.prefix} {item.name} {{ {' '.join(parts)} }}"


def _add_chain(table: NftTable, chain: NftChain) -> str:
    spec = chain.spec()
    return f"add chain {table.prefix} {chain.name}" + (f" {spec}" if spec else "")


def _rules(table: NftTable, chain: NftChain) -> List[str]:
    return [f"add rule {table.prefix} {chain.name} {rule}" for rule in chain.rules]


def _elements(verb: str, table: NftTable, item: NftSet, elements: Iterable[NftElement]) -> List[str]:
    """One ``add``/``delete element`` command per element (a deleted element is named by its key alone)."""
    out = []
    for e in elements:
        text = e.text() if verb == "add" else e.key
        out.append(f"{verb} element {table.prefix} {item.name} {{ {text} }}")
    return out


def load_script(table: NftTable) -> str:
    """Commands creating ``table`` from nothing (an older table of that name is deleted in the same transaction)."""
    out = [f"add table {table.prefix}", f"delete table {table.prefix}"]
    out.append(f"add table {table.prefix}" + (f' {{ comment "{table.comment}" ; }}' if table.comment else ""))
    out += [_add_set(table, s) for s in table.sets]
    out += [_add_chain(table, c) for c in table.chains]
    for chain in table.chains:
        out += _rules(table, chain)
    for item in table.sets:
        if item.elements and not item.dynamic:
            # All of a set's elements in one command: nft parses and evaluates them together.
            body = ", ".join(e.text() for e in item.elements)
            out.append(f"add element {table.prefix} {item.name} {{ {body} }}")
    return "\n".join(out) + "\n"


def _fresh(old: Sequence[Any], new: Sequence[Any]) -> Tuple[List[Any], List[Any]]:
    """The items of ``new`` that are not the very objects of ``old``, and those of ``old`` not in ``new``.

    Plans share the records of what did not change (a re-plan rebuilds only the Services that changed), so
    comparing identities first keeps an update of a 10,000-Service table cheap: only the few new objects are
    looked at by name and content."""
    old_ids, new_ids = {id(x) for x in old}, {id(x) for x in new}
    return [x for x in new if id(x) not in old_ids], [x for x in old if id(x) not in new_ids]


def _same(a: Optional[NftElement], b: NftElement) -> bool:
    return a is b or a == b


def _same_shape(old: NftTable, new: NftTable, old_sets: Dict[str, NftSet], sets: Sequence[NftSet],
                old_chains: Dict[str, NftChain], chains: Sequence[NftChain]) -> bool:
    """Can ``update_script`` turn ``old`` into ``new`` by adding and deleting (no object changes its kind)?
    ``sets`` and ``chains``: the new ones that are not objects of ``old``; ``old_sets``, ``old_chains``: by name,
    those of ``old`` that are not objects of ``new`` (an object that changed is one of those)."""
    if (old.family, old.name, old.comment) != (new.family, new.name, new.comment):
        return False
    for item in sets:
        before = old_sets.get(item.name)
        if before is not None and (before.type, before.flags, before.timeout, before.comment) != (
            item.type, item.flags, item.timeout, item.comment
        ):
            return False
    for chain in chains:
        before = old_chains.get(chain.name)
        if before is not None and (before.type, before.hook, before.priority, before.policy, before.comment) != (
            chain.type, chain.hook, chain.priority, chain.policy, chain.comment
        ):
            return False
    return True


def update_script(old: Optional[NftTable], new: Optional[NftTable]) -> NftUpdate:
    """The transaction(s) turning table ``old`` into ``new`` (see the module docstring). None means no table."""
    if old is new:
        return NftUpdate("")
    if new is None:
        assert old is not None
        return NftUpdate(f"add table {old.prefix}\ndelete table {old.prefix}\n", full=True)
    if old is None:
        return NftUpdate(load_script(new), full=True)
    fresh_sets, stale_sets = _fresh(old.sets, new.sets)
    fresh_chains, stale_chains = _fresh(old.chains, new.chains)
    old_sets = {s.name: s for s in stale_sets}
    old_chains = {c.name: c for c in stale_chains}
    if not _same_shape(old, new, old_sets, fresh_sets, old_chains, fresh_chains):
        return NftUpdate(load_script(new), full=True)
    prefix = new.prefix
    out: List[str] = [_add_set(new, s) for s in fresh_sets if s.name not in old_sets]
    out += [_add_chain(new, c) for c in fresh_chains if c.name not in old_chains]
    for chain in fresh_chains:
        before = old_chains.get(chain.name)
        if before is None:
            out += _rules(new, chain)
        elif before.rules != chain.rules:
            out.append(f"flush chain {prefix} {chain.name}")
            out += _rules(new, chain)
    for item in fresh_sets:
        if item.dynamic:
            continue
        before_set = old_sets.get(item.name)
        have: Dict[str, NftElement] = {e.key: e for e in (before_set.elements if before_set else ())}
        want: Dict[str, NftElement] = {e.key: e for e in item.elements}
        gone = [e for key, e in have.items() if not _same(want.get(key), e)]
        come = [e for key, e in want.items() if not _same(have.get(key), e)]
        out += _elements("delete", new, item, gone)
        out += _elements("add", new, item, come)
    fresh_names = {c.name for c in fresh_chains}
    removed = [c for c in stale_chains if c.name not in fresh_names]
    out += [f"flush chain {prefix} {c.name}" for c in removed]
    fresh_set_names = {s.name for s in fresh_sets}
    out += [f"delete {s.kind} {prefix} {s.name}" for s in stale_sets if s.name not in fresh_set_names]
    cleanup = [f"delete chain {prefix} {c.name}" for c in removed]
    return NftUpdate("\n".join(out) + "\n" if out else "", "\n".join(cleanup) + "\n" if cleanup else "")


# --------------------------------------------------------------------------------------------- comparing


def normalize_listing(text: str) -> str:
    """Reduce ``nft list table`` output (or ``render``'s) to what must match between plan and kernel.

    Sets, maps and chains are sorted by name (the kernel lists them in creation order, and a partial update
    appends new ones), set elements are sorted and written one a line (the kernel lists them in hash order),
    the elements of dynamic sets (runtime state: ``update @set`` from packets) are dropped, and indentation
    is removed.
    """
    blocks: Dict[str, List[str]] = {}
    head: List[str] = []
    current: Optional[List[str]] = None
    pending: Optional[List[str]] = None  # an ``elements = {`` list that continues on the next lines
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if pending is not None:
            pending.append(line)
            if line.endswith("}"):
                assert current is not None
                current += _element_lines(" ".join(pending))
                pending = None
            continue
        if re.match(r"(set|map|chain|flowtable|counter|quota) \S+ \{$", line):
            current = [line]
            blocks[line.split()[1] + " " + line.split()[0]] = current
        elif line == "}" and current is not None:
            current.append(line)
            current = None
        elif current is not None and line.startswith("elements = {"):
            if line.endswith("}"):
                current += _element_lines(line)
            else:
                pending = [line]
        elif current is not None:
            current.append(line)
        else:
            head.append(line)
    out = list(head)
    for name in sorted(blocks):
        block = blocks[name]
        if "flags dynamic" in " ".join(block) or any(line.startswith("flags dynamic") for line in block):
            block = [line for line in block if not line.startswith("element ")]
        out += block
    return "\n".join(out) + "\n"


def _element_lines(text: str) -> List[str]:
    body = text[text.index("{") + 1: text.rindex("}")]
    items = [item.strip() for item in body.split(",") if item.strip()]
    return sorted(f"element {item}" for item in items)
