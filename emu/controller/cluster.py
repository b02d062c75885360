"""``emu.Cluster``: a cluster built from one Plan, with handles on its parts, changed while it runs.

    with emu.Cluster.from_file("topologies/two_nodes.yaml", backend="host-gw") as cluster:
        web = cluster.pod("web-0")
        print(cluster.pod("client-0").exec(["curl", "-s", f"http://{web.ip}:8080/"]).stdout)

The plan is made once (``Cluster.from_file``, or by the caller: ``Cluster(build_plan(spec, backend))``) and the
apply layer (``emu.apply.live``) builds exactly it. Changes while the cluster runs go one way: the spec layer
validates them (``load_added_pod``), ``emu.plan.changes.replan`` computes the new plan purely, and the live
cluster applies the difference. The same happens, unasked, when a pod's pause process dies (its endpoints go, as
kube-proxy's do when the kubelet reports it); see docs/services.md.
"""

import os
import re
import signal
import threading
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from emu import registry
from emu.apply.handles import Node, Pod, Router, Service
from emu.apply.impair import EndReport
from emu.apply.live import LiveCluster, Progress
from emu.apply.processes import sigterm_to_exit
from emu.controller.placements import Placement, placements
from emu.errors import EmuError
from emu.graph import render as render_graph
from emu.plan import impair
from emu.plan.build import build_plan
from emu.plan.changes import diff, replan
from emu.plan.model import Plan
from emu.spec.added import load_added_service
from emu.spec.changes import apply_object, delete_object, kind_of
from emu.spec.errors import Problem
from emu.spec.load import load, load_added_pod
from emu.spec.model import ClusterSpec
from emu.spec.yamlsrc import Document


class LinkReport(list):  # type: ignore[type-arg]
    """What ``Cluster.link`` did: the ends (``EndReport``) as the tools show them now, and notes on what Kubernetes
    would show. ``str()`` gives the text the CLI prints."""

    def __init__(self, ends: Sequence[EndReport], notes: Sequence[str] = ()) -> None:
        super().__init__(ends)
        self.notes = list(notes)

    def __str__(self) -> str:
        return "\n".join([end.text() for end in self] + [f"note: {n}" for n in self.notes])


class Cluster:
    """A cluster built from a Plan: use as a context manager, or call start() and stop()."""

    def __init__(self, plan: Plan, progress: Optional[Progress] = None) -> None:
        if plan.spec is None:
            raise EmuError("the plan carries no spec: make it with emu.plan.build.build_plan(spec)")
        self.live = LiveCluster(plan, progress=progress, on_pod_died=self._pod_died)
        self.spec: ClusterSpec = plan.spec
        self._previous_sigterm: Any = None

    @classmethod
    def from_file(
        cls,
        path: Union[str, "os.PathLike[str]", Sequence[str]],
        backend: Optional[str] = None,
        progress: Optional[Progress] = None,
        proxy_mode: Optional[str] = None,
    ) -> "Cluster":
        """Load and validate a topology (plus manifests) and plan it, on ``backend`` and with kube-proxy in
        ``proxy_mode`` when given; nothing is built yet. Raises SpecError for a bad topology."""
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        spec, _warnings = load([str(p) for p in paths])
        return cls(build_plan(spec, backend=backend, proxy_mode=proxy_mode), progress=progress)

    # ----------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Cluster":
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, sigterm_to_exit)
        try:
            self.start()
        except BaseException:
            self._restore_sigterm()
            raise
        return self

    def __exit__(self, *exc_info: Any) -> None:
        try:
            self.stop()
        finally:
            self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def start(self) -> "Cluster":
        """Build the cluster (undone again if any step fails: BuildError names it)."""
        self.live.start()
        return self

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed build."""
        self.live.stop()

    # --------------------------------------------------------------------------------------------- accessors

    @property
    def plan(self) -> Plan:
        """The plan the cluster runs now (it changes as pods come and go)."""
        return self.live.plan

    @property
    def name(self) -> str:
        return self.plan.cluster

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def proxy_mode(self) -> str:
        """kube-proxy's mode in this cluster (``iptables``, ``nftables``)."""
        return self.plan.proxy_mode

    @property
    def net(self) -> Any:
        """The Mininet network underneath (its hosts are the nodes), for Mininet-style use and its CLI."""
        return self.live.net

    @property
    def state(self) -> Any:
        """What the cluster owns, as ``emu clean`` would read it (``emu.apply.state.ClusterState``)."""
        return self.live.state

    @property
    def build_seconds(self) -> float:
        return self.live.build_seconds

    @property
    def rule_load_seconds(self) -> Dict[str, float]:
        """Seconds each node's rules (iptables-restore, nft -f) took to load when the cluster was built."""
        return dict(self.live.rule_load_seconds)

    @property
    def last_rule_update(self) -> Dict[str, Tuple[float, float]]:
        """The last change's rule loading: node -> (time.monotonic() at its start, at its end)."""
        return dict(self.live.last_rule_update)

    @property
    def problems(self) -> List[str]:
        """What has gone wrong since the build (dead daemons, dead pods)."""
        return self.live.problems

    def check_health(self) -> List[str]:
        """What has gone wrong since the build (dead daemons, dead pods); empty when all is well."""
        return list(self.live.problems)

    @property
    def nodes(self) -> List[Node]:
        return list(self.live.nodes.values())

    @property
    def pods(self) -> List[Pod]:
        return [p for p in self.live.pods.values() if not p.deleted]

    def node(self, name: str) -> Node:
        return self.live.node(name)

    @property
    def routers(self) -> List[Router]:
        """The routers of a routed underlay (none on the single switch)."""
        return list(self.live.routers.values())

    def router(self, name: str) -> Router:
        return self.live.router(name)

    def pod(self, name: str) -> Pod:
        return self.live.pod(name)

    def former_pod(self, name: str) -> Optional[Pod]:
        """The pod ``name`` if it was deleted or died while the cluster ran (its handle still knows its address),
        else None."""
        pod = self.live.pods.get(name)
        return pod if pod is not None and not pod.alive else None

    @property
    def services(self) -> List[Service]:
        return self.live.services

    def service(self, name: str, namespace: Optional[str] = None) -> Service:
        """The Service ``name`` (of ``namespace``; without one, of default, else of any namespace)."""
        candidates = [s for s in self.plan.services if s.name == name]
        chosen = [s for s in candidates if s.namespace == (namespace or "default")] or (
            candidates if namespace is None else [])
        if chosen:
            return Service(chosen[0])
        known = ", ".join(f"{s.namespace}/{s.name}" for s in self.plan.services)
        raise KeyError(f"no Service named {name!r}{f' in {namespace}' if namespace else ''} (services: {known})")

    def resolve(self, word: str, in_pod: Optional[str] = None) -> str:
        """The address behind a pod, node or Service name (names are left as they are otherwise), also in a URL
        or an address: ``web/hostname``, ``web:80/hostname``, ``http://web/clientip`` name ``web``.

        in_pod: the pod the word is used in; when it resolves names through cluster DNS, Service names are left
        for its resolver (as in a real pod), and only pod and node names (which DNS does not know) are replaced.
        """
        match = re.match(r"^([a-z]+://)?([a-z0-9][a-z0-9.-]*)([:/].*)?$", word)
        if match and match.group(2) != word:
            address = self._address(match.group(2), in_pod)
            if address != match.group(2):
                return (match.group(1) or "") + address + (match.group(3) or "")
        return self._address(word, in_pod)

    def _address(self, name: str, in_pod: Optional[str] = None) -> str:
        pod = self.live.pods.get(name)
        if pod is not None and not pod.deleted:
            return pod.ip
        if name in self.live.nodes:
            return self.live.nodes[name].ip
        if name in self.live.routers:
            return self.live.routers[name].ip
        if in_pod is not None and self._uses_cluster_dns(in_pod):
            return name
        for s in self.plan.services:
            if s.name == name and s.cluster_ip not in ("None", ""):  # headless, ExternalName: DNS names only
                return s.cluster_ip
        return name

    def graph(self, output_format: str = "html", node: Optional[str] = None, trace: Any = None) -> str:
        """A picture of the cluster as it is now (``emu graph``): ``output_format`` html (one self-contained page,
        details on hover), svg, dot or mermaid; only ``node`` when given; with ``trace`` (what ``emu.trace.trace``
        returns) drawn on it: the hops highlighted, and where the packet was last seen."""
        return render_graph(self.plan, output_format, node, trace)

    def _uses_cluster_dns(self, pod_name: str) -> bool:
        """Whether the pod's resolver is a Service of the cluster (cluster DNS), which then resolves names."""
        pod = self.live.pods.get(pod_name)
        if pod is None or not pod.plan.resolv_conf:
            return False
        servers = {line.split()[1] for line in pod.plan.resolv_conf.splitlines() if line.startswith("nameserver ")}
        return any(s.cluster_ip in servers for s in self.plan.services)

    def placements(self) -> List[Placement]:
        """The standard paths (same-pod, same-node, cross-node, pod-to-service, node-to-pod, node-to-node) this
        cluster's pods make possible; see emu.controller.placements."""
        return list(placements(self))

    # ------------------------------------------------------------------------------------------ changes

    def delete_pod(self, name: str) -> None:
        """Delete a pod as the kubelet would: kube-proxy drops it from every Service, then its processes stop."""
        self.pod(name)  # a KeyError naming the live pods when there is none
        self._change(replace(self.spec, pods=tuple(p for p in self.spec.pods if p.name != name)))

    def add_pod(self, manifest: Dict[str, Any], document: Optional[Document] = None) -> Pod:
        """Create a pod in the running cluster, as ``kubectl apply`` of a Pod object would.

        It is validated with the loader's rules, placed on ``spec.nodeName`` or by the same spread scheduler,
        given the lowest free address of its node's subnet, and built like the others (pause, veth on cni0,
        containers). Once its declared ports listen, every Service that selects it gets it as an endpoint (every
        node's rules are reloaded). ``spec`` and ``plan`` then include it.

        manifest: a Kubernetes Pod object as a dict, as loaded from YAML.
        document: the YAML document it comes from (``emu.spec.yamlsrc``), so that errors name its file and line.
        Raises SpecError (nothing is created) for an invalid manifest, BuildError (what was made is removed
        again) when the kernel refuses a step.
        """
        with self.live.lock:
            if not self.live.running:
                raise EmuError("the cluster is not running: cannot add a pod")
            pod = load_added_pod(manifest, self.spec, document)
            self._change(replace(self.spec, pods=self.spec.pods + (pod,)))
            return self.live.pod(pod.name)

    def add_service(self, manifest: Dict[str, Any], document: Optional[Document] = None) -> Service:
        """Create a Service in the running cluster, as ``kubectl apply`` of a Service would: validated with the
        loader's rules (a requested clusterIP or nodePort must be free), given a ClusterIP (and node ports) as
        the API server gives them, and every node's kube-proxy rules reloaded with it. Containers started from
        now on get its variables (those running keep theirs, as in Kubernetes). Raises SpecError."""
        self.apply([document or _document(manifest)])
        service = manifest.get("metadata", {}) if isinstance(manifest, dict) else {}
        return self.service(str(service.get("name")), str(service.get("namespace") or "default"))

    def apply(self, documents: Sequence[Document], warnings: Optional[List[Problem]] = None) -> List[str]:
        """``kubectl apply -f``: create or change the objects of ``documents``, in one change, and return a line per
        object (``pod "web-1" created (10.244.2.3 on node-2)``, ``networkpolicy "default/deny" configured``).

        Pods are created (or, when they exist, relabeled: the rest of a running pod is immutable); Services are
        created; the kinds add-ons read (NetworkPolicy, Namespace) are created or replaced, and every node's rules
        follow. Deployments are read when the cluster is built. Every object is validated first: a SpecError for
        any invalid one, and nothing changes. ``warnings``, when given, collects the warnings found.
        """
        with self.live.lock:
            if not self.live.running:
                raise EmuError("the cluster is not running: cannot apply objects")
            spec = self.spec
            lines: List[str] = []
            ips = {
                IPv4Address(s.cluster_ip): f"{s.namespace}/{s.name}"
                for s in self.plan.services
                if s.cluster_ip not in ("None", "")  # headless and ExternalName Services have none
            }
            node_ports = {p.node_port: s.name for s in self.plan.services for p in s.ports if p.node_port}
            for document in documents:
                if isinstance(document.data, dict) and document.data.get("kind") == "Service":
                    svc = load_added_service(document.data, spec, document, ips, node_ports)
                    spec = replace(spec, services=spec.services + (svc,))
                    if svc.cluster_ip is not None:
                        ips[svc.cluster_ip] = f"{svc.namespace}/{svc.name}"
                    node_ports.update({p.node_port: svc.name for p in svc.ports if p.node_port})
                    lines.append(f'service "{svc.namespace}/{svc.name}" created')
                    continue
                spec, line, found = apply_object(spec, document)  # a Pod, or an object of an add-on's kind
                if warnings is not None:
                    warnings.extend(found)
                lines.append(line)
            if spec is not self.spec:
                self._change(spec)
        return [self._created(line) for line in lines]

    def _created(self, line: str) -> str:
        """An apply's line, with what the cluster gave a created pod (address, node) or Service (ClusterIP)."""
        if not line.endswith(" created"):
            return line
        kind, name = line[: -len(" created")].split(" ", 1)
        name = name.strip('"')
        if kind == "pod":
            pod = self.live.pod(name)
            return f"{line} ({pod.ip} on {pod.node})"
        if kind == "service":
            namespace, _, short = name.partition("/")
            return f"{line} ({self.service(short, namespace).cluster_ip})"
        return line

    def delete(self, kind: str, name: str, namespace: Optional[str] = None) -> str:
        """``kubectl delete KIND NAME [-n NAMESPACE]``: a pod, a Service, or an object of a kind an add-on reads (a
        NetworkPolicy, a Namespace: every node's rules follow). Returns a line saying what was deleted."""
        return self.remove([(kind, name, namespace)])[0]

    def delete_service(self, name: str, namespace: str = "default") -> None:
        """Delete a Service: every node's kube-proxy rules lose it; its ClusterIP is free again."""
        self.remove([("service", name, namespace)])

    def remove(self, objects: Sequence[Tuple[str, str, Optional[str]]]) -> List[str]:
        """Delete several objects, ``(kind, name, namespace or None)`` each, in one change (each of the kinds
        ``delete`` takes); a line per object. Raises KeyError for a missing pod or Service, SpecError for a
        missing object of an add-on's kind, EmuError for a kind a running cluster cannot lose; nothing changes."""
        with self.live.lock:
            spec = self.spec
            lines: List[str] = []
            for kind, name, namespace in objects:
                resolved = "Service" if kind.lower() in ("service", "services", "svc") else kind_of(kind)
                if resolved == "Pod":
                    self.pod(name)  # a KeyError naming the live pods when there is none
                    spec = replace(spec, pods=tuple(p for p in spec.pods if p.name != name))
                    lines.append(f'pod "{name}" deleted')
                elif resolved == "Service":
                    ns = namespace or "default"
                    self.service(name, ns)  # a KeyError naming the Services when there is none
                    spec = replace(spec, services=tuple(
                        s for s in spec.services if (s.namespace, s.name) != (ns, name)))
                    lines.append(f'service "{name}" deleted')
                elif resolved is not None:
                    spec, line = delete_object(spec, resolved, name, namespace)
                    lines.append(line)
                else:
                    kinds = ", ".join(["pod", "service"] + sorted(k.lower() for k in registry.addon_kinds()))
                    raise EmuError(f"cannot delete a {kind} from a running cluster (these can be: {kinds})")
            self._change(spec)
        return lines

    def link(
        self,
        target: str,
        bw: Any = impair.UNCHANGED,
        delay: Any = impair.UNCHANGED,
        jitter: Any = impair.UNCHANGED,
        loss: Any = impair.UNCHANGED,
        up: Optional[bool] = None,
        reset: bool = False,
        show: bool = True,
    ) -> LinkReport:
        """Impair an underlay link while the cluster runs, in place (no rebuild); the ends as tc/ip show them.

        target: ``NODE``, ``ROUTER`` or ``SEGMENT`` (all its link ends), or ``A:B`` (A's end of its link to B;
            the single switch's segment is ``switch``). What an end is given shapes what it sends.
        bw: Mbit/s (HTB); delay, jitter: like "5ms" (netem: refused without it, ImpairRefused); loss: percent
            (netem, else random drop rules); None clears one; up: False pulls the link's cable, True plugs it
            back; reset: back to the topology's shaping first; show: False skips reading the ends back from the
            kernel (for a change timed to the millisecond: the report then says what was asked).
        Raises ImpairError (bad input), ImpairRefused (this kernel cannot), EmuError (not running).
        A node cut off keeps its pods and their Service endpoints: there is no control plane to notice (in
        Kubernetes the node turns NotReady after about 40 s and its pods' endpoints are removed then).
        """
        return self.change_link(target, impair.change_of(bw, delay, jitter, loss, up, reset), show)

    def change_link(self, target: str, change: impair.Change, show: bool = True) -> LinkReport:
        """``link`` with the change already parsed (``emu.plan.impair.parse_change`` of the CLI's words); an empty
        change only reports."""
        reports = self.live.link(target, change, show)
        return LinkReport(reports, self._cut_off_notes(reports))

    def _cut_off_notes(self, reports: Sequence[EndReport]) -> List[str]:
        """What Kubernetes would show for every node whose link is down (and what it would not, here)."""
        notes = []
        down = sorted({r.end.owner if r.end.kind == "node" else r.end.peer for r in reports if not r.impairment.up}
                      & set(self.live.nodes))
        for node in down:
            pods = [p.name for p in self.pods if p.node == node and not p.plan.host_network]
            services = sorted({s.name for s in self.plan.services for port in s.ports for e in port.endpoints
                               if e.node == node})
            note = f"node {node} is cut off: its pods ({', '.join(pods) or 'none'}) are unreachable from the others"
            if services:
                which = f"Service {services[0]} keeps its" if len(services) == 1 else \
                    f"Services {', '.join(services)} keep their"
                note += (f"; {which} endpoints on it (no control plane here: in Kubernetes the node would turn "
                         "NotReady after about 40 s and those endpoints be removed)")
            notes.append(note)
        return notes

    def _change(self, spec: ClusterSpec) -> None:
        """Re-plan for ``spec`` and have the live cluster apply the difference; ``spec`` is kept once done."""
        with self.live.lock:
            if not self.live.running:
                raise EmuError("the cluster is not running")
            old = self.live.plan
            new = replan(old, spec)
            self.live.apply(diff(old, new), new)
            self.spec = spec

    def _pod_died(self, name: str) -> None:
        """The watcher saw a pod's pause process die: the pod is gone, and with it its endpoints."""
        if any(p.name == name for p in self.spec.pods):
            self._change(replace(self.spec, pods=tuple(p for p in self.spec.pods if p.name != name)))


def _document(manifest: Any) -> Document:
    return Document("<manifest>", 0, manifest, {})
