"""Faults of flannel's dataplane in one node: a pod MTU too large for the overlay, a missing FDB or neighbour
entry, a deleted route, a frozen backend daemon, strict reverse-path filtering on an asymmetric path.

Each is what an operator meets in a real cluster: a CNI configuration that gives pods the underlay's MTU, a
flanneld that failed to program one peer, a route someone deleted, a daemon stopped by a debugger or a cgroup
freezer, an RHEL-like ``rp_filter=1`` once a leftover route makes a path asymmetric.
"""

import os
import signal
import time
from ipaddress import IPv4Network
from typing import TYPE_CHECKING, List

from emu import registry
from emu.faults.model import Fault, Scenario, node_json, pod_mtu, route_line_matches, sysctl
from emu.plan.model import Plan, Route

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["PodMtu", "MissingFdb", "MissingNeighbour", "MissingRoute", "StoppedDaemon", "StrictRpFilter"]


class PodMtu(Scenario):
    name = "pod-mtu"
    summary = "the pods of one node have an MTU larger than the overlay allows (the underlay's, or jumbo frames)"
    symptom = "small packets pass, full-size ones from that node's pods do not (pings with -M do, TCP stalls)"
    needs = "no node has a pod with its own network"

    def targets(self, plan: Plan) -> List[Fault]:
        big = plan.underlay_mtu if plan.pod_mtu < plan.underlay_mtu else plan.underlay_mtu + 7500
        return [Fault(self.name, n.name, f"pod MTU {big}", detail=(("mtu", str(big)), ("planned", str(plan.pod_mtu))))
                for n in plan.nodes if any(not p.host_network for p in plan.pods_on(n.name))]

    def _pods(self, cluster: "Cluster", fault: Fault):  # type: ignore[no-untyped-def]
        return [p.plan for p in cluster.pods if p.node == fault.node and not p.plan.host_network]

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        for pod in self._pods(cluster, fault):
            cluster.node(fault.node).exec(["ip", "link", "set", pod.host_veth, "mtu", fault.get("mtu")])
            cluster.pod(pod.name).exec(["ip", "link", "set", pod.ifname, "mtu", fault.get("mtu")])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        found = []
        for pod in self._pods(cluster, fault):
            live = {link.get("ifname"): link.get("mtu") for link in node_json(cluster, fault.node, [
                "ip", "-j", "link", "show", "dev", pod.host_veth])}
            if live.get(pod.host_veth) != pod.mtu:
                found.append(f"{fault.node}: {pod.host_veth} (pod {pod.name}'s veth) has MTU {live.get(pod.host_veth)}"
                             f", planned {pod.mtu}")
            inside = pod_mtu(cluster, pod.name, pod.ifname)
            if inside != pod.mtu:
                found.append(f"pod {pod.name}: {pod.ifname} has MTU {inside}, planned {pod.mtu}")
        return found

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        lines = []
        for pod in self._pods(cluster, fault):
            lines.append(f"{pod.name} ip link set {pod.ifname} mtu {pod.mtu}")
            lines.append(f"{fault.node} ip link set {pod.host_veth} mtu {pod.mtu}")
        return lines


class MissingFdb(Scenario):
    name = "missing-fdb"
    summary = "one node lost the FDB entry that sends a peer's VTEP MAC to the peer's underlay address"
    symptom = "that node's pods cannot reach the peer's pods; every other pair works"
    needs = "the backend programs no FDB entries"

    def targets(self, plan: Plan) -> List[Fault]:
        return [Fault(self.name, n.name, f.lladdr, detail=(("dev", f.dev), ("dst", f.dst)))
                for n in plan.nodes for f in n.fdb]

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        cluster.node(fault.node).exec(["bridge", "fdb", "del", fault.target, "dev", fault.get("dev"), "dst",
                                       fault.get("dst"), "self"])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        entries = node_json(cluster, fault.node, ["bridge", "-j", "fdb", "show", "dev", fault.get("dev")])
        if any(e.get("mac") == fault.target and e.get("dst") == fault.get("dst") for e in entries):
            return []
        return [f"{fault.node}: no FDB entry {fault.target} dev {fault.get('dev')} dst {fault.get('dst')}"]

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} bridge fdb append {fault.target} dev {fault.get('dev')} dst {fault.get('dst')} "
                "self permanent"]


class MissingNeighbour(Scenario):
    name = "missing-neighbour"
    summary = "one node lost the permanent neighbour entry that gives a peer's overlay gateway its VTEP MAC"
    symptom = "that node's pods cannot reach the peer's pods; every other pair works"
    needs = "the backend programs no neighbour entries"

    def targets(self, plan: Plan) -> List[Fault]:
        return [Fault(self.name, n.name, x.ip, detail=(("dev", x.dev), ("lladdr", x.lladdr)))
                for n in plan.nodes for x in n.neighbours]

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        cluster.node(fault.node).exec(["ip", "neigh", "del", fault.target, "dev", fault.get("dev")])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        entries = node_json(cluster, fault.node, ["ip", "-j", "neigh", "show", "dev", fault.get("dev")])
        if any(e.get("dst") == fault.target and e.get("lladdr") == fault.get("lladdr")
               and "PERMANENT" in e.get("state", []) for e in entries):
            return []
        return [f"{fault.node}: no permanent neighbour entry {fault.target} lladdr {fault.get('lladdr')} dev "
                f"{fault.get('dev')}"]

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} ip neigh replace {fault.target} lladdr {fault.get('lladdr')} dev {fault.get('dev')} "
                "nud permanent"]


def _route_fault(name: str, node: str, route: Route, peer: str = "") -> Fault:
    return Fault(name, node, route.dst, peer, (("route", str(route)), ("dev", route.dev), ("via", route.via or "")))


def _route_problems(cluster: "Cluster", node: str, fault: Fault) -> List[str]:
    entries = node_json(cluster, node, ["ip", "-j", "route", "show", "to", "exact", fault.target])
    if any(route_line_matches(e, fault.target, fault.get("dev"), fault.get("via") or None) for e in entries):
        others = [e for e in entries if not route_line_matches(e, fault.target, fault.get("dev"),
                                                                fault.get("via") or None)]
        if not others:
            return []
    return [f"{node}: the route to {fault.target} is not the planned '{fault.get('route')}'"]


class MissingRoute(Scenario):
    name = "missing-route"
    summary = "one node lost flannel's route to the pod network, or to a peer's pod subnet"
    symptom = "that node's pods cannot reach the other nodes' pods (the peer's, or all of them)"
    needs = "the plan has no routes to other nodes' pods"

    def targets(self, plan: Plan) -> List[Fault]:
        return [_route_fault(self.name, n.name, r) for n in plan.nodes for r in n.routes]

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        cluster.node(fault.node).exec(["ip", "route", "del", fault.target, "dev", fault.get("dev")])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return _route_problems(cluster, fault.node, fault)

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} ip route replace {fault.get('route')}"]


def _daemon_processes(cluster: "Cluster", node: str):  # type: ignore[no-untyped-def]
    """The backend daemons the cluster's state records in ``node`` and still alive."""
    return [p for p in cluster.state.processes if p.role == "daemon" and p.name.endswith(f"/{node}") and p.alive()]


def _process_state(pid: int) -> str:
    """The state letter of /proc/PID/stat ("T": stopped; "" when gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return ""
    return text[text.rindex(")") + 2:].split()[0]


class StoppedDaemon(Scenario):
    name = "stopped-daemon"
    summary = "the backend's daemon (flanneld's udp proxy) is frozen with SIGSTOP on one node: alive, silent"
    symptom = "no cross-node traffic to or from that node; the process is still listed (state T)"
    needs = "the backend runs no daemon in the nodes"

    def targets(self, plan: Plan) -> List[Fault]:
        module = registry.backend(plan.backend)
        return [Fault(self.name, n.name, d.name) for n in plan.nodes for d in module.node_daemons(n)]

    def _pid(self, cluster: "Cluster", fault: Fault) -> int:
        for proc in _daemon_processes(cluster, fault.node):
            if proc.name == f"{fault.target}/{fault.node}":
                return proc.pid
        raise RuntimeError(f"no {fault.target} daemon runs on {fault.node}")

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        pid = self._pid(cluster, fault)
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + 2
        while _process_state(pid) != "T" and time.monotonic() < deadline:  # the signal is delivered later
            time.sleep(0.01)

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        pid = self._pid(cluster, fault)
        state = _process_state(pid)
        return [f"{fault.node}: {fault.target} (pid {pid}) is stopped (state {state})"] if state == "T" else []

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        return [f"{fault.node} kill -CONT {self._pid(cluster, fault)}"]


RP_KEYS = ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.{dev}.rp_filter")


class StrictRpFilter(Scenario):
    name = "rp-filter"
    summary = ("strict reverse-path filtering (rp_filter=1) on one node, while a peer sends its pod traffic there "
               "by a leftover direct route: the requests come in on the underlay, the replies would leave by the "
               "overlay, and the kernel drops them")
    symptom = "the peer's pods cannot reach that node's pods; the node's IPReversePathFilter counter grows"
    needs = "pods reach other nodes without an overlay device: every path is symmetric"

    def targets(self, plan: Plan) -> List[Fault]:
        overlay = {d.name for n in plan.nodes for d in n.devices if d.kind in registry.device_kinds()}
        found = []
        for peer in plan.nodes:
            for node in plan.nodes:
                route = next((r for r in peer.routes if r.dev in overlay and node is not peer
                              and _covers(r.dst, node.subnet)), None)
                if route is not None:
                    direct = Route(node.subnet, peer.link.dev, via=node.ip)
                    found.append(Fault(self.name, node.name, node.subnet, peer.name, (
                        ("dev", node.link.dev), ("direct", str(direct)), ("route", str(route)),
                        ("route_dev", route.dev), ("route_via", route.via or ""))))
        return found

    def inject(self, cluster: "Cluster", fault: Fault) -> None:
        for key in RP_KEYS:
            cluster.node(fault.node).exec(["sysctl", "-q", "-w", f"{key.format(dev=fault.get('dev'))}=1"])
        # prepend: beside flannel's route to the same subnet, and before it, as a leftover route would be found
        cluster.node(fault.peer).exec(["ip", "route", "prepend", *fault.get("direct").split()])

    def problems(self, cluster: "Cluster", fault: Fault) -> List[str]:
        found = []
        for key in RP_KEYS:
            key = key.format(dev=fault.get("dev"))
            if sysctl(cluster, fault.node, key) == "1":
                found.append(f"{fault.node}: {key} = 1 (strict)")
        direct = [e for e in node_json(cluster, fault.peer, ["ip", "-j", "route", "show", "to", "exact", fault.target])
                  if e.get("gateway") and e.get("dev") == fault.get("dev")]
        if direct:
            found.append(f"{fault.peer}: a direct route {fault.get('direct')} (not planned)")
        return found

    def fix(self, cluster: "Cluster", fault: Fault) -> List[str]:
        keys = " ".join(f"{key.format(dev=fault.get('dev'))}=2" for key in RP_KEYS)
        return [f"{fault.node} sysctl -w {keys}", f"{fault.peer} ip route del {fault.get('direct')}"]


def _covers(prefix: str, subnet: str) -> bool:
    return IPv4Network(subnet).subnet_of(IPv4Network(prefix))
