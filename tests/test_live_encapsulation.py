"""Encapsulation is real: capture the underlay while pods ping across nodes and take the packets apart.

tcpdump listens on the switch port of the sending node (a link in the root namespace, ``plan.node(n).link
.switch_port``) and writes a pcap file; a small pcap reader below (global header, record headers, Ethernet,
IPv4, UDP, VXLAN) decodes it. On the wire between the nodes:

- vxlan: UDP to port 8472 carrying a VXLAN header with the VNI and an inner Ethernet frame (between the two
  nodes' flannel.1 MACs) whose IP packet has the pods' addresses; no pod address appears in an outer header;
- host-gw: the pods' IP packets themselves, from one node's MAC to the other's; no UDP 8472 at all;
- udp: UDP to port 8285 carrying the pods' bare IP packet (flannel's old userspace proxy).
"""

import select
import signal
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest
from conftest import cluster_fixture, requires_root

pytestmark = [requires_root, pytest.mark.root, pytest.mark.slow]

two_nodes = cluster_fixture("two_nodes.yaml")

PINGS = 3
ETH_IPV4 = 0x0800
PROTO_ICMP, PROTO_UDP = 1, 17
VXLAN_FLAG_VNI = 0x08


# ------------------------------------------------------------------------------------------ a pcap reader


def read_pcap(path: Path) -> Iterator[bytes]:
    """The frames of a classic pcap file (Ethernet link type), in order."""
    data = path.read_bytes()
    assert len(data) >= 24, f"{path}: no pcap global header ({len(data)} bytes)"
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        order = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        order = ">"
    else:
        raise AssertionError(f"{path}: not a pcap file (magic {magic.hex()})")
    _major, _minor, _zone, _sigfigs, _snaplen, linktype = struct.unpack(order + "HHiIII", data[4:24])
    assert linktype == 1, f"{path}: link type {linktype}, expected 1 (Ethernet)"
    offset = 24
    while offset + 16 <= len(data):
        _sec, _frac, caplen, _wirelen = struct.unpack(order + "IIII", data[offset : offset + 16])
        offset += 16
        yield data[offset : offset + caplen]
        offset += caplen


def _ip(raw: bytes) -> str:
    return ".".join(str(b) for b in raw)


def _mac(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@dataclass
class Packet:
    """One IPv4 packet with what is around and inside it."""

    eth_src: str
    eth_dst: str
    src: str
    dst: str
    proto: int
    payload: bytes
    sport: Optional[int] = None
    dport: Optional[int] = None

    @property
    def udp_payload(self) -> bytes:
        return self.payload[8:]


def parse_ethernet(frame: bytes) -> Optional[Packet]:
    """An Ethernet frame carrying IPv4, decoded (None for anything else)."""
    if len(frame) < 14 + 20:
        return None
    (ethertype,) = struct.unpack("!H", frame[12:14])
    if ethertype != ETH_IPV4:
        return None
    packet = parse_ipv4(frame[14:])
    if packet is not None:
        packet.eth_dst, packet.eth_src = _mac(frame[0:6]), _mac(frame[6:12])
    return packet


def parse_ipv4(data: bytes) -> Optional[Packet]:
    if len(data) < 20 or data[0] >> 4 != 4:
        return None
    header = (data[0] & 0x0F) * 4
    (total,) = struct.unpack("!H", data[2:4])
    proto = data[9]
    payload = data[header:total]
    packet = Packet("", "", _ip(data[12:16]), _ip(data[16:20]), proto, payload)
    if proto == PROTO_UDP and len(payload) >= 8:
        packet.sport, packet.dport = struct.unpack("!HH", payload[:4])
    return packet


def parse_vxlan(payload: bytes) -> Tuple[int, Optional[Packet]]:
    """(VNI, inner packet) of a VXLAN UDP payload."""
    assert len(payload) >= 8, "short VXLAN header"
    flags = payload[0]
    assert flags & VXLAN_FLAG_VNI, f"VXLAN header without the I flag: {payload[:8].hex()}"
    vni = int.from_bytes(payload[4:7], "big")
    return vni, parse_ethernet(payload[8:])


def test_pcap_reader_on_a_handmade_file(tmp_path: Path) -> None:
    """The reader itself, on a file built here: one VXLAN packet around an ICMP packet."""

    def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
        addr = lambda text: bytes(int(x) for x in text.split("."))  # noqa: E731
        return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0, 64, proto, 0, addr(src), addr(dst)) + (
            payload
        )

    inner = b"\x0e" * 6 + b"\x0f" * 6 + b"\x08\x00" + ipv4("10.244.1.2", "10.244.2.2", PROTO_ICMP, b"\x08" + b"\0" * 7)
    vxlan = bytes([VXLAN_FLAG_VNI, 0, 0, 0]) + (7).to_bytes(3, "big") + b"\0" + inner
    udp = struct.pack("!HHHH", 40000, 8472, 8 + len(vxlan), 0) + vxlan
    frame = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ipv4("192.168.56.11", "192.168.56.12", PROTO_UDP, udp)
    pcap = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)
    pcap += struct.pack("<IIII", 1, 2, len(frame), len(frame)) + frame
    path = tmp_path / "one.pcap"
    path.write_bytes(pcap)
    [outer] = [parse_ethernet(f) for f in read_pcap(path)]
    assert outer is not None and (outer.src, outer.dst, outer.dport) == ("192.168.56.11", "192.168.56.12", 8472)
    assert outer.eth_src == "04:04:04:04:04:04"
    vni, packet = parse_vxlan(outer.udp_payload)
    assert vni == 7 and packet is not None
    assert (packet.src, packet.dst, packet.proto, packet.eth_dst) == (
        "10.244.1.2",
        "10.244.2.2",
        1,
        "0e:0e:0e:0e:0e:0e",
    )


# ------------------------------------------------------------------------------------------ capturing


def capture_ping(cluster, tmp_path: Path) -> Tuple[List[Packet], object, object]:  # type: ignore[no-untyped-def]
    """Ping from a pod to a pod on another node while tcpdump records the sender's switch port.

    Only ICMP and UDP are recorded: a freshly built cluster's interfaces also send IGMP reports."""
    src, dst = next((a, b) for a in cluster.pods for b in cluster.pods if a.node != b.node)
    port = cluster.plan.node(src.node).link.switch_port
    pcap = tmp_path / f"{cluster.backend}.pcap"
    argv = ["tcpdump", "-i", port, "-n", "-U", "-Z", "root", "-w", str(pcap), "-c", str(2 * PINGS), "icmp or udp"]
    dump = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([dump.stderr], [], [], 10)
        line = dump.stderr.readline() if ready else ""  # type: ignore[union-attr]
        assert "listening on" in line, f"tcpdump did not start on {port}: {line}"
        pinged = src.exec(["ping", "-c", str(PINGS), "-i", "0.2", "-W", "2", dst.ip], timeout=20)
        assert pinged.returncode == 0, f"{src.name} -> {dst.name}: {pinged.stdout}{pinged.stderr}"
        try:
            dump.wait(timeout=5)
        except subprocess.TimeoutExpired:
            dump.send_signal(signal.SIGINT)
            dump.wait(timeout=5)
    finally:
        if dump.poll() is None:
            dump.kill()
            dump.wait()
        if dump.stderr:
            dump.stderr.close()
    packets = [p for p in (parse_ethernet(f) for f in read_pcap(pcap)) if p is not None]
    assert packets, f"nothing captured on {port}"
    return packets, src, dst


def _echoes(packets: List[Packet], src: str, dst: str) -> Tuple[List[Packet], List[Packet]]:
    """The ICMP echo requests src -> dst and replies dst -> src among ``packets``."""
    requests = [p for p in packets if (p.src, p.dst, p.proto) == (src, dst, PROTO_ICMP) and p.payload[:1] == b"\x08"]
    replies = [p for p in packets if (p.src, p.dst, p.proto) == (dst, src, PROTO_ICMP) and p.payload[:1] == b"\x00"]
    return requests, replies


def test_cross_node_traffic_on_the_wire(two_nodes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cluster = two_nodes
    packets, src, dst = capture_ping(cluster, tmp_path)
    src_node, dst_node = cluster.plan.node(src.node), cluster.plan.node(dst.node)
    pod_ips = {src.ip, dst.ip}
    summary = [(p.src, p.dst, p.proto, p.dport) for p in packets]

    if cluster.backend == "host-gw":
        assert not [p for p in packets if p.proto == PROTO_UDP], f"host-gw sent UDP on the underlay: {summary}"
        requests, replies = _echoes(packets, src.ip, dst.ip)
        assert len(requests) == PINGS and len(replies) == PINGS, summary
        for p in requests:
            assert (p.eth_src, p.eth_dst) == (src_node.link.mac, dst_node.link.mac)
        for p in replies:
            assert (p.eth_src, p.eth_dst) == (dst_node.link.mac, src_node.link.mac)
        return

    # Encapsulating backends: no pod address may show in an outer header.
    assert not [p for p in packets if {p.src, p.dst} & pod_ips], (
        f"pod traffic on the underlay unencapsulated: {summary}"
    )
    port = int(dict(cluster.plan.backend_options)["Port"])
    outer = [p for p in packets if p.proto == PROTO_UDP and p.dport == port]
    assert len(outer) == 2 * PINGS, f"expected {2 * PINGS} UDP packets to port {port}: {summary}"
    for p in outer:
        assert {p.src, p.dst} == {src_node.ip, dst_node.ip}, summary
    inner: List[Packet] = []
    if cluster.backend == "vxlan":
        vni = int(dict(cluster.plan.backend_options)["VNI"])
        vtep = {n.name: next(d.mac for d in n.devices if d.kind == "vxlan") for n in cluster.plan.nodes}
        for p in outer:
            got_vni, packet = parse_vxlan(p.udp_payload)
            assert got_vni == vni
            assert packet is not None, "VXLAN payload is not an IPv4 Ethernet frame"
            sender = src_node if p.src == src_node.ip else dst_node
            receiver = dst_node if sender is src_node else src_node
            assert (packet.eth_src, packet.eth_dst) == (vtep[sender.name], vtep[receiver.name])
            inner.append(packet)
    else:
        for p in outer:
            packet = parse_ipv4(p.udp_payload)
            assert packet is not None, "udp backend payload is not a bare IPv4 packet"
            inner.append(packet)
    requests, replies = _echoes(inner, src.ip, dst.ip)
    assert len(requests) == PINGS and len(replies) == PINGS, [(p.src, p.dst, p.proto) for p in inner]
    for p in requests:
        assert next(o for o in outer if o.udp_payload.endswith(p.payload)).src == src_node.ip
