"""From YAML files to a validated ClusterSpec: reading the files, dispatching objects by kind, scheduling.

Reads one ``kind: Cluster`` object (``emu.spec.cluster``) plus any number of standard Kubernetes objects
(``emu.spec.objects``; ConfigMap and friends are noticed and ignored), from the files given and those the
cluster names under ``manifests`` (relative to its file; globs sorted). Every problem is collected and raised
together as one ``SpecError`` (``FILE:LINE: field.path: what (hint)``). Pods are then placed on nodes by a
deterministic spread scheduler, and relations between objects are checked (duplicate names, node capacity,
Service addresses and node ports).

The field sets (``emu.spec.cluster.CLUSTER_FIELDS``, ...) are what schema/cluster.schema.json describes; a test
keeps the two equal. docs/topology.md is the user's guide to all of it.
"""

import glob
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from emu import registry
from emu.plan.ipam import dns_ip, kubernetes_ip
from emu.spec import kube_fields as kf
from emu.spec.cluster import read_cluster
from emu.spec.errors import Problem, SpecError
from emu.spec.model import ClusterSpec, Network, Node, Pod, Service
from emu.spec.objects import RawPod, read_pod, read_service, read_workload
from emu.spec.reader import Reader, closest, short, type_name
from emu.spec.yamlsrc import Document, read_documents

MAX_PODS = 5000

def _expand_manifests(r: Reader, base: Path, patterns: Sequence[Tuple[int, str]]) -> List[str]:
    """The files the cluster names under ``manifests``: relative to the cluster file's directory; globs sorted.

    A name that matches no file is an error at its own line of the cluster file.
    """
    out: List[str] = []
    for i, pattern in patterns:
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        if glob.has_magic(pattern):
            matches = sorted(m for m in glob.glob(full) if _is_file(m))
            if not matches:
                r.error(("manifests", i), f"{short(pattern)} matches no file", f"relative to {base or '.'}")
            out.extend(matches)
        else:
            problem = _not_a_file(full)
            if problem is None:
                out.append(full)
            else:
                r.error(("manifests", i), f"{short(full)}: {problem}", f"relative paths start at {base or '.'}")
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


class _Collector:
    """Reads files and documents one by one, sorting each object by kind, and collecting every problem."""

    def __init__(self) -> None:
        self.problems: List[Problem] = []
        self.notices: Set[str] = set()
        self.files: List[str] = []
        self.queue: List[str] = []
        self.seen_files: Set[str] = set()
        self.cluster_reader: Optional[Reader] = None
        self.cluster: Optional[Dict[str, Any]] = None
        self.raw_pods: List[RawPod] = []
        self.services: List[Tuple[Service, Reader]] = []
        self.objects: List[Tuple[str, Any]] = []  # objects of the kinds add-ons read
        self.addon_manifests: List[Tuple[str, Any]] = []  # (add-on, object), read after the user's files
        self.unsure = False  # some document's kind is unknown: "no Cluster" would then be a guess

    def read_files(self, paths: Sequence[str]) -> None:
        """Read ``paths`` and every file the cluster object names under ``manifests``, each file once."""
        self.queue = [str(p) for p in paths]
        while self.queue:
            path = self.queue.pop(0)
            key = _file_key(path)
            if key in self.seen_files:
                continue
            self.seen_files.add(key)
            docs, file_problems = read_documents(path)
            self.problems.extend(file_problems)
            self.unsure = self.unsure or not docs  # a file that could not be read may have held the cluster
            for doc in docs:
                self.files.append(doc.file)
                self.read_document(doc, Path(path).parent)
        # The add-ons' objects come last, so that they never move the user's pods (addresses, nodes).
        for name, manifest in self.addon_manifests:
            self.read_document(Document(f"<add-on {name}>", 0, manifest, {}), Path("."))

    def read_document(self, doc: Document, base: Path) -> None:
        r = Reader(doc, self.problems, self.notices)
        kind = self._kind(r)
        if kind is None:
            return
        if kind != "Cluster" and not _check_api_version(r, kind):
            return
        addon_kinds = registry.addon_kinds()
        if kind == "Cluster":
            self._read_cluster(r, base)
        elif kind == "Pod":
            self.raw_pods.extend(read_pod(r))
        elif kind in kf.WORKLOAD_KINDS:
            self.raw_pods.extend(read_workload(r, kind))
        elif kind == "Service":
            svc = read_service(r)
            if svc is not None:
                self.services.append(svc)
        elif kind in addon_kinds:
            obj = addon_kinds[kind].read_object(r, kind)
            if obj is not None:
                self.objects.append((kind, obj))
        elif kind == "List":
            r.error(("kind",), "List objects are not read", "split it into YAML documents separated by ---")
        elif kind in kf.IGNORED_KINDS:
            r.warn(("kind",), f"a {kind} has nothing to emulate and is ignored", severity="notice")
        else:
            known = {"Cluster", "Pod", "Service"} | kf.WORKLOAD_KINDS | kf.IGNORED_KINDS | set(addon_kinds)
            close = closest(kind, known)
            hint = f"did you mean '{close}'?" if close else "Cluster, Pod, Deployment, DaemonSet or Service"
            r.error(("kind",), f"unknown kind {short(kind)}", hint)
            self.unsure = True

    def _kind(self, r: Reader) -> Optional[str]:
        """The document's kind, or None (with an error) when it has none that can be read."""
        data = r.doc.data
        if not isinstance(data, dict):
            r.error(
                (),
                f"expected a Kubernetes-style object (a mapping), got {type_name(data)}",
                "apiVersion, kind, metadata and spec",
            )
            self.unsure = True
            return None
        kind = data.get("kind")
        if kind is None:
            typo = closest("kind", [k for k in data if isinstance(k, str)])
            hint = f"{short(typo)} is not 'kind'" if typo else "Cluster, Pod, Deployment, DaemonSet or Service"
            r.error(("kind",), "kind is missing", hint)
            self.unsure = True
            return None
        if not isinstance(kind, str):
            r.error(("kind",), f"expected a kind name, got {type_name(kind)}", "e.g. kind: Pod")
            self.unsure = True
            return None
        return kind

    def _read_cluster(self, r: Reader, base: Path) -> None:
        if self.cluster is not None and self.cluster_reader is not None:
            first = self.cluster_reader.doc
            r.error(("kind",), "a second kind: Cluster", f"the first is at {first.file}:{first.line(())}")
            return
        self.cluster_reader = r
        self.cluster, manifests = read_cluster(r)
        self.queue.extend(_expand_manifests(r, base, manifests))
        for name, settings in self.cluster["addons"]:
            for manifest in registry.addon_hook(name, "manifests")(settings, self.cluster):
                self.addon_manifests.append((name, manifest))

    def no_cluster(self, paths: Sequence[str]) -> None:
        """Say that no cluster object was found (unless an unreadable document may have been it)."""
        if not self.unsure:
            first = str(paths[0]) if paths else "-"
            hint = "start with a cluster file (apiVersion: emu/v1, kind: Cluster), e.g. topologies/two_nodes.yaml"
            self.problems.append(Problem(first, None, "", "no kind: Cluster object found", hint))


def load(paths: Sequence[str]) -> Tuple[ClusterSpec, List[Problem]]:
    """Load and validate a cluster from ``paths``; return the spec and its warnings/notices.

    paths: the cluster file, then any manifest files (the files the cluster names under ``manifests`` are added).
    Raises SpecError with every problem when anything is wrong.
    """
    collected = _Collector()
    collected.read_files(paths)
    if collected.cluster is None or collected.cluster_reader is None:
        collected.no_cluster(paths)
        raise SpecError(collected.problems)
    spec = _assemble(collected)
    if any(p.severity == "error" for p in collected.problems):
        raise SpecError(collected.problems)
    return spec, [p for p in collected.problems if p.severity != "error"]


def _check_api_version(r: Reader, kind: str) -> bool:
    """A Kubernetes object's apiVersion must be its kind's (``v1`` for Pod, ``apps/v1`` for Deployment, ...)."""
    api = r.doc.data.get("apiVersion")
    expected = kf.API_VERSIONS.get(kind) or registry.addon_api_versions().get(kind)
    if api is None:
        r.missing(("apiVersion",), "apiVersion is missing", f"apiVersion: {expected or 'v1'}")
        return False
    if expected is not None and api != expected:
        r.error(("apiVersion",), f"{short(api)} is not the API of kind {kind}", f"apiVersion: {expected}")
        return False
    return True


def _assemble(collected: _Collector) -> ClusterSpec:
    """The spec: pods placed on nodes, every relation between objects checked, add-ons' own checks run."""
    cluster, cr = collected.cluster, collected.cluster_reader
    assert cluster is not None and cr is not None
    nodes: List[Node] = cluster["nodes"]
    network: Network = cluster["network"]
    node_names = [n.name for n in nodes]
    pods = _unique_pods(_expand_daemon_sets(collected.raw_pods, nodes), node_names)
    scheduled = _schedule([(r.pod, r.pinned) for r in pods], node_names)
    _check_capacity(scheduled, network, cr)
    # The add-ons' Services first: an address one of them needs (kube-dns's) is refused at the user's Service.
    ordered = sorted(collected.services, key=lambda item: not item[1].doc.file.startswith("<add-on "))
    checked = {id(svc) for svc in _check_services(ordered, scheduled, network)}
    services = [svc for svc, _reader in collected.services if id(svc) in checked]
    spec = ClusterSpec(
        name=cluster["name"],
        network=network,
        underlay=cluster["underlay"],
        nodes=tuple(nodes),
        pods=tuple(scheduled),
        services=tuple(services),
        files=tuple(dict.fromkeys(f for f in collected.files)),
        addons=tuple(cluster["addons"]),
        objects=tuple(collected.objects),
    )
    for name, settings in spec.addons:
        registry.addon_hook(name, "check_spec")(spec, settings, cr)
    return spec


def _expand_daemon_sets(raw_pods: List[RawPod], nodes: Sequence[Node]) -> List[RawPod]:
    """A DaemonSet's pod becomes one pod per node, named ``<ds>-<node>``."""
    expanded: List[RawPod] = []
    for raw in raw_pods:
        if raw.daemon:
            for node in nodes:
                pod = replace(raw.pod, name=f"{raw.pod.name}-{node.name}", node=node.name)
                expanded.append(RawPod(pod, True, raw.reader, raw.path))
        else:
            expanded.append(raw)
    return expanded


def _unique_pods(raw_pods: List[RawPod], node_names: List[str]) -> List[RawPod]:
    """The pods that can be built: at most MAX_PODS, unique names of at most 63 characters, known nodes."""
    names: Dict[str, RawPod] = {}
    pods: List[RawPod] = []
    for raw in raw_pods:
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
            close = closest(raw.pod.node, node_names)
            raw.reader.error(
                raw.path + ("nodeName",),
                f"no node named {short(raw.pod.node)}",
                f"did you mean '{close}'?" if close else "one of " + ", ".join(node_names),
            )
            continue
        names[raw.pod.name] = raw
        pods.append(raw)
    return pods


def _check_capacity(pods: Sequence[Pod], network: Network, cr: Reader) -> None:
    """Every node's pods fit in its subnet (less the network address, the .1 gateway and the broadcast)."""
    capacity = 2 ** (32 - network.subnet_len) - 3
    per_node: Dict[str, int] = {}
    for pod in pods:
        if not pod.host_network:
            per_node[pod.node] = per_node.get(pod.node, 0) + 1
    for node_name, count in per_node.items():
        if count > capacity:
            cr.error(
                ("network", "subnetLen"),
                f"node {node_name} has {count} pods but a /{network.subnet_len} subnet holds {capacity}",
                "a shorter subnetLen, more nodes or fewer pods",
            )


def _check_services(services: List[Tuple[Service, Reader]], pods: Sequence[Pod], network: Network) -> List[Service]:
    """The Services that can be built (unique names), with their addresses, node ports and selectors checked."""
    checked: List[Service] = []
    used_ips: Dict[IPv4Address, str] = {}
    used_node_ports: Dict[int, str] = {}
    svc_names: Set[Tuple[str, str]] = set()
    for service, r in services:
        if (service.namespace, service.name) in svc_names:
            r.error(("metadata", "name"), f"duplicate Service '{service.name}'", "every Service has its own name")
            continue
        svc_names.add((service.namespace, service.name))
        if (service.namespace, service.name) == ("default", "kubernetes"):
            r.error(("metadata", "name"), "default/kubernetes is the API server's own Service",
                    "another name, or another namespace")
            continue
        if service.cluster_ip is not None:
            check_cluster_ip(service, network, used_ips, r)
        for i, port in enumerate(service.ports):
            if port.node_port is not None:
                if port.node_port in used_node_ports:
                    r.error(
                        ("spec", "ports", i, "nodePort"),
                        f"nodePort {port.node_port} is already used by Service {used_node_ports[port.node_port]}",
                        "pick another in 30000-32767",
                    )
                used_node_ports[port.node_port] = service.name
        check_selector(service, pods, r)
        checked.append(service)
    return checked


#: The Service that may ask for serviceCIDR's tenth address: cluster DNS's (kubeadm gives it that one).
DNS_SERVICE = ("kube-system", "kube-dns")


def check_cluster_ip(service: Service, network: Network, used_ips: Dict[IPv4Address, str], r: Reader) -> None:
    """A requested ClusterIP is inside serviceCIDR, not the kubernetes Service's (the first), not cluster DNS's
    (the tenth: only kube-system/kube-dns may ask for it) and no other Service's."""
    ip = service.cluster_ip
    assert ip is not None
    cidr = network.service_cidr
    if ip not in cidr or ip in (cidr.network_address, cidr.broadcast_address):
        r.error(("spec", "clusterIP"), f"{ip} is not in serviceCIDR {cidr}", "pick one inside, or leave it out")
    elif ip == kubernetes_ip(cidr):
        r.error(("spec", "clusterIP"), f"{ip} is reserved for the kubernetes Service", "pick another, or leave it out")
    elif ip == dns_ip(cidr) and (service.namespace, service.name) != DNS_SERVICE:
        r.error(("spec", "clusterIP"), f"{ip} is kept for cluster DNS (the {'/'.join(DNS_SERVICE)} Service)",
                "pick another, or leave it out")
    elif ip in used_ips:
        r.error(("spec", "clusterIP"), f"{ip} is already Service {used_ips[ip]}'s", "pick another, or leave it out")
    used_ips[ip] = f"{service.namespace}/{service.name}"


def check_selector(service: Service, pods: Sequence[Pod], r: Reader) -> None:
    """Warn about a Service that selects no pod, and a named target port no selected pod has."""
    if service.type == "ExternalName":
        return
    selected = [p for p in pods if p.namespace == service.namespace and _selects(service.selector, p)]
    if service.selector and not selected:
        r.warn(("spec", "selector"), "selects no pod: the Service has no endpoints", "check the labels")
    if not service.selector:
        r.warn(("spec",), "no selector: the Service has no endpoints (manual Endpoints are not emulated)")
    for i, port in enumerate(service.ports):
        if port.target_port.isdigit() or not selected:
            continue
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


def _selects(selector: Tuple[Tuple[str, str], ...], pod: Pod) -> bool:
    labels = pod.label_map
    return bool(selector) and all(labels.get(k) == v for k, v in selector)


def _schedule(pods: List[Tuple[Pod, bool]], node_names: List[str]) -> List[Pod]:
    """A deterministic spread scheduler: each unpinned pod goes to the node with the fewest pods so far; a pod
    with a hostname topologySpreadConstraint first to the node with the fewest pods its selector matches.

    Pinned pods (spec.nodeName) count first; ties go to the earlier node in the cluster's list.
    """
    if not node_names:
        return [p for p, pinned in pods if pinned]
    load_count = {name: 0 for name in node_names}
    placed: List[Pod] = [pod for pod, pinned in pods if pinned]
    for pod in placed:
        load_count[pod.node] += 1
    out: List[Pod] = []
    for pod, pinned in pods:
        if not pinned:

            def rank(n: str, pod: Pod = pod) -> Tuple[int, int, int]:
                matching = sum(1 for p in placed if p.node == n and _spread_match(pod, p)) if pod.spread else 0
                return matching, load_count[n], node_names.index(n)

            target = min(node_names, key=rank)
            load_count[target] += 1
            pod = replace(pod, node=target)
            placed.append(pod)
        out.append(pod)
    return out


def read_object_document(document: Document) -> Tuple[Any, List[Problem]]:
    """One object of an add-on's kind (a NetworkPolicy applied to a running cluster), validated exactly as at load
    time; returns it with the warnings found. Raises SpecError with every problem when it is invalid."""
    collected = _Collector()
    collected.read_document(document, Path("."))
    if any(p.severity == "error" for p in collected.problems) or not collected.objects:
        line = document.line(())
        raise SpecError(collected.problems or [Problem(document.file, line, "", "no object could be read")])
    return collected.objects[0][1], [p for p in collected.problems if p.severity != "error"]


def _spread_match(pod: Pod, other: Pod) -> bool:
    labels = other.label_map
    return other.namespace == pod.namespace and all(labels.get(k) == v for k, v in pod.spread)


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
    r = Reader(doc, problems, set())
    if not isinstance(manifest, dict):
        r.error((), f"expected a Pod object (a mapping), got {type_name(manifest)}", "kind: Pod, metadata, spec")
        raise SpecError(problems)
    kind = manifest.get("kind")
    if kind != "Pod":
        hint = "Deployments and Services are read when the cluster is built" if kind else "kind: Pod"
        r.error(("kind",), f"only kind: Pod can be added to a running cluster, not {kind!r}", hint)
        raise SpecError(problems)
    raws = read_pod(r)
    if any(p.severity == "error" for p in problems) or not raws:
        raise SpecError(problems or [Problem(doc.file, doc.line(()), "metadata", "no pod could be read")])
    raw = raws[0]
    pod = raw.pod
    node_names = [n.name for n in spec.nodes]
    if any(p.name == pod.name for p in spec.pods):
        r.error(("metadata", "name"), f"pod '{pod.name}' already exists", "delete it first or pick another name")
    if raw.pinned and pod.node not in node_names:
        close = closest(pod.node, node_names)
        r.error(
            ("spec", "nodeName"),
            f"no node named {short(pod.node)}",
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
