"""What flanneld itself writes on a node, besides the backend's devices: ``subnet.env``, sysctls, iptables.

- ``/run/flannel/subnet.env`` (FLANNEL_NETWORK, FLANNEL_SUBNET = the bridge's address, FLANNEL_MTU,
  FLANNEL_IPMASQ), which the flannel CNI plugin reads to configure the bridge plugin.
- The masquerade rules of flannel's ``--ip-masq`` (pkg/trafficmngr/iptables: the FLANNEL-POSTRTG chain) and the
  forward rules (FLANNEL-FWD) that accept pod traffic whatever the FORWARD policy.
- Sysctls a node needs: ``ip_forward``, and ``bridge-nf-call-iptables`` so that traffic between pods of one node
  crossing ``cni0`` passes through iptables, which kube-proxy's Service rules need (Mininet's LinuxBridge warns
  when it is 1; here it is 1 on purpose).
"""

from ipaddress import IPv4Network
from typing import Dict, Tuple

from emu.plan.iptables import Chain, Table

MASQ = '-m comment --comment "flanneld masq"'
FWD = '-m comment --comment "flanneld forward"'
KUBE_MASQ_MARK = "0x4000/0x4000"

SYSCTLS: Tuple[Tuple[str, str], ...] = (
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
)


def subnet_env(network: IPv4Network, subnet: IPv4Network, mtu: int) -> str:
    gateway = subnet.network_address + 1
    return (
        f"FLANNEL_NETWORK={network}\n"
        f"FLANNEL_SUBNET={gateway}/{subnet.prefixlen}\n"
        f"FLANNEL_MTU={mtu}\n"
        "FLANNEL_IPMASQ=true\n"
    )


def iptables_tables(network: IPv4Network, subnet: IPv4Network) -> Dict[str, Table]:
    """flanneld's rules for a node whose lease is ``subnet`` (as iptables-save prints them)."""
    net, sub = str(network), str(subnet)
    nat = Table(
        "nat",
        [Chain("POSTROUTING", "ACCEPT"), Chain("FLANNEL-POSTRTG")],
        [
            f"-A POSTROUTING {MASQ} -j FLANNEL-POSTRTG",
            f"-A FLANNEL-POSTRTG -m mark --mark {KUBE_MASQ_MARK} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {sub} -d {net} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {net} -d {sub} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG ! -s {net} -d {sub} {MASQ} -j RETURN",
            f"-A FLANNEL-POSTRTG -s {net} ! -d 224.0.0.0/4 {MASQ} -j MASQUERADE --random-fully",
            f"-A FLANNEL-POSTRTG ! -s {net} -d {net} {MASQ} -j MASQUERADE --random-fully",
        ],
    )
    filt = Table(
        "filter",
        [Chain("FORWARD", "ACCEPT"), Chain("FLANNEL-FWD")],
        [
            f"-A FORWARD {FWD} -j FLANNEL-FWD",
            f"-A FLANNEL-FWD -s {net} {FWD} -j ACCEPT",
            f"-A FLANNEL-FWD -d {net} {FWD} -j ACCEPT",
        ],
    )
    return {"filter": filt, "nat": nat}
