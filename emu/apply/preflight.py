"""Checks made before a build, so that a missing tool or kernel feature stops emu before anything is created.

``emu doctor`` reports the same facts without stopping (see ``emu.apply.doctor``).
"""

import os
import shutil
import subprocess
from typing import List, Optional

from emu.apply.state import STATE_ROOT, ClusterState
from emu.errors import EnvironmentProblem
from emu.plan.model import Plan

TOOLS = ("mnexec", "ip", "bridge", "iptables-restore", "iptables-save", "nsenter", "unshare", "sysctl", "bash")
INSTALL_HINT = "run ./install.sh (it installs mininet, iproute2, iptables, iperf3 and the rest)"


def missing_tools(tools=TOOLS) -> List[str]:  # type: ignore[no-untyped-def]
    return [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]


def kernel_has(feature: str) -> Optional[bool]:
    """Whether the kernel offers ``feature`` (vxlan, tun, netem, bridge, br_netfilter), tried in a throwaway
    network namespace; None when it cannot be told (not root)."""
    if os.geteuid() != 0:
        return None
    if feature == "tun":
        return os.path.exists("/dev/net/tun")
    if feature == "br_netfilter":
        return os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables") or _modprobe("br_netfilter")
    script = {
        "vxlan": "ip link add name probe type vxlan id 1 dstport 8472 dev lo",
        "bridge": "ip link add name probe type bridge",
        "netem": "tc qdisc add dev lo root netem delay 1ms",
        "veth": "ip link add name probe type veth peer name probe1",
    }[feature]
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && " + script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return result.returncode == 0


def _modprobe(module: str) -> bool:
    subprocess.run(["modprobe", module], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")


def preflight(plan: Plan) -> None:
    """Stop with one clear message if this machine cannot build ``plan``."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("building a cluster needs root: run it with sudo (e.g. sudo python -m emu up ...)")
    missing = missing_tools()
    if missing:
        raise EnvironmentProblem(f"missing commands: {', '.join(missing)}; {INSTALL_HINT}")
    needs = ["bridge", "veth"]
    if plan.backend == "vxlan":
        needs.append("vxlan")
    if plan.backend == "udp":
        needs.append("tun")
    if any(n.link.delay or n.link.jitter or n.link.loss is not None for n in plan.nodes):
        needs.append("netem")
    for feature in needs:
        if not kernel_has(feature):
            if feature == "netem":
                raise EnvironmentProblem(
                    "the topology asks for link delay/jitter/loss, which needs the kernel's netem qdisc, and this "
                    "kernel has none (sch_netem): remove delay/jitter/loss from the links, or use a kernel with "
                    "netem such as the Mininet VM's; bandwidth (bw) works without it"
                )
            raise EnvironmentProblem(f"this kernel lacks {feature}, needed for backend {plan.backend}")
    if not kernel_has("br_netfilter"):
        raise EnvironmentProblem(
            "br_netfilter is missing (modprobe br_netfilter failed): Service traffic between pods of one node "
            "crosses cni0 and needs it"
        )
    existing = ClusterState.read(STATE_ROOT / plan.tag)
    if existing is not None:
        if existing.owner_alive():
            raise EnvironmentProblem(
                f"cluster {plan.cluster!r} is already running (emu pid {existing.owner_pid}); stop it first, or "
                "give this one another name"
            )
        from emu.apply.clean import clean_state

        print(f"emu: removing leftovers of an earlier run of {plan.cluster!r} that did not finish")
        clean_state(existing, STATE_ROOT / plan.tag, verbose=False)
