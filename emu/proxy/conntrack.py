"""The connection-tracking entries kube-proxy deletes when a UDP Service's endpoints change, in every mode.

UDP has no connection to close: a client that keeps sending to a ClusterIP keeps its conntrack entry, and with it
the endpoint the first packet was DNATed to, even after that endpoint is gone. kube-proxy therefore deletes, after
each sync, the entries its change made stale (``pkg/proxy/conntrack/cleanup.go``, v1.30-v1.31,
``CleanStaleEntries``):

* a UDP endpoint removed from a service port that still exists: the entries to the ClusterIP whose reply comes
  from that endpoint (``conntrack -D -p udp --orig-dst CLUSTER-IP --reply-src ENDPOINT-IP``) and, for a NodePort,
  those to the nodePort whose reply comes from it (``--orig-port-dst NODE-PORT --reply-src ENDPOINT-IP``);
* a UDP service port that had no endpoints and now has some: every entry to its ClusterIP (``--orig-dst``) and
  nodePort (``--orig-port-dst``), which were made while nothing answered;
* a UDP service port that is gone: every entry to its ClusterIP.

``stale_flows(old, new)`` computes these filters purely from the Services before and after a change; the apply
layer runs ``Flows.argv()`` in every node (a node's conntrack table is its network namespace's).
"""

from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

from emu.proxy.services import CheckedPort, Service, checked_ports

__all__ = ["Flows", "stale_flows"]


@dataclass(frozen=True)
class Flows:
    """Conntrack entries to delete: those of ``protocol`` matching every filter given (empty: any)."""

    protocol: str
    orig_dst: str = ""
    orig_port_dst: int = 0
    reply_src: str = ""

    def argv(self) -> List[str]:
        """The ``conntrack -D`` command deleting them (it exits 1 when none matched)."""
        argv = ["conntrack", "-D", "-p", self.protocol]
        if self.orig_dst:
            argv += ["--orig-dst", self.orig_dst]
        if self.orig_port_dst:
            argv += ["--orig-port-dst", str(self.orig_port_dst)]
        if self.reply_src:
            argv += ["--reply-src", self.reply_src]
        return argv

    def __str__(self) -> str:
        return " ".join(self.argv()[2:])


def _udp_ports(services: Sequence[Service]) -> Dict[Tuple[str, str, str], CheckedPort]:
    udp = [s for s in services if any(p.protocol == "UDP" for p in s.ports)]
    return {
        (p.service.namespace, p.service.name, p.port.name): p for p in checked_ports(udp) if p.port.protocol == "UDP"
    }


def stale_flows(old: Sequence[Service], new: Sequence[Service]) -> Tuple[Flows, ...]:
    """The conntrack entries kube-proxy deletes after the Services went from ``old`` to ``new`` (see the module
    docstring), without repeats, in a stable order."""
    before, after = _udp_ports(old), _udp_ports(new)
    out: List[Flows] = []
    for key, port in after.items():
        previous = before.get(key)
        cluster_ip, node_port = port.service.cluster_ip, port.node_port
        had = previous.endpoints if previous is not None else ()
        if not had and port.endpoints:  # newly active: entries made while it had no endpoint
            out.append(Flows("udp", orig_dst=cluster_ip))
            if node_port:
                out.append(Flows("udp", orig_port_dst=node_port))
        kept = {e.address for e in port.endpoints}
        for gone in sorted({e.ip for e in had if e.address not in kept}):
            out.append(Flows("udp", orig_dst=cluster_ip, reply_src=gone))
            if node_port:
                out.append(Flows("udp", orig_port_dst=node_port, reply_src=gone))
    for key, port in before.items():
        if key not in after:
            out.append(Flows("udp", orig_dst=port.service.cluster_ip))
    return tuple(dict.fromkeys(out))
