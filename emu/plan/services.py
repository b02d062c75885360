"""Services as the API server, the endpoints controller and kube-proxy see them, as plan data.

ClusterIPs are allocated from serviceCIDR (given ones honoured), NodePorts from 30000; each Service port's
endpoints are the selected pods' addresses with the target port resolved (a number, or a container port's name);
and every node's rule document is kube-proxy's rules (its mode's module, from ``emu.registry``) merged with
flanneld's. ``replan_services`` recomputes all of it after pods came or went, as kube-proxy does on an
EndpointSlice change.
"""

from dataclasses import replace
from ipaddress import IPv4Network
from typing import Dict, List, Optional, Sequence, Tuple

from emu import registry
from emu.plan import flannel
from emu.plan.ipam import cluster_ips
from emu.plan.iptables import merge_tables, render_restore
from emu.plan.model import EndpointPlan, Plan, PodPlan, ServicePlan, ServicePortPlan
from emu.proxy import services as kubeproxy
from emu.spec.model import ClusterSpec, Pod, Service


def plan_services(spec: ClusterSpec, pods: Sequence[PodPlan]) -> List[ServicePlan]:
    """Every Service of ``spec`` with its address, node ports and the endpoints among ``pods``."""
    ips = cluster_ips(spec.network.service_cidr, [s.cluster_ip for s in spec.services])
    pod_spec = {p.name: p for p in spec.pods}
    out: List[ServicePlan] = []
    for service, ip in zip(spec.services, ips):
        selected = [p for p in pods if p.namespace == service.namespace and _selects(service, pod_spec[p.name])]
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
            )
        )
    _allocate_node_ports(out)
    return out


def node_iptables(services: Sequence[ServicePlan], pod_cidr: IPv4Network, node_ip: str, subnet: IPv4Network) -> str:
    """A node's whole iptables-restore document: kube-proxy's rules first (its jumps come first on a real node),
    then flanneld's."""
    proxy = registry.proxy_mode(registry.DEFAULT_PROXY_MODE)
    tables = merge_tables(
        proxy.node_tables(kube_services(services), str(pod_cidr), node_ip),
        flannel.iptables_tables(pod_cidr, subnet),
    )
    return render_restore(tables)


def replan_services(plan: Plan, spec: ClusterSpec, live_pods: Sequence[PodPlan]) -> Plan:
    """The plan after pods came or went: endpoints recomputed from ``live_pods``, every node's rules re-rendered.

    Pod addresses and everything else stay as they are (a live pod never changes its IP).
    """
    live = {p.name for p in live_pods}
    kept = replace(spec, pods=tuple(p for p in spec.pods if p.name in live))
    services = plan_services(kept, list(live_pods))
    nodes = []
    for node in plan.nodes:
        document = node_iptables(services, IPv4Network(plan.pod_cidr), node.ip, IPv4Network(node.subnet))
        nodes.append(replace(node, iptables=document))
    return replace(plan, services=tuple(services), nodes=tuple(nodes), pods=tuple(live_pods))


def service_env(services: Sequence[ServicePlan]) -> Dict[str, str]:
    """The Docker-link style variables the kubelet gives every container for every Service."""
    env: Dict[str, str] = {}
    for s in services:
        if not s.ports:
            continue
        prefix = s.name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = s.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(s.ports[0].port)
        for p in s.ports:
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.port)
    return env


def _allocate_node_ports(services: List[ServicePlan]) -> None:
    """NodePort Services without an explicit nodePort get the next free one from 30000, in order."""
    used = {p.node_port for s in services for p in s.ports if p.node_port}
    candidate = 30000
    for i, service in enumerate(services):
        if service.type != "NodePort":
            continue
        ports = []
        for port in service.ports:
            if port.node_port is None:
                while candidate in used:
                    candidate += 1
                used.add(candidate)
                port = replace(port, node_port=candidate)
            ports.append(port)
        services[i] = replace(service, ports=tuple(ports))


def _selects(service: Service, pod: Pod) -> bool:
    labels = pod.label_map
    return bool(service.selector) and all(labels.get(k) == v for k, v in service.selector)


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
    return tuple(
        kubeproxy.Service(
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
        for s in services
    )
