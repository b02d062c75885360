"""Reading ``NetworkPolicy`` and ``Namespace`` objects, with the API server's validation and defaulting.

Every problem is recorded with the loader's ``Reader`` (``FILE:LINE: field: what (hint)``), and a wrong part is
left out so that one mistake gives one line. What the API server refuses is an error here too (an ``In``
requirement without values, an ``endPort`` on a named port or below ``port``, an ``except`` outside its
``cidr``, a peer with ``ipBlock`` and a selector); what it accepts but means nothing in an IPv4 emulation is a
notice (an IPv6 ``ipBlock``). Defaulting is the API's: ``policyTypes`` is ``[Ingress]``, plus ``Egress`` when the
policy has egress rules; a port's protocol is TCP.
"""

import re
from ipaddress import IPv4Network, ip_network
from typing import Any, List, Optional, Tuple, Union

from emu.addons.policy.model import (
    METADATA_NAME_LABEL,
    OPERATORS,
    PROTOCOLS,
    IPBlock,
    Namespace,
    NetworkPolicy,
    Peer,
    PolicyPort,
    Requirement,
    Rule,
    Selector,
)
from emu.spec import kube_fields as kf
from emu.spec.reader import DNS_LABEL, LABEL_VALUE, Reader, label_key_ok, read_labels, short, type_name
from emu.spec.yamlsrc import FieldPath

__all__ = ["read_policy", "read_namespace", "SPEC_FIELDS"]

SPEC_FIELDS = {"podSelector", "policyTypes", "ingress", "egress"}
INGRESS_RULE = {"from", "ports"}
EGRESS_RULE = {"to", "ports"}
PEER_FIELDS = {"podSelector", "namespaceSelector", "ipBlock"}
IP_BLOCK_FIELDS = {"cidr", "except"}
PORT_FIELDS = {"protocol", "port", "endPort"}
EXPRESSION_FIELDS = {"key", "operator", "values"}
NAMESPACE_SPEC = {"finalizers"}
#: A named port (IANA_SVC_NAME): at most 15 of a-z 0-9 '-', a letter among them, no '-' at an end or twice.
SERVICE_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([a-z0-9]|-(?!-))*[a-z0-9]$|^[a-z]$")
POLICY_TYPES = ("Ingress", "Egress")


def read_policy(r: Reader) -> Optional[NetworkPolicy]:
    """A ``NetworkPolicy`` document, validated and defaulted; None when it cannot be read at all."""
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace = _metadata(r, data.get("metadata"), "NetworkPolicy")
    if data.get("spec") is None:
        r.missing(("spec",), "a NetworkPolicy needs a spec", "spec: {podSelector: {}, policyTypes: [Ingress]}")
        return None
    spec = r.mapping(data.get("spec"), ("spec",), SPEC_FIELDS)
    if "podSelector" not in spec and isinstance(data.get("spec"), dict):
        r.warn(("spec",), f"podSelector is missing: the policy selects every pod of namespace {namespace}",
               "write podSelector: {} to say so")
    pod_selector = read_selector(r, spec.get("podSelector"), ("spec", "podSelector")) or Selector()
    ingress = tuple(_rules(r, spec.get("ingress"), ("spec", "ingress"), "from"))
    egress = tuple(_rules(r, spec.get("egress"), ("spec", "egress"), "to"))
    types = _policy_types(r, spec.get("policyTypes"), ("spec", "policyTypes"), bool(egress))
    if name is None:
        return None
    return NetworkPolicy(
        name=name,
        namespace=namespace,
        pod_selector=pod_selector,
        policy_types=types,
        ingress=ingress,
        egress=egress,
        file=r.doc.file,
        line=r.doc.line(()),
    )


def read_namespace(r: Reader) -> Optional[Namespace]:
    """A ``Namespace`` document: its name and labels, with the label the control plane adds."""
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    meta = r.mapping(data.get("metadata"), ("metadata",), kf.OBJECT_META, kf.OBJECT_META_USED)
    if data.get("metadata") is None:
        r.missing(("metadata",), "metadata is missing", "metadata: {name: team-a}")
        return None
    name = r.name(meta.get("name"), ("metadata", "name"), "namespace")
    if "namespace" in meta:
        r.error(("metadata", "namespace"), "a Namespace is not in a namespace", "remove metadata.namespace")
    r.mapping(data.get("spec"), ("spec",), NAMESPACE_SPEC, set())
    labels = read_labels(r, meta.get("labels"), ("metadata", "labels"))
    if name is None:
        return None
    given = labels.get(METADATA_NAME_LABEL)
    if given is not None and given != name:
        r.error(("metadata", "labels", METADATA_NAME_LABEL), f"{short(given)} is not this namespace's name",
                f"the control plane sets {METADATA_NAME_LABEL}: {name} itself")
    labels[METADATA_NAME_LABEL] = name
    return Namespace(name, tuple(sorted(labels.items())), r.doc.file, r.doc.line(()))


def _metadata(r: Reader, value: Any, what: str) -> Tuple[Optional[str], str]:
    """The object's name (a DNS subdomain) and namespace (``default`` when not given)."""
    if value is None:
        r.missing(("metadata",), "metadata is missing", "metadata: {name: allow-web}")
        return None, "default"
    meta = r.mapping(value, ("metadata",), kf.OBJECT_META, kf.OBJECT_META_USED)
    read_labels(r, meta.get("labels"), ("metadata", "labels"))
    name: Optional[str] = None
    if meta.get("name") is None:
        r.missing(("metadata", "name"), f"{what} name is missing", "metadata: {name: allow-web}")
    else:
        text = r.string(meta.get("name"), ("metadata", "name"))
        if text is not None and _subdomain(text):
            name = text
        elif text is not None:
            r.error(("metadata", "name"), f"{short(text)} is not a valid {what} name",
                    "lowercase letters, digits, '-' and '.', at most 253, starting and ending with a letter or digit")
    namespace = "default"
    if meta.get("namespace") is not None:
        namespace = r.name(meta.get("namespace"), ("metadata", "namespace"), "namespace") or "default"
    return name, namespace


def _subdomain(text: str) -> bool:
    return 0 < len(text) <= 253 and all(DNS_LABEL.match(part) for part in text.split("."))


def read_selector(r: Reader, value: Any, path: FieldPath) -> Optional[Selector]:
    """A label selector (``matchLabels``, ``matchExpressions``); None when absent (or not a mapping)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        r.error(path, f"expected a label selector, got {type_name(value)}", "{} or {matchLabels: {app: web}}")
        return None
    data = r.mapping(value, path, kf.LABEL_SELECTOR)
    labels = read_labels(r, data.get("matchLabels"), path + ("matchLabels",))
    requirements: List[Requirement] = []
    for i, item in enumerate(r.sequence(data.get("matchExpressions"), path + ("matchExpressions",))):
        requirement = _requirement(r, item, path + ("matchExpressions", i))
        if requirement is not None:
            requirements.append(requirement)
    return Selector(tuple(sorted(labels.items())), tuple(requirements))


def _requirement(r: Reader, item: Any, path: FieldPath) -> Optional[Requirement]:
    data = r.mapping(item, path, EXPRESSION_FIELDS)
    if not isinstance(item, dict):
        return None
    key = data.get("key")
    if key is None:
        r.missing(path + ("key",), "the requirement's key is missing", "key: app")
        return None
    if not label_key_ok(key):
        r.error(path + ("key",), f"{short(key)} is not a label key", "e.g. app or app.kubernetes.io/name")
        return None
    operator = r.string(data.get("operator"), path + ("operator",))
    if operator not in OPERATORS:
        if data.get("operator") is None:
            r.missing(path + ("operator",), "the requirement's operator is missing", ", ".join(OPERATORS))
        else:
            r.error(path + ("operator",), f"{short(operator)} is not an operator", "one of " + ", ".join(OPERATORS))
        return None
    values: List[str] = []
    for j, raw in enumerate(r.sequence(data.get("values"), path + ("values",))):
        text = r.string(raw, path + ("values", j))
        if text is None:
            continue
        if len(text) > 63 or not LABEL_VALUE.match(text):
            r.error(path + ("values", j), f"{short(text)} is not a label value", "at most 63 of A-Z a-z 0-9 - _ .")
            continue
        values.append(text)
    if operator in ("In", "NotIn") and not data.get("values"):
        r.error(path + ("values",), f"operator {operator} needs at least one value", "values: [a, b]")
        return None
    if operator in ("Exists", "DoesNotExist") and data.get("values"):
        r.error(path + ("values",), f"operator {operator} takes no values", "remove values")
        return None
    return Requirement(key, operator, tuple(values))


def _policy_types(r: Reader, value: Any, path: FieldPath, has_egress: bool) -> Tuple[str, ...]:
    """``policyTypes`` as given, or the API's default: Ingress, and Egress when there are egress rules."""
    if not value:
        r.sequence(value, path)
        return ("Ingress", "Egress") if has_egress else ("Ingress",)
    types: List[str] = []
    for i, raw in enumerate(r.sequence(value, path)):
        text = r.string(raw, path + (i,))
        if text not in POLICY_TYPES:
            if text is not None:
                r.error(path + (i,), f"{short(text)} is not a policy type", "Ingress or Egress")
            continue
        if text in types:
            r.error(path + (i,), f"{text} is listed twice", "each of Ingress and Egress at most once")
            continue
        types.append(text)
    return tuple(t for t in POLICY_TYPES if t in types)


def _rules(r: Reader, value: Any, path: FieldPath, peers_field: str) -> List[Rule]:
    """The ingress (``from``) or egress (``to``) rules."""
    rules: List[Rule] = []
    for i, item in enumerate(r.sequence(value, path)):
        rpath = path + (i,)
        if item is None:  # "- " with nothing: an empty rule, as kubectl reads it
            item = {}
        data = r.mapping(item, rpath, {peers_field, "ports"})
        if not isinstance(item, dict):
            continue
        peers = []
        for j, raw in enumerate(r.sequence(data.get(peers_field), rpath + (peers_field,))):
            peer = _peer(r, raw, rpath + (peers_field, j))
            if peer is not None:
                peers.append(peer)
        ports = []
        for j, raw in enumerate(r.sequence(data.get("ports"), rpath + ("ports",))):
            port = _port(r, raw, rpath + ("ports", j))
            if port is not None:
                ports.append(port)
        rules.append(Rule(tuple(peers), tuple(ports)))
    return rules


def _peer(r: Reader, item: Any, path: FieldPath) -> Optional[Peer]:
    data = r.mapping(item, path, PEER_FIELDS)
    if not isinstance(item, dict):
        return None
    if not data:
        r.error(path, "a peer needs podSelector, namespaceSelector or ipBlock", "e.g. podSelector: {app: web}")
        return None
    if "ipBlock" in data and len(data) > 1:
        r.error(path + ("ipBlock",), "ipBlock cannot be combined with a selector in one peer",
                "make it a peer of its own (- ipBlock: ...)")
        return None
    if "ipBlock" in data:
        block = _ip_block(r, data["ipBlock"], path + ("ipBlock",))
        return None if block is None else Peer(ip_block=block)
    pods = read_selector(r, data.get("podSelector"), path + ("podSelector",))
    namespaces = read_selector(r, data.get("namespaceSelector"), path + ("namespaceSelector",))
    if pods is None and namespaces is None:
        return None  # both were wrong, and said so
    return Peer(pod_selector=pods, namespace_selector=namespaces)


def _cidr(r: Reader, value: Any, path: FieldPath) -> Optional[Union[IPv4Network, Any]]:
    """A CIDR (IPv4 or IPv6, host bits normalised with a warning); None, with an error, when it is not one."""
    text = r.string(value, path)
    if text is None:
        return None
    if "/" not in text:
        r.error(path, f"{short(text)} is not a CIDR (no prefix length)", f"e.g. {text}/32")
        return None
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        r.error(path, f"{short(text)} is not a CIDR", "e.g. 10.0.0.0/8")
        return None
    if net.version == 4 and str(net.network_address) != text.split("/")[0].strip():
        r.warn(path, f"{text} has host bits set: it means {net}", f"write {net}")
    return net


def _ip_block(r: Reader, value: Any, path: FieldPath) -> Optional[IPBlock]:
    data = r.mapping(value, path, IP_BLOCK_FIELDS)
    if not isinstance(value, dict):
        return None
    if data.get("cidr") is None:
        r.missing(path + ("cidr",), "ipBlock needs a cidr", "cidr: 10.0.0.0/8")
        return None
    net = _cidr(r, data.get("cidr"), path + ("cidr",))
    excepts = []
    for i, raw in enumerate(r.sequence(data.get("except"), path + ("except",))):
        inner = _cidr(r, raw, path + ("except", i))
        if inner is None or net is None:
            continue
        if inner.version != net.version or not inner.subnet_of(net) or inner.prefixlen <= net.prefixlen:
            r.error(path + ("except", i), f"{inner} is not inside cidr {net}",
                    f"an except is a smaller block within {net}")
            continue
        excepts.append(str(inner))
    if net is None:
        return None
    if net.version != 4:
        r.warn(path + ("cidr",), f"{net} is IPv6: it matches nothing in emu's IPv4 cluster", severity="notice")
        return None
    return IPBlock(str(net), tuple(excepts))


def _port(r: Reader, item: Any, path: FieldPath) -> Optional[PolicyPort]:
    data = r.mapping(item, path, PORT_FIELDS)
    if not isinstance(item, dict):
        return None
    protocol = r.string(data.get("protocol"), path + ("protocol",), "TCP") or "TCP"
    if protocol not in PROTOCOLS:
        r.error(path + ("protocol",), f"{short(protocol)} is not a protocol of NetworkPolicy", "TCP, UDP or SCTP")
        return None
    raw, end = data.get("port"), data.get("endPort")
    end_port = r.integer(end, path + ("endPort",), 1, 65535)
    if isinstance(raw, str) and not isinstance(raw, bool):
        if raw.isdigit():
            r.error(path + ("port",), f"{short(raw)} is a quoted number: it would name a port", f"port: {raw}")
            return None
        if len(raw) > 15 or not SERVICE_NAME.match(raw):
            r.error(path + ("port",), f"{short(raw)} is not a port name",
                    "at most 15 of a-z 0-9 '-', with a letter, e.g. http")
            return None
        if end is not None:
            r.error(path + ("endPort",), "endPort cannot follow a named port", "a number in port, or no endPort")
            return None
        return PolicyPort(protocol, name=raw)
    number = r.integer(raw, path + ("port",), 1, 65535)
    if raw is not None and number is None:
        return None
    if end is not None:
        if raw is None:
            r.error(path + ("endPort",), "endPort needs a port", "port: the first port of the range")
            return None
        if end_port is None:
            return None
        if number is not None and end_port < number:
            r.error(path + ("endPort",), f"endPort {end_port} is below port {number}", f"at least {number}")
            return None
    return PolicyPort(protocol, number, end_port)

