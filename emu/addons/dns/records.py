"""Cluster DNS records, pure: what the "Kubernetes DNS-Based Service Discovery" specification (1.1.0) asks for,
computed from the plan, and the dnsmasq files that serve exactly them.

For zone ``<zone>`` (``network.clusterDomain``):

- ``dns-version.<zone>`` TXT ``1.1.0``;
- a Service with a cluster IP: ``<svc>.<ns>.svc.<zone>`` A the cluster IP, its PTR, and for each named port
  ``_<port>._<proto>.<svc>.<ns>.svc.<zone>`` SRV ``0 100 <port> <svc>.<ns>.svc.<zone>``;
- a headless Service: ``<svc>.<ns>.svc.<zone>`` A every ready endpoint (none: the name does not exist, NXDOMAIN),
  ``<hostname>.<svc>.<ns>.svc.<zone>`` A and its PTR per endpoint, where the hostname is the pod's ``hostname``
  when its ``subdomain`` is the Service (a StatefulSet's pods), else the dashed address (``10-244-1-5``, as
  CoreDNS names them), and SRV per named port and endpoint, to that name;
- an ExternalName Service: ``<svc>.<ns>.svc.<zone>`` CNAME the external name;
- every pod: ``<a-b-c-d>.<ns>.pod.<zone>`` A its address (the deprecated record the specification still
  requires, given here only for pods that exist, as CoreDNS's ``pods verified``), with a PTR when its address
  has none from a Service.

Every endpoint is ready here (emu has no readiness probes: a pod in the plan is up). dnsmasq answers a PTR with the
first name a hosts file gives an address, so the hosts file lists the PTR names first; the plan's PTR records
are exactly those answers.
"""

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any, Dict, Iterable, List, Tuple

SCHEMA_VERSION = "1.1.0"
TTL = 5  # seconds, CoreDNS's default; the front dnsmasq keeps no cache


@dataclass(frozen=True)
class Record:
    """One resource record: ``name`` (absolute, no trailing dot), ``type`` (A, PTR, SRV, CNAME, TXT) and its data
    as dig prints it (SRV: ``priority weight port target``)."""

    name: str
    type: str
    data: str

    def __str__(self) -> str:
        return f"{self.name}. {TTL} IN {self.type} {self.data}"


def reverse_name(ip: str) -> str:
    return IPv4Address(ip).reverse_pointer


def dashed(ip: str) -> str:
    return ip.replace(".", "-")


def service_records(service: Any, endpoints: Iterable[Tuple[Any, str]], zone: str) -> List[Record]:
    """The records of one Service (a ServicePlan); ``endpoints``: (pod plan, its DNS hostname) of the ready pods
    it selects, for a headless one."""
    fqdn = f"{service.name}.{service.namespace}.svc.{zone}"
    if service.external_name:
        return [Record(fqdn, "CNAME", service.external_name + ".")]
    records: List[Record] = []
    if service.cluster_ip not in ("None", ""):
        records += [Record(fqdn, "A", service.cluster_ip), Record(reverse_name(service.cluster_ip), "PTR", fqdn + ".")]
        for port in service.ports:
            if port.name:
                srv = f"_{port.name}._{port.protocol.lower()}.{fqdn}"
                records.append(Record(srv, "SRV", f"0 100 {port.port} {fqdn}."))
        return records
    ready = sorted(endpoints, key=lambda e: IPv4Address(e[0].ip))
    for pod, _hostname in ready:
        records.append(Record(fqdn, "A", pod.ip))
    for pod, hostname in ready:
        name = f"{hostname}.{fqdn}"
        records += [Record(name, "A", pod.ip), Record(reverse_name(pod.ip), "PTR", name + ".")]
    for port in service.ports:
        if not port.name:
            continue
        srv = f"_{port.name}._{port.protocol.lower()}.{fqdn}"
        target_port = {e.pod: e.port for e in port.endpoints}
        for pod, hostname in ready:
            if pod.name in target_port:
                records.append(Record(srv, "SRV", f"0 100 {target_port[pod.name]} {hostname}.{fqdn}."))
    return records


def pod_records(pods: Iterable[Any], zone: str, has_ptr: Iterable[str]) -> List[Record]:
    """``<a-b-c-d>.<ns>.pod.<zone>`` for every pod with an address of its own (not hostNetwork)."""
    records: List[Record] = []
    named = set(has_ptr)
    for pod in sorted(pods, key=lambda p: IPv4Address(p.ip)):
        if pod.host_network:
            continue
        name = f"{dashed(pod.ip)}.{pod.namespace}.pod.{zone}"
        records.append(Record(name, "A", pod.ip))
        if pod.ip not in named:
            named.add(pod.ip)
            records.append(Record(reverse_name(pod.ip), "PTR", name + "."))
    return records


def all_records(plan: Any, spec: Any, zone: str) -> Tuple[Record, ...]:
    """Every record of the cluster ``plan`` (``spec`` gives the Services' selectors and the pods' labels)."""
    pods = {p.name: p for p in plan.pods}
    pod_specs = {p.name: p for p in spec.pods}
    selectors = {(s.namespace, s.name): dict(s.selector) for s in spec.services}
    records = [Record(f"dns-version.{zone}", "TXT", f'"{SCHEMA_VERSION}"')]
    for service in plan.services:
        selector = selectors.get((service.namespace, service.name), {})
        endpoints = []
        if service.cluster_ip == "None" and selector:
            for pod in pods.values():
                labels = pod_specs[pod.name].label_map if pod.name in pod_specs else {}
                if pod.namespace == service.namespace and all(labels.get(k) == v for k, v in selector.items()):
                    endpoints.append((pod, _endpoint_hostname(pod, service.name)))
        records += service_records(service, endpoints, zone)
    ptr_ips = [_ip_of_reverse(r.name) for r in records if r.type == "PTR"]
    records += pod_records(pods.values(), zone, ptr_ips)
    return tuple(records)


def _endpoint_hostname(pod: Any, service: str) -> str:
    """The endpoint's hostname: the pod's own when its subdomain is this Service, else its dashed address."""
    if pod.subdomain == service and pod.hostname:
        return pod.hostname
    return dashed(pod.ip)


def _ip_of_reverse(name: str) -> str:
    return ".".join(reversed(name.split(".")[:4]))


# ------------------------------------------------------------------------------------------ dnsmasq's files


def hosts_file(records: Iterable[Record]) -> str:
    """The A records as a hosts file, each address's PTR name first (dnsmasq answers a PTR with it)."""
    records = list(records)
    ptr_of: Dict[str, str] = {_ip_of_reverse(r.name): r.data.rstrip(".") for r in records if r.type == "PTR"}
    first: List[str] = []
    rest: List[str] = []
    for r in records:
        if r.type != "A":
            continue
        line = f"{r.data}\t{r.name}"
        (first if ptr_of.get(r.data) == r.name else rest).append(line)
    return "".join(line + "\n" for line in dict.fromkeys(first + rest))


def dnsmasq_conf(records: Iterable[Record], zone: str) -> str:
    """The records dnsmasq reads only from its configuration (SRV, CNAME, TXT), and the zones it answers alone
    (``local=``: a name it has no record of is NXDOMAIN, never forwarded)."""
    lines = [f"local=/{zone}/", "local=/in-addr.arpa/", f"local-ttl={TTL}"]
    for r in records:
        if r.type == "SRV":
            priority, weight, port, target = r.data.split()
            lines.append(f"srv-host={r.name},{target.rstrip('.')},{port},{priority},{weight}")
        elif r.type == "CNAME":
            lines.append(f"cname={r.name},{r.data.rstrip('.')}")
        elif r.type == "TXT":
            lines.append(f"txt-record={r.name},{r.data.strip(chr(34))}")
    return "\n".join(lines) + "\n"
