"""Services added to a running cluster (``kubectl apply`` of a Service), validated with the loader's rules.

``load_added_service`` reads one Service object as the loader reads it (``emu.spec.objects.read_service``) and
checks it against the cluster as it runs: its name is new in its namespace, a requested ``clusterIP`` is
inside serviceCIDR, not the kubernetes Service's or cluster DNS's and no running Service's (``taken_ips``: the
addresses the plan gave the running Services), a requested ``nodePort`` is free (``taken_node_ports``). Every
problem is located (file, line, field) and raised together as one SpecError; nothing is changed.
"""

from ipaddress import IPv4Address
from typing import Any, Dict, List, Mapping, Optional

from emu.spec.errors import Problem, SpecError
from emu.spec.load import check_cluster_ip, check_selector
from emu.spec.model import ClusterSpec, Service
from emu.spec.objects import read_service
from emu.spec.reader import Reader, type_name
from emu.spec.yamlsrc import Document


def load_added_service(
    manifest: Any,
    spec: ClusterSpec,
    document: Optional[Document] = None,
    taken_ips: Optional[Mapping[IPv4Address, str]] = None,
    taken_node_ports: Optional[Mapping[int, str]] = None,
) -> Service:
    """Validate one Service object added to the running cluster of ``spec``; raises SpecError.

    taken_ips: ClusterIP -> ``namespace/name`` of every running Service (allocated addresses included).
    taken_node_ports: node port -> Service name, likewise.
    """
    doc = document or Document("<manifest>", 0, manifest, {})
    problems: List[Problem] = []
    r = Reader(doc, problems, set())
    if not isinstance(manifest, dict) or manifest.get("kind") != "Service":
        got = type_name(manifest) if not isinstance(manifest, dict) else f"kind {manifest.get('kind')!r}"
        r.error(("kind",), f"expected a Service object, got {got}", "kind: Service, metadata, spec")
        raise SpecError(problems)
    read = read_service(r)
    if read is None or any(p.severity == "error" for p in problems):
        raise SpecError(problems or [Problem(doc.file, doc.line(()), "metadata", "no Service could be read")])
    service, _reader = read
    if any((s.namespace, s.name) == (service.namespace, service.name) for s in spec.services):
        r.error(("metadata", "name"), f"Service '{service.namespace}/{service.name}' already exists",
                "delete it first or pick another name")
    if (service.namespace, service.name) == ("default", "kubernetes"):
        r.error(("metadata", "name"), "default/kubernetes is the API server's own Service",
                "another name, or another namespace")
    if service.cluster_ip is not None:
        used: Dict[IPv4Address, str] = dict(taken_ips or {})
        check_cluster_ip(service, spec.network, used, r)
    ports = dict(taken_node_ports or {})
    for i, port in enumerate(service.ports):
        if port.node_port is not None and port.node_port in ports:
            r.error(("spec", "ports", i, "nodePort"), f"nodePort {port.node_port} is already used by Service "
                    f"{ports[port.node_port]}", "pick another in 30000-32767, or leave it out")
    check_selector(service, spec.pods, r)
    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    return service
