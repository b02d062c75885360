"""Cluster DNS: the ``kube-dns`` Service and its DNS pods (dnsmasq), the records of the Kubernetes DNS
specification, and every pod's resolver pointed at it. On by default (``addons: {dns: false}`` turns it off).

What it adds, as a real cluster's DNS add-on does (docs/dns.md has the whole story):

- **Manifests** (``manifests``): a ``kube-system`` Deployment ``kube-dns`` of 2 replicas (``replicas`` setting),
  spread over the nodes, whose ``dnsmasq`` container runs dnsmasq-nanny (``emu.addons.dns.nanny``: the front
  dnsmasq on port 53 and the records dnsmasq behind it, as kube-dns's ``dnsmasq`` container did), and the
  ``kube-dns`` Service at the tenth address of serviceCIDR (10.96.0.10), UDP and TCP 53, so that every lookup
  crosses kube-proxy's rules and the overlay.
- **Plan** (``plan``): the records (``emu.addons.dns.records``), shown by ``emu plan``, and each pod's
  ``resolv_conf`` as the kubelet writes it with ``--cluster-dns`` set (``emu.plan.resolv``).
- **Live** (``emu.addons.dns.live``): the records written into every DNS pod at start and after every change,
  served within a second without dropping a query.
"""

from dataclasses import dataclass, replace
from ipaddress import IPv4Network
from typing import Any, Dict, List, Tuple

from emu.addons.dns import live as _live
from emu.addons.dns.records import Record, all_records
from emu.features import Tool
from emu.plan.resolv import kubelet_resolv_conf

NAME = "dns"
DEFAULT_ENABLED = True
KERNEL_NEEDS = ()
TOOLS = (Tool("dnsmasq", "dnsmasq-base"), Tool("dig", "dnsutils"))
KINDS: Dict[str, str] = {}

NAMESPACE = "kube-system"
SERVICE = "kube-dns"
LABELS = {"k8s-app": "kube-dns"}
CONTAINER = "dnsmasq"
CONFIG_DIR = "/etc/k8s/dns/dnsmasq-nanny"  # where kube-dns mounted dnsmasq-nanny's configuration
#: The front dnsmasq's options (the container's arguments after ``--``): port 53 in the pod, no cache (every
#: answer is the records' current one), nothing read from the node (resolv.conf, /etc/hosts), the zone and the
#: reverse zone forwarded to the records dnsmasq (its servers-file, written by the nanny), every other name
#: answered NXDOMAIN by itself (``address=/#/``: never forwarded off the machine), and every query logged.
FRONT_OPTIONS = (
    "--port=53",
    "--cache-size=0",
    "--no-resolv",
    "--no-hosts",
    "--strict-order",
    "--address=/#/",
    "--user=root",
    "--log-queries",
    "--log-facility=-",
)


@dataclass(frozen=True)
class Settings:
    replicas: int = 2


@dataclass(frozen=True)
class DnsServer:
    """One DNS pod: where it runs and its address (a kube-dns endpoint)."""

    pod: str
    node: str
    ip: str


@dataclass(frozen=True)
class DnsPlan:
    """The add-on's plan fragment (``emu plan`` shows it): the zone, the Service, the DNS pods, and the records
    each of them serves (all serve the same)."""

    zone: str
    service: str
    service_ip: str
    outside: str
    servers: Tuple[DnsServer, ...]
    records: Tuple[Record, ...]


def default_settings() -> Settings:
    return Settings()


def read_settings(reader: Any, value: Dict[str, Any], path: tuple) -> Settings:
    data = reader.mapping(value, path, {"replicas"})
    replicas = reader.integer(data.get("replicas"), path + ("replicas",), 1, 10, 2)
    return Settings(replicas=replicas or 2)


def read_object(reader: Any, kind: str) -> Any:  # no kinds of its own
    return None


def service_ip(service_cidr: IPv4Network) -> str:
    """kube-dns's address: the tenth of serviceCIDR (kubeadm's choice: 10.96.0.10)."""
    return str(service_cidr.network_address + 10)


def manifests(settings: Settings, cluster: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The kube-dns Deployment and Service (read and validated like the user's objects)."""
    network = cluster["network"]
    metadata = {"name": SERVICE, "namespace": NAMESPACE, "labels": dict(LABELS)}
    ports = [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
    ]
    container = {
        "name": CONTAINER,
        "command": ["python3", "-m", "emu.addons.dns.nanny"],
        "args": [f"--config-dir={CONFIG_DIR}", "--", *FRONT_OPTIONS],
        "ports": ports,
        "volumeMounts": [{"name": "config-volume", "mountPath": CONFIG_DIR}],
    }
    spread = {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway"}
    pod_spec = {
        "dnsPolicy": "Default",  # the DNS pods themselves resolve nothing through cluster DNS
        "topologySpreadConstraints": [dict(spread, labelSelector={"matchLabels": dict(LABELS)})],
        "volumes": [{"name": "config-volume", "emptyDir": {}}],
        "containers": [container],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata,
        "spec": {
            "replicas": settings.replicas,
            "selector": {"matchLabels": dict(LABELS)},
            "template": {"metadata": {"labels": dict(LABELS)}, "spec": pod_spec},
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "selector": dict(LABELS),
            "clusterIP": service_ip(network.service_cidr),
            "ports": [
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            ],
        },
    }
    return [deployment, service]


def plan(spec: Any, plan: Any, settings: Settings) -> Any:
    """The records and the DNS pods (the fragment), and every pod's resolv.conf with cluster DNS in it."""
    zone = spec.network.cluster_domain
    service = next((s for s in plan.services if s.namespace == NAMESPACE and s.name == SERVICE), None)
    address = service.cluster_ip if service is not None else service_ip(IPv4Network(plan.service_cidr))
    endpoints = {e.pod for p in service.ports for e in p.endpoints} if service is not None else set()
    servers = tuple(DnsServer(p.name, p.node, p.ip) for p in plan.pods if p.name in endpoints)
    fragment = DnsPlan(
        zone=zone,
        service=f"{NAMESPACE}/{SERVICE}",
        service_ip=address,
        outside="NXDOMAIN, answered by the DNS pods themselves (nothing is forwarded off the machine)",
        servers=servers,
        records=all_records(plan, spec, zone),
    )
    pod_specs = {p.name: p for p in spec.pods}
    pods = []
    for pod in plan.pods:
        pod_spec = pod_specs.get(pod.name)
        if pod_spec is not None:
            conf = kubelet_resolv_conf(
                pod.namespace, pod_spec.dns_policy, pod.host_network, pod_spec.dns_config, address, zone
            )
            pod = replace(pod, resolv_conf=conf)
        pods.append(pod)
    addons = tuple((name, fragment if name == NAME else other) for name, other in plan.addons)
    return replace(plan, pods=tuple(pods), addons=addons)


def plan_text(fragment: DnsPlan) -> List[str]:
    """``emu plan``'s lines for cluster DNS: the Service, the DNS pods, the records they serve."""
    servers = ", ".join(f"{s.pod} {s.ip} on {s.node}" for s in fragment.servers) or "<none>"
    lines = [
        f"cluster DNS: zone {fragment.zone}, Service {fragment.service} {fragment.service_ip}:53 (UDP, TCP)",
        f"  DNS pods (dnsmasq): {servers}",
        f"  names outside the zone: {fragment.outside}",
        f"  records each DNS pod serves ({len(fragment.records)}):",
    ]
    lines += [f"    {record}" for record in fragment.records]
    return lines


start = _live.start
update = _live.update
