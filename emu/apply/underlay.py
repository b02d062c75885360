"""The underlay: Mininet hosts as Kubernetes nodes (and routers), Linux bridge switches, links with TCLink shaping.

This is the only module that imports Mininet. Mininet gives each node a shell in new network and mount
namespaces (``mnexec -n``); a switch is a Linux bridge in the root namespace named after the cluster's tag
(Open vSwitch is not in every kernel, and no controller is needed): one switch, or one per segment of a routed
underlay (``<tag>s<N>``), with a router (a Mininet host of its own, configured by ``emu.apply.routers``) on
several. The node's end of its link is named ``eth0`` like a real node's NIC, a router's ``eth0``, ``eth1``, ...;
the switch's end ``<tag>-eth<N>`` (``<tag>s<N>-<P>`` on a segment). Every link gets its planned MTU at both ends.
Link delay, jitter and loss need the kernel's netem qdisc: asked for on a kernel without it, the build stops
before anything is created.
"""

import os
import subprocess
import time
from typing import Callable, Dict, List

from mininet.link import Link, TCIntf, TCLink
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.node import Host
from mininet.nodelib import LinuxBridge

from emu.apply.commands import Namespaces, base_env, check
from emu.plan.model import Plan

#: The MTU Mininet's veth pairs have when made.
VETH_MTU = 1500

setLogLevel("error")


class UnderlaySwitch(LinuxBridge):
    """Mininet's LinuxBridge, driven with iproute2 instead of brctl/ifconfig (not installed everywhere)."""

    @classmethod
    def setup(cls) -> None:
        """Mininet checks for brctl here; iproute2 is all this switch needs."""

    def start(self, _controllers: List) -> None:  # type: ignore[override]
        check(f"create underlay switch {self.name}", ["ip", "link", "add", "name", self.name, "type", "bridge"])
        ports = [intf.name for intf in self.intfList() if self.name in intf.name]
        for name in [self.name] + ports:
            _disable_ipv6(name)
        for name in ports:
            check(f"attach {name} to {self.name}", ["ip", "link", "set", name, "master", self.name])
        check(f"bring up {self.name}", ["ip", "link", "set", self.name, "up"])

    def stop(self, deleteIntfs: bool = True) -> None:
        _delete_link(self.name)
        super(LinuxBridge, self).stop(deleteIntfs)


def _disable_ipv6(name: str) -> None:
    """The switch and its ports live in the root namespace: without IPv6 they get no link-local address, so the
    root namespace has no way into the emulation, not even fe80::/64 (and sends nothing into it)."""
    try:
        with open(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6", "w") as f:
            f.write("1")
    except OSError:  # a kernel without IPv6: nothing to disable
        pass


class ShapedIntf(TCIntf):
    """Mininet's TCIntf without its "*** Error:" for tc's harmless HTB warning above about 100 Mbit/s ("quantum
    of class ... is big. Consider r2q change": Mininet leaves r2q at its default; the rate is still right)."""

    def tc(self, cmd: str, tc: str = "tc") -> str:  # type: ignore[override]
        out = super().tc(cmd, tc)
        return "".join(line for line in out.splitlines(True) if "quantum of class" not in line)


#: Each node's private directory (a bind mount in its mount namespace). Mininet creates the mount point on the
#: machine itself when it is missing; the cluster then records it and removes it again at teardown.
FLANNEL_RUN_DIR = "/run/flannel"


class NodeHost(Host):
    """A Kubernetes node: a Mininet host whose /run/flannel is its own (flanneld's subnet.env lives there)."""


class RouterHost(Host):
    """A router of a routed underlay: a Mininet host whose addresses, forwarding and routes
    ``emu.apply.routers`` sets."""


def _shaping(link) -> Dict:  # type: ignore[no-untyped-def]
    """TCLink's parameters for a planned link (a node's Link or a RouterPort): its shaping at both ends."""
    params: Dict = {"cls1": ShapedIntf, "cls2": ShapedIntf}
    for key in ("bw", "delay", "jitter", "loss"):
        value = getattr(link, key)
        if value is not None:
            params[key] = value
    return params


def build_underlay(plan: Plan, state_dir: str, record: Callable[[int, str, str], None]) -> Mininet:
    """Create the nodes, routers, switches and links of ``plan`` (not started).

    record: called with (pid, role, name) for every process Mininet starts, as soon as it exists.
    """
    links = [n.link for n in plan.nodes] + [p for r in plan.routers for p in r.ports]
    shaped = any(x.bw or x.delay or x.jitter or x.loss is not None for x in links)
    net = Mininet(
        topo=None,
        switch=UnderlaySwitch,
        host=NodeHost,
        link=TCLink if shaped else Link,
        controller=None,
        build=False,
        autoSetMacs=False,
        waitConnected=False,
    )
    switches = {}
    for i, segment in enumerate(plan.segments):
        switches[segment.name] = net.addSwitch(segment.switch, dpid=str(i + 1))
        record(switches[segment.name].pid, "switch", segment.switch)
    for node in plan.nodes:
        host = net.addHost(
            node.name,
            ip=node.link.address,
            mac=node.link.mac,
            privateDirs=[(FLANNEL_RUN_DIR, f"{state_dir}/nodes/%(name)s/flannel")],
        )
        record(host.pid, "node", node.name)
        switch = switches[plan.segment_of(node).name]
        params = _shaping(node.link) if shaped else {}
        net.addLink(host, switch, intfName1=node.link.dev, intfName2=node.link.switch_port, addr1=node.link.mac,
                    **params)
    for router in plan.routers:
        host = net.addHost(router.name, cls=RouterHost, ip=None)
        record(host.pid, "router", router.name)
        for port in router.ports:
            params = _shaping(port) if shaped else {}
            net.addLink(host, switches[port.segment], intfName1=port.dev, intfName2=port.switch_port,
                        addr1=port.mac, **params)
    return net


def set_link_mtus(plan: Plan, net: Mininet) -> None:
    """Give every underlay link its planned MTU at both ends (the node's or router's end, the switch port)."""
    ends = [(net.get(n.name).pid, n.link.dev, n.link.switch_port, n.link.mtu) for n in plan.nodes]
    ends += [(net.get(r.name).pid, p.dev, p.switch_port, p.mtu) for r in plan.routers for p in r.ports]
    for pid, dev, port, mtu in ends:
        if mtu == VETH_MTU:
            continue
        check(f"MTU {mtu} on {port}", ["ip", "link", "set", "dev", port, "mtu", str(mtu)])
        check(f"MTU {mtu} on {dev}", ["ip", "link", "set", "dev", dev, "mtu", str(mtu)], Namespaces(pid))


def stop_underlay(net: Mininet, timeout: float = 5.0) -> None:
    """Stop the nodes and the switch: what ``Mininet.stop()`` does, in a second rather than a minute for 50 nodes.

    Mininet deletes every link with an ``ip link del`` of its own, and each deletion waits for an RCU grace
    period (20-50 ms here). Instead the node shells go first: each node's network namespace dies with its last
    process, and the kernel deletes the veth pairs of all dead namespaces in one batch, switch ports included.
    Ports still there after ``timeout`` seconds (a process someone started in a node keeps its namespace alive)
    are deleted one by one, as Mininet would, so nothing stays behind either way.
    """
    for host in net.hosts:
        host.terminate()
    for switch in net.switches:
        prefix = f"{switch.name}-"
        ports = [intf.name for intf in switch.intfList() if intf.name.startswith(prefix)]
        _delete_link(switch.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(os.path.exists(f"/sys/class/net/{p}") for p in ports):
            time.sleep(0.01)
        for port in ports:
            _delete_link(port)
        switch.terminate()


def _delete_link(name: str) -> None:
    """``ip link del NAME`` if it exists, in a session of its own: a Ctrl-C sent to emu's process group while it
    tears down (emu holds it back until the end) must not kill the command half way and leave the link."""
    if os.path.exists(f"/sys/class/net/{name}"):
        subprocess.run(
            ["ip", "link", "del", name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=base_env(),
            start_new_session=True,
        )
