"""The reachability probe (``emu.measure.reach``): run for real on loopback, as emu runs it in a pod (from a
directory without emu, with a pod's environment). No root.

Every outcome it reports is produced here: a TCP handshake (connected), a TCP reset (refused), a UDP reply
(connected), an ICMP port unreachable (refused), and silence (timeout, after the timeout and not much later).
"""

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Iterator, List

import pytest
from test_helper_programs import ENV, LoopbackEndpoint, free_port

from emu.measure import MeasurementError
from emu.measure.reach import Prober, parse, reach, target


class PipedEndpoint(LoopbackEndpoint):
    """A loopback endpoint whose ``popen`` takes ``stdin``, as pods' and nodes' do."""

    def popen(self, argv: List[str], stdin: int = subprocess.DEVNULL) -> "subprocess.Popen[str]":
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=stdin, text=True,
                                cwd=self.cwd, env=ENV, start_new_session=True)


@pytest.fixture
def servers() -> Iterator[dict]:
    """A TCP listener, a UDP server answering "hostname" with "pod-a", a UDP socket that never answers, and a
    TCP and a UDP port where nothing listens."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(16)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    mute = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    mute.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def answer() -> None:
        udp.settimeout(0.1)
        while not stop.is_set():
            try:
                data, peer = udp.recvfrom(512)
            except socket.timeout:
                continue
            if data == b"hostname":
                udp.sendto(b"pod-a", peer)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield {
        "tcp open": target("TCP", "127.0.0.1", tcp.getsockname()[1]),
        "tcp closed": target("TCP", "127.0.0.1", free_port()),
        "udp answers": target("UDP", "127.0.0.1", udp.getsockname()[1]),
        "udp closed": target("UDP", "127.0.0.1", free_port(socket.SOCK_DGRAM)),
        "udp silent": target("UDP", "127.0.0.1", mute.getsockname()[1]),
    }
    stop.set()
    thread.join()
    for s in (tcp, udp, mute):
        s.close()


EXPECTED = {"tcp open": "connected", "tcp closed": "refused", "udp answers": "connected", "udp closed": "refused",
            "udp silent": "timeout"}


def test_one_run_probes_every_target_at_once(tmp_path: Path, servers: dict) -> None:
    started = time.monotonic()
    results = reach(LoopbackEndpoint(tmp_path), list(servers.values()), timeout=0.6)
    took = time.monotonic() - started
    assert {name: results[t] for name, t in servers.items()} == EXPECTED
    assert took < 0.6 + 5.0  # one shared deadline, not one per target (+ the program's start)


def test_a_kept_program_answers_request_after_request(tmp_path: Path, servers: dict) -> None:
    with Prober(PipedEndpoint(tmp_path)) as prober:
        first = prober.reach(list(servers.values()), timeout=0.4)
        started = time.monotonic()
        again = prober.reach([servers["tcp open"], servers["udp answers"]], timeout=0.4)
        assert time.monotonic() - started < 0.4  # everything answered: one round trip, not the timeout
        process = prober.process
    assert {name: first[t] for name, t in servers.items()} == EXPECTED
    assert set(again.values()) == {"connected"}
    assert process.poll() == 0  # end of its input: it exits


def test_bad_output_and_a_dead_program_are_measurement_errors(tmp_path: Path) -> None:
    assert parse('noise\n{"tcp:1.2.3.4:80": {"result": "timeout", "ms": 1000}}\n') == {"tcp:1.2.3.4:80": "timeout"}
    with pytest.raises(ValueError):
        parse("")
    with pytest.raises(MeasurementError):
        reach(LoopbackEndpoint(tmp_path), ["sctp:127.0.0.1:80"])
    prober = Prober(PipedEndpoint(tmp_path))
    prober.process.kill()
    prober.process.wait()
    with pytest.raises(MeasurementError):
        prober.reach([target("TCP", "127.0.0.1", 9)])
    prober.close()
