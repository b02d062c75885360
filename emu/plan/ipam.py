"""Address allocation, pure: flannel's node subnet leases, host-local pod addresses, Service cluster IPs.

- Flannel leases node subnets of ``subnetLen`` from the Network, skipping the first one (its subnet manager
  starts at SubnetMin = Network + 1 subnet), so with 10.244.0.0/16 the first node gets 10.244.1.0/24.
- The CNI host-local IPAM gives the gateway (the bridge) the subnet's .1 and pods addresses from .2, in order.
- Service cluster IPs as the API server gives them: ``spec.clusterIP`` when given (the spec layer checked it);
  the first address is the ``kubernetes`` Service's and the tenth is kept for cluster DNS (kubeadm's kube-dns
  Service asks for it). The rest come from the upper part of the range, as the API server's allocator takes
  them (KEP-3070: the first ``min(max(16, size/16), 256)`` addresses are left for Services that ask for one):
  deterministically here, at an offset from a hash of the Service's namespace and name, the next free one on a
  collision. So an address does not depend on the other Services, and one added later moves none.
"""

import hashlib
from ipaddress import IPv4Address, IPv4Network
from itertools import chain
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

#: Offsets in serviceCIDR of the addresses nobody is given by chance: the API server's own Service, cluster DNS.
KUBERNETES_OFFSET = 1
DNS_OFFSET = 10


class IpamError(ValueError):
    pass


def node_subnets(network: IPv4Network, subnet_len: int, count: int) -> List[IPv4Network]:
    """The subnet leases of ``count`` nodes, in node order."""
    if subnet_len <= network.prefixlen:
        raise IpamError(f"/{subnet_len} subnets do not fit in {network}")
    subnets = network.subnets(new_prefix=subnet_len)
    next(subnets)  # flannel never leases the Network's first subnet
    out: List[IPv4Network] = []
    for _ in range(count):
        try:
            out.append(next(subnets))
        except StopIteration:
            raise IpamError(f"{network} has no room for {count} /{subnet_len} node subnets") from None
    return out


def gateway(subnet: IPv4Network) -> IPv4Address:
    """The bridge's address in a node subnet: the first host address (.1)."""
    if subnet.num_addresses < 4:
        raise IpamError(f"{subnet} is too small for a gateway and a pod")
    return subnet.network_address + 1


class HostLocal:
    """The host-local IPAM of one node: hands out addresses from .2 in order."""

    def __init__(self, subnet: IPv4Network) -> None:
        self.subnet = subnet
        self._next = int(subnet.network_address) + 2
        self._last = int(subnet.broadcast_address) - 1

    def allocate(self) -> IPv4Address:
        if self._next > self._last:
            raise IpamError(f"no free address left in {self.subnet}")
        address = IPv4Address(self._next)
        self._next += 1
        return address


def static_band(cidr: IPv4Network) -> int:
    """How many addresses at the start of serviceCIDR the API server leaves for Services that ask for one."""
    size = cidr.num_addresses
    if size <= 16:
        return 0
    return min(max(16, size // 16), 256)


def kubernetes_ip(cidr: IPv4Network) -> IPv4Address:
    return cidr.network_address + KUBERNETES_OFFSET


def dns_ip(cidr: IPv4Network) -> IPv4Address:
    return cidr.network_address + DNS_OFFSET


def cluster_ips(
    service_cidr: IPv4Network,
    services: Sequence[Tuple[str, Optional[IPv4Address]]],
    keep: Optional[Mapping[str, IPv4Address]] = None,
) -> List[IPv4Address]:
    """One cluster IP per Service ``(namespace/name, requested IP or None)``, in order: the requested one, the
    one ``keep`` gives it (a running cluster's Services keep their addresses), or one allocated (see above)."""
    unrequested = {key for key, ip in services if ip is None}
    keep = {key: ip for key, ip in (keep or {}).items() if key in unrequested}
    taken = {ip for _key, ip in services if ip is not None} | set(keep.values())
    taken |= {kubernetes_ip(service_cidr), dns_ip(service_cidr)}
    out: List[IPv4Address] = []
    for key, ip in services:
        if ip is None:
            ip = keep.get(key) or _allocate(service_cidr, key, taken)
            taken.add(ip)
        out.append(ip)
    return out


def _allocate(cidr: IPv4Network, key: str, taken: set) -> IPv4Address:
    first = int(cidr.network_address) + 1
    last = int(cidr.broadcast_address) - 1
    upper = first + static_band(cidr)
    span = last - upper + 1
    start = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % span
    for value in chain(range(upper + start, last + 1), range(upper, upper + start), range(first, upper)):
        ip = IPv4Address(value)
        if ip not in taken:
            return ip
    raise IpamError(f"serviceCIDR {cidr} is full")


def allocation_table(subnets: Dict[str, IPv4Network]) -> Dict[str, str]:
    """subnet -> node name, for people reading a plan."""
    return {str(subnet): node for node, subnet in subnets.items()}
