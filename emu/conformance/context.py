"""The state of one conformance run: the cluster, the probe objects it added, and how checks fail or skip.

A check is a function of a ``Context``: it raises ``Failed(evidence)`` or ``Skipped(reason)``, or returns (a
pass). ``Context.networking()`` adds the e2e suite's NetworkingTestConfig the first time a check needs it
(``emu.conformance.probes``); ``add`` and ``delete`` change the cluster as a check needs; ``cleanup`` removes
everything the run added, in one change, so a running cluster is left as it was found.
"""

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from emu.conformance import diagnose, probes
from emu.conformance.dialer import Outcome, Source
from emu.spec.yamlsrc import Document


class Failed(Exception):
    """The check failed; the message is its evidence."""


class Skipped(Exception):
    """The check cannot run here; the message says why."""


class Context:
    def __init__(self, cluster: Any, progress: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.progress = progress
        self.nodes: List[str] = [n.name for n in cluster.plan.nodes]
        self.added: List[Tuple[str, str, Optional[str]]] = []  # (kind, name, namespace), in order
        self.shared: List[Tuple[str, str, Optional[str]]] = []  # the networking config: kept between checks
        self._networking = False
        self._borrowed = False  # the networking config was the cluster's before the run: it stays
        self._paths: Dict[Tuple[str, str, str, int], str] = {}  # traces made, by (src, dst, proto, port)

    # ------------------------------------------------------------------------------------------ changes

    def add(self, manifests: Sequence[Dict[str, Any]]) -> None:
        """Create pods and Services in the cluster, in one change; they are removed by ``cleanup``."""
        taken = {n for _k, n, _ns in self.added}
        clash = [m["metadata"]["name"] for m in manifests if m["kind"] == "Pod"
                 and any(p.name == m["metadata"]["name"] for p in self.cluster.pods)]
        if clash:
            raise Failed(f"the cluster already has pods named {', '.join(clash)}: the conformance probes need them")
        documents = [Document("<emu conformance>", i, m, {}) for i, m in enumerate(manifests)]
        self.cluster.apply(documents)
        for m in manifests:
            key = (m["kind"].lower(), m["metadata"]["name"], m["metadata"].get("namespace"))
            if key[1] not in taken:
                self.added.append(key)

    def delete(self, kind: str, names: Sequence[str]) -> None:
        self.cluster.remove([(kind, name, probes.NAMESPACE) for name in names])
        self.added = [a for a in self.added if not (a[0] == kind and a[1] in names)]

    def cleanup(self, keep_shared: bool = False) -> None:
        """Remove every object this run added (pods first, then Services), in one change; with
        ``keep_shared``, all but the networking config (what one check added, between checks). A config the
        cluster had before the run is never removed."""
        going = [a for a in self.added if not ((keep_shared or self._borrowed) and a in self.shared)]
        present = [(k, n, ns) for k, n, ns in going if self._exists(k, n, ns)]
        if present:
            self.cluster.remove(sorted(present, key=lambda a: a[0] != "pod"))
        self.added = [a for a in self.added if a not in going]

    def _exists(self, kind: str, name: str, namespace: Optional[str]) -> bool:
        try:
            self.cluster.pod(name) if kind == "pod" else self.cluster.service(name, namespace)
        except KeyError:
            return False
        return True

    # ------------------------------------------------------------------------------------------ the config

    def networking(self) -> None:
        """The NetworkingTestConfig (netservers, test pods, NodePort Services), added once."""
        if self._networking:
            return
        config = probes.networking_config(self.nodes)
        present = [self._exists(m["kind"].lower(), m["metadata"]["name"], probes.NAMESPACE) for m in config]
        self.shared = [(m["kind"].lower(), m["metadata"]["name"], probes.NAMESPACE) for m in config]
        if all(present):  # the cluster has it already (a run before this one, kept): use it, and leave it
            self.progress("using the e2e networking test config the cluster has")
            self._borrowed = True
        else:
            self.progress("adding the e2e networking test config: a netserver per node, test pods, Services")
            self.add(config)
        self._networking = True

    def source(self, pod: str, port: int, label: str = "") -> Source:
        handle = self.cluster.pod(pod)
        return Source(pod, port, handle.ip, handle.node, label or pod)

    def test_source(self) -> Source:
        return self.source(probes.TEST_POD, probes.TEST_CONTAINER_HTTP_PORT)

    def host_source(self) -> Source:
        node = self.cluster.pod(probes.HOST_TEST_POD).node
        return self.source(probes.HOST_TEST_POD, probes.HOST_TEST_HTTP_PORT, f"{node} (host network)")

    def netservers(self) -> List[Any]:
        names = {probes.netserver_name(i) for i in range(len(self.nodes))}
        return sorted((p for p in self.cluster.pods if p.name in names), key=lambda p: p.name)

    def service(self, name: str) -> Any:
        return self.cluster.service(name, probes.NAMESPACE)

    def node_ip(self) -> str:
        return str(self.cluster.plan.nodes[0].ip)

    def node_port(self, service: str, protocol: str) -> int:
        port = next(p for p in self.service(service).ports if p.protocol == protocol)
        assert port.node_port is not None
        return int(port.node_port)

    # ------------------------------------------------------------------------------------------ evidence

    def explain(self, outcome: Outcome, source: Source, protocol: str, target_port: int,
                service: Optional[str] = None) -> str:
        """The outcome's evidence, with the cause of every missing response found in the live cluster: the
        path from the source to each missing pod (``emu trace``), and for a Service its rules in every node."""
        lines = [outcome.evidence]
        proto = "tcp" if protocol == "http" else "udp"
        where = source.node if source.pod == probes.HOST_TEST_POD else source.pod
        for missing in outcome.missing:
            if any(p.name == missing for p in self.cluster.pods):
                lines.append(self.path_cause(where, missing, proto, target_port))
        if service is not None and not outcome.ok:
            rules = diagnose.service_rules(self.cluster, probes.NAMESPACE, service)
            lines += [f"cause: {rule}" for rule in rules[:6]]
        return "\n".join(lines)

    def path_cause(self, src: str, pod: str, proto: str, port: int) -> str:
        """One line: why packets from ``src`` do not reach ``pod`` (a trace, made once per run)."""
        key = (src, pod, proto, port)
        if key not in self._paths:
            self._paths[key] = diagnose.path(self.cluster, src, pod, proto, port)
        reason = self._paths[key]
        return f"cause: {reason}" if reason else f"the path {src} -> {pod} works: not the cause"
