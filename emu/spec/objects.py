"""Standard Kubernetes objects in a topology: Pod, Deployment/ReplicaSet/StatefulSet/DaemonSet, Service.

Strict like containerlab's loader: an unknown field is an error with a "did you mean" hint; legal Kubernetes
fields with nothing to emulate are reported once as notices (the field lists are in ``emu.spec.kube_fields``).
Names that reach the plan (pods, containers, Services, ports, volumes) must be DNS labels, so no shell
metacharacter ever gets past here. Workloads become ``RawPod`` records, placed on nodes later by the loader.
"""

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Dict, List, Optional, Tuple

from emu.spec import kube_fields as kf
from emu.spec.model import Container, ContainerPort, Pod, Service, ServicePort, VolumeMount
from emu.spec.pod_dns import read_pod_dns
from emu.spec.reader import DNS_LABEL, ENV_NAME, Reader, closest, read_labels, short
from emu.spec.spread import read_spread
from emu.spec.yamlsrc import FieldPath

NODE_PORT_RANGE = (30000, 32767)
MAX_REPLICAS = 5000

class RawPod:
    """A pod before scheduling: its spec and, when pinned, its node."""

    def __init__(self, pod: Pod, pinned: bool, reader: Reader, path: FieldPath, daemon: bool = False) -> None:
        self.pod = pod
        self.pinned = pinned
        self.reader = reader
        self.path = path
        self.daemon = daemon


def _metadata(r: Reader, value: Any, path: FieldPath, what: str) -> Tuple[Optional[str], str, Dict[str, str]]:
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
    labels = read_labels(r, meta.get("labels"), path + ("labels",))
    return name, namespace, labels


def _read_pod_spec(
    r: Reader, value: Any, path: FieldPath, name: str, namespace: str, labels: Dict[str, str], owner: str = ""
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
    share_pid = r.boolean(spec.get("shareProcessNamespace"), path + ("shareProcessNamespace",))
    service_links = r.boolean(spec.get("enableServiceLinks"), path + ("enableServiceLinks",), default=True)
    node_name = r.string(spec.get("nodeName"), path + ("nodeName",))
    hostname, subdomain, dns_policy, dns_config = read_pod_dns(r, spec, path, host_network)
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
        hostname=hostname,
        subdomain=subdomain,
        dns_policy=dns_policy,
        dns_config=dns_config,
        spread=read_spread(r, spec, path, read_labels),
        share_process_namespace=share_pid,
        service_links=service_links,
    )
    return pod, node_name is not None


def _read_container(r: Reader, raw: Any, path: FieldPath, volumes: List[str]) -> Optional[Container]:
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
            r.error(epath + ("name",), f"{short(ename)} is not an environment variable name", "e.g. GET_HOSTS_FROM")
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
            close = closest(vname, volumes)
            hint = f"did you mean '{close}'?" if close else "declare it under spec.volumes"
            r.error(mpath + ("name",), f"no volume named {short(vname)} in this pod", hint)
            continue
        if mount.get("mountPath") is None:
            r.missing(mpath + ("mountPath",), "mountPath is missing", "an absolute path, e.g. /data")
            continue
        if mount_path is None:
            continue
        if not mount_path.startswith("/") or "\x00" in mount_path or ".." in mount_path.split("/"):
            r.error(mpath + ("mountPath",), f"{short(mount_path)} is not an absolute path", "e.g. /data, without '..'")
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


def _string_list(r: Reader, value: Any, path: FieldPath) -> List[str]:
    out: List[str] = []
    for i, item in enumerate(r.sequence(value, path)):
        text = r.string(item, path + (i,))
        if text is not None:
            if "\x00" in text:
                r.error(path + (i,), "contains a NUL byte", "a process argument cannot hold one")
                continue
            out.append(text)
    return out


def _protocol(r: Reader, value: Any, path: FieldPath) -> str:
    text = r.string(value, path, "TCP") or "TCP"
    if text not in ("TCP", "UDP"):
        r.error(path, f"protocol {short(text)} is not emulated", "TCP or UDP")
        return "TCP"
    return text


def read_workload(r: Reader, kind: str) -> List[RawPod]:
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
    match_labels = read_labels(r, selector.get("matchLabels"), ("spec", "selector", "matchLabels"))
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
    labels = read_labels(r, tmeta.get("labels"), ("spec", "template", "metadata", "labels"))
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
        return [RawPod(pod, pinned, r, ("spec", "template"), daemon=True)]
    service_name = _service_name(r, spec, kind)
    pods = []
    for i in range(replicas if replicas is not None else 1):
        replica = replace(pod, name=f"{name}-{i}")
        if service_name:  # a StatefulSet's pod: <pod>.<serviceName>.<ns>.svc.<zone> in DNS
            replica = replace(replica, hostname=replica.name, subdomain=service_name)
        pods.append(RawPod(replica, pinned, r, ("spec", "template")))
    return pods


def _service_name(r: Reader, spec: Dict[str, Any], kind: str) -> str:
    """A StatefulSet's ``serviceName``: the headless Service that gives its pods their DNS names."""
    if spec.get("serviceName") is None:
        return ""
    if kind != "StatefulSet":
        r.error(("spec", "serviceName"), f"a {kind} has no serviceName", "only a StatefulSet's pods take one")
        return ""
    return r.name(spec.get("serviceName"), ("spec", "serviceName"), "service", letter_first=True) or ""


def read_pod(r: Reader) -> List[RawPod]:
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, labels = _metadata(r, data.get("metadata"), ("metadata",), "pod")
    parsed = _read_pod_spec(r, data.get("spec"), ("spec",), name or "", namespace, labels)
    if parsed is None or name is None:
        return []
    pod, pinned = parsed
    return [RawPod(pod, pinned, r, ("spec",))]


def read_service(r: Reader) -> Optional[Tuple[Service, Reader]]:
    data = r.mapping(r.doc.data, (), kf.TOP_LEVEL)
    name, namespace, _ = _metadata(r, data.get("metadata"), ("metadata",), "service")
    spec = r.mapping(data.get("spec"), ("spec",), kf.SERVICE_SPEC, kf.SERVICE_SPEC_USED)
    stype = r.string(spec.get("type"), ("spec", "type"), "ClusterIP") or "ClusterIP"
    if stype == "LoadBalancer":
        r.warn(("spec", "type"), "no load balancer here: emulated as NodePort", severity="notice")
        stype = "NodePort"
    if stype not in ("ClusterIP", "NodePort", "ExternalName"):
        r.error(
            ("spec", "type"),
            f"Service type {short(stype)} is not emulated",
            "ClusterIP, NodePort, LoadBalancer or ExternalName",
        )
        stype = "ClusterIP"
    selector = read_labels(r, spec.get("selector"), ("spec", "selector"))
    cluster_ip, headless = _read_cluster_ip(r, spec, stype)
    external_name = _read_external_name(r, spec, stype)
    affinity, timeout = _read_affinity(r, spec)
    ports = _read_service_ports(r, spec, stype, optional=headless or stype == "ExternalName")
    if name is None:
        return None
    service = Service(
        name=name,
        namespace=namespace,
        type=stype,
        selector=tuple(sorted(selector.items())),
        ports=tuple(ports),
        cluster_ip=cluster_ip,
        headless=headless,
        external_name=external_name,
        session_affinity=affinity,
        affinity_timeout=timeout,
        file=r.doc.file,
        line=r.doc.line(()),
    )
    return service, r


def _read_cluster_ip(r: Reader, spec: Dict[str, Any], stype: str) -> Tuple[Optional[IPv4Address], bool]:
    """``spec.clusterIP`` (or the first of ``clusterIPs``): an address, None to allocate one, or headless."""
    raw_ip = spec.get("clusterIP")
    if raw_ip is None and spec.get("clusterIPs") is not None:
        ips = r.sequence(spec.get("clusterIPs"), ("spec", "clusterIPs"))
        raw_ip = ips[0] if ips else None
    if raw_ip is None or str(raw_ip) == "":
        return None, False
    if stype == "ExternalName":
        r.error(("spec", "clusterIP"), "an ExternalName Service has no cluster IP", "remove clusterIP")
        return None, False
    if str(raw_ip) == "None":
        if stype != "ClusterIP":
            r.error(("spec", "clusterIP"), f"a {stype} Service cannot be headless", "type: ClusterIP")
        return None, True
    try:
        return IPv4Address(str(raw_ip)), False
    except ValueError:
        r.error(
            ("spec", "clusterIP"), f"{short(raw_ip)} is not an IPv4 address", "an address in the serviceCIDR, or None"
        )
        return None, False


def _read_external_name(r: Reader, spec: Dict[str, Any], stype: str) -> str:
    """``spec.externalName``: the DNS name an ExternalName Service stands for (a CNAME in cluster DNS)."""
    if stype != "ExternalName":
        if spec.get("externalName") is not None:
            r.error(("spec", "externalName"), "externalName needs type: ExternalName", "set spec.type: ExternalName")
        return ""
    text = r.string(spec.get("externalName"), ("spec", "externalName"))
    if spec.get("externalName") is None:
        r.missing(("spec", "externalName"), "an ExternalName Service needs externalName", "e.g. db.example.com")
        return ""
    name = (text or "").rstrip(".").lower()
    if not name or len(name) > 253 or not all(DNS_LABEL.match(label) for label in name.split(".")):
        r.error(("spec", "externalName"), f"{short(text)} is not a DNS name", "e.g. db.example.com")
        return ""
    return name


def _read_affinity(r: Reader, spec: Dict[str, Any]) -> Tuple[str, int]:
    """``sessionAffinity`` (None or ClientIP) and its timeout in seconds (kube-proxy's default: 3 hours)."""
    affinity = r.string(spec.get("sessionAffinity"), ("spec", "sessionAffinity"), "None") or "None"
    if affinity not in ("None", "ClientIP"):
        r.error(("spec", "sessionAffinity"), f"{short(affinity)} is not a session affinity", "None or ClientIP")
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
    return affinity, timeout


def _read_service_ports(r: Reader, spec: Dict[str, Any], stype: str, optional: bool = False) -> List[ServicePort]:
    """``spec.ports``: unique by number and protocol and by name (every port of a multi-port Service named);
    ``optional`` for headless and ExternalName Services, which may have none."""
    ports: List[ServicePort] = []
    seen_ports: Dict[Tuple[int, str], int] = {}
    raw_ports = r.sequence(spec.get("ports"), ("spec", "ports"))
    if not optional and (spec.get("ports") is None or spec.get("ports") == []):
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
    return ports
