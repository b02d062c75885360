"""The underlay: Mininet hosts as Kubernetes nodes, joined by one Linux bridge switch, with TCLink shaping.

This is the only module that imports Mininet. Mininet gives each node a shell in new network and mount
namespaces (``mnexec -n``); the switch is a Linux bridge in the root namespace named after the cluster's tag
(Open vSwitch is not in every kernel, and no controller is needed). The node's end of its link is named
``eth0`` like a real node's NIC; the switch's end ``<tag>-eth<N>``. Link delay, jitter and loss need the
kernel's netem qdisc: asked for on a kernel without it, the build stops before anything is created.
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

from emu.apply.commands import base_env, check
from emu.plan.model import Plan

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


def build_underlay(plan: Plan, state_dir: str, record: Callable[[int, str, str], None]) -> Mininet:
    """Create the nodes, the switch and the links of ``plan`` (not started).

    record: called with (pid, role, name) for every process Mininet starts, as soon as it exists.
    """
    shaped = any(n.link.bw or n.link.delay or n.link.jitter or n.link.loss is not None for n in plan.nodes)
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
    switch = net.addSwitch(plan.switch, dpid="1")
    record(switch.pid, "switch", plan.switch)
    for node in plan.nodes:
        host = net.addHost(
            node.name,
            ip=node.link.address,
            mac=node.link.mac,
            privateDirs=[(FLANNEL_RUN_DIR, f"{state_dir}/nodes/%(name)s/flannel")],
        )
        record(host.pid, "node", node.name)
        params: Dict = {}
        if shaped:
            params.update(cls1=ShapedIntf, cls2=ShapedIntf)
            for key in ("bw", "delay", "jitter", "loss"):
                value = getattr(node.link, key)
                if value is not None:
                    params[key] = value
        net.addLink(
            host,
            switch,
            intfName1=node.link.dev,
            intfName2=node.link.switch_port,
            addr1=node.link.mac,
            **params,
        )
    return net


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
        prefix = f"{switch.name}-eth"
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
