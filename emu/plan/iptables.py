"""A tiny model of iptables-restore documents: tables -> chains -> rules, and its renderer.

This module owns the *shape* of every iptables rule set emu plans (kube-proxy's Service rules in
``emu.proxy.iptables``, flannel's masquerade/forward rules in the backends); it knows nothing about
Kubernetes. It is pure: standard library only, no command is run here.

Contract with the kernel (checked by ``tests/test_kubeproxy_restore.py`` against iptables 1.8.9, nf_tables):

* ``render_restore`` writes a *full* restore document (emu owns each node's network namespace and reloads the
  whole document with plain ``iptables-restore``, never ``--noflush``).
* Rules are written in iptables-save's canonical form, so loading the document into a fresh namespace and
  reading it back with ``iptables-save`` gives the same text, modulo the ``#`` header/footer lines and the
  ``[packets:bytes]`` counters; ``normalize_save`` strips exactly those. iptables-save's layout is reproduced:
  tables in the order iptables-nft-save uses (mangle, security, raw, filter, nat), every built-in chain of a
  table in kernel order, then user chains sorted by name, then the rules grouped by chain in that same chain
  order (the relative order of the rules of one chain is kept; only that order has meaning to the kernel).
* Canonical form, as iptables prints it: addresses carry a prefix (``-d 10.96.0.10/32``), ``-s``/``-d``/``-p``
  come before every ``-m`` match, a comment is quoted unless it is made only of ``[A-Za-z0-9_-]``
  (``save_quote``), ``-j REJECT`` is followed by ``--reject-with icmp-port-unreachable``, ``MARK --or-mark M``
  reads back as ``--set-xmark M/M`` and ``--xor-mark M`` as ``--set-xmark M/0x0``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

__all__ = [
    "BUILTIN_CHAINS",
    "TABLE_ORDER",
    "Chain",
    "Table",
    "merge_tables",
    "render_restore",
    "normalize_save",
    "parse_save",
    "save_quote",
]

#: Built-in chains of each table, in the order iptables-save lists them.
BUILTIN_CHAINS: Dict[str, Tuple[str, ...]] = {
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
    "security": ("INPUT", "FORWARD", "OUTPUT"),
    "raw": ("PREROUTING", "OUTPUT"),
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
}

#: The order in which iptables-nft-save (1.8.x) prints tables.
TABLE_ORDER: Tuple[str, ...] = ("mangle", "security", "raw", "filter", "nat")

#: iptables refuses chain names longer than this (XT_EXTENSION_MAXNAMELEN - 1).
MAX_CHAIN_NAME = 28

_POLICIES = ("-", "ACCEPT", "DROP")
_NO_QUOTE = re.compile(r"[A-Za-z0-9_-]+")
_COUNTERS = re.compile(r"\[\d+:\d+\]")
_SPACE = re.compile(r"\s")
_TARGET = re.compile(r" -[jg] (\S+)")


@dataclass(frozen=True)
class Chain:
    """One chain declaration (``:NAME POLICY [0:0]``).

    name: the chain name (at most 28 characters, no whitespace).
    policy: ``"-"`` for a user chain; ``"ACCEPT"`` or ``"DROP"`` for a built-in chain (``"-"`` on a built-in
        chain means "not specified here" and renders as ``ACCEPT``).
    """

    name: str
    policy: str = "-"

    def __post_init__(self) -> None:
        if not self.name or len(self.name) > MAX_CHAIN_NAME or _SPACE.search(self.name):
            raise ValueError(f"bad iptables chain name {self.name!r} (1..{MAX_CHAIN_NAME} chars, no spaces)")
        if self.policy not in _POLICIES:
            raise ValueError(f"chain {self.name}: policy must be one of {_POLICIES}, not {self.policy!r}")


@dataclass
class Table:
    """One table of a restore document.

    name: ``filter``, ``nat``, ``mangle``, ``raw`` or ``security``.
    chains: the chains this table declares (built-in chains may be omitted; they are always rendered).
    rules: iptables-save lines ``-A CHAIN ...`` in order (only the order within one chain matters).
    """

    name: str
    chains: List[Chain] = field(default_factory=list)
    rules: List[str] = field(default_factory=list)

    def chain_names(self) -> List[str]:
        """The names of the declared chains, in declaration order."""
        return [c.name for c in self.chains]

    def rules_of(self, chain: str) -> List[str]:
        """The rules appended to ``chain``, in order."""
        return [r for r in self.rules if _rule_chain(r) == chain]


def save_quote(value: str) -> str:
    """Quote a string argument (e.g. a comment) the way iptables-save prints it.

    Mirrors libxtables' ``xtables_save_string``: a value made only of letters, digits, ``_`` and ``-`` is
    printed bare; anything else is put in double quotes with ``"``, ``\\`` and ``'`` backslash-escaped.
    """
    if _NO_QUOTE.fullmatch(value):
        return value
    escaped = "".join("\\" + c if c in "\"\\'" else c for c in value)
    return f'"{escaped}"'


def _rule_chain(rule: str) -> str:
    parts = rule.split(None, 2)
    if len(parts) < 2 or parts[0] != "-A":
        raise ValueError(f"not an iptables-save rule line (must start with '-A CHAIN'): {rule!r}")
    return parts[1]


def _is_builtin(table: str, chain: str) -> bool:
    return chain in BUILTIN_CHAINS.get(table, ())


def _check_table_name(name: str) -> None:
    if name not in BUILTIN_CHAINS:
        raise ValueError(f"unknown iptables table {name!r} (known: {', '.join(TABLE_ORDER)})")


def _merge_chain(table: str, seen: Dict[str, Chain], chain: Chain) -> None:
    old = seen.get(chain.name)
    if old is None:
        seen[chain.name] = chain
        return
    if old.policy == chain.policy or chain.policy == "-":
        return
    if old.policy == "-":
        seen[chain.name] = chain
        return
    raise ValueError(f"table {table}: chain {chain.name} declared with policies {old.policy} and {chain.policy}")


def _ordered_chains(table: Table) -> List[Chain]:
    """Built-in chains in kernel order (all of them), then user chains sorted by name."""
    seen: Dict[str, Chain] = {}
    for chain in table.chains:
        _merge_chain(table.name, seen, chain)
    for name, chain in seen.items():
        builtin = _is_builtin(table.name, name)
        if not builtin and chain.policy != "-":
            raise ValueError(f"table {table.name}: user chain {name} cannot have policy {chain.policy}")
    builtins = [Chain(n, seen[n].policy if n in seen and seen[n].policy != "-" else "ACCEPT")
                for n in BUILTIN_CHAINS[table.name]]
    users = sorted((c for n, c in seen.items() if not _is_builtin(table.name, n)), key=lambda c: c.name)
    return builtins + users


def merge_tables(*groups: Dict[str, Table]) -> Dict[str, Table]:
    """Merge several rule sets (e.g. kube-proxy's and flannel's) into one.

    Tables of the same name are joined: chains are concatenated and deduplicated by name (built-in chains
    first; two different explicit policies for one built-in chain are an error), rules are concatenated in
    the order of ``groups``. So pass kube-proxy first: on a real node its jumps are prepended to the
    built-in chains and therefore come before the CNI plugin's appended rules. The result is keyed in
    iptables-save's table order; the inputs are not modified.
    """
    chains: Dict[str, List[Chain]] = {}
    rules: Dict[str, List[str]] = {}
    for group in groups:
        for key, table in group.items():
            if key != table.name:
                raise ValueError(f"table keyed {key!r} is named {table.name!r}")
            _check_table_name(table.name)
            chains.setdefault(table.name, []).extend(table.chains)
            rules.setdefault(table.name, []).extend(table.rules)
    merged: Dict[str, Table] = {}
    for name in TABLE_ORDER:
        if name not in chains:
            continue
        seen: Dict[str, Chain] = {}
        for chain in chains[name]:
            _merge_chain(name, seen, chain)
        ordered = [seen[n] for n in BUILTIN_CHAINS[name] if n in seen]
        ordered += [c for n, c in seen.items() if not _is_builtin(name, n)]
        merged[name] = Table(name, ordered, list(rules[name]))
    return merged


def render_restore(tables: Dict[str, Table]) -> str:
    """Render ``tables`` as one iptables-restore document, laid out exactly as iptables-save prints it.

    Every rule must start with ``-A CHAIN`` where CHAIN is declared in its table or is one of the table's
    built-in chains; a ``-j``/``-g`` target that looks like a user chain (upper case, not a built-in
    target) must be declared too. Both mistakes raise ValueError rather than failing at restore time.
    """
    out: List[str] = []
    names = [n for n in TABLE_ORDER if n in tables]
    for key in tables:
        _check_table_name(key)
    for name in names:
        table = tables[name]
        if table.name != name:
            raise ValueError(f"table keyed {name!r} is named {table.name!r}")
        chains = _ordered_chains(table)
        index = {c.name: i for i, c in enumerate(chains)}
        grouped: List[List[str]] = [[] for _ in chains]
        for rule in table.rules:
            if "\n" in rule or "\r" in rule:
                raise ValueError(f"rule contains a line break: {rule!r}")
            chain = _rule_chain(rule)
            if chain not in index:
                raise ValueError(f"table {name}: rule for undeclared chain {chain}: {rule!r}")
            _check_target(name, index, rule)
            grouped[index[chain]].append(rule.rstrip())
        out.append(f"*{name}")
        out.extend(f":{c.name} {c.policy} [0:0]" for c in chains)
        for rules in grouped:
            out.extend(rules)
        out.append("COMMIT")
    return "\n".join(out) + "\n" if out else ""


# Targets that are extensions or verdicts, not chains (only those spelled in upper case matter here).
_TARGETS = frozenset({
    "ACCEPT", "DROP", "RETURN", "QUEUE", "REJECT", "DNAT", "SNAT", "MASQUERADE", "REDIRECT", "MARK",
    "CONNMARK", "LOG", "NFLOG", "TPROXY", "NOTRACK", "CT", "TRACE", "TCPMSS", "CLASSIFY", "DSCP", "TOS",
    "TTL", "CHECKSUM", "NETMAP", "AUDIT", "SET", "TEE", "NFQUEUE", "CONNSECMARK", "SECMARK", "IDLETIMER",
    "LED", "RATEEST", "SYNPROXY", "HMARK", "CLUSTERIP", "ECN", "ULOG",
})


def _check_target(table: str, index: Dict[str, int], rule: str) -> None:
    if rule.endswith((" -j", " -g")):
        raise ValueError(f"table {table}: {rule[-2:]} without a target: {rule!r}")
    for target in _TARGET.findall(rule):
        if target not in _TARGETS and target.upper() == target and target not in index:
            raise ValueError(f"table {table}: jump to undeclared chain {target}: {rule!r}")


def normalize_save(text: str) -> str:
    """Reduce iptables-save (or render_restore) output to what must match between plan and kernel.

    Drops ``#`` comment lines and blank lines, resets chain counters to ``[0:0]``, removes per-rule counters
    (``iptables-save -c`` prints ``[5:300] -A ...``) and trailing blanks. Returns the lines joined with
    ``\\n`` plus a final newline (or the empty string).
    """
    lines: List[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(":"):
            line = _COUNTERS.sub("[0:0]", line)
        elif line.startswith("["):
            line = _COUNTERS.sub("", line, count=1).lstrip()
        lines.append(line)
    return "\n".join(lines) + "\n" if lines else ""


def parse_save(text: str) -> Dict[str, Table]:
    """Parse iptables-save output (or a rendered document) back into tables.

    Only the subset iptables-save prints is understood: ``*table``, ``:CHAIN POLICY [p:b]``, ``-A ...`` and
    ``COMMIT``. Raises ValueError on anything else, naming the line.
    """
    tables: Dict[str, Table] = {}
    current: Optional[Table] = None
    for number, line in enumerate(normalize_save(text).splitlines(), start=1):
        if line.startswith("*"):
            if current is not None:
                raise ValueError(f"line {number}: table {line[1:]} starts before COMMIT of {current.name}")
            _check_table_name(line[1:])
            current = Table(line[1:])
            tables[current.name] = current
        elif current is None:
            raise ValueError(f"line {number}: {line!r} outside a table")
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                raise ValueError(f"line {number}: bad chain line {line!r}")
            current.chains.append(Chain(parts[0], parts[1]))
        elif line.startswith("-A "):
            current.rules.append(line)
        else:
            raise ValueError(f"line {number}: unexpected {line!r}")
    if current is not None:
        raise ValueError(f"table {current.name} has no COMMIT")
    return tables

