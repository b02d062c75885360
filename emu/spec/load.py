"""From YAML files to a validated ClusterSpec: parsing, defaults, scheduling and every validation rule.

Reads one ``kind: Cluster`` object (emu's own, ``apiVersion: emu/v1``) plus any number of standard Kubernetes
objects (Pod, Deployment/ReplicaSet/StatefulSet/DaemonSet, Service), from the files given or those the cluster
names under ``manifests``. Strict like containerlab's loader: an unknown field is an error; every problem is
collected and raised together as one ``SpecError``; legal Kubernetes fields with nothing to emulate are
reported once as notices.
"""

import glob
import re
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from emu.spec import kube_fields as kf
from emu.spec.errors import Problem, SpecError
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

CLUSTER_FIELDS = {"apiVersion", "kind", "name", "network", "underlay", "nodes", "manifests"}
NETWORK_FIELDS = {"podCIDR", "subnetLen", "serviceCIDR", "backend"}
BACKEND_FIELDS = {"Type", "VNI", "Port", "DirectRouting", "MTU", "type", "vni", "port", "directRouting", "mtu"}
UNDERLAY_FIELDS = {"cidr", "mtu", "link"}
LINK_FIELDS = {"bw", "delay", "jitter", "loss"}
NODE_FIELDS = {"name", "ip", "link"}


class _Reader:
    """Typed access to one document's fields, recording problems with their lines."""

    def __init__(self, doc: Document, problems: List[Problem], notices: Set[str]) -> None:
        self.doc = doc
        self.problems = problems
        self.notices = notices

    def error(self, path: FieldPath, message: str, hint: str = "") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), _dotted(path), message, hint))

    def warn(self, path: FieldPath, message: str, hint: str = "", severity: str = "warning") -> None:
        self.problems.append(Problem(self.doc.file, self.doc.line(path), _dotted(path), message, hint, severity))

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
            self.error(path, f"expected a mapping, got {_type_name(value)}")
            return {}
        for key in value:
            if not isinstance(key, str) or key not in allowed:
                close = _closest(str(key), allowed)
                hint = f"did you mean '{close}'?" if close else "known fields: " + ", ".join(sorted(allowed))
                self.error(path + (key,), "unknown field", hint)
            elif used is not None and key not in used:
                self.ignored(path + (key,), key)
        return {k: v for k, v in value.items() if isinstance(k, str) and k in allowed}

    def sequence(self, value: Any, path: FieldPath) -> List:
        if value is None:
            return []
        if not isinstance(value, list):
            self.error(path, f"expected a list, got {_type_name(value)}")
            return []
        return value

    def string(self, value: Any, path: FieldPath, default: Optional[str] = None) -> Optional[str]:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(path, f"expected a string, got {_type_name(value)}")
            return default
        return str(value)

    def integer(self, value: Any, path: FieldPath, low: int, high: int, default: Optional[int] = None) -> Optional[int]:
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and value.strip().isdigit():
                value = int(value.strip())
            else:
                self.error(path, f"expected an integer, got {_type_name(value)} {_short(value)}", f"{low}..{high}")
                return default
        if not low <= value <= high:
            self.error(path, f"{value} is out of range", f"{low}..{high}")
            return default
        return value

    def number(self, value: Any, path: FieldPath, low: float, high: float) -> Optional[float]:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.error(path, f"expected a number, got {_type_name(value)} {_short(value)}", f"{low}..{high}")
            return None
        if not low <= value <= high:
            self.error(path, f"{value} is out of range", f"{low}..{high}")
            return None
        return float(value)

    def boolean(self, value: Any, path: FieldPath, default: bool = False) -> bool:
        if value is None:
            return default
        if not isinstance(value, bool):
            self.error(path, f"expected true or false, got {_short(value)}")
            return default
        return value

    def network(self, value: Any, path: FieldPath, default: str) -> IPv4Network:
        text = self.string(value, path, default)
        try:
            net = ip_network(text, strict=False)
        except ValueError:
            self.error(path, f"'{text}' is not a CIDR", "e.g. 10.244.0.0/16")
            return ip_network(default)
        if net.version != 4:
            self.error(path, f"'{text}' is IPv6", "emu emulates IPv4 pod networks, e.g. 10.244.0.0/16")
            return ip_network(default)
        if net.network_address != ip_address(str(text).split("/")[0]):
            self.error(path, f"'{text}' has host bits set", f"use {net}")
        return net

    def name(self, value: Any, path: FieldPath, what: str, max_len: int = 63) -> Optional[str]:
        text = self.string(value, path)
        if text is None:
            self.error(path, f"{what} name is missing")
            return None
        if len(text) > max_len or not DNS_LABEL.match(text):
            self.error(
                path,
                f"'{text}' is not a valid {what} name",
                f"lowercase letters, digits and '-', starting and ending with a letter or digit, at most {max_len}",
            )
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
            self.error(path, f"'{value}' is not a duration", "e.g. 5ms, 200us, 1s")
            return None
        return text


def _dotted(path: FieldPath) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _type_name(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), type(value).__name__
    )


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


def _read_cluster(r: _Reader) -> Tuple[Optional[dict], List[str]]:
    """The cluster object's fields as a raw resolved dict (nodes still without addresses), and its manifests."""
    data = r.mapping(r.doc.data, (), CLUSTER_FIELDS)
    if data.get("apiVersion") != "emu/v1":
        r.error(("apiVersion",), f"'{data.get('apiVersion')}' is not emu's cluster API", "apiVersion: emu/v1")
    name = r.name(data.get("name"), ("name",), "cluster", max_len=40)

    net = r.mapping(data.get("network"), ("network",), NETWORK_FIELDS)
    pod_cidr = r.network(net.get("podCIDR"), ("network", "podCIDR"), "10.244.0.0/16")
    service_cidr = r.network(net.get("serviceCIDR"), ("network", "serviceCIDR"), "10.96.0.0/12")
    subnet_len = r.integer(net.get("subnetLen"), ("network", "subnetLen"), 8, 30, 24)
    if subnet_len is not None and subnet_len <= pod_cidr.prefixlen:
        r.error(
            ("network", "subnetLen"),
            f"/{subnet_len} node subnets do not fit in podCIDR {pod_cidr}",
            f"a length greater than {pod_cidr.prefixlen}",
        )
    backend = _read_backend(r, net.get("backend"), ("network", "backend"))

    under = r.mapping(data.get("underlay"), ("underlay",), UNDERLAY_FIELDS)
    underlay_cidr = r.network(under.get("cidr"), ("underlay", "cidr"), "192.168.56.0/24")
    underlay_mtu = r.integer(under.get("mtu"), ("underlay", "mtu"), 1280, 9000, 1500)
    underlay_link = r.link(under.get("link"), ("underlay", "link"))
    if underlay_cidr.prefixlen > 29:
        r.error(("underlay", "cidr"), f"{underlay_cidr} is too small for a node network", "e.g. 192.168.56.0/24")

    for (a_name, a), (b_name, b) in _pairs(
        [("network.podCIDR", pod_cidr), ("network.serviceCIDR", service_cidr), ("underlay.cidr", underlay_cidr)]
    ):
        if a.overlaps(b):
            path = tuple(b_name.split("."))
            r.error(path, f"{b} overlaps {a_name} {a}", "the pod, service and node ranges must be disjoint")

    if backend.mtu is not None and underlay_mtu is not None and backend.mtu > underlay_mtu - _overhead(backend):
        r.error(
            ("network", "backend", "MTU"),
            f"MTU {backend.mtu} does not fit the underlay MTU {underlay_mtu} with {backend.type}'s encapsulation",
            f"at most {underlay_mtu - _overhead(backend)}",
        )

    nodes: List[Node] = []
    raw_nodes = r.sequence(data.get("nodes"), ("nodes",))
    if not raw_nodes and data.get("nodes") is None:
        r.error(("nodes",), "a cluster needs nodes", "nodes: [{name: node-1}, {name: node-2}]")
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
        node_name = r.name(node.get("name"), path + ("name",), "node", max_len=40)
        if node_name is None:
            continue
        if node_name in seen:
            r.error(path + ("name",), f"duplicate node name '{node_name}'", f"first used at nodes[{seen[node_name]}]")
            continue
        seen[node_name] = i
        ip = _default_node_ip(underlay_cidr, i)
        if node.get("ip") is not None:
            text = r.string(node.get("ip"), path + ("ip",))
            try:
                ip = IPv4Address(text)
            except ValueError:
                r.error(path + ("ip",), f"'{text}' is not an IPv4 address", f"an address in {underlay_cidr}")
                ip = None
        if ip is None:
            if node.get("ip") is None:
                r.error(path, f"{underlay_cidr} has no room for node {i + 1}", "use a larger underlay.cidr")
            continue
        if ip not in underlay_cidr or ip in (underlay_cidr.network_address, underlay_cidr.broadcast_address):
            r.error(path + ("ip",), f"{ip} is not a host address of underlay {underlay_cidr}", "pick one inside it")
        elif ip in used_ips:
            r.error(path + ("ip",), f"{ip} is already node {used_ips[ip]}'s address", "give every node its own")
        used_ips[ip] = node_name
        link = underlay_link.merged(r.link(node.get("link"), path + ("link",)))
        nodes.append(Node(node_name, ip, link, r.doc.line(path)))

    if subnet_len is not None and subnet_len > pod_cidr.prefixlen:
        available = 2 ** (subnet_len - pod_cidr.prefixlen) - 1  # flannel never leases the first subnet
        if len(nodes) > available:
            r.error(
                ("network", "subnetLen"),
                f"podCIDR {pod_cidr} holds {available} /{subnet_len} node subnets, the cluster has {len(nodes)} nodes",
                "a larger podCIDR or a longer subnetLen",
            )

    manifests = [str(m) for m in r.sequence(data.get("manifests"), ("manifests",))]
    resolved = {
        "name": name or "cluster",
        "network": Network(pod_cidr, subnet_len or 24, service_cidr, backend),
        "underlay": Underlay(underlay_cidr, underlay_mtu or 1500, underlay_link),
        "nodes": nodes,
    }
    return resolved, manifests


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


def _read_backend(r: _Reader, value: Any, path: FieldPath) -> Backend:
    if value is None:
        return Backend()
    if isinstance(value, str):
        value = {"Type": value}
    data = r.mapping(value, path, BACKEND_FIELDS)

    def get(key: str) -> Tuple[Any, FieldPath]:
        lower = key[0].lower() + key[1:] if key not in ("VNI", "MTU") else key.lower()
        if key in data:
            return data[key], path + (key,)
        return data.get(lower), path + (lower,)

    type_value, type_path = get("Type")
    btype = r.string(type_value, type_path, "vxlan")
    if btype not in BACKENDS:
        r.error(type_path, f"unknown backend '{btype}'", "one of " + ", ".join(BACKENDS))
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
    default_port = 8285 if btype == "udp" else 8472
    return Backend(
        type=btype,
        vni=r.integer(vni_value, vni_path, 1, 16777215, 1) or 1,
        port=r.integer(port_value, port_path, 1, 65535, default_port) or default_port,
        direct_routing=r.boolean(dr_value, dr_path),
        mtu=r.integer(mtu_value, mtu_path, 576, 9000),
    )


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
    meta = r.mapping(value, path, kf.OBJECT_META, kf.OBJECT_META_USED)
    name = r.name(meta.get("name"), path + ("name",), what) if meta.get("name") is not None else None
    if meta.get("name") is None and "generateName" not in meta:
        r.error(path + ("name",), f"{what} name is missing", "metadata.name")
    namespace = r.name(meta.get("namespace", "default"), path + ("namespace",), "namespace") or "default"
    labels = _labels(r, meta.get("labels"), path + ("labels",))
    return name, namespace, labels


def _labels(r: _Reader, value: Any, path: FieldPath) -> Dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        r.error(path, f"expected a mapping of labels, got {_type_name(value)}")
        return {}
    labels: Dict[str, str] = {}
    for key, val in value.items():
        text = r.string(val, path + (key,), "")
        if not isinstance(key, str) or not key or len(key) > 317:
            r.error(path + (key,), f"'{key}' is not a label key")
            continue
        if text is None or len(text) > 63 or not LABEL_VALUE.match(text):
            r.error(path + (key,), f"'{text}' is not a label value", "at most 63 of A-Z a-z 0-9 - _ .")
            continue
        labels[key] = text
    return labels


def _read_pod_spec(
    r: _Reader, value: Any, path: FieldPath, name: str, namespace: str, labels: Dict[str, str], owner: str = ""
) -> Optional[Tuple[Pod, bool]]:
    spec = r.mapping(value, path, kf.POD_SPEC, kf.POD_SPEC_USED)
    if value is None:
        r.error(path, "a pod needs a spec with containers")
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
                r.error(vpath + ("name",), f"duplicate volume '{vname}'")
            volumes.append(vname)

    containers: List[Container] = []
    raw_containers = r.sequence(spec.get("containers"), path + ("containers",))
    if not raw_containers:
        r.error(path + ("containers",), "a pod needs at least one container")
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
        ename = r.string(var.get("name"), epath + ("name",))
        if not ename or not ENV_NAME.match(ename):
            r.error(epath + ("name",), f"'{ename}' is not an environment variable name")
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
            r.error(ppath + ("containerPort",), "containerPort is missing", "1..65535")
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
        vname = r.string(mount.get("name"), mpath + ("name",))
        mount_path = r.string(mount.get("mountPath"), mpath + ("mountPath",))
        if vname not in volumes:
            r.error(mpath + ("name",), f"no volume named '{vname}' in this pod", "declare it under spec.volumes")
            continue
        if not mount_path or not mount_path.startswith("/") or "\x00" in mount_path or ".." in mount_path.split("/"):
            r.error(mpath + ("mountPath",), f"'{mount_path}' is not an absolute path", "e.g. /data")
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
                r.error(path + (i,), "contains a NUL byte")
                continue
            out.append(text)
    return out


def _protocol(r: _Reader, value: Any, path: FieldPath) -> str:
    text = r.string(value, path, "TCP") or "TCP"
    if text not in ("TCP", "UDP"):
        r.error(path, f"protocol '{text}' is not emulated", "TCP or UDP")
        return "TCP"
    return text


def _read_workload(r: _Reader, kind: str) -> List[_RawPod]:
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, _ = _metadata(r, data.get("metadata"), ("metadata",), kind)
    spec = r.mapping(data.get("spec"), ("spec",), kf.WORKLOAD_SPEC, kf.WORKLOAD_SPEC_USED)
    replicas = r.integer(spec.get("replicas"), ("spec", "replicas"), 0, MAX_REPLICAS, 1)
    selector = r.mapping(spec.get("selector"), ("spec", "selector"), kf.LABEL_SELECTOR)
    match_labels = _labels(r, selector.get("matchLabels"), ("spec", "selector", "matchLabels"))
    if "matchExpressions" in selector:
        r.ignored(("spec", "selector", "matchExpressions"), "matchExpressions")
    template = r.mapping(spec.get("template"), ("spec", "template"), kf.POD_TEMPLATE)
    if spec.get("template") is None:
        r.error(("spec", "template"), f"a {kind} needs a pod template")
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
    if name is None:
        return []
    parsed = _read_pod_spec(r, template.get("spec"), ("spec", "template", "spec"), name, namespace, labels, name)
    if parsed is None:
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
    if name is None:
        return []
    parsed = _read_pod_spec(r, data.get("spec"), ("spec",), name, namespace, labels)
    if parsed is None:
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
        r.error(("spec", "type"), f"Service type '{stype}' is not emulated", "ClusterIP, NodePort or LoadBalancer")
        stype = "ClusterIP"
    selector = _labels(r, spec.get("selector"), ("spec", "selector"))
    cluster_ip: Optional[IPv4Address] = None
    raw_ip = spec.get("clusterIP")
    if raw_ip is None and spec.get("clusterIPs"):
        raw_ip = r.sequence(spec.get("clusterIPs"), ("spec", "clusterIPs"))[0]
    if raw_ip is not None and str(raw_ip) == "None":
        r.error(("spec", "clusterIP"), "headless Services are not emulated", "remove clusterIP: None")
    elif raw_ip is not None and str(raw_ip) != "":
        try:
            cluster_ip = IPv4Address(str(raw_ip))
        except ValueError:
            r.error(("spec", "clusterIP"), f"'{raw_ip}' is not an IPv4 address", "an address in the serviceCIDR")
    affinity = r.string(spec.get("sessionAffinity"), ("spec", "sessionAffinity"), "None") or "None"
    if affinity not in ("None", "ClientIP"):
        r.error(("spec", "sessionAffinity"), f"'{affinity}' is not a session affinity", "None or ClientIP")
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
    raw_ports = r.sequence(spec.get("ports"), ("spec", "ports"))
    if not raw_ports:
        r.error(("spec", "ports"), "a Service needs at least one port", "ports: [{port: 80, targetPort: 8080}]")
    for i, item in enumerate(raw_ports):
        ppath: FieldPath = ("spec", "ports", i)
        port = r.mapping(item, ppath, kf.SERVICE_PORT)
        if "appProtocol" in port:
            r.ignored(ppath + ("appProtocol",), "appProtocol")
        number = r.integer(port.get("port"), ppath + ("port",), 1, 65535)
        if port.get("port") is None:
            r.error(ppath + ("port",), "port is missing", "1..65535")
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
        if any(p.name == pname and p.port == number and p.protocol == protocol for p in ports):
            r.error(ppath, f"duplicate port {number}/{protocol}")
        if pname and any(p.name == pname for p in ports):
            r.error(ppath + ("name",), f"duplicate port name '{pname}'")
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


def _expand_paths(base: Path, patterns: Sequence[str]) -> List[str]:
    out: List[str] = []
    for pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(glob.glob(full))
        out.extend(matches or [full])
    return out


def load(paths: Sequence[str], strict_warnings: bool = False) -> Tuple[ClusterSpec, List[Problem]]:
    """Load and validate a cluster from ``paths``; return the spec and its warnings/notices.

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

    while queue:
        path = queue.pop(0)
        key = str(Path(path).resolve()) if Path(path).exists() else path
        if key in seen_files:
            continue
        seen_files.add(key)
        docs, file_problems = read_documents(path)
        problems.extend(file_problems)
        for doc in docs:
            documents.append(doc)
            r = _Reader(doc, problems, notices)
            if not isinstance(doc.data, dict):
                r.error((), f"expected a Kubernetes-style object (a mapping), got {_type_name(doc.data)}")
                continue
            kind = doc.data.get("kind")
            if kind is None:
                r.error(("kind",), "kind is missing", "Cluster, Pod, Deployment or Service")
            elif kind == "Cluster":
                if cluster_raw is not None:
                    r.error(("kind",), "a second kind: Cluster", "give exactly one cluster")
                    continue
                cluster_reader = r
                cluster_raw, manifests = _read_cluster(r)
                queue.extend(_expand_paths(Path(path).parent, manifests))
            elif kind == "Pod":
                raw_pods.extend(_read_pod(r))
            elif kind in kf.WORKLOAD_KINDS:
                raw_pods.extend(_read_workload(r, kind))
            elif kind == "Service":
                svc = _read_service(r)
                if svc is not None:
                    services.append(svc)
            elif kind == "List":
                r.error(("kind",), "kind: List is not supported", "split it into YAML documents separated by ---")
            elif kind in kf.IGNORED_KINDS:
                r.warn(("kind",), f"kind: {kind} has nothing to emulate and is ignored", severity="notice")
            else:
                close = _closest(str(kind), {"Cluster", "Pod", "Service"} | kf.WORKLOAD_KINDS)
                hint = f"did you mean '{close}'?" if close else "Cluster, Pod, Deployment, DaemonSet or Service"
                r.error(("kind",), f"unknown kind '{kind}'", hint)

    if cluster_raw is None or cluster_reader is None:
        if not any(p.severity == "error" for p in problems):
            first = str(paths[0]) if paths else "-"
            problems.append(
                Problem(
                    first,
                    None,
                    "kind",
                    "no kind: Cluster object found",
                    "start with a cluster file such as topologies/two_nodes.yaml",
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
            raw.reader.error(raw.path, f"pod name '{raw.pod.name}' is longer than 63 characters", "a shorter name")
            continue
        if raw.pinned and raw.pod.node not in node_names:
            close = _closest(raw.pod.node, node_names)
            raw.reader.error(
                raw.path + ("nodeName",),
                f"no node named '{raw.pod.node}'",
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
            r.error(("metadata", "name"), f"duplicate Service '{service.name}'")
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
