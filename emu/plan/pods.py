"""Pods as the CNI bridge plugin and the kubelet wire them, as plan data.

Every pod of a node gets the next free address of the node's subnet from host-local (from .2; the .1 is cni0),
a veth pair named after the pod (``veth`` + 8 hex digits on the node's side, ``eth0`` in the pod), the MAC the
bridge plugin derives from the address (``0a:58:...``), the pod MTU, and flannel's CNI routes (default via the
gateway, and the whole pod Network). A hostNetwork pod takes its node's address and devices. The kubelet's
``/etc/hosts``, hostname and ``/etc/resolv.conf`` (``emu.plan.resolv``; without cluster DNS here: the cluster
DNS add-on gives the pods their nameserver), and each container's process, come with it.
"""

from ipaddress import IPv4Address, IPv4Network
from typing import Dict, List, Optional

from emu.plan import names
from emu.plan.ipam import HostLocal, gateway
from emu.plan.model import ContainerPlan, Mount, NodePlan, Plan, PodPlan, Route
from emu.plan.resolv import kubelet_resolv_conf
from emu.plan.underlay import UNDERLAY_DEV, node_network
from emu.spec.model import ClusterSpec, Container, Pod

__all__ = ["UNDERLAY_DEV", "POD_IFNAME", "plan_pods", "plan_added_pod", "pod_plan"]

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


def plan_pods(
    spec: ClusterSpec, subnet_of: Dict[str, IPv4Network], mtu: int, mtu_of: Optional[Dict[str, int]] = None
) -> List[PodPlan]:
    """Every pod of ``spec``, addressed in order from each node's host-local pool.

    mtu: the pod MTU; mtu_of: a node's own, where it differs (flannel derives it from each node's underlay
    device, and segments of a routed underlay may have different MTUs).
    """
    ipam = {node: HostLocal(subnet) for node, subnet in subnet_of.items()}
    node_ip = {node.name: node.ip for node in spec.nodes}
    out: List[PodPlan] = []
    for pod in spec.pods:
        ip = node_ip[pod.node] if pod.host_network else ipam[pod.node].allocate()
        out.append(pod_plan(spec, pod, subnet_of[pod.node], ip, (mtu_of or {}).get(pod.node, mtu)))
    return out


def node_pod_mtu(node: NodePlan, default: int) -> int:
    """The MTU the CNI plugin gives pods of ``node``: its cni0's (flannel's FLANNEL_MTU for that node)."""
    return next((d.mtu for d in node.devices if d.kind == "bridge"), default)


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
    mtu = node_pod_mtu(node, plan.pod_mtu)
    if pod.host_network:
        return pod_plan(spec, pod, subnet, IPv4Address(node.ip), mtu)
    taken = {IPv4Address(p.ip) for p in plan.pods if p.node == pod.node and not p.host_network}
    ipam = HostLocal(subnet)
    ip = ipam.allocate()
    while ip in taken:
        ip = ipam.allocate()
    return pod_plan(spec, pod, subnet, ip, mtu)


def pod_plan(spec: ClusterSpec, pod: Pod, subnet: IPv4Network, ip: IPv4Address, mtu: int) -> PodPlan:
    """One pod's plan at address ``ip`` of its node's ``subnet`` (the node's own address for hostNetwork)."""
    containers = tuple(_plan_container(c) for c in pod.containers)
    dns = {
        "subdomain": pod.subdomain,
        "dns_policy": pod.dns_policy,
        "resolv_conf": kubelet_resolv_conf(
            pod.namespace, pod.dns_policy, pod.host_network, pod.dns_config, None, spec.network.cluster_domain
        ),
    }
    if pod.host_network:
        network, underlay_mtu = node_network(spec, spec.node(pod.node))
        return PodPlan(
            name=pod.name,
            namespace=pod.namespace,
            node=pod.node,
            host_network=True,
            ip=str(ip),
            prefixlen=network.prefixlen,
            gateway="",
            mac="",
            mtu=underlay_mtu,
            ifname=UNDERLAY_DEV,
            host_veth="",
            host_veth_mac="",
            routes=(),
            hostname=pod.node,
            hosts_file=KUBELET_HOSTS + f"{ip}\t{pod.node}\n",
            labels=pod.labels,
            containers=containers,
            volumes=pod.volumes,
            **dns,
            share_process_namespace=pod.share_process_namespace,
            service_links=pod.service_links,
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
        hostname=pod.hostname or pod.name,
        hosts_file=KUBELET_HOSTS + _own_line(spec, pod, ip),
        labels=pod.labels,
        containers=containers,
        volumes=pod.volumes,
        **dns,
        share_process_namespace=pod.share_process_namespace,
        service_links=pod.service_links,
    )


def _own_line(spec: ClusterSpec, pod: Pod, ip: IPv4Address) -> str:
    """The kubelet's line for the pod itself: its hostname, after its FQDN when it has a subdomain."""
    hostname = pod.hostname or pod.name
    if pod.subdomain:
        fqdn = f"{hostname}.{pod.subdomain}.{pod.namespace}.svc.{spec.network.cluster_domain}"
        return f"{ip}\t{fqdn}\t{hostname}\n"
    return f"{ip}\t{hostname}\n"


def _plan_container(container: Container) -> ContainerPlan:
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
