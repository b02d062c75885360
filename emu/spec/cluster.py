"""The ``kind: Cluster`` object (emu's own, ``apiVersion: emu/v1``): pod network, flannel backend, underlay, nodes.

Defaults are flannel's and kubeadm's (10.244.0.0/16 in /24 node subnets, Services in 10.96.0.0/12) and the usual
Vagrant lab's underlay (192.168.56.0/24, nodes from .11). The backend's own options (VNI, Port, ...) are read by
the backend's module (``emu.registry``); this module reads what every backend has (``Type``, ``MTU``).
"""

from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from emu import registry
from emu.spec import underlay as routed
from emu.spec.errors import dotted
from emu.spec.model import DEFAULT_CLUSTER_DOMAIN, Backend, LinkProps, Network, Node, Router, Segment, Underlay
from emu.spec.reader import DNS_LABEL, Reader, closest, short
from emu.spec.yamlsrc import FieldPath

MAX_NODES = 250
MAX_NODE_NAME = 40
MAX_CLUSTER_NAME = 40
DEFAULT_POD_CIDR = "10.244.0.0/16"
DEFAULT_SUBNET_LEN = 24
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_UNDERLAY = "192.168.56.0/24"
CLUSTER_FIELDS = {"apiVersion", "kind", "name", "network", "underlay", "nodes", "manifests", "addons"}
NETWORK_FIELDS = {"podCIDR", "subnetLen", "serviceCIDR", "backend", "kubeProxy", "clusterDomain"}
KUBE_PROXY_FIELDS = {"mode"}
#: kube-proxy modes emu does not build, and why (the hint of their error).
UNBUILT_PROXY_MODES = {
    "ipvs": "kube-proxy's ipvs mode needs the kernel's ip_vs and dummy modules (see emu doctor); emu does not build it",
    "kernelspace": "kube-proxy's kernelspace mode is Windows only",
}
UNDERLAY_FIELDS = {"cidr", "mtu", "link", "segments", "routers"}
NODE_FIELDS = {"name", "ip", "link", "segment"}

def read_cluster(r: Reader) -> Tuple[Dict[str, Any], List[Tuple[int, str]]]:
    """The cluster object's fields as a raw resolved dict, and its manifests as (index, pattern) pairs.

    A range that is itself wrong is left out of the checks that relate it to others, so one mistake gives one line.
    """
    data = r.mapping(r.doc.data, (), CLUSTER_FIELDS)
    if data.get("apiVersion") is None:
        r.missing(("apiVersion",), "apiVersion is missing", "apiVersion: emu/v1")
    elif data.get("apiVersion") != "emu/v1":
        r.error(("apiVersion",), f"{short(data.get('apiVersion'))} is not emu's cluster API", "apiVersion: emu/v1")
    name = r.name(data.get("name"), ("name",), "cluster", max_len=MAX_CLUSTER_NAME)
    network = _read_network(r, data.get("network"))
    underlay = _read_underlay(r, data.get("underlay"))
    pod_cidr, service_cidr, subnet_len = network["podCIDR"], network["serviceCIDR"], network["subnetLen"]
    underlay_cidr, underlay_mtu = underlay["cidr"], underlay["mtu"]
    segments: List[Segment] = underlay["segments"]
    ranges: List[Tuple[FieldPath, Optional[IPv4Network]]] = [
        (("network", "podCIDR"), pod_cidr),
        (("network", "serviceCIDR"), service_cidr),
    ]
    if segments:
        ranges += [(("underlay", "segments", i, "cidr"), s.cidr) for i, s in enumerate(segments)]
    else:
        ranges.append((("underlay", "cidr"), underlay_cidr))
    for (a_path, a), (b_path, b) in pairs(ranges):
        if a is not None and b is not None and a.overlaps(b) and not (a_path[1:2] == b_path[1:2] == ("segments",)):
            a_name = dotted(a_path)
            r.error(b_path, f"{b} overlaps {a_name} {a}", "the pod, service and node ranges must be disjoint")
    backend: Backend = network["backend"]
    module = registry.backend(backend.type)
    smallest = min([s.mtu for s in segments] or [underlay_mtu or 1500])
    if backend.mtu is not None and underlay_mtu is not None and backend.mtu > smallest - module.OVERHEAD:
        r.error(
            network["mtu_path"],
            f"MTU {backend.mtu} does not fit the underlay MTU {smallest} with {backend.type}'s encapsulation",
            f"at most {smallest - module.OVERHEAD}",
        )
    routers = routed.read_routers(r, underlay["routers"], segments) if segments else []
    nodes = _read_nodes(r, data.get("nodes"), underlay_cidr, underlay["link"], segments, routers, underlay["declared"])
    if segments:
        routed.check_names(r, segments, routers, nodes)
        if not any(p.severity == "error" for p in r.problems):  # no warning that an error may have caused
            routed.warn_about_underlay(r, segments, routers)
        warn = getattr(module, "underlay_warnings", None)
        for message, hint in warn([(n.name, n.segment) for n in nodes]) if warn else ():
            r.warn(network["backend_path"], message, hint)
    if subnet_len is not None and pod_cidr is not None and subnet_len > pod_cidr.prefixlen:
        available = 2 ** (subnet_len - pod_cidr.prefixlen) - 1  # flannel never leases the first subnet
        if len(nodes) > available:
            r.error(
                ("network", "subnetLen"),
                f"podCIDR {pod_cidr} holds {available} /{subnet_len} node subnets, the cluster has {len(nodes)} nodes",
                "a larger podCIDR or a longer subnetLen",
            )
    resolved = {
        "name": name or "cluster",
        "network": Network(
            pod_cidr or ip_network(DEFAULT_POD_CIDR),
            subnet_len or DEFAULT_SUBNET_LEN,
            service_cidr or ip_network(DEFAULT_SERVICE_CIDR),
            backend,
            proxy_mode=network["proxy_mode"],
            cluster_domain=network["clusterDomain"],
        ),
        "underlay": Underlay(
            segments[0].cidr if segments else underlay_cidr or ip_network(DEFAULT_UNDERLAY),
            underlay_mtu or 1500,
            underlay["link"],
            tuple(segments),
            tuple(routers),
        ),
        "nodes": nodes,
        "addons": _read_addons(r, data.get("addons")),
    }
    return resolved, _read_manifests(r, data.get("manifests"))


def _read_network(r: Reader, value: Any) -> Dict[str, Any]:
    """``network``: podCIDR, subnetLen, serviceCIDR (None where wrong) and flannel's backend."""
    net = r.mapping(value, ("network",), NETWORK_FIELDS)
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
    domain = r.string(net.get("clusterDomain"), ("network", "clusterDomain"), DEFAULT_CLUSTER_DOMAIN)
    domain = (domain or DEFAULT_CLUSTER_DOMAIN).rstrip(".")
    if len(domain) > 200 or not all(DNS_LABEL.match(label) for label in domain.split(".")):
        r.error(("network", "clusterDomain"), f"{short(domain)} is not a DNS domain", "e.g. cluster.local")
        domain = DEFAULT_CLUSTER_DOMAIN
    return {
        "clusterDomain": domain,
        "podCIDR": pod_cidr,
        "serviceCIDR": service_cidr,
        "subnetLen": subnet_len,
        "backend": backend,
        "mtu_path": mtu_path,
        "backend_path": ("network", "backend"),
        "proxy_mode": _read_kube_proxy(r, net.get("kubeProxy")),
    }


def _read_kube_proxy(r: Reader, value: Any) -> str:
    """``network.kubeProxy``: kube-proxy's configuration; its ``mode`` (the registry's default when absent)."""
    path: FieldPath = ("network", "kubeProxy")
    config = r.mapping(value, path, KUBE_PROXY_FIELDS)
    mode = r.string(config.get("mode"), path + ("mode",), registry.DEFAULT_PROXY_MODE)
    if mode in registry.PROXY_MODES:
        return str(mode)
    modes = ", ".join(registry.PROXY_MODES)
    if mode in UNBUILT_PROXY_MODES:
        r.error(path + ("mode",), UNBUILT_PROXY_MODES[str(mode)], f"one of {modes}")
    else:
        close = closest(str(mode), registry.PROXY_MODES)
        r.error(path + ("mode",), f"unknown kube-proxy mode {short(mode)}",
                f"did you mean '{close}'?" if close else f"one of {modes}")
    return registry.DEFAULT_PROXY_MODE


def _read_underlay(r: Reader, value: Any) -> Dict[str, Any]:
    """``underlay``: the node network's CIDR and MTU (None where wrong), the links' shaping, and a routed
    underlay's segments (``emu.spec.underlay``; its routers are read once the segments are known)."""
    under = r.mapping(value, ("underlay",), UNDERLAY_FIELDS)
    cidr = r.network(under.get("cidr"), ("underlay", "cidr"), DEFAULT_UNDERLAY)
    mtu = r.integer(under.get("mtu"), ("underlay", "mtu"), 1280, 9000, 1500)
    link = r.link(under.get("link"), ("underlay", "link"))
    if cidr is not None and cidr.prefixlen > 29:
        r.error(("underlay", "cidr"), f"{cidr} is too small for a node network", "e.g. 192.168.56.0/24")
    segments: List[Segment] = []
    if under.get("segments") is not None:
        if under.get("cidr") is not None:
            r.error(("underlay", "cidr"), "underlay.cidr and underlay.segments exclude each other",
                    "give each segment its cidr, and remove underlay.cidr")
        segments = routed.read_segments(r, under.get("segments"), mtu)
    elif under.get("routers") is not None:
        r.error(("underlay", "routers"), "routers join segments, and there are none",
                "declare underlay.segments: [{name: rack-a, cidr: ...}, ...]")
    return {
        "cidr": cidr,
        "mtu": mtu,
        "link": link,
        "segments": segments,
        "declared": routed.declared_names(under.get("segments")) | {s.name for s in segments},
        "routers": under.get("routers"),
    }


def _read_manifests(r: Reader, value: Any) -> List[Tuple[int, str]]:
    """``manifests``: (index, file name or glob) pairs; the loader reads them relative to the cluster file."""
    manifests: List[Tuple[int, str]] = []
    for i, item in enumerate(r.sequence(value, ("manifests",))):
        text = r.string(item, ("manifests", i))
        if text is None:
            if item is None:
                r.error(("manifests", i), "empty entry", "a file name or glob, e.g. guestbook/*.yaml")
        elif not text or "\x00" in text:
            r.error(
                ("manifests", i), f"{short(text)} is not a file name", "a file name or glob, e.g. guestbook/*.yaml"
            )
        else:
            manifests.append((i, text))
    return manifests


def _read_nodes(
    r: Reader,
    value: Any,
    cidr: Optional[IPv4Network],
    underlay_link: LinkProps,
    segments: Sequence[Segment] = (),
    routers: Sequence[Router] = (),
    declared: Set[str] = frozenset(),
) -> List[Node]:
    """The nodes, with their addresses: given, or the (11 + i)th of their network (192.168.56.11, .12, ...).

    cidr: the underlay, None when it is itself wrong (addresses are then not checked against it).
    segments, routers: a routed underlay's; each node then names its segment, and its default address is the
        (11 + i)th of the segment for the segment's ith node, the routers' addresses skipped.
    declared: every segment name given, valid or not (a node on a segment that is itself wrong is skipped).
    """
    nodes: List[Node] = []
    raw_nodes = r.sequence(value, ("nodes",))
    if value is None or (isinstance(value, list) and not value):
        r.missing(("nodes",), "a cluster needs nodes", "nodes: [{name: node-1}, {name: node-2}]")
    if len(raw_nodes) > MAX_NODES:
        r.error(("nodes",), f"{len(raw_nodes)} nodes", f"at most {MAX_NODES}")
        raw_nodes = raw_nodes[:MAX_NODES]
    seen: Dict[str, int] = {}
    used_ips: Dict[IPv4Address, str] = {link.ip: f"router {rt.name}" for rt in routers for link in rt.links}
    reserved = set(used_ips)
    per_segment: Dict[str, int] = {}
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
        segment = _node_segment(r, node.get("segment"), path + ("segment",), segments, declared, node_name)
        if declared and segment is None:
            continue
        network = segment.cidr if segment is not None else cidr
        where = f"segment {segment.name} ({segment.cidr})" if segment is not None else f"underlay {network}"
        index = i
        if segment is not None:
            index = per_segment.get(segment.name, 0)
            per_segment[segment.name] = index + 1
        ip = routed.node_address(network or IPv4Network(DEFAULT_UNDERLAY), index, reserved)
        if node.get("ip") is not None:
            text = r.string(node.get("ip"), path + ("ip",))
            if text is None:
                continue
            try:
                ip = IPv4Address(text)
            except ValueError:
                r.error(path + ("ip",), f"{short(text)} is not an IPv4 address", f"an address in {network}")
                continue
        if ip is None:
            r.error(path, f"{where} has no room for node {index + 1}", "use a larger cidr")
            continue
        if network is not None and (ip not in network or ip in (network.network_address, network.broadcast_address)):
            r.error(path + ("ip",), f"{ip} is not a host address of {where}", "pick one inside it")
        elif ip in used_ips:
            r.error(path + ("ip",), f"{ip} is already {used_ips[ip]}'s address", "give every node its own")
        used_ips[ip] = f"node {node_name}"
        link = routed.node_link_defaults(underlay_link, segment).merged(r.link(node.get("link"), path + ("link",)))
        nodes.append(Node(node_name, ip, link, r.doc.line(path), segment.name if segment is not None else ""))
    return nodes


def _node_segment(
    r: Reader, value: Any, path: FieldPath, segments: Sequence[Segment], declared: Set[str], node: str
) -> Optional[Segment]:
    """The segment a node names: required with segments (one of them), an error without."""
    if isinstance(value, str) and value in declared and not any(s.name == value for s in segments):
        return None  # a segment that is itself wrong: reported there
    if not declared:
        if value is not None:
            r.error(path, "the underlay has no segments: every node is on its one switch",
                    "remove segment, or declare underlay.segments")
        return None
    names = [s.name for s in segments]
    if value is None:
        r.missing(path, f"node {node} names no segment", f"segment: {names[0]} (one of {', '.join(names)})")
        return None
    name = r.string(value, path)
    if name is None:
        return None
    for segment in segments:
        if segment.name == name:
            return segment
    close = closest(name, names)
    hint = f"did you mean '{close}'?" if close else "one of " + ", ".join(names)
    r.error(path, f"no segment named {short(name)}", hint)
    return None


def pairs(items: Sequence[Any]) -> Iterable[Tuple[Any, Any]]:
    for i, a in enumerate(items):
        for b in items[i + 1 :]:
            yield a, b


def _backend_fields() -> Set[str]:
    """Every field flannel's Backend object may have here, in both spellings: Type and MTU, and every
    registered backend's own options."""
    fields = {"Type", "type", "MTU", "mtu"}
    for key, (lower, _owners) in registry.backend_options_fields().items():
        fields |= {key, lower}
    return fields


BACKEND_FIELDS = _backend_fields()


def default_backend() -> Backend:
    """The backend a cluster without ``network.backend`` gets: the registry's default, with its defaults."""
    name = registry.DEFAULT_BACKEND
    return Backend(type=name, options=registry.backend(name).default_options())


def _read_backend(r: Reader, value: Any, path: FieldPath) -> Tuple[Backend, FieldPath]:
    """flannel's Backend object (``Type``, ``VNI``, ... as in net-conf.json, or lowerCamelCase); a string is its Type.

    ``Type`` and ``MTU`` are read here; the other fields by the backend's module (``read_options``). A field of
    another backend is an error naming the backends that take it. Returns the backend and the path its MTU was
    given at (for a later error).
    """
    if value is None:
        return default_backend(), path + ("MTU",)
    if isinstance(value, str):
        value = {"Type": value}
    data = r.mapping(value, path, BACKEND_FIELDS)
    option_fields = registry.backend_options_fields()

    def get(key: str) -> Tuple[Any, FieldPath]:
        lower = option_fields[key][0] if key in option_fields else key[0].lower() + key[1:]
        if key in ("MTU",):
            lower = "mtu"
        if key in data and lower in data:
            r.error(path + (lower,), f"{key} is given twice, as {key} and as {lower}", "keep one")
        if key in data:
            return data[key], path + (key,)
        return data.get(lower), path + (lower,)

    type_value, type_path = get("Type")
    btype = r.string(type_value, type_path, registry.DEFAULT_BACKEND)
    if btype not in registry.BACKENDS:
        close = closest(str(btype), registry.BACKENDS)
        r.error(
            type_path,
            f"unknown backend {short(btype)}",
            f"did you mean '{close}'?" if close else "one of " + ", ".join(registry.BACKENDS),
        )
        btype = registry.DEFAULT_BACKEND
    module = registry.backend(btype)
    for key, (_lower, owners) in option_fields.items():
        value_given, value_path = get(key)
        if value_given is not None and key not in module.OPTIONS:
            reason = module.REFUSED.get(key) or f"{key} is a {' and '.join(owners)} option, not a {btype} one"
            r.error(value_path, reason, f"remove it or use Type: {owners[0]}")
    mtu_value, mtu_path = get("MTU")
    backend = Backend(
        type=btype,
        mtu=r.integer(mtu_value, mtu_path, 576, 9000),
        options=module.read_options(r, get),
    )
    return backend, mtu_path


def _read_addons(r: Reader, value: Any) -> List[Tuple[str, Any]]:
    """``addons: {NAME: true | false | {settings}}``: the enabled add-ons with their settings, in registry order.

    An add-on not named gets its default (``DEFAULT_ENABLED``, with its default settings).
    """
    data = r.mapping(value, ("addons",), set(registry.ADDONS))
    enabled: List[Tuple[str, Any]] = []
    for name, module in registry.ADDONS.items():
        path: FieldPath = ("addons", name)
        given = data.get(name)
        if given is None:
            if module.DEFAULT_ENABLED:
                enabled.append((name, module.default_settings()))
        elif given is False:
            continue
        elif given is True:
            enabled.append((name, module.default_settings()))
        elif isinstance(given, dict):
            enabled.append((name, module.read_settings(r, given, path)))
        else:
            r.error(path, f"expected true, false or a mapping of settings, got {short(given)}", f"{name}: true")
    return enabled
