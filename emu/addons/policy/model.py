"""The NetworkPolicy add-on's objects, as the API server holds them after validation and defaulting.

``networking.k8s.io/v1 NetworkPolicy`` and ``v1 Namespace``, read by ``emu.addons.policy.read``. Everything the
API defaults is filled in here (``policyTypes``, a port's protocol, a missing ``podSelector``), and the
distinctions of the API that carry meaning are kept, those that do not are folded:

- a rule's ``from``/``to`` absent or ``[]``: every peer (``Rule.peers`` is empty), its ``ports`` absent or
  ``[]``: every port and protocol (``Rule.ports`` is empty);
- ``spec.ingress``/``spec.egress`` absent or ``[]``: no rule (the pods the policy selects are isolated in that
  direction when ``policyTypes`` names it); ``[{}]``: one rule that allows everything;
- a selector ``{}``: everything (every pod of the policy's namespace, every namespace); a peer's missing
  selector: see ``Peer``.

Pure data and the label-selector and address tests every later step needs; the standard library only.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from typing import Mapping, Optional, Tuple

__all__ = [
    "API_VERSION",
    "OPERATORS",
    "PROTOCOLS",
    "METADATA_NAME_LABEL",
    "Requirement",
    "Selector",
    "IPBlock",
    "Peer",
    "PolicyPort",
    "Rule",
    "NetworkPolicy",
    "Namespace",
]

API_VERSION = "networking.k8s.io/v1"
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
PROTOCOLS = ("TCP", "UDP", "SCTP")
#: The label the control plane gives every namespace: its own name (immutable).
METADATA_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry: ``key`` ``operator`` ``values``."""

    key: str
    operator: str
    values: Tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return labels.get(self.key) in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist

    def __str__(self) -> str:
        if self.operator == "Exists":
            return self.key
        if self.operator == "DoesNotExist":
            return f"!{self.key}"
        return f"{self.key} {self.operator.lower()} ({','.join(self.values)})"


@dataclass(frozen=True)
class Selector:
    """A label selector: every ``matchLabels`` pair and every requirement must hold; empty selects everything."""

    match_labels: Tuple[Tuple[str, str], ...] = ()
    match_expressions: Tuple[Requirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.match_labels and not self.match_expressions

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(labels.get(k) == v for k, v in self.match_labels) and all(
            r.matches(labels) for r in self.match_expressions
        )

    def __str__(self) -> str:
        """As ``kubectl describe`` writes it: ``app=web,tier in (a,b)``; ``<all>`` for the empty selector."""
        parts = [f"{k}={v}" for k, v in self.match_labels] + [str(r) for r in self.match_expressions]
        return ",".join(parts) or "<all>"


@dataclass(frozen=True)
class IPBlock:
    """``ipBlock``: the addresses of ``cidr`` but those of ``excepts`` (IPv4; every except inside cidr)."""

    cidr: str
    excepts: Tuple[str, ...] = ()

    def contains(self, ip: str) -> bool:
        address = IPv4Address(ip)
        if address not in IPv4Network(self.cidr):
            return False
        return not any(address in IPv4Network(e) for e in self.excepts)

    def __str__(self) -> str:
        return self.cidr + (f" except {', '.join(self.excepts)}" if self.excepts else "")


@dataclass(frozen=True)
class Peer:
    """One ``from``/``to`` entry.

    pod_selector alone: those pods of the policy's own namespace; namespace_selector alone: every pod of the
    namespaces it selects; both: the pods ``pod_selector`` selects in the namespaces ``namespace_selector``
    selects (AND); ip_block (always alone): those addresses. hostNetwork pods are never selected: their address
    is their node's.
    """

    pod_selector: Optional[Selector] = None
    namespace_selector: Optional[Selector] = None
    ip_block: Optional[IPBlock] = None

    def __str__(self) -> str:
        if self.ip_block is not None:
            return f"ipBlock {self.ip_block}"
        parts = []
        if self.namespace_selector is not None:
            parts.append(f"namespaces {self.namespace_selector}")
        if self.pod_selector is not None:
            parts.append(f"pods {self.pod_selector}")
        return " and ".join(parts)


@dataclass(frozen=True)
class PolicyPort:
    """One ``ports`` entry: ``protocol`` (defaulted to TCP) and a port: a number (with ``end_port``, a range), a
    container port's name (``name``), or neither (every port of the protocol)."""

    protocol: str = "TCP"
    port: Optional[int] = None
    end_port: Optional[int] = None
    name: str = ""

    def __str__(self) -> str:
        if self.name:
            return f"{self.name}/{self.protocol}"
        if self.port is None:
            return f"any/{self.protocol}"
        span = f"{self.port}-{self.end_port}" if self.end_port is not None else str(self.port)
        return f"{span}/{self.protocol}"


@dataclass(frozen=True)
class Rule:
    """One ingress or egress rule; an empty ``peers`` matches every peer, an empty ``ports`` every port."""

    peers: Tuple[Peer, ...] = ()
    ports: Tuple[PolicyPort, ...] = ()

    def __str__(self) -> str:
        peers = "; ".join(str(p) for p in self.peers) or "every peer"
        ports = ", ".join(str(p) for p in self.ports) or "every port"
        return f"{peers} on {ports}"


@dataclass(frozen=True)
class NetworkPolicy:
    """A NetworkPolicy after defaulting: ``policy_types`` always holds the directions it isolates."""

    name: str
    namespace: str
    pod_selector: Selector
    policy_types: Tuple[str, ...]
    ingress: Tuple[Rule, ...] = ()
    egress: Tuple[Rule, ...] = ()
    file: str = ""
    line: int = 0

    @property
    def key(self) -> str:
        """``namespace/name``: what names it in messages, chains and verdicts."""
        return f"{self.namespace}/{self.name}"

    def rules(self, direction: str) -> Tuple[Rule, ...]:
        """The rules of ``direction`` ("Ingress" or "Egress")."""
        return self.ingress if direction == "Ingress" else self.egress


@dataclass(frozen=True)
class Namespace:
    """A ``kind: Namespace`` object: its name and labels (with ``kubernetes.io/metadata.name``)."""

    name: str
    labels: Tuple[Tuple[str, str], ...] = ()
    file: str = ""
    line: int = 0

    @property
    def key(self) -> str:
        return self.name
