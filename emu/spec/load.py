"""From YAML files to a validated ClusterSpec: parsing, defaults, scheduling and every validation rule.

Reads one ``kind: Cluster`` object (emu's own, ``apiVersion: emu/v1``) plus any number of standard Kubernetes
objects (Pod, Deployment/ReplicaSet/StatefulSet/DaemonSet, Service; ConfigMap and friends are noticed and
ignored), from the files given and those the cluster names under ``manifests`` (relative to its file; globs
sorted). Strict like containerlab's loader: an unknown field is an error, with a "did you mean" hint; a wrong
apiVersion for a kind is an error; legal Kubernetes fields with nothing to emulate are reported once as notices.

Every problem is collected and raised together as one ``SpecError`` (``FILE:LINE: field.path: what (hint)``):
a value that is itself wrong is left out of the checks relating it to others, and a misspelt required field is
not reported again as missing, so one mistake gives one line. Names that reach the plan (nodes, pods,
containers, Services, ports, volumes) must be DNS labels, so no shell metacharacter ever gets past here.

The field sets below (CLUSTER_FIELDS, ...) are what schema/cluster.schema.json describes; a test keeps the two
equal. docs/topology.md is the user's guide to all of it.
"""

import glob
import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from emu.spec import kube_fields as kf
from emu.spec.errors import Problem, SpecError, dotted
from emu.spec.model import (
    BACKENDS,
    Backend,
    ClusterSpec,
    Container,
    ContainerPort,
    LinkProps,
    Network,
    Node,
    Pod,
    Service,
    ServicePort,
    Underlay,
    VolumeMount,
)
from emu.spec.yamlsrc import Document, FieldPath, read_documents

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
DURATION = re.compile(r"^\d+(\.\d+)?(us|ms|s)$")
NODE_PORT_RANGE = (30000, 32767)
MAX_NODES = 250
MAX_PODS = 5000
MAX_REPLICAS = 5000
MAX_NODE_NAME = 40
MAX_CLUSTER_NAME = 40
DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SUBNET_LEN = 24
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_UNDERLAY = "192.168.56.0/24"
DEFAULT_VXLAN_PORT = 8472
DEFAULT_UDP_PORT = 8285

CLUSTER_FIELDS = {"apiVersion", "kind", "name", "network", "underlay", "nodes", "manifests"}
NETWORK_FIELDS = {"podCIDR", "subnetLen", "serviceCIDR", "backend"}
BACKEND_FIELDS = {"Type", "VNI", "Port", "DirectRouting", "MTU", "type", "vni", "port", "directRouting", "mtu"}
UNDERLAY_FIELDS = {"cidr", "mtu", "link"}
LINK_FIELDS = {"bw", "delay", "jitter", "loss"}
NODE_FIELDS = {"name", "ip", "link"}
EXAMPLE_NAMES = {"cluster": "my-cluster", "node": "node-1", "container": "app", "volume": "data", "port": "http"}


class _Reader:
    """Typed access to one document's fields, recording problems with their lines."""

    def __init__(self, doc: Document, problems: List[Problem], notices: Set[str]) -> None:
        self.doc = doc
        self.problems = problems
        self.notices = notices
        self.misspelled: Set[FieldPath] = set()  # fields reported as "did you mean" (not again as missing)

    def error(self, path: FieldPath, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), dotted(path), message, hint))

    def missing(self, path: FieldPath, message: str, hint: str) -> None:
        """A required field is absent: an error, unless a misspelling of it was already reported."""
        if tuple(path) not in self.misspelled:
            self.error(path, message, hint)

    def warn(self, path: FieldPath, message: str, hint: str = "", severity: str = "warning") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), dotted(path), message, hint, severity))

    def ignored(self, path: FieldPath, what: str) -> None:
        key = f"{what}"
        if key in self.notices:
            return
        self.notices.add(key)
        self.warn(path, f"'{what}' has no effect in emu and is ignored", severity="notice")

    def mapping(self, value: Any, path: FieldPath, allowed: Set[str], used: Optional[Set[str]] = None) -> Dict:
        """Check ``value`` is a mapping whose keys are known; note known-but-unused keys once."""
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.error(path, f"expected a mapping, got {_type_name(value)}", "indented 'field: value' lines")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = _closest(str(key), allowed) if isinstance(key, str) else None
                if close is not None and close not in value:
                    self.misspelled.add(path + (close,))
                hint = f"did you mean '{close}'?" if close else "known fields: " + ", ".join(sorted(allowed))
                what = "unknown field" if isinstance(key, str) else f"a field name must be a string, not {_short(key)}"
                self.error(path + (key,), what, hint)
            elif used is not None and key not in used:
                self.ignored(path + (key,), key)
        return {k: v for k, v in value.items() if isinstance(k, str) and k in allowed}

    def sequence(self, value: Any, path: FieldPath) -> List:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {_type_name(value)}", "'- item' lines, or [a, b]")
            return []
        return value

    def string(self, value: Any, path: FieldPath, default: Optional[str] = None) -> Optional[str]:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(path, f"expected a string, got {_type_name(value)}", 'quote it: "..."')
            return default
        return str(value)

    def integer(self, value: Any, path: FieldPath, low: int, high: int, default: Optional[int] = None) -> Optional[int]:
        """An integer in low..high; ``default`` when absent; None, with an error, when wrong (so that the checks
        relating it to other fields skip it)."""
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            hint = f"{low}..{high}"
            if isinstance(value, str) and value.strip().lstrip("-").isdigit():
                hint = f"write {value.strip()} without quotes"
            elif isinstance(value, float) and value.is_integer():
                hint = f"a whole number, {int(value)}"
            self.error(path, f"expected an integer, got {_type_name(value)} {_short(value)}", hint)
            return None
        if not low <= value <= high:
            self.error(path, f"{_short(value)} is out of range", f"{low}..{high}")
            return None
        return value

    def number(self, value: Any, path: FieldPath, low: float, high: float) -> Optional[float]:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"expected a number, got {_type_name(value)} {_short(value)}", f"{low}..{high}")
            return None
        if not low <= value <= high:
            self.error(path, f"{_short(value)} is out of range", f"{low}..{high}")
            return None
        return float(value)

    def boolean(self, value: Any, path: FieldPath, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_short(value)}", "true or false, without quotes")
            return default
        return value

    def network(self, value: Any, path: FieldPath, default: str) -> Optional[IPv4Network]:
        """An IPv4 CIDR (``default`` when absent); None, with an error, when it is not one."""
        if value is None:
            return IPv4Network(default)
        text = self.string(value, path)
        if text is None:
            return None
        if "/" not in text:
            self.error(path, f"{_short(text)} is not a CIDR (no prefix length)", f"e.g. {default}")
            return None
        try:
            net = ip_network(text, strict=False)
        except ValueError:
            self.error(path, f"{_short(text)} is not a CIDR", f"e.g. {default}")
            return None
        if net.version != 4:
            self.error(path, f"{_short(text)} is IPv6", f"emu emulates IPv4 networks, e.g. {default}")
            return None
        if net.network_address != ip_address(text.split("/")[0]):
            self.error(path, f"{text} has host bits set", f"use {net}")
        return IPv4Network(str(net))

    def name(
        self, value: Any, path: FieldPath, what: str, max_len: int = 63, letter_first: bool = False
    ) -> Optional[str]:
        """A DNS label (RFC 1123; RFC 1035 with ``letter_first``): the only names that reach the plan."""
        if value is None:
            self.missing(path, f"{what} name is missing", f"name: {EXAMPLE_NAMES.get(what, 'web')}")
            return None
        text = self.string(value, path)
        if text is None:
            return None
        rule = "lowercase letters, digits and '-', starting and ending with a letter or digit"
        if len(text) > max_len:
            self.error(path, f"{what} name {_short(text)} is {len(text)} characters long", f"at most {max_len}")
            return None
        if not DNS_LABEL.match(text) or (letter_first and not text[0].isalpha()):
            if letter_first:
                rule = rule.replace("starting and ending with a letter or digit", "starting with a letter")
            self.error(path, f"{_short(text)} is not a valid {what} name", rule)
            return None
        return text

    def link(self, value: Any, path: FieldPath) -> LinkProps:
        data = self.mapping(value, path, LINK_FIELDS)
        delay = self.duration(data.get("delay"), path + ("delay",))
        jitter = self.duration(data.get("jitter"), path + ("jitter",))
        return LinkProps(
            bw=self.number(data.get("bw"), path + ("bw",), 0.001, 1000),
            delay=delay,
            jitter=jitter,
            loss=self.number(data.get("loss"), path + ("loss",), 0, 100),
        )

    def duration(self, value: Any, path: FieldPath) -> Optional[str]:
        if value is None:
            return None
        text = str(value) if not isinstance(value, bool) else ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            text = f"{value}ms"
        if not DURATION.match(text):
            self.error(path, f"{_short(value)} is not a duration", "e.g. 5ms, 200us, 1s")
            return None
        return text


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    names = {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
    }
    return names.get(type(value), f"a {type(value).__name__}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _closest(word: str, options: Iterable[str]) -> Optional[str]:
    import difflib

    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    if match:
        return match[0]
    lowered = {o.lower(): o for o in options}
    return lowered.get(word.lower())


# --------------------------------------------------------------------------------------------------------------
# The cluster object


def _read_cluster(r: _Reader) -> Tuple[dict, List[Tuple[int, str]]]:
    """The cluster object's fields as a raw resolved dict, and its manifests as (index, pattern) pairs.

    A range that is itself wrong is left out of the checks that relate it to others, so one mistake gives one line.
    """
    data = r.mapping(r.doc.data, (), CLUSTER_FIELDS)
    if data.get("apiVersion") is None:
        r.missing(("apiVersion",), "apiVersion is missing", "apiVersion: emu/v1")
    elif data.get("apiVersion") != "emu/v1":
        r.error(("apiVersion",), f"{_short(data.get('apiVersion'))} is not emu's cluster API", "apiVersion: emu/v1")
    name = r.name(data.get("name"), ("name",), "cluster", max_len=MAX_CLUSTER_NAME)

    net = r.mapping(data.get("network"), ("network",), NETWORK_FIELDS)
    pod_cidr = r.network(net.get("podCIDR"), ("network", "podCIDR"), DEFAULT_POD_CIDR)
    service_cidr = r.network(net.get("serviceCIDR"), ("network", "serviceCIDR"), DEFAULT_SERVICE_CIDR)
    subnet_len = r.integer(net.get("subnetLen"), ("network", "subnetLen"), 8, 30, DEFAULT_SUBNET_LEN)
    if subnet_len is not None and pod_cidr is not None and subnet_len <= pod_cidr.prefixlen:
        r.error(
            ("network", "subnetLen"),
            f"/{subnet_len} node subnets do not fit in podCIDR {pod_cidr}",
            f"a length greater than {pod_cidr.prefixlen}, e.g. {min(pod_cidr.prefixlen + 8, 30)}",
        )
    if service_cidr is not None and service_cidr.prefixlen > 28:
        r.error(("network", "serviceCIDR"), f"{service_cidr} is too small for Services", "e.g. 10.96.0.0/12")
    backend, mtu_path = _read_backend(r, net.get("backend"), ("network", "backend"))

    under = r.mapping(data.get("underlay"), ("underlay",), UNDERLAY_FIELDS)
    underlay_cidr = r.network(under.get("cidr"), ("underlay", "cidr"), DEFAULT_UNDERLAY)
    underlay_mtu = r.integer(under.get("mtu"), ("underlay", "mtu"), 1280, 9000, 1500)
    underlay_link = r.link(under.get("link"), ("underlay", "link"))
    if underlay_cidr is not None and underlay_cidr.prefixlen > 29:
        r.error(("underlay", "cidr"), f"{underlay_cidr} is too small for a node network", "e.g. 192.168.56.0/24")

    ranges = [("network.podCIDR", pod_cidr), ("network.serviceCIDR", service_cidr), ("underlay.cidr", underlay_cidr)]
    for (a_name, a), (b_name, b) in _pairs(ranges):
        if a is not None and b is not None and a.overlaps(b):
            path = tuple(b_name.split("."))
            r.error(path, f"{b} overlaps {a_name} {a}", "the pod, service and node ranges must be disjoint")

    if backend.mtu is not None and underlay_mtu is not None and backend.mtu > underlay_mtu - _overhead(backend):
        r.error(
            mtu_path,
            f"MTU {backend.mtu} does not fit the underlay MTU {underlay_mtu} with {backend.type}'s encapsulation",
            f"at most {underlay_mtu - _overhead(backend)}",
        )

    nodes = _read_nodes(r, data.get("nodes"), underlay_cidr, underlay_link)
    if subnet_len is not None and pod_cidr is not None and subnet_len > pod_cidr.prefixlen:
        available = 2 ** (subnet_len - pod_cidr.prefixlen) - 1  # flannel never leases the first subnet
        if len(nodes) > available:
            r.error(
                ("network", "subnetLen"),
                f"podCIDR {pod_cidr} holds {available} /{subnet_len} node subnets, the cluster has {len(nodes)} nodes",
                "a larger podCIDR or a longer subnetLen",
            )

    manifests: List[Tuple[int, str]] = []
    for i, item in enumerate(r.sequence(data.get("manifests"), ("manifests",))):
        text = r.string(item, ("manifests", i))
        if text is None:
            if item is None:
                r.error(("manifests", i), "empty entry", "a file name or glob, e.g. guestbook/*.yaml")
        elif not text or "\x00" in text:
            r.error(
                ("manifests", i), f"{_short(text)} is not a file name", "a file name or glob, e.g. guestbook/*.yaml"
            )
        else:
            manifests.append((i, text))
    resolved = {
        "name": name or "cluster",
        "network": Network(
            pod_cidr or ip_network(DEFAULT_POD_CIDR),
            subnet_len or DEFAULT_SUBNET_LEN,
            service_cidr or ip_network(DEFAULT_SERVICE_CIDR),
            backend,
        ),
        "underlay": Underlay(underlay_cidr or ip_network(DEFAULT_UNDERLAY), underlay_mtu or 1500, underlay_link),
        "nodes": nodes,
    }
    return resolved, manifests


def _read_nodes(r: _Reader, value: Any, cidr: Optional[IPv4Network], underlay_link: LinkProps) -> List[Node]:
    """The nodes, with their addresses: given, or the (11 + i)th of the underlay (192.168.56.11, .12, ...).

    cidr: the underlay, None when it is itself wrong (addresses are then not checked against it).
    """
    underlay_cidr = cidr or IPv4Network(DEFAULT_UNDERLAY)
    nodes: List[Node] = []
    raw_nodes = r.sequence(value, ("nodes",))
    if value is None or (isinstance(value, list) and not value):
        r.missing(("nodes",), "a cluster needs nodes", "nodes: [{name: node-1}, {name: node-2}]")
    if len(raw_nodes) > MAX_NODES:
        r.error(("nodes",), f"{len(raw_nodes)} nodes", f"at most {MAX_NODES}")
        raw_nodes = raw_nodes[:MAX_NODES]
    seen: Dict[str, int] = {}
    used_ips: Dict[IPv4Address, str] = {}
    for i, raw in enumerate(raw_nodes):
        path: FieldPath = ("nodes", i)
        if isinstance(raw, str):
            raw = {"name": raw}
        node = r.mapping(raw, path, NODE_FIELDS)
        if not isinstance(raw, dict):
            continue
        node_name = r.name(node.get("name"), path + ("name",), "node", max_len=MAX_NODE_NAME)
        if node_name is None:
            continue
        if node_name in seen:
            r.error(path + ("name",), f"duplicate node name '{node_name}'", f"first used at nodes[{seen[node_name]}]")
            continue
        seen[node_name] = i
        ip = _default_node_ip(underlay_cidr, i)
        if node.get("ip") is not None:
            text = r.string(node.get("ip"), path + ("ip",))
            if text is None:
                continue
            try:
                ip = IPv4Address(text)
            except ValueError:
                r.error(path + ("ip",), f"{_short(text)} is not an IPv4 address", f"an address in {underlay_cidr}")
                continue
        if ip is None:
            r.error(path, f"underlay {underlay_cidr} has no room for node {i + 1}", "use a larger underlay.cidr")
            continue
        if cidr is not None and (ip not in cidr or ip in (cidr.network_address, cidr.broadcast_address)):
            r.error(path + ("ip",), f"{ip} is not a host address of underlay {underlay_cidr}", "pick one inside it")
        elif ip in used_ips:
            r.error(path + ("ip",), f"{ip} is already node {used_ips[ip]}'s address", "give every node its own")
        used_ips[ip] = node_name
        link = underlay_link.merged(r.link(node.get("link"), path + ("link",)))
        nodes.append(Node(node_name, ip, link, r.doc.line(path)))
    return nodes


def _default_node_ip(cidr: IPv4Network, index: int) -> Optional[IPv4Address]:
    """Node i gets the (11 + i)th address, like the 192.168.56.11, .12, ... of the usual Vagrant labs."""
    offset = 11 + index if cidr.num_addresses > 16 + index else 1 + index
    if offset >= cidr.num_addresses - 1:
        return None
    return cidr.network_address + offset


def _overhead(backend: Backend) -> int:
    return {"vxlan": 50, "udp": 28}.get(backend.type, 0)


def _pairs(items: Sequence[Any]) -> Iterable[Tuple[Any, Any]]:
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            yield a, b


def _read_backend(r: _Reader, value: Any, path: FieldPath) -> Tuple[Backend, FieldPath]:
    """flannel's Backend object (``Type``, ``VNI``, ... as in net-conf.json, or lowerCamelCase); a string is its Type.

    Returns the backend and the path its MTU was given at (for a later error).
    """
    if value is None:
        return Backend(), path + ("MTU",)
    if isinstance(value, str):
        value = {"Type": value}
    data = r.mapping(value, path, BACKEND_FIELDS)

    def get(key: str) -> Tuple[Any, FieldPath]:
        lower = key.lower() if key in ("VNI", "MTU") else key[0].lower() + key[1:]
        if key in data and lower in data:
            r.error(path + (lower,), f"{key} is given twice, as {key} and as {lower}", "keep one")
        if key in data:
            return data[key], path + (key,)
        return data.get(lower), path + (lower,)

    type_value, type_path = get("Type")
    btype = r.string(type_value, type_path, "vxlan")
    if btype not in BACKENDS:
        close = _closest(str(btype), BACKENDS)
        r.error(
            type_path,
            f"unknown backend {_short(btype)}",
            f"did you mean '{close}'?" if close else "one of " + ", ".join(BACKENDS),
        )
        btype = "vxlan"
    vni_value, vni_path = get("VNI")
    port_value, port_path = get("Port")
    dr_value, dr_path = get("DirectRouting")
    mtu_value, mtu_path = get("MTU")
    if btype != "vxlan":
        for v, p, what in ((vni_value, vni_path, "VNI"), (dr_value, dr_path, "DirectRouting")):
            if v is not None:
                r.error(p, f"{what} is a vxlan option, not a {btype} one", "remove it or use Type: vxlan")
    if btype == "host-gw" and port_value is not None:
        r.error(port_path, "host-gw has no port (it encapsulates nothing)", "remove Port")
    default_port = DEFAULT_UDP_PORT if btype == "udp" else DEFAULT_VXLAN_PORT
    backend = Backend(
        type=btype,
        vni=r.integer(vni_value, vni_path, 1, 16777215, 1) or 1,
        port=r.integer(port_value, port_path, 1, 65535, default_port) or default_port,
        direct_routing=r.boolean(dr_value, dr_path),
        mtu=r.integer(mtu_value, mtu_path, 576, 9000),
    )
    return backend, mtu_path


# --------------------------------------------------------------------------------------------------------------
# Kubernetes objects


class _RawPod:
    """A pod before scheduling: its spec and, when pinned, its node."""

    def __init__(self, pod: Pod, pinned: bool, reader: _Reader, path: FieldPath, daemon: bool = False) -> None:
        self.pod = pod
        self.pinned = pinned
        self.reader = reader
        self.path = path
        self.daemon = daemon


def _metadata(r: _Reader, value: Any, path: FieldPath, what: str) -> Tuple[Optional[str], str, Dict[str, str]]:
    """An object's name (a DNS label; Services' start with a letter), namespace and labels."""
    if value is None:
        r.missing(path, "metadata is missing", f"metadata: {{name: ...}} names the {what}")
        return None, "default", {}
    meta = r.mapping(value, path, kf.OBJECT_META, kf.OBJECT_META_USED | {"generateName"})
    name: Optional[str] = None
    if meta.get("name") is not None:
        name = r.name(meta.get("name"), path + ("name",), what, letter_first=what == "service")
        if "generateName" in meta:
            r.ignored(path + ("generateName",), "generateName")
    elif "generateName" in meta:
        r.error(
            path + ("generateName",),
            "generateName is not emulated: names must be known before the run",
            "give metadata.name",
        )
    else:
        r.missing(path + ("name",), f"{what} name is missing", "metadata: {name: web}")
    namespace = "default"
    if meta.get("namespace") is not None:
        namespace = r.name(meta.get("namespace"), path + ("namespace",), "namespace") or "default"
    labels = _labels(r, meta.get("labels"), path + ("labels",))
    return name, namespace, labels


def _labels(r: _Reader, value: Any, path: FieldPath) -> Dict[str, str]:
    """Labels (or a selector's matchLabels): keys ``[prefix/]name``, values of at most 63 characters."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(path, f"expected a mapping of labels, got {_type_name(value)}", "e.g. {app: web}")
        return {}
    labels: Dict[str, str] = {}
    for key, val in value.items():
        if not _label_key_ok(key):
            r.error(
                path + (key,),
                f"{_short(key)} is not a label key",
                "an optional DNS prefix and '/', then at most 63 of A-Z a-z 0-9 - _ ., e.g. app.kubernetes.io/name",
            )
            continue
        text = r.string(val, path + (key,), "")
        if text is None:
            continue
        if len(text) > 63 or not LABEL_VALUE.match(text):
            r.error(path + (key,), f"{_short(text)} is not a label value", "at most 63 of A-Z a-z 0-9 - _ .")
            continue
        labels[key] = text
    return labels


def _label_key_ok(key: Any) -> bool:
    if not isinstance(key, str) or not key:
        return False
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not all(DNS_LABEL.match(part) for part in prefix.split("."))):
        return False
    return 0 < len(name) <= 63 and bool(LABEL_VALUE.match(name))


def _read_pod_spec(
    r: _Reader, value: Any, path: FieldPath, name: str, namespace: str, labels: Dict[str, str], owner: str = ""
) -> Optional[Tuple[Pod, bool]]:
    spec = r.mapping(value, path, kf.POD_SPEC, kf.POD_SPEC_USED)
    if value is None:
        r.missing(path, "a pod needs a spec with containers", "spec: {containers: [{name: app, ...}]}")
        return None
    if not isinstance(value, dict):
        return None
    volumes: List[str] = []
    for i, raw in enumerate(r.sequence(spec.get("volumes"), path + ("volumes",))):
        vpath = path + ("volumes", i)
        vol = r.mapping(raw, vpath, {"name"} | kf.VOLUME_SOURCES)
        vname = r.name(vol.get("name"), vpath + ("name",), "volume")
        sources = [k for k in vol if k != "name"]
        if len(sources) > 1:
            r.error(vpath, "a volume has exactly one source", "e.g. emptyDir: {}")
        for source in sources:
            if source != "emptyDir":
                r.warn(vpath + (source,), f"{source} volumes are emulated as empty directories", severity="notice")
        if vname:
            if vname in volumes:
                r.error(vpath + ("name",), f"duplicate volume '{vname}'", "every volume of a pod has its own name")
            volumes.append(vname)

    containers: List[Container] = []
    raw_containers = r.sequence(spec.get("containers"), path + ("containers",))
    if spec.get("containers") is None or spec.get("containers") == []:
        r.missing(path + ("containers",), "a pod needs at least one container", "containers: [{name: app, ...}]")
    ports_in_use: Dict[Tuple[int, str], str] = {}
    for i, raw in enumerate(raw_containers):
        cpath = path + ("containers", i)
        container = _read_container(r, raw, cpath, volumes)
        if container is None:
            continue
        if any(c.name == container.name for c in containers):
            r.error(cpath + ("name",), f"duplicate container name '{container.name}'", "names are unique in a pod")
        for j, port in enumerate(container.ports):
            key = (port.container_port, port.protocol)
            if key in ports_in_use:
                r.error(
                    cpath + ("ports", j, "containerPort"),
                    f"port {port.container_port}/{port.protocol} is already used by container '{ports_in_use[key]}'",
                    "the containers of a pod share one port space: use another port",
                )
            ports_in_use[key] = container.name
        containers.append(container)

    host_network = r.boolean(spec.get("hostNetwork"), path + ("hostNetwork",))
    node_name = r.string(spec.get("nodeName"), path + ("nodeName",))
    pod = Pod(
        name=name,
        namespace=namespace,
        labels=tuple(sorted(labels.items())),
        node=node_name or "",
        host_network=host_network,
        containers=tuple(containers),
        volumes=tuple(volumes),
        owner=owner,
        file=r.doc.file,
        line=r.doc.line(path),
    )
    return pod, node_name is not None


def _read_container(r: _Reader, raw: Any, path: FieldPath, volumes: List[str]) -> Optional[Container]:
    data = r.mapping(raw, path, kf.CONTAINER, kf.CONTAINER_USED)
    if not isinstance(raw, dict):
        return None
    name = r.name(data.get("name"), path + ("name",), "container")
    command = _string_list(r, data.get("command"), path + ("command",))
    args = _string_list(r, data.get("args"), path + ("args",))
    env: List[Tuple[str, str]] = []
    for i, item in enumerate(r.sequence(data.get("env"), path + ("env",))):
        epath = path + ("env", i)
        var = r.mapping(item, epath, kf.ENV_VAR)
        if not isinstance(item, dict):
            continue
        if var.get("name") is None:
            r.missing(epath + ("name",), "the variable's name is missing", "- {name: GREETING, value: hello}")
            continue
        ename = r.string(var.get("name"), epath + ("name",))
        if ename is None:
            continue
        if not ENV_NAME.match(ename):
            r.error(epath + ("name",), f"{_short(ename)} is not an environment variable name", "e.g. GET_HOSTS_FROM")
            continue
        if "valueFrom" in var:
            r.warn(epath + ("valueFrom",), "valueFrom is not emulated; the variable is set empty", severity="notice")
        env.append((ename, r.string(var.get("value"), epath + ("value",), "") or ""))
    ports: List[ContainerPort] = []
    for i, item in enumerate(r.sequence(data.get("ports"), path + ("ports",))):
        ppath = path + ("ports", i)
        port = r.mapping(item, ppath, kf.CONTAINER_PORT, kf.CONTAINER_PORT_USED)
        number = r.integer(port.get("containerPort"), ppath + ("containerPort",), 1, 65535)
        if port.get("containerPort") is None:
            r.missing(ppath + ("containerPort",), "containerPort is missing", "1..65535")
        protocol = _protocol(r, port.get("protocol"), ppath + ("protocol",))
        pname = ""
        if port.get("name") is not None:
            pname = r.name(port.get("name"), ppath + ("name",), "port", max_len=15) or ""
        if number is not None:
            ports.append(ContainerPort(number, protocol, pname))
    mounts: List[VolumeMount] = []
    for i, item in enumerate(r.sequence(data.get("volumeMounts"), path + ("volumeMounts",))):
        mpath = path + ("volumeMounts", i)
        mount = r.mapping(item, mpath, kf.VOLUME_MOUNT, kf.VOLUME_MOUNT_USED)
        if not isinstance(item, dict):
            continue
        vname = r.string(mount.get("name"), mpath + ("name",))
        mount_path = r.string(mount.get("mountPath"), mpath + ("mountPath",))
        if mount.get("name") is None:
            r.missing(mpath + ("name",), "the volume's name is missing", "name: one of spec.volumes")
            continue
        if vname is None:
            continue
        if vname not in volumes:
            close = _closest(vname, volumes)
            hint = f"did you mean '{close}'?" if close else "declare it under spec.volumes"
            r.error(mpath + ("name",), f"no volume named {_short(vname)} in this pod", hint)
            continue
        if mount.get("mountPath") is None:
            r.missing(mpath + ("mountPath",), "mountPath is missing", "an absolute path, e.g. /data")
            continue
        if mount_path is None:
            continue
        if not mount_path.startswith("/") or "\x00" in mount_path or ".." in mount_path.split("/"):
            r.error(mpath + ("mountPath",), f"{_short(mount_path)} is not an absolute path", "e.g. /data, without '..'")
            continue
        mounts.append(VolumeMount(vname, mount_path, r.boolean(mount.get("readOnly"), mpath + ("readOnly",))))
    if name is None:
        return None
    return Container(
        name=name,
        image=r.string(data.get("image"), path + ("image",), "") or "",
        command=tuple(command),
        args=tuple(args),
        env=tuple(env),
        ports=tuple(ports),
        volume_mounts=tuple(mounts),
        working_dir=r.string(data.get("workingDir"), path + ("workingDir",), "") or "",
    )


def _string_list(r: _Reader, value: Any, path: FieldPath) -> List[str]:
    out: List[str] = []
    for i, item in enumerate(r.sequence(value, path)):
        text = r.string(item, path + (i,))
        if text is not None:
            if "\x00" in text:
                r.error(path + (i,), "contains a NUL byte", "a process argument cannot hold one")
                continue
            out.append(text)
    return out


def _protocol(r: _Reader, value: Any, path: FieldPath) -> str:
    text = r.string(value, path, "TCP") or "TCP"
    if text not in ("TCP", "UDP"):
        r.error(path, f"protocol {_short(text)} is not emulated", "TCP or UDP")
        return "TCP"
    return text


def _read_workload(r: _Reader, kind: str) -> List[_RawPod]:
    """A Deployment, ReplicaSet or StatefulSet: ``replicas`` pods ``<name>-<i>``.

    A DaemonSet gives one pod to be expanded later into ``<name>-<node>`` on every node.
    """
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, _ = _metadata(r, data.get("metadata"), ("metadata",), kind)
    if data.get("spec") is None:
        r.missing(("spec",), f"a {kind} needs a spec", "spec: {selector: ..., template: ...}")
        return []
    spec = r.mapping(data.get("spec"), ("spec",), kf.WORKLOAD_SPEC, kf.WORKLOAD_SPEC_USED)
    replicas = r.integer(spec.get("replicas"), ("spec", "replicas"), 0, MAX_REPLICAS, 1)
    if kind == "DaemonSet" and "replicas" in spec:
        r.error(("spec", "replicas"), "a DaemonSet has no replicas: it runs one pod per node", "remove replicas")
    selector = r.mapping(spec.get("selector"), ("spec", "selector"), kf.LABEL_SELECTOR)
    match_labels = _labels(r, selector.get("matchLabels"), ("spec", "selector", "matchLabels"))
    if "matchExpressions" in selector:
        r.ignored(("spec", "selector", "matchExpressions"), "matchExpressions")
    if spec.get("selector") is None:
        r.missing(("spec", "selector"), f"a {kind} needs a selector", "selector: {matchLabels: {app: NAME}}")
    elif (
        isinstance(spec.get("selector"), dict)
        and not selector.get("matchLabels")
        and not selector.get("matchExpressions")
    ):
        r.error(("spec", "selector"), "an empty selector selects every pod", "selector: {matchLabels: {app: NAME}}")
    template = r.mapping(spec.get("template"), ("spec", "template"), kf.POD_TEMPLATE)
    if spec.get("template") is None:
        r.missing(("spec", "template"), f"a {kind} needs a pod template", "template: {metadata: ..., spec: ...}")
        return []
    tmeta = r.mapping(template.get("metadata"), ("spec", "template", "metadata"), kf.OBJECT_META, kf.OBJECT_META_USED)
    labels = _labels(r, tmeta.get("labels"), ("spec", "template", "metadata", "labels"))
    for key, val in match_labels.items():
        if labels.get(key) != val:
            r.error(
                ("spec", "selector", "matchLabels", key),
                f"selector {key}={val} does not match the template's labels",
                "the template must carry every label of spec.selector.matchLabels",
            )
    parsed = _read_pod_spec(
        r, template.get("spec"), ("spec", "template", "spec"), name or "", namespace, labels, name or ""
    )
    if parsed is None or name is None:
        return []
    pod, pinned = parsed
    if kind == "DaemonSet":
        return [_RawPod(pod, pinned, r, ("spec", "template"), daemon=True)]
    pods = []
    for i in range(replicas if replicas is not None else 1):
        pods.append(_RawPod(replace(pod, name=f"{name}-{i}"), pinned, r, ("spec", "template")))
    return pods


def _read_pod(r: _Reader) -> List[_RawPod]:
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, labels = _metadata(r, data.get("metadata"), ("metadata",), "pod")
    parsed = _read_pod_spec(r, data.get("spec"), ("spec",), name or "", namespace, labels)
    if parsed is None or name is None:
        return []
    pod, pinned = parsed
    return [_RawPod(pod, pinned, r, ("spec",))]


def _read_service(r: _Reader) -> Optional[Tuple[Service, _Reader]]:
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, _ = _metadata(r, data.get("metadata"), ("metadata",), "service")
    spec = r.mapping(data.get("spec"), ("spec",), kf.SERVICE_SPEC, kf.SERVICE_SPEC_USED)
    stype = r.string(spec.get("type"), ("spec", "type"), "ClusterIP") or "ClusterIP"
    if stype == "LoadBalancer":
        r.warn(("spec", "type"), "no load balancer here: emulated as NodePort", severity="notice")
        stype = "NodePort"
    if stype not in ("ClusterIP", "NodePort"):
        r.error(
            ("spec", "type"), f"Service type {_short(stype)} is not emulated", "ClusterIP, NodePort or LoadBalancer"
        )
        stype = "ClusterIP"
    selector = _labels(r, spec.get("selector"), ("spec", "selector"))
    cluster_ip: Optional[IPv4Address] = None
    raw_ip = spec.get("clusterIP")
    if raw_ip is None and spec.get("clusterIPs") is not None:
        ips = r.sequence(spec.get("clusterIPs"), ("spec", "clusterIPs"))
        raw_ip = ips[0] if ips else None
    if raw_ip is not None and str(raw_ip) == "None":
        r.error(("spec", "clusterIP"), "headless Services are not emulated", "remove clusterIP: None")
    elif raw_ip is not None and str(raw_ip) != "":
        try:
            cluster_ip = IPv4Address(str(raw_ip))
        except ValueError:
            r.error(("spec", "clusterIP"), f"{_short(raw_ip)} is not an IPv4 address", "an address in the serviceCIDR")
    affinity = r.string(spec.get("sessionAffinity"), ("spec", "sessionAffinity"), "None") or "None"
    if affinity not in ("None", "ClientIP"):
        r.error(("spec", "sessionAffinity"), f"{_short(affinity)} is not a session affinity", "None or ClientIP")
        affinity = "None"
    timeout = 10800
    config = spec.get("sessionAffinityConfig")
    if config is not None:
        cfg = r.mapping(config, ("spec", "sessionAffinityConfig"), {"clientIP"})
        client = r.mapping(cfg.get("clientIP"), ("spec", "sessionAffinityConfig", "clientIP"), {"timeoutSeconds"})
        timeout = (
            r.integer(
                client.get("timeoutSeconds"),
                ("spec", "sessionAffinityConfig", "clientIP", "timeoutSeconds"),
                1,
                86400,
                10800,
            )
            or 10800
        )
    ports: List[ServicePort] = []
    seen_ports: Dict[Tuple[int, str], int] = {}
    raw_ports = r.sequence(spec.get("ports"), ("spec", "ports"))
    if spec.get("ports") is None or spec.get("ports") == []:
        r.error(("spec", "ports"), "a Service needs at least one port", "ports: [{port: 80, targetPort: 8080}]")
    for i, item in enumerate(raw_ports):
        ppath: FieldPath = ("spec", "ports", i)
        port = r.mapping(item, ppath, kf.SERVICE_PORT)
        if "appProtocol" in port:
            r.ignored(ppath + ("appProtocol",), "appProtocol")
        number = r.integer(port.get("port"), ppath + ("port",), 1, 65535)
        if port.get("port") is None:
            r.missing(ppath + ("port",), "port is missing", "1..65535")
        protocol = _protocol(r, port.get("protocol"), ppath + ("protocol",))
        pname = ""
        if port.get("name") is not None:
            pname = r.name(port.get("name"), ppath + ("name",), "port", max_len=15) or ""
        elif len(raw_ports) > 1:
            r.error(ppath + ("name",), "every port of a multi-port Service needs a name", "e.g. name: http")
        target = port.get("targetPort")
        if target is None:
            target_text = str(number) if number is not None else ""
        elif isinstance(target, int) and not isinstance(target, bool):
            target_text = str(r.integer(target, ppath + ("targetPort",), 1, 65535) or "")
        else:
            target_text = r.name(target, ppath + ("targetPort",), "port", max_len=15) or ""
        node_port: Optional[int] = None
        if port.get("nodePort") is not None:
            low, high = NODE_PORT_RANGE
            node_port = r.integer(port.get("nodePort"), ppath + ("nodePort",), low, high)
            if stype != "NodePort":
                r.error(ppath + ("nodePort",), "nodePort needs type: NodePort", "set spec.type: NodePort")
        if number is not None and (number, protocol) in seen_ports:
            r.error(
                ppath + ("port",),
                f"duplicate port {number}/{protocol}",
                f"already spec.ports[{seen_ports[(number, protocol)]}]",
            )
        elif number is not None:
            seen_ports[(number, protocol)] = i
        if pname and any(p.name == pname for p in ports):
            r.error(ppath + ("name",), f"duplicate port name '{pname}'", "every port of a Service has its own name")
        if number is not None and target_text:
            ports.append(ServicePort(pname, protocol, number, target_text, node_port))
    if name is None:
        return None
    service = Service(
        name=name,
        namespace=namespace,
        type=stype,
        selector=tuple(sorted(selector.items())),
        ports=tuple(ports),
        cluster_ip=cluster_ip,
        session_affinity=affinity,
        affinity_timeout=timeout,
        file=r.doc.file,
        line=r.doc.line(()),
    )
    return service, r


# --------------------------------------------------------------------------------------------------------------
# Putting it together


def _expand_manifests(r: _Reader, base: Path, patterns: Sequence[Tuple[int, str]]) -> List[str]:
    """The files the cluster names under ``manifests``: relative to the cluster file's directory; globs sorted.

    A name that matches no file is an error at its own line of the cluster file.
    """
    out: List[str] = []
    for i, pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        if glob.has_magic(pattern):
            matches = sorted(m for m in glob.glob(full) if _is_file(m))
            if not matches:
                r.error(("manifests", i), f"{_short(pattern)} matches no file", f"relative to {base or '.'}")
            out.extend(matches)
        else:
            problem = _not_a_file(full)
            if problem is None:
                out.append(full)
            else:
                r.error(("manifests", i), f"{_short(full)}: {problem}", f"relative paths start at {base or '.'}")
    return out


def _not_a_file(path: str) -> Optional[str]:
    """Why ``path`` cannot be read as a manifest (None: it can)."""
    try:
        p = Path(path)
        if p.is_file():
            return None
        if p.is_dir():
            return "is a directory"
        return "not a regular file" if p.exists() else "no such file"
    except (OSError, ValueError):
        return "no such file"


def _is_file(path: str) -> bool:
    return _not_a_file(path) is None


def _file_key(path: str) -> str:
    """One key per file, however it was named (so a file named twice is read once)."""
    try:
        return str(Path(path).resolve())
    except (OSError, ValueError, RuntimeError):
        return path


def load(paths: Sequence[str], strict_warnings: bool = False) -> Tuple[ClusterSpec, List[Problem]]:
    """Load and validate a cluster from ``paths``; return the spec and its warnings/notices.

    paths: the cluster file, then any manifest files (the files the cluster names under ``manifests`` are added).
    strict_warnings: treat warnings as errors.
    Raises SpecError with every problem when anything is wrong.
    """
    problems: List[Problem] = []
    notices: Set[str] = set()
    documents: List[Document] = []
    queue = [str(p) for p in paths]
    seen_files: Set[str] = set()
    cluster_reader: Optional[_Reader] = None
    cluster_raw: Optional[dict] = None
    raw_pods: List[_RawPod] = []
    services: List[Tuple[Service, _Reader]] = []
    unsure = False  # set when some document's kind is unknown: "no Cluster" would then be a guess

    while queue:
        path = queue.pop(0)
        key = _file_key(path)
        if key in seen_files:
            continue
        seen_files.add(key)
        docs, file_problems = read_documents(path)
        problems.extend(file_problems)
        unsure = unsure or not docs  # a file that could not be read may have held the cluster
        for doc in docs:
            documents.append(doc)
            r = _Reader(doc, problems, notices)
            if not isinstance(doc.data, dict):
                r.error(
                    (),
                    f"expected a Kubernetes-style object (a mapping), got {_type_name(doc.data)}",
                    "apiVersion, kind, metadata and spec",
                )
                unsure = True
                continue
            kind = doc.data.get("kind")
            if kind is None:
                typo = _closest("kind", [k for k in doc.data if isinstance(k, str)])
                hint = f"{_short(typo)} is not 'kind'" if typo else "Cluster, Pod, Deployment, DaemonSet or Service"
                r.error(("kind",), "kind is missing", hint)
                unsure = True
                continue
            if not isinstance(kind, str):
                r.error(("kind",), f"expected a kind name, got {_type_name(kind)}", "e.g. kind: Pod")
                unsure = True
                continue
            if kind != "Cluster" and not _check_api_version(r, kind):
                continue
            if kind == "Cluster":
                if cluster_raw is not None and cluster_reader is not None:
                    first = cluster_reader.doc
                    r.error(("kind",), "a second kind: Cluster", f"the first is at {first.file}:{first.line(())}")
                    continue
                cluster_reader = r
                cluster_raw, manifests = _read_cluster(r)
                queue.extend(_expand_manifests(r, Path(path).parent, manifests))
            elif kind == "Pod":
                raw_pods.extend(_read_pod(r))
            elif kind in kf.WORKLOAD_KINDS:
                raw_pods.extend(_read_workload(r, kind))
            elif kind == "Service":
                svc = _read_service(r)
                if svc is not None:
                    services.append(svc)
            elif kind == "List":
                r.error(("kind",), "List objects are not read", "split it into YAML documents separated by ---")
            elif kind in kf.IGNORED_KINDS:
                r.warn(("kind",), f"a {kind} has nothing to emulate and is ignored", severity="notice")
            else:
                close = _closest(kind, {"Cluster", "Pod", "Service"} | kf.WORKLOAD_KINDS | kf.IGNORED_KINDS)
                hint = f"did you mean '{close}'?" if close else "Cluster, Pod, Deployment, DaemonSet or Service"
                r.error(("kind",), f"unknown kind {_short(kind)}", hint)
                unsure = True

    if cluster_raw is None or cluster_reader is None:
        if not unsure:
            first = str(paths[0]) if paths else "-"
            problems.append(
                Problem(
                    first,
                    None,
                    "",
                    "no kind: Cluster object found",
                    "start with a cluster file (apiVersion: emu/v1, kind: Cluster), e.g. topologies/two_nodes.yaml",
                )
            )
        raise SpecError(problems)

    spec = _assemble(cluster_raw, raw_pods, services, problems, cluster_reader)
    spec = replace(spec, files=tuple(dict.fromkeys(d.file for d in documents)))
    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    if strict_warnings and any(p.severity == "warning" for p in problems):
        raise SpecError([replace(p, severity="error") if p.severity == "warning" else p for p in problems])
    return spec, [p for p in problems if p.severity != "error"]


def _check_api_version(r: _Reader, kind: str) -> bool:
    """A Kubernetes object's apiVersion must be its kind's (``v1`` for Pod, ``apps/v1`` for Deployment, ...)."""
    api = r.doc.data.get("apiVersion")
    expected = kf.API_VERSIONS.get(kind)
    if api is None:
        r.missing(("apiVersion",), "apiVersion is missing", f"apiVersion: {expected or 'v1'}")
        return False
    if expected is not None and api != expected:
        r.error(("apiVersion",), f"{_short(api)} is not the API of kind {kind}", f"apiVersion: {expected}")
        return False
    return True


def _assemble(
    cluster: dict,
    raw_pods: List[_RawPod],
    services: List[Tuple[Service, _Reader]],
    problems: List[Problem],
    cr: _Reader,
) -> ClusterSpec:
    nodes: List[Node] = cluster["nodes"]
    network: Network = cluster["network"]
    node_names = [n.name for n in nodes]

    # Daemon pods: one per node, named <ds>-<node>.
    expanded: List[_RawPod] = []
    for raw in raw_pods:
        if raw.daemon:
            for node in nodes:
                pod = replace(raw.pod, name=f"{raw.pod.name}-{node.name}", node=node.name)
                expanded.append(_RawPod(pod, True, raw.reader, raw.path))
        else:
            expanded.append(raw)

    names: Dict[str, _RawPod] = {}
    pods: List[_RawPod] = []
    for raw in expanded:
        if len(pods) >= MAX_PODS:
            raw.reader.error(raw.path, f"more than {MAX_PODS} pods", "emu builds at most that many")
            break
        if raw.pod.name in names:
            other = names[raw.pod.name].pod
            raw.reader.error(
                raw.path, f"duplicate pod name '{raw.pod.name}'", f"first defined at {other.file}:{other.line}"
            )
            continue
        if len(raw.pod.name) > 63:
            raw.reader.error(
                raw.path, f"pod name '{raw.pod.name}' is longer than 63 characters", "a shorter metadata.name"
            )
            continue
        if raw.pinned and raw.pod.node not in node_names:
            close = _closest(raw.pod.node, node_names)
            raw.reader.error(
                raw.path + ("nodeName",),
                f"no node named {_short(raw.pod.node)}",
                f"did you mean '{close}'?" if close else "one of " + ", ".join(node_names),
            )
            continue
        names[raw.pod.name] = raw
        pods.append(raw)

    scheduled = _schedule([(r.pod, r.pinned) for r in pods], node_names)
    capacity = 2 ** (32 - network.subnet_len) - 3  # network address, .1 gateway, broadcast
    per_node: Dict[str, int] = {}
    for pod in scheduled:
        if not pod.host_network:
            per_node[pod.node] = per_node.get(pod.node, 0) + 1
    for node_name, count in per_node.items():
        if count > capacity:
            cr.error(
                ("network", "subnetLen"),
                f"node {node_name} has {count} pods but a /{network.subnet_len} subnet holds {capacity}",
                "a shorter subnetLen, more nodes or fewer pods",
            )

    checked: List[Service] = []
    used_ips: Dict[IPv4Address, str] = {}
    used_node_ports: Dict[int, str] = {}
    svc_names: Set[Tuple[str, str]] = set()
    for service, r in services:
        if (service.namespace, service.name) in svc_names:
            r.error(("metadata", "name"), f"duplicate Service '{service.name}'", "every Service has its own name")
            continue
        svc_names.add((service.namespace, service.name))
        if service.cluster_ip is not None:
            ip = service.cluster_ip
            if ip not in network.service_cidr or ip in (
                network.service_cidr.network_address,
                network.service_cidr.broadcast_address,
            ):
                r.error(("spec", "clusterIP"), f"{ip} is not in serviceCIDR {network.service_cidr}", "pick one inside")
            elif ip == network.service_cidr.network_address + 1:
                r.error(("spec", "clusterIP"), f"{ip} is reserved for the kubernetes Service", "pick another")
            elif ip in used_ips:
                r.error(("spec", "clusterIP"), f"{ip} is already Service {used_ips[ip]}'s", "pick another")
            used_ips[ip] = service.name
        for i, port in enumerate(service.ports):
            if port.node_port is not None:
                if port.node_port in used_node_ports:
                    r.error(
                        ("spec", "ports", i, "nodePort"),
                        f"nodePort {port.node_port} is already used by Service {used_node_ports[port.node_port]}",
                        "pick another in 30000-32767",
                    )
                used_node_ports[port.node_port] = service.name
        selected = [p for p in scheduled if p.namespace == service.namespace and _selects(service.selector, p)]
        if service.selector and not selected:
            r.warn(("spec", "selector"), "selects no pod: the Service has no endpoints", "check the labels")
        if not service.selector:
            r.warn(("spec",), "no selector: the Service has no endpoints (manual Endpoints are not emulated)")
        for i, port in enumerate(service.ports):
            if not port.target_port.isdigit() and selected:
                if not any(
                    cp.name == port.target_port and cp.protocol == port.protocol
                    for p in selected
                    for c in p.containers
                    for cp in c.ports
                ):
                    r.warn(
                        ("spec", "ports", i, "targetPort"),
                        f"no selected pod has a container port named '{port.target_port}'",
                        "name a port under the containers' ports",
                    )
        checked.append(service)

    return ClusterSpec(
        name=cluster["name"],
        network=network,
        underlay=cluster["underlay"],
        nodes=tuple(nodes),
        pods=tuple(scheduled),
        services=tuple(checked),
    )


def _selects(selector: Tuple[Tuple[str, str], ...], pod: Pod) -> bool:
    labels = pod.label_map
    return bool(selector) and all(labels.get(k) == v for k, v in selector)


def _schedule(pods: List[Tuple[Pod, bool]], node_names: List[str]) -> List[Pod]:
    """A deterministic spread scheduler: each unpinned pod goes to the node with the fewest pods so far.

    Pinned pods (spec.nodeName) count first; ties go to the earlier node in the cluster's list.
    """
    if not node_names:
        return [p for p, pinned in pods if pinned]
    load_count = {name: 0 for name in node_names}
    for pod, pinned in pods:
        if pinned:
            load_count[pod.node] += 1
    out: List[Pod] = []
    for pod, pinned in pods:
        if not pinned:
            target = min(node_names, key=lambda n: (load_count[n], node_names.index(n)))
            load_count[target] += 1
            pod = replace(pod, node=target)
        out.append(pod)
    return out


def load_or_exit_problems(paths: Sequence[str]) -> Tuple[Optional[ClusterSpec], List[Problem]]:
    """Like load(), but returns (None, problems) instead of raising."""
    try:
        spec, warnings = load(paths)
        return spec, warnings
    except SpecError as exc:
        return None, exc.problems


def load_added_pod(manifest: Any, spec: ClusterSpec, document: Optional[Document] = None) -> Pod:
    """Validate one Pod object added to a running cluster (``Cluster.add_pod``, the shell's ``apply -f``) with
    the loader's own rules, and place it: on ``spec.nodeName``, or by the same spread scheduler as at load time,
    counting the pods ``spec`` already has.

    manifest: the Pod as a dict, as loaded from YAML (``kind: Pod``).
    spec: the cluster as it is now (its pods are the live ones).
    document: the YAML document the manifest comes from, so problems name its file and line.
    Raises SpecError with every problem found.
    """
    doc = document or Document("<manifest>", 0, manifest, {})
    problems: List[Problem] = []
    r = _Reader(doc, problems, set())
    if not isinstance(manifest, dict):
        r.error((), f"expected a Pod object (a mapping), got {_type_name(manifest)}", "kind: Pod, metadata, spec")
        raise SpecError(problems)
    kind = manifest.get("kind")
    if kind != "Pod":
        hint = "Deployments and Services are read when the cluster is built" if kind else "kind: Pod"
        r.error(("kind",), f"only kind: Pod can be added to a running cluster, not {kind!r}", hint)
        raise SpecError(problems)
    raws = _read_pod(r)
    if any(p.severity == "error" for p in problems) or not raws:
        raise SpecError(problems or [Problem(doc.file, doc.line(()), "metadata", "no pod could be read")])
    raw = raws[0]
    pod = raw.pod
    node_names = [n.name for n in spec.nodes]
    if any(p.name == pod.name for p in spec.pods):
        r.error(("metadata", "name"), f"pod '{pod.name}' already exists", "delete it first or pick another name")
    if raw.pinned and pod.node not in node_names:
        close = _closest(pod.node, node_names)
        r.error(
            ("spec", "nodeName"),
            f"no node named {_short(pod.node)}",
            f"did you mean '{close}'?" if close else "one of " + ", ".join(node_names),
        )
    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    pod = _schedule([(p, True) for p in spec.pods] + [(pod, raw.pinned)], node_names)[-1]
    if not pod.host_network:
        capacity = 2 ** (32 - spec.network.subnet_len) - 3
        used = sum(1 for p in spec.pods if p.node == pod.node and not p.host_network)
        if used >= capacity:
            r.error(
                ("spec",),
                f"node {pod.node} already has {used} pods, all a /{spec.network.subnet_len} subnet holds",
                "delete a pod of that node or place this one on another",
            )
            raise SpecError(problems)
    return pod
