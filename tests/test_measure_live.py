"""ping() and iperf3() on real network namespaces (root) and on loopback (no root).

The namespace tests build their own two namespaces by hand, with no emu code involved:

    emutest-meas-<pid>-a                       emutest-meas-<pid>-b
    +---------------------+                    +---------------------+
    | va  10.99.0.1/24    |------ veth --------|  vb  10.99.0.2/24   |
    | 10.99.1.2 via .0.2  |                    |  lo  10.99.1.2/32   |
    +---------------------+                    +---------------------+

and an endpoint class that runs commands with ``ip netns exec``. Every test gets fresh namespaces, deleted in
the fixture's teardown even when the test fails. Besides the figures, they check that the iperf3 server never
outlives a measurement: no socket left listening, no process left in the server's namespace.
"""

import os
import shutil
import socket
import subprocess
import time
from typing import Iterator, List, Optional, Tuple

import pytest
from conftest import root_fixture

from emu.measure import ExecResult, MeasurementError
from emu.measure.iperf import iperf3
from emu.measure.ping import REPLY_WAIT_S, ping

TOOLS = ("ip", "ping", "iperf3", "ss")
MISSING = [t for t in TOOLS if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING), reason=f"missing commands: {', '.join(MISSING)} (apt-get install iproute2 iputils-ping iperf3)"
)
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root: creates network namespaces (run with sudo python -m pytest)"
)


def run(argv: List[str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


class NetnsEndpoint:
    """A measurement endpoint in a named network namespace, through ``ip netns exec`` (which execs, so a
    Popen's pid is the program's)."""

    def __init__(self, name: str, netns: str, ip: str) -> None:
        self.name, self.netns, self.ip, self.node = name, netns, ip, ""

    def argv(self, argv: List[str]) -> List[str]:
        return ["ip", "netns", "exec", self.netns] + list(argv)

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        proc = subprocess.run(self.argv(argv), capture_output=True, text=True, timeout=timeout)
        return ExecResult(proc.stdout, proc.stderr, proc.returncode)

    def popen(self, argv: List[str]) -> subprocess.Popen:
        return subprocess.Popen(
            self.argv(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def pids(self) -> List[int]:
        """Processes living in the namespace now."""
        return [int(p) for p in run(["ip", "netns", "pids", self.netns]).stdout.split()]

    def listening(self) -> str:
        return run(self.argv(["ss", "-Hltn"])).stdout.strip()


class LocalEndpoint:
    """The machine's own namespace, reached on loopback (for the tests that need no root)."""

    name, ip, node = "local", "127.0.0.1", ""

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
        return ExecResult(proc.stdout, proc.stderr, proc.returncode)

    def popen(self, argv: List[str]) -> subprocess.Popen:
        return subprocess.Popen(
            list(argv),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@root_fixture()
def pair() -> Iterator[Tuple[NetnsEndpoint, NetnsEndpoint]]:
    """Two fresh namespaces joined by a veth; deleted afterwards, whatever happened."""
    prefix = f"emutest-meas-{os.getpid()}"
    a, b = f"{prefix}-a", f"{prefix}-b"
    steps = [
        ["ip", "netns", "add", a],
        ["ip", "netns", "add", b],
        ["ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b],
        ["ip", "-n", a, "addr", "add", "10.99.0.1/24", "dev", "va"],
        ["ip", "-n", b, "addr", "add", "10.99.0.2/24", "dev", "vb"],
        ["ip", "-n", b, "addr", "add", "10.99.1.2/32", "dev", "lo"],
        ["ip", "-n", a, "link", "set", "lo", "up"],
        ["ip", "-n", b, "link", "set", "lo", "up"],
        ["ip", "-n", a, "link", "set", "va", "up"],
        ["ip", "-n", b, "link", "set", "vb", "up"],
        ["ip", "-n", a, "route", "add", "10.99.1.2/32", "via", "10.99.0.2"],
    ]
    endpoints = (NetnsEndpoint("a", a, "10.99.0.1"), NetnsEndpoint("b", b, "10.99.0.2"))
    try:
        for argv in steps:
            done = run(argv)
            assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        yield endpoints
    finally:
        leftovers = []
        for endpoint in endpoints:
            for pid in endpoint.pids() if os.path.exists(f"/run/netns/{endpoint.netns}") else []:
                leftovers.append(pid)
                try:
                    os.kill(pid, 9)  # only processes inside this test's own namespaces
                except ProcessLookupError:
                    pass
            run(["ip", "netns", "del", endpoint.netns])
        assert not leftovers, f"processes left in the test namespaces: {leftovers}"


def assert_no_server(endpoint: NetnsEndpoint) -> None:
    assert endpoint.listening() == "", f"something still listens in {endpoint.netns}: {endpoint.listening()}"
    assert endpoint.pids() == [], f"processes left in {endpoint.netns}: {endpoint.pids()}"


# ------------------------------------------------------------------------------------------- namespaces


@needs_root
@needs_tools
def test_ping_between_namespaces(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    result = ping(a, b, count=20, interval=0.01)
    assert (result.src, result.dst, result.target) == ("a", "b", "10.99.0.2")
    assert (result.sent, result.received, result.loss) == (20, 20, 0.0)
    assert len(result.rtts) == 20
    assert 0 < result.min <= result.p50 <= result.p90 <= result.p99 <= result.max < 50
    assert result.min <= result.avg <= result.max


@needs_root
@needs_tools
def test_ping_address_string(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, _b = pair
    result = ping(a, "10.99.1.2", count=3, interval=0.05)
    assert result.dst == "10.99.1.2" and result.loss == 0.0


@needs_root
@needs_tools
def test_ping_nobody_there_is_all_lost_not_an_error(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, _b = pair
    started = time.monotonic()
    result = ping(a, "10.99.0.77", count=3, interval=0.2)
    assert time.monotonic() - started < 3 * 0.2 + REPLY_WAIT_S + 5
    assert (result.sent, result.received, result.loss) == (3, 0, 1.0)
    assert result.rtts == () and result.p50 != result.p50  # NaN


@needs_root
@needs_tools
def test_ping_without_route_raises(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, _b = pair
    with pytest.raises(MeasurementError, match="unreachable"):
        ping(a, "10.98.7.7", count=2)


@needs_root
@needs_tools
def test_iperf3_tcp_and_server_is_reaped(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    result = iperf3(a, b, seconds=1)
    assert (result.src, result.dst, result.target, result.protocol) == ("a", "b", "10.99.0.2", "tcp")
    assert result.bits_per_second > 0 and result.sender_bits_per_second > 0
    assert result.retransmits is not None and result.parallel == 1
    assert_no_server(b)


@needs_root
@needs_tools
def test_iperf3_udp_parallel_reverse(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    udp = iperf3(a, b, seconds=1, protocol="udp", bitrate="50M", port=5311)
    assert udp.protocol == "udp" and udp.bits_per_second > 0
    assert udp.jitter_ms is not None and udp.lost_percent is not None and udp.retransmits is None
    assert_no_server(b)
    tcp = iperf3(a, b, seconds=1, parallel=2, reverse=True, port=5312)
    assert tcp.parallel == 2 and tcp.reverse and tcp.bits_per_second > 0
    assert_no_server(b)


@needs_root
@needs_tools
def test_iperf3_connect_to_another_address(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    # as for a Service: the server runs in b, the client connects to an address that leads there
    a, b = pair
    result = iperf3(a, b, seconds=1, connect_to="10.99.1.2")
    assert result.target == "10.99.1.2" and result.dst == "b" and result.bits_per_second > 0
    result = iperf3(a, (b, "10.99.1.2"), seconds=1)
    assert result.target == "10.99.1.2"
    assert_no_server(b)


@needs_root
@needs_tools
def test_iperf3_link_down_fails_in_bounded_time_without_leaking(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    assert run(["ip", "-n", b.netns, "link", "set", "vb", "down"]).returncode == 0
    started = time.monotonic()
    with pytest.raises(MeasurementError) as caught:
        iperf3(a, b, seconds=1, connect_timeout=2)
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert "iperf3 tcp a -> b (10.99.0.2:5201)" in str(caught.value)
    assert_no_server(b)


@needs_root
@needs_tools
def test_iperf3_refuses_a_port_already_listening(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    squatter = b.popen(["iperf3", "-s", "-1", "-p", "5313"])
    try:
        deadline = time.monotonic() + 5
        while ":5313" not in b.listening() and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(MeasurementError, match="already has a listener"):
            iperf3(a, b, seconds=1, port=5313)
    finally:
        squatter.kill()
        squatter.communicate()
    assert_no_server(b)


class Interrupting(NetnsEndpoint):
    """A client endpoint whose iperf3 client run is interrupted as by Ctrl-C."""

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        if argv[:2] == ["iperf3", "-c"]:
            raise KeyboardInterrupt
        return super().exec(argv, timeout)


@needs_root
@needs_tools
def test_iperf3_server_is_reaped_on_keyboard_interrupt(pair: Tuple[NetnsEndpoint, NetnsEndpoint]) -> None:
    a, b = pair
    client = Interrupting("a", a.netns, a.ip)
    with pytest.raises(KeyboardInterrupt):
        iperf3(client, b, seconds=1)
    assert_no_server(b)


# ----------------------------------------------------------------------------------- loopback, no root


@needs_tools
def test_ping_loopback() -> None:
    result = ping(LocalEndpoint(), "127.0.0.1", count=5, interval=0.2)
    assert result.received == 5 and result.loss == 0.0 and 0 < result.p50 < 10


@needs_tools
def test_iperf3_loopback_leaves_no_listener() -> None:
    port = free_port()
    endpoint = LocalEndpoint()
    result = iperf3(endpoint, endpoint, seconds=1, port=port)
    assert result.bits_per_second > 0 and result.target == "127.0.0.1"
    assert run(["ss", "-Hltn", "sport", "=", f":{port}"]).stdout.strip() == ""


class BrokenServer(LocalEndpoint):
    """An endpoint whose server program dies at once (as iperf3 does when it cannot bind)."""

    def popen(self, argv: List[str]) -> subprocess.Popen:
        return super().popen(["sh", "-c", "echo 'iperf3: error - unable to start listener' >&2; exit 1"])


@needs_tools
def test_iperf3_server_that_dies_is_reported_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(MeasurementError, match="exited .* before listening: iperf3: error - unable to start"):
        iperf3(LocalEndpoint(), BrokenServer(), seconds=1, port=free_port())
    assert time.monotonic() - started < 5
