"""NetworkPolicy: the ``networking.k8s.io/v1`` API, enforced in every node's kernel (an add-on, on by default).

flannel enforces no policy (canal pairs it with Calico's policy engine for that); this add-on is that engine. It
reads ``NetworkPolicy`` and ``Namespace`` objects from the manifests (``read``), judges connections with a pure
engine that follows the specification (``engine``: the oracle of the tests and of ``emu trace``), and programs
each node the way an iptables policy engine does (``rules``: per-pod chains jumped to from the pod's veth
traffic, per-policy chains, ipsets), merged into the node's iptables document with its set document
(``plan``). A cluster without policies gets no rule, so turning the add-on off (``addons: {networkPolicy:
false}``) changes nothing until a policy exists; then it shows what plain flannel does: policies accepted and
not enforced. docs/networkpolicy.md is the user's guide.

Its modules: ``model`` (the objects), ``read`` (validation and defaulting), ``engine``, ``rules``, ``plan``,
``trace`` (the verdict hop ``emu trace`` shows).
"""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from emu.addons.policy.model import API_VERSION, NetworkPolicy
from emu.addons.policy.plan import plan_policies, plan_text
from emu.addons.policy.read import read_namespace, read_policy
from emu.addons.policy.trace import trace_verdicts as _trace_verdicts
from emu.features import KernelNeed, Tool
from emu.spec.errors import Problem
from emu.spec.reader import Reader
from emu.spec.yamlsrc import FieldPath

NAME = "networkPolicy"
DEFAULT_ENABLED = True
KERNEL_NEEDS: Tuple[KernelNeed, ...] = (
    KernelNeed(
        "ip_set",
        "NetworkPolicy peers as ipsets",
        "ipset create emu-probe hash:ip && iptables -A FORWARD -m set --match-set emu-probe src -j ACCEPT",
    ),
    KernelNeed(
        "physdev",
        "NetworkPolicy egress chains by the pod's veth (br_netfilter)",
        "iptables -A FORWARD -m physdev --physdev-in lo -j ACCEPT",
    ),
)
TOOLS = (Tool("ipset", "ipset"), Tool("iptables-restore", "iptables"))
#: The Kubernetes kinds this add-on reads from manifests.
KINDS: Dict[str, str] = {"NetworkPolicy": API_VERSION, "Namespace": "v1"}


@dataclass(frozen=True)
class Settings:
    """The add-on has no settings of its own yet: ``networkPolicy: true`` (the default) or ``false``."""


def default_settings() -> Settings:
    return Settings()


def read_settings(reader: Reader, value: Dict[str, Any], path: FieldPath) -> Settings:
    reader.mapping(value, path, set())
    return Settings()


def read_object(reader: Reader, kind: str) -> Optional[Any]:
    """A ``NetworkPolicy`` or ``Namespace`` document, validated and defaulted (None when it cannot be read)."""
    if kind == "Namespace":
        return read_namespace(reader)
    return read_policy(reader)


def object_key(obj: Any) -> str:
    """What identifies an object of this add-on's kinds: ``namespace/name`` for a policy, a namespace's name."""
    return str(obj.key)


def check_spec(spec: Any, settings: Settings, reader: Reader) -> None:
    """Relations between objects: one policy per name in a namespace, one object per namespace, named ports that
    some pod has."""
    seen: Dict[Tuple[str, str], Any] = {}
    for kind, obj in spec.objects:
        if kind not in KINDS:
            continue
        key = (kind, obj.key)
        if key in seen:
            first = seen[key]
            reader.problems.append(Problem(obj.file, obj.line, "metadata.name", f"a second {kind} {obj.key}",
                                           f"the first is at {first.file}:{first.line}"))
        seen[key] = obj
    named = {(port.name, port.protocol) for pod in spec.pods for c in pod.containers for port in c.ports if port.name}
    for policy in spec.objects_of("NetworkPolicy"):
        _check_named_ports(policy, named, reader)


def _check_named_ports(policy: NetworkPolicy, named: Any, reader: Reader) -> None:
    for direction in ("Ingress", "Egress"):
        for rule in policy.rules(direction):
            for entry in rule.ports:
                if entry.name and (entry.name, entry.protocol) not in named:
                    reader.problems.append(Problem(
                        policy.file, policy.line, "spec", f"no pod has a {entry.protocol} container port named "
                        f"{entry.name!r}: that entry of policy {policy.key} matches nothing",
                        "name the port under a container's ports", "warning"))


__all__ = [
    "NAME", "KINDS", "plan", "plan_text", "trace_verdicts", "check_spec", "read_object", "read_settings",
    "default_settings",
]


def plan(spec: Any, plan: Any, settings: Settings) -> Any:
    """The plan hook: every node's policy chains and sets, and the add-on's fragment."""
    return plan_policies(spec, plan, NAME)


def trace_verdicts(plan: Any, src: str, dst: str, port: Optional[int], protocol: str) -> Any:
    """The trace hook: the policy verdicts of a packet (see ``emu.addons.policy.trace``)."""
    return _trace_verdicts(plan, src, dst, port, protocol, NAME)
