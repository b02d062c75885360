"""The pure function from a ClusterSpec to a Plan: same spec, same plan, byte for byte.

``build_plan(spec, backend=None)`` is the one place a run's choices are made: the flannel backend (the spec's,
or the override every verb's ``--backend`` gives) is chosen here and nowhere else, and every layer after this one
reads it from the Plan; so is kube-proxy's mode (the spec's ``network.kubeProxy.mode``, or ``--proxy-mode``). The
order of work mirrors a real cluster coming up: flannel leases a subnet per node and
writes subnet.env; the backend (its module, from ``emu.registry``) programs its devices, routes, neighbour and
FDB entries; the CNI bridge plugin wires each pod (``emu.plan.pods``); kube-proxy writes the Service rules
(``emu.plan.services``). Nothing here runs a command or imports Mininet.
"""

from dataclasses import replace
from ipaddress import IPv4Network
from typing import Any, Dict, Optional

from emu import registry
from emu.backends import BackendContext, Lease, pod_mtu
from emu.plan import flannel, names
from emu.plan.ipam import gateway, node_subnets
from emu.plan.model import Device, NodePlan, Plan, Route
from emu.plan.pods import UNDERLAY_DEV, plan_pods
from emu.plan.services import plan_services, with_rules
from emu.plan.underlay import node_link, node_network, node_routes, plan_underlay
from emu.spec.model import Backend, ClusterSpec, Node

BRIDGE = "cni0"


def build_plan(spec: ClusterSpec, backend: Optional[str] = None, proxy_mode: Optional[str] = None) -> Plan:
    """Compute the whole dataplane of ``spec``, on flannel backend ``backend`` when given (else the spec's), with
    kube-proxy in mode ``proxy_mode`` when given (else the spec's ``network.kubeProxy.mode``).

    Raises ``emu.registry.UnknownFeature`` for a backend or mode name the registry does not know.
    """
    if backend is not None and backend != spec.network.backend.type:
        spec = with_backend(spec, backend)
    if proxy_mode is not None and proxy_mode != spec.network.proxy_mode:
        registry.proxy_mode(proxy_mode)
        spec = replace(spec, network=replace(spec.network, proxy_mode=proxy_mode))
    net = spec.network
    module = registry.backend(net.backend.type)
    registry.proxy_mode(net.proxy_mode)  # an unknown mode fails here, before anything is planned
    mtu = pod_mtu(net.backend.mtu, module.OVERHEAD, spec.underlay.mtu)
    subnets = node_subnets(net.pod_cidr, net.subnet_len, len(spec.nodes))
    leases = tuple(
        Lease(node.name, node.ip, subnet, names.vtep_mac(spec.name, node.name))
        for node, subnet in zip(spec.nodes, subnets)
    )
    networks = {node.name: node_network(spec, node) for node in spec.nodes}
    # flannel derives the pod MTU from each node's own underlay device
    mtu_of = {name: pod_mtu(net.backend.mtu, module.OVERHEAD, node_mtu) for name, (_, node_mtu) in networks.items()}
    ctx = BackendContext(
        options=net.backend.options,
        pod_mtu=mtu,
        network=net.pod_cidr,
        underlay=spec.underlay.cidr,
        underlay_dev=UNDERLAY_DEV,
        underlay_mtu=spec.underlay.mtu,
        leases=leases,
        node_networks=tuple((name, cidr) for name, (cidr, _) in networks.items()) if spec.underlay.routed else (),
    )
    subnet_of: Dict[str, IPv4Network] = {lease.node: lease.subnet for lease in leases}
    pods = plan_pods(spec, subnet_of, mtu, mtu_of)
    services = plan_services(spec, pods)
    nodes = [
        _node_plan(spec, node, index, lease, module, ctx, mtu_of[node.name], networks[node.name][1])
        for index, (node, lease) in enumerate(zip(spec.nodes, leases))
    ]
    plan = Plan(
        cluster=spec.name,
        tag=names.cluster_tag(spec.name),
        backend=net.backend.type,
        backend_options=module.plan_options(net.backend.options),
        pod_cidr=str(net.pod_cidr),
        subnet_len=net.subnet_len,
        service_cidr=str(net.service_cidr),
        underlay_cidr=str(spec.underlay.cidr),
        underlay_mtu=spec.underlay.mtu,
        pod_mtu=mtu,
        switch="" if spec.underlay.routed else names.switch_name(spec.name),
        nodes=tuple(nodes),
        pods=tuple(pods),
        services=tuple(services),
        underlay=plan_underlay(spec),
        proxy_mode=net.proxy_mode,
        spec=spec,
    )
    return with_addons(with_rules(plan), spec)


def _node_plan(
    spec: ClusterSpec, node: Node, index: int, lease: Lease, module: Any, ctx: BackendContext, mtu: int, node_mtu: int
) -> NodePlan:
    """One node's plan: its link, flannel's subnet.env and the backend's devices, routes, neighbour and FDB
    entries (its rules come later, for every node at once: ``with_rules``)."""
    net = spec.network
    proxy = registry.proxy_mode(net.proxy_mode)
    node_ctx = ctx if mtu == ctx.pod_mtu else replace(ctx, pod_mtu=mtu, underlay_mtu=node_mtu)
    dataplane = module.plan_node(node_ctx, lease)
    return NodePlan(
        name=node.name,
        ip=str(node.ip),
        link=node_link(spec, node, index),
        subnet=str(lease.subnet),
        subnet_env=flannel.subnet_env(net.pod_cidr, lease.subnet, mtu),
        devices=(_bridge(lease.subnet, mtu),) + dataplane.devices,
        routes=dataplane.routes,
        neighbours=dataplane.neighbours,
        fdb=dataplane.fdb,
        sysctls=flannel.SYSCTLS + tuple(sorted(proxy.required_sysctls().items())),
        iptables="",  # with_rules: every node's rules, made from the Services at once
        udp=dataplane.udp,
        service_routes=(Route(str(net.service_cidr), UNDERLAY_DEV),),
        segment=node.segment,
        underlay_routes=node_routes(spec, node),
        failed_routes=dataplane.failed_routes,
    )


def with_addons(plan: Plan, spec: ClusterSpec) -> Plan:
    """``plan`` with every enabled add-on's fragment, in registry order: each add-on's ``plan(spec, plan,
    settings)`` returns the plan with its part added (its fragment under ``addons``, rules, files)."""
    plan = replace(plan, addons=tuple((name, None) for name, _settings in spec.addons))
    for name, settings in spec.addons:
        plan = registry.addon_hook(name, "plan")(spec, plan, settings)
    return plan


def with_backend(spec: ClusterSpec, backend: str) -> ClusterSpec:
    """``spec`` on another flannel backend, with that backend's default options (and the spec's pod MTU)."""
    module = registry.backend(backend)
    chosen = Backend(type=backend, mtu=spec.network.backend.mtu, options=module.default_options())
    return replace(spec, network=replace(spec.network, backend=chosen))


def _bridge(subnet: IPv4Network, mtu: int) -> Device:
    """cni0, as the CNI bridge plugin makes it: the subnet's .1 as gateway, and the MAC derived from it."""
    return Device(
        name=BRIDGE,
        kind="bridge",
        mtu=mtu,
        mac=names.mac_from_ip(gateway(subnet)),
        addresses=(f"{gateway(subnet)}/{subnet.prefixlen}",),
    )
