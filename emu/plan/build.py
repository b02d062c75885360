"""The pure function from a ClusterSpec to a Plan: same spec, same plan, byte for byte.

The order of work mirrors a real cluster coming up: flannel leases a subnet per node and writes subnet.env;
the backend programs its devices, routes, neighbour and FDB entries; the CNI bridge plugin wires each pod
(cni0 with the .1 gateway, a veth pair, host-local addresses from .2, the pod's routes); kube-proxy writes
the Service rules. Nothing here runs a command or imports Mininet.
"""

from ipaddress import IPv4Address, IPv4Network
from typing import Dict, List, Optional, Sequence, Tuple

from emu.backends import BackendContext, Lease, module, pod_mtu
from emu.plan import flannel, names
from emu.plan.ipam import HostLocal, cluster_ips, gateway, node_subnets
from emu.plan.iptables import merge_tables, render_restore
from emu.plan.model import (
    ContainerPlan,
    Device,
    EndpointPlan,
    Link,
    Mount,
    NodePlan,
    Plan,
    PodPlan,
    Route,
    ServicePlan,
    ServicePortPlan,
)
from emu.proxy import iptables as kubeproxy
from emu.spec.model import ClusterSpec, Pod, Service

UNDERLAY_DEV = "eth0"
BRIDGE = "cni0"
POD_IFNAME = "eth0"
PLACEHOLDER_ARGV = ("sleep", "infinity")

KUBELET_HOSTS = (
    "# Kubernetes-managed hosts file.\n"
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)


def build_plan(spec: ClusterSpec, backend: Optional[str] = None) -> Plan:
    """Compute the whole dataplane of ``spec`` (on flannel backend ``backend`` when given)."""
    if backend is not None:
        spec = spec.with_backend(backend)
    net = spec.network
    mtu = pod_mtu(net.backend, spec.underlay.mtu)
    subnets = node_subnets(net.pod_cidr, net.subnet_len, len(spec.nodes))
    leases = tuple(
        Lease(node.name, node.ip, subnet, names.vtep_mac(spec.name, node.name))
        for node, subnet in zip(spec.nodes, subnets)
    )
    ctx = BackendContext(
        backend=net.backend,
        network=net.pod_cidr,
        underlay=spec.underlay.cidr,
        underlay_dev=UNDERLAY_DEV,
        underlay_mtu=spec.underlay.mtu,
        leases=leases,
    )
    subnet_of = {lease.node: lease.subnet for lease in leases}
    pods = _plan_pods(spec, subnet_of, mtu)
    services = _plan_services(spec, pods)
    backend_module = module(net.backend.type)

    nodes: List[NodePlan] = []
    for index, (node, lease) in enumerate(zip(spec.nodes, leases)):
        dataplane = backend_module.plan_node(ctx, lease)
        bridge = Device(
            name=BRIDGE,
            kind="bridge",
            mtu=mtu,
            mac=names.mac_from_ip(gateway(lease.subnet)),
            addresses=(f"{gateway(lease.subnet)}/{lease.subnet.prefixlen}",),
        )
        link = Link(
            dev=UNDERLAY_DEV,
            address=f"{node.ip}/{spec.underlay.cidr.prefixlen}",
            mac=names.mac_from_ip(node.ip),
            mtu=spec.underlay.mtu,
            switch_port=names.switch_port(spec.name, index),
            bw=node.link.bw,
            delay=node.link.delay,
            jitter=node.link.jitter,
            loss=node.link.loss,
        )
        nodes.append(
            NodePlan(
                name=node.name,
                ip=str(node.ip),
                link=link,
                subnet=str(lease.subnet),
                subnet_env=flannel.subnet_env(net.pod_cidr, lease.subnet, mtu),
                devices=(bridge,) + dataplane.devices,
                routes=dataplane.routes,
                neighbours=dataplane.neighbours,
                fdb=dataplane.fdb,
                sysctls=flannel.SYSCTLS + tuple(sorted(kubeproxy.required_sysctls().items())),
                iptables=node_iptables(services, net.pod_cidr, str(node.ip), lease.subnet),
                udp=dataplane.udp,
                service_routes=(Route(str(net.service_cidr), UNDERLAY_DEV),),
            )
        )

    options = (("VNI", str(net.backend.vni)), ("Port", str(net.backend.port))) if net.backend.type == "vxlan" else ()
    if net.backend.type == "udp":
        options = (("Port", str(net.backend.port)),)
    if net.backend.type == "vxlan" and net.backend.direct_routing:
        options += (("DirectRouting", "true"),)
    return Plan(
        cluster=spec.name,
        tag=names.cluster_tag(spec.name),
        backend=net.backend.type,
        backend_options=options,
        pod_cidr=str(net.pod_cidr),
        subnet_len=net.subnet_len,
        service_cidr=str(net.service_cidr),
        underlay_cidr=str(spec.underlay.cidr),
        underlay_mtu=spec.underlay.mtu,
        pod_mtu=mtu,
        switch=names.switch_name(spec.name),
        nodes=tuple(nodes),
        pods=tuple(pods),
        services=tuple(services),
    )


def node_iptables(services: Sequence[ServicePlan], pod_cidr: IPv4Network, node_ip: str, subnet: IPv4Network) -> str:
    """A node's whole iptables-restore document: kube-proxy's rules first (its jumps come first on a real node),
    then flanneld's."""
    tables = merge_tables(
        kubeproxy.kube_proxy_tables(kube_services(services), str(pod_cidr), node_ip),
        flannel.iptables_tables(pod_cidr, subnet),
    )
    return render_restore(tables)


def replan_services(plan: Plan, spec: ClusterSpec, live_pods: Sequence[PodPlan]) -> Plan:
    """The plan after pods came or went: endpoints recomputed from ``live_pods``, every node's rules re-rendered.

    Pod addresses and everything else stay as they are (a live pod never changes its IP).
    """
    from dataclasses import replace

    live = {p.name for p in live_pods}
    kept = replace(spec, pods=tuple(p for p in spec.pods if p.name in live))
    services = _plan_services(kept, list(live_pods))
    nodes = []
    for node in plan.nodes:
        document = node_iptables(services, IPv4Network(plan.pod_cidr), node.ip, IPv4Network(node.subnet))
        nodes.append(replace(node, iptables=document))
    return replace(plan, services=tuple(services), nodes=tuple(nodes), pods=tuple(live_pods))


def _plan_pods(spec: ClusterSpec, subnet_of: Dict[str, IPv4Network], mtu: int) -> List[PodPlan]:
    ipam = {node: HostLocal(subnet) for node, subnet in subnet_of.items()}
    node_ip = {node.name: node.ip for node in spec.nodes}
    out: List[PodPlan] = []
    for pod in spec.pods:
        ip = node_ip[pod.node] if pod.host_network else ipam[pod.node].allocate()
        out.append(_pod_plan(spec, pod, subnet_of[pod.node], ip, mtu))
    return out


def plan_added_pod(plan: Plan, spec: ClusterSpec, pod: Pod) -> PodPlan:
    """The plan of ``pod``, added to the running cluster ``plan`` (as ``kubectl apply`` of a Pod would).

    plan: the cluster's plan now (its pods are the live ones).
    spec: the cluster's spec (names, pod network, underlay); ``pod`` need not be in it yet.
    pod: the validated pod, already placed on a node (``emu.spec.load.load_added_pod``).
    The pod gets the lowest address of its node's subnet, from .2, that no pod of ``plan`` holds (host-local
    hands out addresses in order; emu reuses a freed one first, which host-local does only after a wrap);
    a hostNetwork pod gets its node's address. Raises ValueError for a pod name already in the plan or an
    unknown node, IpamError when the node's subnet is full.
    """
    if any(p.name == pod.name for p in plan.pods):
        raise ValueError(f"pod {pod.name!r} is already in the plan")
    node = plan.node(pod.node)
    subnet = IPv4Network(node.subnet)
    if pod.host_network:
        return _pod_plan(spec, pod, subnet, IPv4Address(node.ip), plan.pod_mtu)
    taken = {IPv4Address(p.ip) for p in plan.pods if p.node == pod.node and not p.host_network}
    ipam = HostLocal(subnet)
    ip = ipam.allocate()
    while ip in taken:
        ip = ipam.allocate()
    return _pod_plan(spec, pod, subnet, ip, plan.pod_mtu)


def _pod_plan(spec: ClusterSpec, pod: Pod, subnet: IPv4Network, ip: IPv4Address, mtu: int) -> PodPlan:
    """One pod's plan at address ``ip`` of its node's ``subnet`` (the node's own address for hostNetwork)."""
    containers = tuple(_plan_container(c) for c in pod.containers)
    if pod.host_network:
        return PodPlan(
            name=pod.name,
            namespace=pod.namespace,
            node=pod.node,
            host_network=True,
            ip=str(ip),
            prefixlen=spec.underlay.cidr.prefixlen,
            gateway="",
            mac="",
            mtu=spec.underlay.mtu,
            ifname=UNDERLAY_DEV,
            host_veth="",
            host_veth_mac="",
            routes=(),
            hostname=pod.node,
            hosts_file=KUBELET_HOSTS + f"{ip}\t{pod.node}\n",
            labels=pod.labels,
            containers=containers,
            volumes=pod.volumes,
        )
    gw = gateway(subnet)
    return PodPlan(
        name=pod.name,
        namespace=pod.namespace,
        node=pod.node,
        host_network=False,
        ip=str(ip),
        prefixlen=subnet.prefixlen,
        gateway=str(gw),
        mac=names.mac_from_ip(ip),
        mtu=mtu,
        ifname=POD_IFNAME,
        host_veth=names.host_veth(spec.name, pod.namespace, pod.name),
        host_veth_mac=names.mac_from_name(spec.name, pod.namespace, pod.name, "host"),
        # flannel's CNI config: the bridge plugin with isDefaultGateway, and host-local with a route to
        # the whole Network.
        routes=(
            Route("default", POD_IFNAME, via=str(gw)),
            Route(str(spec.network.pod_cidr), POD_IFNAME, via=str(gw)),
        ),
        hostname=pod.name,
        hosts_file=KUBELET_HOSTS + f"{ip}\t{pod.name}\n",
        labels=pod.labels,
        containers=containers,
        volumes=pod.volumes,
    )


def _plan_container(container) -> ContainerPlan:  # type: ignore[no-untyped-def]
    argv = container.argv
    return ContainerPlan(
        name=container.name,
        image=container.image,
        argv=argv or PLACEHOLDER_ARGV,
        env=container.env,
        ports=tuple((p.container_port, p.protocol, p.name) for p in container.ports),
        mounts=tuple(Mount(m.name, m.mount_path, m.read_only) for m in container.volume_mounts),
        working_dir=container.working_dir,
        placeholder=not argv,
    )


def _plan_services(spec: ClusterSpec, pods: Sequence[PodPlan]) -> List[ServicePlan]:
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


def _allocate_node_ports(services: List[ServicePlan]) -> None:
    """NodePort Services without an explicit nodePort get the next free one from 30000, in order."""
    from dataclasses import replace

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


def kube_services(services: Sequence[ServicePlan]) -> Tuple["kubeproxy.Service", ...]:
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

