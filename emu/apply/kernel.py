"""Asking this machine's kernel whether it has a feature, without changing anything.

Each feature module declares its needs as ``emu.features.KernelNeed`` records (a name and a probe command); the
core's own needs (bridges, veth pairs, br_netfilter, HTB and netem for link shaping) are listed here. A probe
runs in a throwaway network namespace (``unshare --net``) that vanishes with it, so nothing is left behind;
br_netfilter is only looked for here (``preflight`` loads it when a build needs it).
"""

import os
import subprocess
from typing import Dict, Optional

from emu.features import KernelNeed

#: What every cluster needs, and the link shaping that topologies may ask for.
CORE_NEEDS: Dict[str, KernelNeed] = {
    need.name: need
    for need in (
        KernelNeed("veth", "pods and underlay links", "ip link add name probe type veth peer name probe1"),
        KernelNeed("bridge", "cni0 and the underlay switch", "ip link add name probe type bridge"),
        KernelNeed("htb", "link bandwidth (bw)", "tc qdisc add dev lo root handle 1: htb"),
        KernelNeed("netem", "link delay, jitter and loss", "tc qdisc add dev lo root netem delay 1ms"),
    )
}


def probe(need: KernelNeed) -> Optional[bool]:
    """Whether the kernel has ``need``; None when it cannot be told (not root)."""
    if os.geteuid() != 0:
        return None
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && " + need.probe],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return result.returncode == 0


def has_br_netfilter() -> bool:
    """Whether bridged traffic can pass iptables (the br_netfilter module is loaded)."""
    return os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")


def load_br_netfilter() -> bool:
    """Load br_netfilter (Service traffic between pods of one node crosses cni0 and needs it); True if loaded."""
    if not has_br_netfilter():
        subprocess.run(["modprobe", "br_netfilter"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return has_br_netfilter()
