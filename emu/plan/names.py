"""Deterministic names and MAC addresses, all under Linux's 15-byte interface name limit.

Everything emu creates in the root namespace carries the cluster's tag (``emu`` + 4 hex digits of the cluster
name's hash), so clean-up can remove exactly what emu made. Inside node and pod namespaces the names are the real
systems' own: ``eth0``, ``cni0``, ``flannel.1``, ``flannel0``, and ``veth`` + 8 hex digits for pod veth ends.
"""

import hashlib
from ipaddress import IPv4Address

IFNAMSIZ = 15
PREFIX = "emu"


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def cluster_tag(cluster: str) -> str:
    """``emu`` + 4 hex digits: the prefix of every root-namespace object of this cluster."""
    return PREFIX + _digest("cluster", cluster)[:4]


def switch_name(cluster: str) -> str:
    return cluster_tag(cluster)


def switch_port(cluster: str, index: int) -> str:
    """The switch side of node ``index``'s underlay link (Mininet's ``<switch>-eth<N>``), numbered from 1."""
    name = f"{switch_name(cluster)}-eth{index + 1}"
    assert len(name) <= IFNAMSIZ, name
    return name


def segment_switch(cluster: str, index: int) -> str:
    """The switch of segment ``index`` (0-based) of a routed underlay: ``<tag>s<N>``, numbered from 1."""
    name = f"{cluster_tag(cluster)}s{index + 1}"
    assert len(name) <= IFNAMSIZ - 4, name
    return name


def segment_port(cluster: str, segment_index: int, port: int) -> str:
    """Port ``port`` (numbered from 1) of segment ``segment_index``'s switch: ``<tag>s<N>-<port>``, at most 14
    bytes (32 segments, 999 ports)."""
    name = f"{segment_switch(cluster, segment_index)}-{port}"
    assert len(name) <= IFNAMSIZ, name
    return name


def host_veth(cluster: str, namespace: str, pod: str) -> str:
    """The node-side end of a pod's veth pair: ``veth`` + 8 hex digits, like the CNI bridge plugin's."""
    return "veth" + _digest("veth", cluster, namespace, pod)[:8]


def mac_from_ip(ip: IPv4Address) -> str:
    """The CNI bridge plugin's classic scheme: 0a:58 followed by the IPv4 address (locally administered)."""
    octets = ip.packed
    return "0a:58:" + ":".join(f"{b:02x}" for b in octets)


def mac_from_name(*parts: str) -> str:
    """A locally administered unicast MAC derived from a name (for devices without an address of their own)."""
    digest = _digest("mac", *parts)
    return "0a:5a:" + ":".join(digest[i : i + 2] for i in range(0, 8, 2))


def vtep_mac(cluster: str, node: str) -> str:
    """flannel.1's MAC on a node. Flannel lets the kernel choose it and publishes it in the node's lease;
    emu derives it from the names instead, so that remote nodes' neighbour and FDB entries can be planned."""
    digest = _digest("vtep", cluster, node)
    return "0e:" + ":".join(digest[i : i + 2] for i in range(0, 10, 2))


def valid_ifname(name: str) -> bool:
    return 0 < len(name.encode()) <= IFNAMSIZ and "/" not in name and not any(c.isspace() for c in name)
