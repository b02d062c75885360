"""Services as the API server, the endpoints controller and kube-proxy see them, as plan data.

ClusterIPs are allocated from serviceCIDR (given ones honoured), NodePorts from 30000; each Service port's
endpoints are the selected pods' addresses with the target port resolved (a number, or a container port's name);
and every node's rule documents are kube-proxy's rules (its mode's module, from ``emu.registry``: iptables rules
merged with flanneld's, nftables tables) made by ``with_rules``, again after pods came or went, as kube-proxy does
on an EndpointSlice change.
"""

from dataclasses import replace
from functools import lru_cache
from ipaddress import IPv4Address, IPv4Network
from types import ModuleType
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from emu import registry
from emu.plan import flannel
from emu.plan.ipam import cluster_ips
from emu.plan.iptables import merge_tables, render_restore
from emu.plan.model import EndpointPlan, Plan, PodPlan, ServicePlan, ServicePortPlan
from emu.proxy import services as kubeproxy
from emu.spec.model import ClusterSpec, Pod


def plan_services(
    spec: ClusterSpec, pods: Sequence[PodPlan], running: Sequence[ServicePlan] = ()
) -> List[ServicePlan]:
    """Every Service of ``spec`` with its address, node ports and the endpoints among ``pods``.

    running: the Services of the cluster as it runs now: those still in ``spec`` keep their ClusterIPs and
    allocated node ports (the API server never changes a live Service's). Headless and ExternalName Services
    get no ClusterIP ("None" and "").
    """
    virtual = [s for s in spec.services if not s.headless and s.type != "ExternalName"]
    keep = {
        f"{s.namespace}/{s.name}": IPv4Address(s.cluster_ip) for s in running if s.cluster_ip not in ("None", "")
    }
    requests = [(f"{s.namespace}/{s.name}", s.cluster_ip) for s in virtual]
    ip_of = dict(zip((id(s) for s in virtual), cluster_ips(spec.network.service_cidr, requests, keep)))
    pod_spec = {p.name: p for p in spec.pods}
    # Pods by (namespace, label, value), in pod order: a Service looks at the pods of its selector's first
    # label only (10,000 Services over thousands of pods would otherwise compare every pair).
    labelled: Dict[Tuple[str, str, str], List[PodPlan]] = {}
    labels: Dict[str, Dict[str, str]] = {}
    for pod in pods:
        labels[pod.name] = pod_spec[pod.name].label_map
        for key, value in pod_spec[pod.name].labels:
            labelled.setdefault((pod.namespace, key, value), []).append(pod)
    out: List[ServicePlan] = []
    for service in spec.services:
        ip = ip_of.get(id(service), "None" if service.headless else "")
        candidates = labelled.get((service.namespace,) + tuple(service.selector[0]), []) if service.selector else []
        selected = [p for p in candidates if all(labels[p.name].get(k) == v for k, v in service.selector)]
        ports = []
        for port in service.ports:
            endpoints = []
            for pod in selected:
                target = _resolve_target(port.target_port, port.protocol, pod_spec[pod.name])
                if target is not None:
                    endpoints.append(EndpointPlan(pod.name, pod.ip, target, pod.node))
            ports.append(
                ServicePortPlan(port.name, port.protocol, port.port, port.target_port, port.node_port, tuple(endpoints))
            )
        out.append(
            ServicePlan(
                name=service.name,
                namespace=service.namespace,
                type=service.type,
                cluster_ip=str(ip),
                session_affinity=service.session_affinity,
                affinity_timeout=service.affinity_timeout,
                ports=tuple(ports),
                external_name=service.external_name,
            )
        )
    _allocate_node_ports(out, running)
    return out


def node_iptables(
    services: Sequence[ServicePlan],
    pod_cidr: IPv4Network,
    node_ip: str,
    subnet: IPv4Network,
    proxy_mode: str = registry.DEFAULT_PROXY_MODE,
) -> str:
    """A node's whole iptables-restore document: kube-proxy's rules first (its jumps come first on a real node),
    then flanneld's."""
    return _iptables(registry.proxy_mode(proxy_mode), kube_services(services), pod_cidr, node_ip, subnet)


def _iptables(mode: ModuleType, services: Sequence[kubeproxy.Service], pod_cidr: IPv4Network, node_ip: str,
              subnet: IPv4Network) -> str:
    tables = merge_tables(
        mode.node_tables(services, str(pod_cidr), node_ip),
        flannel.iptables_tables(pod_cidr, subnet),
    )
    return render_restore(tables)


def with_rules(plan: Plan) -> Plan:
    """``plan`` with every node's rule documents made from its Services, by its kube-proxy mode (the module of
    ``plan.proxy_mode``): the iptables document (the mode's rules merged with flanneld's) and the nftables tables
    (the mode's ``node_nftables``, if it has one)."""
    mode = registry.proxy_mode(plan.proxy_mode)
    services = kube_services(plan.services)
    pod_cidr = IPv4Network(plan.pod_cidr)
    nftables = getattr(mode, "node_nftables", None)
    nodes = []
    for node in plan.nodes:
        tables = nftables(services, plan.pod_cidr, plan.service_cidr, node.ip) if nftables else ()
        iptables = _iptables(mode, services, pod_cidr, node.ip, IPv4Network(node.subnet))
        nodes.append(replace(node, iptables=iptables, nftables=tuple(tables)))
    return replace(plan, nodes=tuple(nodes))


#: The API server's own Service (the first address of serviceCIDR): every pod gets its variables, as the kubelet
#: gives them (its ``masterServices``), whatever its namespace and enableServiceLinks. emu has no API server:
#: nothing answers at that address.
MASTER_SERVICE_PORT = ("https", "TCP", 443)


def master_service(service_cidr: str) -> ServicePlan:
    """The ``kubernetes`` Service of the default namespace, as the API server creates it (no endpoints here)."""
    ip = str(IPv4Network(service_cidr).network_address + 1)
    name, protocol, port = MASTER_SERVICE_PORT
    return ServicePlan("kubernetes", "default", "ClusterIP", ip, "None", 10800,
                       (ServicePortPlan(name, protocol, port, str(port), None, ()),))


def pod_env(plan: Plan, pod: PodPlan) -> Dict[str, str]:
    """The Service variables the kubelet gives every container of ``pod``: the ``kubernetes`` Service's always,
    and those of every Service of the pod's namespace unless its ``enableServiceLinks`` is false (a Service of
    that namespace named like the master wins, as in the kubelet's map)."""
    chosen: Dict[str, ServicePlan] = {"kubernetes": master_service(plan.service_cidr)}
    if pod.service_links:
        for service in plan.services:
            if service.namespace == pod.namespace:
                chosen[service.name] = service
    return service_env(chosen.values())


def service_env(services: Iterable[ServicePlan]) -> Dict[str, str]:
    """The variables of ``services`` as the kubelet writes them (``envvars.FromServices``): for Service
    ``my-svc`` with first port 80/TCP named ``http``, ``MY_SVC_SERVICE_HOST``, ``MY_SVC_SERVICE_PORT``,
    ``MY_SVC_SERVICE_PORT_HTTP`` (one per named port), and Docker's link variables ``MY_SVC_PORT`` (the first
    port, ``tcp://IP:80``), ``MY_SVC_PORT_80_TCP``, ``..._PROTO`` (``tcp``), ``..._PORT`` (``80``) and
    ``..._ADDR`` (the IP), per port."""
    env: Dict[str, str] = {}
    for s in services:
        if not s.ports or s.cluster_ip in ("None", ""):  # headless and ExternalName Services get none
            continue
        prefix = _env_name(s.name)
        env[f"{prefix}_SERVICE_HOST"] = s.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(s.ports[0].port)
        for p in s.ports:
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{_env_name(p.name)}"] = str(p.port)
        for i, p in enumerate(s.ports):
            proto = p.protocol.lower()
            url = f"{proto}://{s.cluster_ip}:{p.port}"
            if i == 0:
                env[f"{prefix}_PORT"] = url  # Docker special-cases the first port
            link = f"{prefix}_PORT_{p.port}_{p.protocol.upper()}"
            env[link] = url
            env[f"{link}_PROTO"] = proto
            env[f"{link}_PORT"] = str(p.port)
            env[f"{link}_ADDR"] = s.cluster_ip
    return env


def _env_name(name: str) -> str:
    """The kubelet's ``makeEnvVariableName``: upper case, ``-`` as ``_``."""
    return name.upper().replace("-", "_")


def _allocate_node_ports(services: List[ServicePlan], running: Sequence[ServicePlan] = ()) -> None:
    """NodePort Services without an explicit nodePort keep the one they have in ``running``; the others get
    the next free one from 30000, in order."""
    kept = {(s.namespace, s.name, p.port, p.protocol): p.node_port for s in running for p in s.ports if p.node_port}
    used = {p.node_port for s in services for p in s.ports if p.node_port}
    for keeping in (True, False):
        candidate = 30000
        for i, service in enumerate(services):
            if service.type != "NodePort":
                continue
            ports = []
            for port in service.ports:
                key = (service.namespace, service.name, port.port, port.protocol)
                if port.node_port is None and keeping and kept.get(key) not in (None, *used):
                    port = replace(port, node_port=kept[key])
                    used.add(port.node_port)
                elif port.node_port is None and not keeping:
                    while candidate in used:
                        candidate += 1
                    used.add(candidate)
                    port = replace(port, node_port=candidate)
                ports.append(port)
            services[i] = replace(service, ports=tuple(ports))


def _resolve_target(target: str, protocol: str, pod: Pod) -> Optional[int]:
    if target.isdigit():
        return int(target)
    for container in pod.containers:
        for port in container.ports:
            if port.name == target and port.protocol == protocol:
                return port.container_port
    return None


def kube_services(services: Sequence[ServicePlan]) -> Tuple[kubeproxy.Service, ...]:
    """The planned Services in kube-proxy's input form (what its rules are computed from)."""
    # ExternalName Services are DNS names only: kube-proxy skips them (ShouldSkipService)
    return tuple(_kube_service(s) for s in services if s.type != "ExternalName")


@lru_cache(maxsize=1 << 16)
def _kube_service(s: ServicePlan) -> kubeproxy.Service:
    """One planned Service in kube-proxy's form (cached: a re-plan converts only the Services that changed, and
    the same records come back, so kube-proxy's per-Service rules are found in their caches)."""
    return kubeproxy.Service(
        namespace=s.namespace,
        name=s.name,
        type=s.type,
        cluster_ip=s.cluster_ip,
        ports=tuple(
            kubeproxy.ServicePort(
                name=p.name,
                protocol=p.protocol,
                port=p.port,
                target=p.target_port,
                node_port=p.node_port,
                endpoints=tuple(kubeproxy.Endpoint(e.pod, e.ip, e.port, e.node) for e in p.endpoints),
            )
            for p in s.ports
        ),
        session_affinity=s.session_affinity,
        affinity_timeout=s.affinity_timeout,
    )
