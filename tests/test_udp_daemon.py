"""Tests of emu.backends.udp.daemon, flannel's UDP backend daemon (and its modules packets, device, proxy, batched).

Pure tests (no root) check the header helpers against full recomputations, and the batched path's TCP merging.
Root tests build two nodes by hand (namespaces ``emutest-udp-<pid>-*``, always deleted in teardown) and run the
real daemon in each: as the udp backend starts it (no option: flannel's proxy.c loop, in C when install.sh has
built it), with that loop forced to C (``--loop c``) and to Python (``--loop python``), and with ``--offload auto``
(the batching option)::

    p1 10.244.1.2 --veth-- n1 [flannel0 10.244.1.0/32] 192.168.56.11 ==veth== 192.168.56.12 [flannel0 10.244.2.0/32] n2 --veth-- p2 10.244.2.2

Run, from the repository's top directory: ``sudo python -m pytest tests/test_udp_daemon.py -q``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import time
from typing import Dict, Iterator, List, Optional, Tuple

import pytest
from conftest import BACKENDS, cluster_fixture, root_fixture

from emu.backends.udp import batched, device, helper
from emu.backends.udp import packets as fu

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = f"emutest-udp-{os.getpid()}-"
NODE_IPS = {1: "192.168.56.11", 2: "192.168.56.12"}
POD_IPS = {1: "10.244.1.2", 2: "10.244.2.2"}
STARTED: List[subprocess.Popen] = []  # every process these tests start, to check none is left

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: creates network namespaces and TUN devices")


def ip_header(ttl: int = 64, proto: int = 17, src: str = "10.244.1.2", dst: str = "10.244.2.2", ident: int = 1,
              tos: int = 0, length: int = 20, frag: int = 0x4000) -> bytearray:
    """A valid 20-byte IPv4 header."""
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, tos, length, ident, frag, ttl, proto, 0,
                                ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    struct.pack_into("!H", hdr, 10, fu.inet_checksum(hdr))
    return hdr


# --- pure tests --------------------------------------------------------------------------------------------
def test_inet_checksum_known_vector() -> None:
    hdr = bytes.fromhex("450000730000400040110000c0a80001c0a800c7")
    assert fu.inet_checksum(hdr) == 0xB861
    # over a header that carries its checksum, the checksum comes out 0
    assert fu.inet_checksum(bytes.fromhex("450000730000400040110000c0a80001c0a800c7")[:10] + b"\xb8\x61"
                            + bytes.fromhex("c0a80001c0a800c7")) == 0


def test_decrement_ttl_matches_full_recomputation() -> None:
    rng = random.Random(1624)
    cases = [bytearray(rng.getrandbits(160).to_bytes(20, "big")) for _ in range(20000)]
    # one header with every IP id: its checksum takes every value, the edges RFC 1624 is about included
    base = ip_header(ttl=2)
    for ident in range(65536):
        h = bytearray(base)
        h[4:6] = ident.to_bytes(2, "big")
        cases.append(h)
    for h in cases:
        h[0] = 0x45
        h[8] = max(2, h[8])
        h[10:12] = b"\0\0"
        h[10:12] = fu.inet_checksum(h).to_bytes(2, "big")
        before = h[8]
        assert fu.decrement_ttl(h)
        assert h[8] == before - 1
        check = bytearray(h)
        check[10:12] = b"\0\0"
        assert int.from_bytes(h[10:12], "big") == fu.inet_checksum(check)


def test_decrement_ttl_drops_at_zero_and_leaves_packet() -> None:
    for ttl in (0, 1):
        h = ip_header(ttl=ttl)
        orig = bytes(h)
        assert not fu.decrement_ttl(h)
        assert bytes(h) == orig
    h = bytearray(b"pad") + ip_header(ttl=2)
    assert fu.decrement_ttl(h, 3) and h[3 + 8] == 1


def test_net_unreachable_packet() -> None:
    payload = b"12345678abcdefgh"
    offender = bytes(ip_header(proto=17, length=20 + 8 + len(payload))) + struct.pack("!HHHH", 40000, 53, 24, 0) + payload
    tun_ip = ipaddress.IPv4Address("10.244.1.0").packed
    reply = fu.build_net_unreachable(offender, tun_ip)
    assert reply is not None
    assert len(reply) == 20 + 8 + 20 + 8
    assert fu.inet_checksum(reply[:20]) in (0, 0xFFFF)  # a valid header sums to all ones
    version_ihl, _, total, _, _, ttl, proto, _, src, dst = struct.unpack("!BBHHHBBH4s4s", reply[:20])
    assert (version_ihl, total, ttl, proto) == (0x45, len(reply), 8, 1)
    assert src == tun_ip and dst == offender[12:16]
    icmp = reply[20:]
    assert (icmp[0], icmp[1]) == (3, 0)
    assert fu.inet_checksum(icmp) in (0, 0xFFFF)
    assert icmp[8:] == offender[:28]  # the offender's header + first 8 bytes of its payload


def test_net_unreachable_not_sent_when_proxy_c_would_not() -> None:
    tun_ip = bytes(4)
    echo = bytes(ip_header(proto=1, length=28)) + bytes([8, 0, 0, 0, 0, 1, 0, 1])
    assert fu.build_net_unreachable(echo, tun_ip) is None  # proxy.c: never about ICMP
    assert fu.build_net_unreachable(echo, tun_ip, about_echo=True) is not None
    err = bytes(ip_header(proto=1, length=28)) + bytes([3, 0, 0, 0, 0, 0, 0, 0])
    assert fu.build_net_unreachable(err, tun_ip, about_echo=True) is None  # never about ICMP errors
    frag = bytes(ip_header(proto=17, frag=0x0010, length=28)) + bytes(8)
    assert fu.build_net_unreachable(frag, tun_ip) is None  # not about non-first fragments
    big = bytearray(ip_header(proto=17)) + bytes(40 + 8)
    big[0] = 0x4F  # a 60-byte header: proxy.c refuses
    assert fu.build_net_unreachable(bytes(big), tun_ip) is None
    assert fu.build_net_unreachable(b"\x45" * 10, tun_ip) is None


def test_route_table_lookup() -> None:
    table = fu.RouteTable([("10.244.2.0/24", "192.168.56.12", 8285), ("10.244.3.0/24", "192.168.56.13", 8285)])
    assert table.prefix_len == 24
    assert table.lookup(ipaddress.IPv4Address("10.244.2.77").packed) == ("192.168.56.12", 8285)
    assert table.lookup(ipaddress.IPv4Address("10.244.3.1").packed) == ("192.168.56.13", 8285)
    assert table.lookup(ipaddress.IPv4Address("10.244.9.9").packed) is None
    # the hot loops key the dict straight from a packet buffer
    pkt = ip_header(dst="10.244.3.200")
    assert table.table.get(table.key_struct.unpack_from(pkt, 16)[0]) == ("192.168.56.13", 8285)
    odd = fu.RouteTable([("10.244.16.0/20", "192.168.56.12", 8285)])
    assert odd.lookup(ipaddress.IPv4Address("10.244.31.255").packed) == ("192.168.56.12", 8285)
    assert odd.lookup(ipaddress.IPv4Address("10.244.32.1").packed) is None
    with pytest.raises(ValueError):
        fu.RouteTable([("10.244.2.0/24", "192.168.56.12", 8285), ("10.245.0.0/16", "192.168.56.13", 8285)])


def test_parse_arguments() -> None:
    assert fu.parse_route("10.244.2.0/24=192.168.56.12", 8285) == ("10.244.2.0/24", "192.168.56.12", 8285)
    assert fu.parse_route("10.244.2.0/24=192.168.56.12:9000", 8285)[2] == 9000
    assert fu.parse_listen("192.168.56.11:8285") == ("192.168.56.11", 8285)
    assert fu.parse_listen("192.168.56.11") == ("192.168.56.11", 8285)
    for bad in ("10.244.2.0/24", "10.244.2.1/24=192.168.56.12", "10.244.2.0/24=nodeA", "10.244.2.0/24=1.2.3.4:0"):
        with pytest.raises(ValueError):
            fu.parse_route(bad, 8285)
    res = subprocess.run([sys.executable, "-m", "emu.backends.udp.daemon", "--listen", "192.168.56.11:8285", "--route",
                          "10.244.2.0/24=192.168.56.12", "--route", "10.244.0.0/16=192.168.56.13"],
                         capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
    assert res.returncode == 2 and "prefix length" in res.stderr
    for bad_args, words in ((["--sock-buf", "100"], "--sock-buf 100"), (["--txqueuelen", "0"], "--txqueuelen 0"),
                            (["--offload", "always"], "--offload")):
        res = subprocess.run([sys.executable, "-m", "emu.backends.udp.daemon", "--listen", "192.168.56.11"] + bad_args,
                             capture_output=True, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO))
        assert res.returncode == 2 and words in res.stderr and "Traceback" not in res.stderr, res.stderr


def test_default_is_the_per_packet_loop() -> None:
    """Without --offload the daemon runs proxy.c's loop: batching is an explicit option, never the default."""
    from emu.backends.udp import daemon

    args, _listen, _routes = daemon.parse_args(["--listen", "192.168.56.11"])
    assert args.offload == "off" and args.txqueuelen is None
    assert "NOT flannel's behaviour" in " ".join(daemon.build_parser().format_help().split())


def tcp_segment(seq: int, payload: bytes, flags: int = 0x10, ttl: int = 62, ident: int = 1) -> bytes:
    """An IPv4/TCP packet 10.244.1.2:40000 -> 10.244.2.2:5201 with a timestamp option."""
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 777, 8 << 4, flags, 500, 0, 0) + bytes([1, 1, 8, 10]) + bytes(8)
    ip = ip_header(ttl=ttl, proto=6, length=20 + len(tcp) + len(payload), ident=ident)
    return bytes(ip) + tcp + payload


def test_gro_burst_merges_one_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    """A UDP GRO burst of 3 full + 1 short TCP segment and one UDP packet: one GSO write, then the UDP one."""
    writes: List[bytes] = []
    monkeypatch.setattr(batched.os, "writev", lambda fd, bufs: writes.append(b"".join(bytes(b) for b in bufs)) or 0)
    monkeypatch.setattr(batched.os, "write", lambda fd, b: writes.append(bytes(b)) or 0)
    proxy = batched.BatchedProxy.__new__(batched.BatchedProxy)
    proxy.tun_fd, proxy.stats, proxy.log = -1, device.Stats(), lambda msg: None
    mss = 100
    data = bytes(range(256)) * 2
    segs = [tcp_segment(1000 + i * mss, data[i * mss:(i + 1) * mss], ident=i) for i in range(3)]
    segs.append(tcp_segment(1000 + 3 * mss, data[300:350], flags=0x18, ident=3))
    udp = bytes(ip_header(proto=17, length=28)) + bytes(8)
    stride = len(segs[0])  # UDP GRO: every datagram of a burst has this size but the last
    buf = bytearray(batched.BUF_SIZE)
    first = b"".join(segs)
    buf[:len(first)] = first
    out = bytearray(batched.BUF_SIZE)
    proxy._coalesce_and_write(buf, memoryview(buf), len(first), stride, out, memoryview(out))
    assert len(writes) == 1
    vnet, pkt = writes[0][:device.VNET_HDR_LEN], writes[0][device.VNET_HDR_LEN:]
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = batched.VNET_HDR.unpack(vnet)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (1, 1, 52, mss, 20, 16)
    assert struct.unpack_from("!H", pkt, 2)[0] == len(pkt) == 52 + 350
    assert pkt[52:] == data[:350]
    assert pkt[8] == 61  # one proxy decrement, as proxy.c's udp_to_tun
    assert fu.inet_checksum(pkt[:20]) in (0, 0xFFFF)
    assert pkt[33] & 0x08  # PSH of the last segment kept
    # a lone datagram of another protocol goes through on its own, TTL - 1, no GSO
    writes.clear()
    buf[:len(udp)] = udp
    proxy._coalesce_and_write(buf, memoryview(buf), len(udp), len(udp), out, memoryview(out))
    assert len(writes) == 1 and writes[0][:device.VNET_HDR_LEN] == bytes(device.VNET_HDR_LEN)
    assert writes[0][device.VNET_HDR_LEN + 8] == 63 and writes[0][device.VNET_HDR_LEN + 20:] == bytes(8)


# --- experiments/udp_cost.py (the backends against the underlay's rate), without root ---------------------------
def load_udp_cost():  # type: ignore[no-untyped-def]
    import importlib.util

    spec = importlib.util.spec_from_file_location("udp_cost", os.path.join(REPO, "experiments", "udp_cost.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_udp_cost_shapes_by_emu_up_to_mininets_limit_only() -> None:
    """Up to 1000 Mbit/s emu shapes the links (TCLink); above, Mininet would ignore the rate, so no bw at all is
    planned (not even the topology's 100) and the experiment's own tc takes over."""
    from emu.spec.load import load

    udp_cost = load_udp_cost()
    spec, _ = load([os.path.join(REPO, "topologies", "bandwidth.yaml")])
    assert {n.link.bw for n in spec.nodes} == {100.0}
    assert {n.link.bw for n in udp_cost.prepare(spec, {"bw": 1000, "backend": "udp"}).nodes} == {1000.0}
    fast = udp_cost.prepare(spec, {"bw": 10000, "backend": "udp"})
    assert {n.link.bw for n in fast.nodes} == {None} and fast.underlay.link.bw is None
    assert max(udp_cost.VARY["bw"]) == 10000 and min(udp_cost.VARY["bw"]) == 100
    assert set(udp_cost.VARY["backend"]) == {"vxlan", "host-gw", "udp"}


def test_udp_cost_plot(tmp_path: "os.PathLike[str]") -> None:
    pytest.importorskip("matplotlib")
    from emu.report.results import Results

    path = os.path.join(str(tmp_path), "run", "results.csv")
    with Results.open(path, "udp_cost", ["bw", "backend"]) as results:
        for bw in (100, 1000, 10000):
            for backend, ceiling in (("vxlan", 6000.0), ("host-gw", 8000.0), ("udp", 450.0)):
                results.set_context({"bw": str(bw), "backend": backend}, 0)
                gbit = min(bw * 0.93, ceiling) / 1000
                results.add("cross-node", "client", "server", "iperf3-tcp", "throughput", gbit, "Gbit/s")
                results.add("cross-node", "client", "server", "ping", "rtt_p50", 0.2 if backend == "udp" else 0.1, "ms")
    written = load_udp_cost().plot(path, str(tmp_path))
    assert sorted(p.suffix for p in written) == [".png", ".svg"]
    assert all(p.stat().st_size > 1000 for p in written)


# --- root tests: two hand-built nodes ----------------------------------------------------------------------
def run(argv: List[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{argv} failed ({res.returncode}): {res.stdout}{res.stderr}")
    return res


def nsx(ns: str, argv: List[str]) -> List[str]:
    return ["ip", "netns", "exec", ns] + argv


def start_daemon(ns: str, args: List[str], env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Start the daemon in ``ns`` with ``python -m emu.backends.udp.daemon`` and wait for READY (or its exit).

    Its stderr goes to a file (``proc.log_path``): with -v it may write more than a pipe holds."""
    log = tempfile.NamedTemporaryFile(prefix="emutest-udp-", suffix=".log", delete=False)
    proc = subprocess.Popen(nsx(ns, [sys.executable, "-m", "emu.backends.udp.daemon"] + args), stdout=subprocess.PIPE,
                            stderr=log, text=True, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO, **(env or {})))
    log.close()
    proc.log_path = log.name  # type: ignore[attr-defined]
    STARTED.append(proc)
    ready, _, _ = select.select([proc.stdout], [], [], 15)
    line = proc.stdout.readline().strip() if ready else ""
    if line != "READY":
        proc.wait(timeout=5)
    return proc


def stderr_of(proc: subprocess.Popen) -> str:
    """What a daemon started by start_daemon wrote to stderr (once it has exited, the file is removed and the
    text kept on ``proc``)."""
    if hasattr(proc, "log_text"):
        return proc.log_text  # type: ignore[attr-defined]
    path = proc.log_path  # type: ignore[attr-defined]
    with open(path, errors="replace") as f:
        text = f.read()
    if proc.poll() is not None:
        os.unlink(path)
        proc.log_text = text  # type: ignore[attr-defined]
    return text


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def delete_namespaces(names: List[str]) -> None:
    for name in names:
        if os.path.exists(f"/run/netns/{name}"):
            for pid in run(["ip", "netns", "pids", name], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)  # only what these tests started lives in their namespaces
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", name], check=False)


#: the data paths under test: the daemon as the udp backend starts it (no option: proxy.c's loop, in C when it is
#: built), the same loop forced to C and to Python, and the batching option
MODES = {"default": [], "c": ["--loop", "c"], "python": ["--loop", "python"], "batched": ["--offload", "auto"]}
PER_PACKET = ("default", "c", "python")


class Nodes:
    """The two-node, two-pod setup with a daemon per node (-v: it reports its counters when it exits)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.ns = {k: f"{PREFIX}{mode}-{k}" for k in ("n1", "n2", "p1", "p2")}
        self.daemons: Dict[int, subprocess.Popen] = {}

    def build(self) -> None:
        ns = self.ns
        for name in ns.values():
            run(["ip", "netns", "add", name])
        run(["ip", "link", "add", "eth0", "netns", ns["n1"], "type", "veth", "peer", "name", "eth0", "netns", ns["n2"]])
        for i in (1, 2):
            n, p, j = ns[f"n{i}"], ns[f"p{i}"], 3 - i
            for argv in (["ip", "addr", "add", f"{NODE_IPS[i]}/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"],
                         ["ip", "link", "set", "lo", "up"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"]):
                run(nsx(n, argv))
            run(["ip", "link", "add", "veth0", "netns", n, "mtu", "1472", "type", "veth", "peer", "name", "eth0",
                 "netns", p, "mtu", "1472"])
            run(nsx(n, ["ip", "addr", "add", f"10.244.{i}.1/24", "dev", "veth0"]))
            run(nsx(n, ["ip", "link", "set", "veth0", "up"]))
            for argv in (["ip", "link", "set", "lo", "up"], ["ip", "addr", "add", f"{POD_IPS[i]}/24", "dev", "eth0"],
                         ["ip", "link", "set", "eth0", "up"], ["ip", "route", "add", "default", "via", f"10.244.{i}.1"]):
                run(nsx(p, argv))
            proc = start_daemon(n, ["--tun", "flannel0", "--listen", f"{NODE_IPS[i]}:8285", "--route",
                                    f"10.244.{j}.0/24={NODE_IPS[j]}", "--ping-unreachable", "-v"] + MODES[self.mode])
            self.daemons[i] = proc
            assert proc.poll() is None, f"daemon did not start: {stderr_of(proc)}"
            # what the apply layer does after READY (flanneld's configureIface)
            run(nsx(n, ["ip", "addr", "add", f"10.244.{i}.0/32", "dev", "flannel0"]))
            run(nsx(n, ["ip", "link", "set", "flannel0", "mtu", "1472", "up"]))
            run(nsx(n, ["ip", "route", "add", "10.244.0.0/16", "dev", "flannel0"]))

    def close(self) -> None:
        for proc in self.daemons.values():
            stop(proc)
            stderr_of(proc)
        delete_namespaces(list(self.ns.values()))


@root_fixture(scope="class", params=list(MODES))
def nodes(request: pytest.FixtureRequest) -> Iterator[Nodes]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces and TUN devices")
    if request.param == "c" and helper.unusable():
        pytest.skip(f"the daemon's C loop: {helper.unusable()}")
    tb = Nodes(request.param)
    try:
        tb.build()
        yield tb
    finally:
        tb.close()


def exit_counters(text: str) -> Dict[str, int]:
    """The counters of the daemon's ``-v`` exit line ("exiting: 12 packets sent, 10 received, ...")."""
    line = next(ln for ln in text.splitlines() if "exiting:" in ln)
    return {name: int(value) for value, name in re.findall(r"(\d+) ([a-zA-Z ]+?)(?:,|$)", line.split("exiting:", 1)[1])}


def read_pcap(path: str) -> List[bytes]:
    """Frames of a classic pcap file (Ethernet link type)."""
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    assert struct.unpack(endian + "I", data[20:24])[0] == 1, "expected an Ethernet capture"
    frames, off = [], 24
    while off + 16 <= len(data):
        incl = struct.unpack(endian + "I", data[off + 8:off + 12])[0]
        frames.append(data[off + 16:off + 16 + incl])
        off += 16 + incl
    return frames


def bulk_transfer(nodes: Nodes, size: int) -> Tuple[int, str]:
    """Send ``size`` pseudo-random bytes over one TCP connection p1 -> p2; what p2 got: (bytes, sha256)."""
    server_code = ("import socket,hashlib;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                   f"s.bind(('{POD_IPS[2]}',5000));s.listen(1);print('up',flush=True);c,_=s.accept();h=hashlib.sha256();n=0\n"
                   "while True:\n b=c.recv(1<<16)\n if not b: break\n h.update(b);n+=len(b)\n"
                   "print(n,h.hexdigest(),flush=True)")
    client_code = ("import socket,random;d=random.Random(7).getrandbits(8*%d).to_bytes(%d,'little');"
                   "s=socket.create_connection(('%s',5000),timeout=20);s.sendall(d);s.close()" % (size, size, POD_IPS[2]))
    server = subprocess.Popen(nsx(nodes.ns["p2"], [sys.executable, "-c", server_code]), stdout=subprocess.PIPE,
                              text=True)
    STARTED.append(server)
    try:
        assert server.stdout.readline().strip() == "up"
        run(nsx(nodes.ns["p1"], [sys.executable, "-c", client_code]), timeout=60)
        out, _ = server.communicate(timeout=60)
    finally:
        stop(server)
    n, digest = out.split()
    return int(n), digest


def expected_digest(size: int) -> str:
    return hashlib.sha256(random.Random(7).getrandbits(8 * size).to_bytes(size, "little")).hexdigest()


def link_packets(ns: str, dev: str) -> Tuple[int, int]:
    """The kernel's (rx, tx) packet counters of ``dev`` in namespace ``ns``."""
    stats = json.loads(run(nsx(ns, ["ip", "-s", "-j", "link", "show", "dev", dev])).stdout)[0]["stats64"]
    return stats["rx"]["packets"], stats["tx"]["packets"]


@needs_root
@pytest.mark.root
class TestTwoNodes:
    """Pod-to-pod traffic through a real daemon on each node, in both loop styles."""

    def test_ping_across(self, nodes: Nodes) -> None:
        res = run(nsx(nodes.ns["p1"], ["ping", "-c", "3", "-i", "0.2", "-W", "2", POD_IPS[2]]), check=False)
        assert res.returncode == 0, res.stdout + res.stderr

    def test_wire_is_bare_ip_in_udp_8285(self, nodes: Nodes, tmp_path: "os.PathLike[str]") -> None:
        pcap = os.path.join(str(tmp_path), "underlay.pcap")
        cap = subprocess.Popen(nsx(nodes.ns["n1"], ["tcpdump", "-i", "eth0", "-U", "-w", pcap, "-c", "6", "udp"]),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        STARTED.append(cap)
        try:
            ready, _, _ = select.select([cap.stderr], [], [], 10)
            assert ready and "listening" in cap.stderr.readline()
            run(nsx(nodes.ns["p1"], ["ping", "-c", "3", "-i", "0.2", "-s", "200", POD_IPS[2]]))
            cap.wait(timeout=10)
        finally:
            stop(cap)
        frames = read_pcap(pcap)
        assert len(frames) == 6
        seen = set()
        for frame in frames:
            assert struct.unpack_from("!H", frame, 12)[0] == 0x0800
            outer = frame[14:]
            ihl = (outer[0] & 15) * 4
            assert outer[9] == 17
            sport, dport, ulen = struct.unpack_from("!HHH", outer, ihl)
            assert (sport, dport) == (8285, 8285)
            inner = outer[ihl + 8:ihl + ulen]
            assert inner[0] >> 4 == 4 and struct.unpack_from("!H", inner, 2)[0] == len(inner)  # one bare IP packet
            assert fu.inet_checksum(inner[:20]) in (0, 0xFFFF)
            src, dst = str(ipaddress.IPv4Address(inner[12:16])), str(ipaddress.IPv4Address(inner[16:20]))
            seen.add((str(ipaddress.IPv4Address(outer[12:16])), src, dst))
            assert inner[9] == 1 and len(inner) == 20 + 8 + 200
            assert inner[8] == 62  # 64 - 1 (node's kernel routing) - 1 (sending proxy)
        assert seen == {(NODE_IPS[1], POD_IPS[1], POD_IPS[2]), (NODE_IPS[2], POD_IPS[2], POD_IPS[1])}

    def test_ttl_decrement(self, nodes: Nodes) -> None:
        out = run(nsx(nodes.ns["p1"], ["ping", "-c", "1", "-W", "2", POD_IPS[2]])).stdout
        # 64 - 2 kernel routers - 2 proxy decrements (proxy.c decrements in tun_to_udp and in udp_to_tun)
        assert "ttl=60" in out, out

    def test_net_unreachable(self, nodes: Nodes) -> None:
        start = time.monotonic()
        res = run(nsx(nodes.ns["p1"], ["ping", "-c", "1", "-W", "3", "10.244.9.9"]), check=False)
        assert time.monotonic() - start < 1.5, "got a timeout, not an ICMP error"
        assert "Destination Net Unreachable" in res.stdout, res.stdout
        assert "From 10.244.1.0" in res.stdout  # from flannel0's address, as proxy.c

    def test_tcp_bulk_transfer_intact(self, nodes: Nodes) -> None:
        n, digest = bulk_transfer(nodes, 8 << 20)
        assert n == 8 << 20 and digest == expected_digest(8 << 20)

    def test_one_datagram_per_packet_kernel_counters(self, nodes: Nodes) -> None:
        """The kernel's own packet counters, not the daemon's, around a 4 MiB TCP transfer p1 -> p2: by default
        every packet the sending daemon reads from flannel0 leaves n1's underlay as a datagram of its own, and
        every datagram n2's underlay takes in is one write into n2's flannel0. The batching option sends runs of
        packets as one UDP GSO buffer (the veth underlay carries it uncut, as a NIC would cut it) and writes
        merged TCP segments: far fewer underlay packets than TUN packets."""
        before = {(i, dev): link_packets(nodes.ns[f"n{i}"], dev) for i in (1, 2) for dev in ("flannel0", "eth0")}
        n, digest = bulk_transfer(nodes, 4 << 20)
        assert n == 4 << 20 and digest == expected_digest(4 << 20)
        after = {key: link_packets(nodes.ns[f"n{key[0]}"], key[1]) for key in before}
        delta = {key: (after[key][0] - before[key][0], after[key][1] - before[key][1]) for key in before}
        tun_read, underlay_sent = delta[(1, "flannel0")][1], delta[(1, "eth0")][1]  # (rx, tx) each
        underlay_received, tun_written = delta[(2, "eth0")][0], delta[(2, "flannel0")][0]
        assert tun_read > 2500, delta  # 4 MiB in packets of at most 1432 bytes of payload
        if nodes.mode in PER_PACKET:
            assert tun_read <= underlay_sent <= tun_read * 1.02 + 10, delta  # + ARP
            assert underlay_received * 0.98 - 10 <= tun_written <= underlay_received, delta
        else:
            assert underlay_sent < tun_read / 2, delta

    def test_tun_queue_and_socket_buffers(self, nodes: Nodes) -> None:
        """flannel0's queue: the kernel's 500 (flanneld sets none) by default, 1000 for the batching option;
        the socket buffers: 4 MiB by default, 8 MiB batched (the kernel reports twice what was set)."""
        link = run(nsx(nodes.ns["n1"], ["ip", "link", "show", "flannel0"])).stdout
        assert f"qlen {batched.TXQUEUELEN if nodes.mode == 'batched' else 500}" in link, link
        sockets = run(nsx(nodes.ns["n1"], ["ss", "-uanm", "sport", "=", ":8285"])).stdout
        wanted = batched.SOCK_BUF_BYTES if nodes.mode == "batched" else device.SOCK_BUF
        assert f"rb{2 * wanted}," in sockets and f"tb{2 * wanted}," in sockets, sockets

    def test_zz_one_system_call_per_packet(self, nodes: Nodes) -> None:
        """Runs last in the class (it stops the daemons). The default is proxy.c's loop, in C when it is built
        (the daemon's process is then udp_proxy) and in Python otherwise: one thread, one send per datagram and
        one TUN write per datagram received, by its own counters; the batching option sends fewer times than it
        forwards packets (UDP GSO) after the bulk transfers above."""
        threads = {i: len(os.listdir(f"/proc/{proc.pid}/task")) for i, proc in nodes.daemons.items()}
        programs = {os.readlink(f"/proc/{proc.pid}/exe") for proc in nodes.daemons.values()}
        if nodes.mode == "c" or (nodes.mode == "default" and helper.unusable() is None):
            assert programs == {str(helper.binary().resolve())}  # the C loop, exec'd in the daemon's place
        else:  # the Python loop, or the batching option (Python only)
            assert programs == {os.path.realpath(sys.executable)}
        counts = {}
        for i, proc in nodes.daemons.items():
            stop(proc)
            assert proc.returncode == 0
            counts[i] = exit_counters(stderr_of(proc))
        sender, receiver = counts[1], counts[2]
        assert sender["packets sent"] > 5000 and receiver["received"] > 5000  # the 12 MiB of transfers went through
        if nodes.mode != "batched":
            assert threads == {1: 1, 2: 1}
            for c in counts.values():
                assert c["UDP sends"] == c["packets sent"] and c["TUN reads"] >= c["packets sent"]
                assert c["TUN writes"] == c["received"] <= c["UDP reads"] <= c["received"] + c["dropped"]
                assert c["waits"] > 0
        else:
            assert threads == {1: 3, 2: 3}
            assert sender["UDP sends"] < sender["packets sent"] / 2, sender


@needs_root
@pytest.mark.root
def test_sigterm_exits_zero_and_removes_device(tmp_path: "os.PathLike[str]") -> None:
    ns = f"{PREFIX}term"
    ready_file = os.path.join(str(tmp_path), "ready")
    try:
        run(["ip", "netns", "add", ns])
        run(nsx(ns, ["ip", "link", "set", "lo", "up"]))
        proc = start_daemon(ns, ["--tun", "flannel0", "--listen", "127.0.0.1:8285", "--route",
                                 "10.244.2.0/24=192.168.56.12", "--ready-file", ready_file])
        assert proc.poll() is None and os.path.exists(ready_file)
        assert run(nsx(ns, ["ip", "link", "show", "flannel0"]), check=False).returncode == 0
        # a second daemon for the same device fails clearly with exit 1
        second = start_daemon(ns, ["--tun", "flannel0", "--listen", "127.0.0.1:8286"])
        assert second.wait(timeout=10) == 1 and "flannel0" in stderr_of(second)
        # so does one that cannot bind its address, in every data path
        for mode in MODES.values():
            third = start_daemon(ns, ["--tun", "flannel9", "--listen", "192.0.2.1:8285"] + mode)
            assert third.wait(timeout=10) == 1 and "cannot bind" in stderr_of(third)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert run(nsx(ns, ["ip", "link", "show", "flannel0"]), check=False).returncode != 0
        assert run(nsx(ns, ["ip", "link", "show", "flannel9"]), check=False).returncode != 0
    finally:
        for p in STARTED:
            if p.poll() is None and p.args[:4] == ["ip", "netns", "exec", ns]:
                stop(p)
        delete_namespaces([ns])


@needs_root
@pytest.mark.root
def test_without_the_c_loop_python_takes_over() -> None:
    """No C loop (EMU_UDP_HELPER names nothing): by default the daemon says so and runs the Python loop;
    with --loop c it refuses, with one line and exit 1."""
    ns = f"{PREFIX}noc"
    missing = {helper.ENV: "/nonexistent/udp_proxy"}
    try:
        run(["ip", "netns", "add", ns])
        run(nsx(ns, ["ip", "link", "set", "lo", "up"]))
        proc = start_daemon(ns, ["--listen", "127.0.0.1:8285", "--route", "10.244.2.0/24=127.0.0.2"], env=missing)
        assert proc.poll() is None, stderr_of(proc)
        assert "running the same loop in Python" in stderr_of(proc) and "/nonexistent/udp_proxy" in stderr_of(proc)
        assert not any("udp_proxy" in arg for arg in open(f"/proc/{proc.pid}/cmdline").read().split("\0"))
        stop(proc)
        assert proc.returncode == 0
        refused = start_daemon(ns, ["--listen", "127.0.0.1:8286", "--loop", "c"], env=missing)
        assert refused.wait(timeout=10) == 1
        text = stderr_of(refused)
        assert "--loop c:" in text and "is not built" in text and "Traceback" not in text, text
    finally:
        for p in STARTED:
            if p.poll() is None and p.args[:4] == ["ip", "netns", "exec", ns]:
                stop(p)
        delete_namespaces([ns])


udp_cluster = cluster_fixture("two_nodes.yaml", backends=[b for b in BACKENDS if b.values[0] == "udp"])


@pytest.mark.root
def test_cluster_daemons_run_the_c_loop_when_built(udp_cluster) -> None:  # type: ignore[no-untyped-def]
    """In a cluster emu builds, each node's flannel udp daemon (started with the backend's arguments, no loop
    option) is the C loop when install.sh has built it, the Python loop otherwise; one thread either way."""
    pids = [p.pid for p in udp_cluster.state.processes if p.role == "daemon" and p.name.startswith("flannel-udp/")]
    assert len(pids) == len(udp_cluster.plan.nodes)
    expected = str(helper.binary().resolve()) if helper.unusable() is None else os.path.realpath(sys.executable)
    assert {os.readlink(f"/proc/{pid}/exe") for pid in pids} == {expected}
    assert all(len(os.listdir(f"/proc/{pid}/task")) == 1 for pid in pids)
    client = udp_cluster.pods[0]
    server = next(pod for pod in udp_cluster.pods if pod.node != client.node)
    pinged = client.exec(["ping", "-c", "2", "-i", "0.2", "-W", "2", server.ip], timeout=20)
    assert pinged.returncode == 0, pinged.stdout + pinged.stderr


def test_zz_nothing_left_behind() -> None:
    """Runs last in this file: every namespace and process these tests made is gone."""
    if os.geteuid() == 0:
        left = [n for n in run(["ip", "netns", "list"]).stdout.split() if n.startswith(PREFIX)]
        assert not left
    assert all(p.poll() is not None for p in STARTED)
