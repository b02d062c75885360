"""Services added to a running cluster (``kubectl apply`` of a Service), validated by the loader's own rules.

Pods added while a cluster runs are ``emu.spec.load.load_added_pod``'s. A Service is read like one in a file
(``emu.spec.objects.read_service``) and checked against the Services the cluster has: its name is free in its
namespace, its clusterIP and nodePort are free. The caller gives the spec with every running Service's address
and node ports written in (``pinned``), so that the plan keeps them as they are.
"""

from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Dict, List, Optional, Sequence, Tuple

from emu.spec.errors import Problem, SpecError
from emu.spec.load import _check_services
from emu.spec.model import ClusterSpec, Service
from emu.spec.objects import read_service
from emu.spec.reader import Reader, type_name
from emu.spec.yamlsrc import Document


def load_added_service(manifest: Any, spec: ClusterSpec, document: Optional[Document] = None) -> Service:
    """Validate one Service object added to the running cluster ``spec`` (its Services pinned: see ``pinned``).

    Raises SpecError with every problem found (nothing is changed then).
    """
    doc = document or Document("<manifest>", 0, manifest, {})
    problems: List[Problem] = []
    r = Reader(doc, problems, set())
    if not isinstance(manifest, dict) or manifest.get("kind") != "Service":
        what = type_name(manifest) if not isinstance(manifest, dict) else repr(manifest.get("kind"))
        r.error(("kind",), f"expected a Service object, got {what}", "kind: Service")
        raise SpecError(problems)
    read = read_service(r)
    if any(p.severity == "error" for p in problems) or read is None:
        raise SpecError(problems or [Problem(doc.file, doc.line(()), "metadata", "no Service could be read")])
    service = read[0]
    if any((s.namespace, s.name) == (service.namespace, service.name) for s in spec.services):
        r.error(("metadata", "name"), f"Service '{service.name}' already exists", "delete it first or pick another")
        raise SpecError(problems)
    existing: List[Tuple[Service, Reader]] = [(s, Reader(doc, [], set())) for s in spec.services]
    _check_services(existing + [(service, r)], spec.pods, spec.network)
    if any(p.severity == "error" for p in problems):
        raise SpecError(problems)
    return service


def pinned(spec: ClusterSpec, planned: Sequence[Any]) -> ClusterSpec:
    """``spec`` with every Service's cluster IP and node ports as ``planned`` (the running plan's ServicePlans) has
    them, so that adding or deleting a Service moves no other Service's address."""
    plans: Dict[Tuple[str, str], Any] = {(s.namespace, s.name): s for s in planned}
    services = []
    for service in spec.services:
        plan = plans.get((service.namespace, service.name))
        if plan is not None:
            if plan.cluster_ip not in ("None", ""):
                service = replace(service, cluster_ip=IPv4Address(plan.cluster_ip))
            node_ports = {(p.port, p.protocol): p.node_port for p in plan.ports}
            ports = [replace(p, node_port=node_ports.get((p.port, p.protocol)) or p.node_port) for p in service.ports]
            service = replace(service, ports=tuple(ports))
        services.append(service)
    return replace(spec, services=tuple(services))
