"""The steps of the NetworkPolicy grid cases (tests/netpol_cases.py): what a case does and what it expects.

A case is a list of steps on the grid of ``tests/netpol_grid.py``: ``Apply`` a manifest (a NetworkPolicy, a pod's
or a namespace's new labels), ``Delete`` an object, ``Check`` a (port, protocol) against an expectation written
like upstream's Reachability (``Expect``: every cell allowed, then each ``(from, to, allowed)`` rule in order
overrides the cells it names: ``"x/a"``, ``"x/*"``, ``"*/a"``, ``"*"``; cells from a pod to itself are ignored,
as upstream ignores loopback), ``Resolve`` a name through cluster DNS from a pod. Manifests that name pod
addresses write ``IP(y/b)`` and ``CIDR4(x/b)``; ``resolve`` fills them in from a plan.
"""

import re
import textwrap
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

from netpol_grid import GRID_PODS, namespace_document, pod_document

METADATA_NAME = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Expect:
    """Upstream's Reachability: default ``allowed`` everywhere, then ``(from, to, allowed)`` rules in order."""

    rules: Tuple[Tuple[str, str, bool], ...] = ()

    def allowed(self, src: str, dst: str) -> bool:
        verdict = True
        for source, target, allowed in self.rules:
            if _matches(source, src) and _matches(target, dst):
                verdict = allowed
        return verdict


def _matches(pattern: str, pod: str) -> bool:
    if pattern == "*":
        return True
    namespace, name = pattern.split("/")
    pod_namespace, pod_name = pod.split("/")
    return namespace in ("*", pod_namespace) and name in ("*", pod_name)


def expect(*rules: Tuple[str, str, bool]) -> Expect:
    return Expect(tuple(rules))


ALL_ALLOWED = Expect()


@dataclass(frozen=True)
class Apply:
    manifest: str  # YAML, with IP(...) / CIDR4(...) placeholders


@dataclass(frozen=True)
class Delete:
    kind: str
    name: str
    namespace: Optional[str] = None


@dataclass(frozen=True)
class Check:
    port: int
    protocol: str
    expected: Expect


@dataclass(frozen=True)
class Resolve:
    """A lookup from pod ``source`` (``x/a``) through cluster DNS (the kube-dns Service): answered iff ``works``.
    The engine judges it as UDP to port 53 of every DNS pod (after kube-proxy's DNAT); live, ``dig`` asks."""

    source: str
    works: bool
    name: str = "s-x-a.x.svc.cluster.local"


Step = Union[Apply, Delete, Check, Resolve]


@dataclass(frozen=True)
class Case:
    name: str  # upstream's "It" text, or "emu: ..." for cases of emu's own
    steps: Tuple[Step, ...]

    @property
    def ident(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-")[:100]


def netpol(namespace: str, name: str, spec: str) -> Apply:
    """A NetworkPolicy ``namespace/name`` with ``spec`` (YAML, indented as written)."""
    body = textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
    return Apply(
        f"apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n{body}\n"
    )


def label_pod(grid_pod: str, labels: Dict[str, str]) -> Apply:
    return Apply(pod_document(grid_pod, labels))


def label_namespace(namespace: str, labels: Dict[str, str]) -> Apply:
    return Apply(namespace_document(namespace, labels))


def resolve(text: str, ips: Dict[str, str]) -> str:
    """``text`` with ``IP(x/a)`` and ``CIDR4(x/a)`` replaced by x/a's address and the /4 holding it."""

    def cidr4(ip: str) -> str:
        first = int(ip.split(".")[0]) & 0xF0
        return f"{first}.0.0.0/4"

    text = re.sub(r"CIDR4\((\w/\w)\)", lambda m: cidr4(ips[m.group(1)]), text)
    return re.sub(r"IP\((\w/\w)\)", lambda m: ips[m.group(1)], text)


def needs_dns(case: Case) -> bool:
    """Whether ``case`` asks cluster DNS (a ``Resolve`` step), which only the dns add-on provides."""
    return any(isinstance(step, Resolve) for step in case.steps)


def case(name: str, *steps: Step) -> Case:
    return Case(name, tuple(steps))


def ips_of(plan) -> Dict[str, str]:  # type: ignore[no-untyped-def]
    """grid pod ("x/a") -> its address in ``plan``."""
    by_name = {p.name: p.ip for p in plan.pods}
    return {grid_pod: by_name[grid_pod.replace("/", "-")] for grid_pod in GRID_PODS}


def baseline_documents() -> List[str]:
    """What undoes every case's changes: each pod's and namespace's original labels."""
    from netpol_grid import NAMESPACES

    return [namespace_document(ns) for ns in NAMESPACES] + [pod_document(p) for p in GRID_PODS]


def expected_cells(check: Check, engine: Callable[[str, str, int, str], bool],
                   pods: Sequence[str] = GRID_PODS) -> List[Tuple[str, str, bool, bool]]:
    """(from, to, upstream's expectation, the engine's verdict) of every cell of ``check`` where they differ."""
    out = []
    for src in pods:
        for dst in pods:
            if src == dst:
                continue
            want = check.expected.allowed(src, dst)
            got = engine(src, dst, check.port, check.protocol)
            if want != got:
                out.append((src, dst, want, got))
    return out
