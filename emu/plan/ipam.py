"""Address allocation, pure: flannel's node subnet leases, host-local pod addresses, Service cluster IPs.

- Flannel leases node subnets of ``subnetLen`` from the Network, skipping the first one (its subnet manager
  starts at SubnetMin = Network + 1 subnet), so with 10.244.0.0/16 the first node gets 10.244.1.0/24.
- The CNI host-local IPAM gives the gateway (the bridge) the subnet's .1 and pods addresses from .2, in order.
- Service cluster IPs are taken from ``spec.clusterIP`` when given, otherwise handed out in order from
  serviceCIDR + 10 (the first address is the ``kubernetes`` Service's), skipping taken ones.
"""

from ipaddress import IPv4Address, IPv4Network
from typing import Dict, Iterator, List, Optional, Sequence


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


def cluster_ips(service_cidr: IPv4Network, requested: Sequence[Optional[IPv4Address]]) -> List[IPv4Address]:
    """One cluster IP per Service: the requested one, or the next free one from serviceCIDR + 10."""
    taken = {ip for ip in requested if ip is not None}
    taken.add(service_cidr.network_address + 1)
    free = _free_addresses(service_cidr, taken)
    out: List[IPv4Address] = []
    for ip in requested:
        if ip is None:
            try:
                ip = next(free)
            except StopIteration:
                raise IpamError(f"serviceCIDR {service_cidr} is full") from None
        out.append(ip)
    return out


def _free_addresses(cidr: IPv4Network, taken: set) -> Iterator[IPv4Address]:
    start = int(cidr.network_address) + 10
    for value in range(start, int(cidr.broadcast_address)):
        ip = IPv4Address(value)
        if ip not in taken:
            yield ip


def allocation_table(subnets: Dict[str, IPv4Network]) -> Dict[str, str]:
    """subnet -> node name, for people reading a plan."""
    return {str(subnet): node for node, subnet in subnets.items()}
