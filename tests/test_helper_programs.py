"""The helper programs emu runs inside endpoints (``python3 -m emu.measure.rr_peers``, ``python3 -m emu.trace.probe``),
run for real on loopback: no root needed.

Each program is started the way emu starts it (``emu.measure.python_module_argv``), from a directory that does not
hold emu and with an environment that does not name it, as in a pod (whose commands start in ``/`` with the
environment of a root shell or a container).
"""

import json
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from emu.measure import ExecResult, MeasurementError, python_module_argv
from emu.measure.rr import tcp_rr

ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoopbackEndpoint:
    """The machine's own namespace, reached on 127.0.0.1; commands run in ``cwd`` with only ``ENV``."""

    name, ip, node = "local", "127.0.0.1", ""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=self.cwd, env=ENV)
        return ExecResult(proc.stdout, proc.stderr, proc.returncode)

    def popen(self, argv: List[str]) -> "subprocess.Popen[str]":
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                text=True, cwd=self.cwd, env=ENV, start_new_session=True)


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[LoopbackEndpoint]:
    yield LoopbackEndpoint(tmp_path)


def stop(proc: "subprocess.Popen[str]") -> str:
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------- emu.measure.rr_peers


def test_python_module_argv_runs_the_module_with_emu_on_its_path(endpoint: LoopbackEndpoint) -> None:
    argv = python_module_argv("emu.measure.rr_peers", "--help")
    result = endpoint.exec(argv, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "server" in result.stdout and "client" in result.stdout


def test_rr_peers_echo_and_time_every_message(endpoint: LoopbackEndpoint) -> None:
    port = free_port()
    server = endpoint.popen(python_module_argv("emu.measure.rr_peers", "server", str(port), "100"))
    try:
        assert server.stdout is not None and server.stdout.readline() == "listening\n"
        client = endpoint.exec(
            python_module_argv("emu.measure.rr_peers", "client", "127.0.0.1", str(port), "7", "100", "5"), timeout=30
        )
        assert client.returncode == 0, client.stderr
        report = json.loads(client.stdout)
        assert report["peer"] == "127.0.0.1"
        assert len(report["rtts"]) == 7 and all(0 < rtt < 1000 for rtt in report["rtts"])
        server.wait(timeout=10)  # the server ends when the client closes its connection
        assert server.returncode == 0
    finally:
        stop(server)


def test_rr_client_reports_nobody_listening(endpoint: LoopbackEndpoint) -> None:
    port = free_port()
    started = time.monotonic()
    client = endpoint.exec(
        python_module_argv("emu.measure.rr_peers", "client", "127.0.0.1", str(port), "3", "64", "0.3"), timeout=30
    )
    assert client.returncode == 1
    assert json.loads(client.stdout)["error"].startswith("connect: ")
    assert time.monotonic() - started < 10


def test_tcp_rr_on_loopback(endpoint: LoopbackEndpoint) -> None:
    port = free_port()
    result = tcp_rr(endpoint, endpoint, port=port, count=20, size=32)
    assert result.target == "127.0.0.1" and result.port == port and result.size == 32
    assert len(result.rtts) == 20
    assert 0 < result.min <= result.p50 <= result.p90 <= result.p99 <= result.max
    assert not listening(port), "the echo server outlived the measurement"


def test_tcp_rr_reports_a_server_that_cannot_listen(endpoint: LoopbackEndpoint) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(MeasurementError, match="(?s)echo server in local did not start: .*Address already in use"):
            tcp_rr(endpoint, endpoint, port=port, count=5)


# ---------------------------------------------------------------------------------------- emu.trace.probe


def start_listener(endpoint: LoopbackEndpoint, proto: str, port: int) -> "subprocess.Popen[str]":
    proc = endpoint.popen(python_module_argv("emu.trace.probe", "listen", proto, str(port)))
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n", proc.stderr.read() if proc.stderr else ""
    return proc


def test_probe_tcp_client_and_listener(endpoint: LoopbackEndpoint) -> None:
    port = free_port()
    listener = start_listener(endpoint, "tcp", port)
    try:
        client = endpoint.exec(python_module_argv("emu.trace.probe", "tcp-client", "127.0.0.1", str(port), "4"),
                               timeout=30)
        assert client.returncode == 0, client.stderr
        assert json.loads(client.stdout) == {"connected": True, "attempts": 1, "sent": 4, "error": ""}
    finally:
        out = stop(listener)
    assert out.splitlines() == ["conn 4"]  # four one-byte segments on one connection


def test_probe_udp_client_and_listener(endpoint: LoopbackEndpoint) -> None:
    port = free_port(socket.SOCK_DGRAM)
    listener = start_listener(endpoint, "udp", port)
    try:
        client = endpoint.exec(python_module_argv("emu.trace.probe", "udp-client", "127.0.0.1", str(port), "3"),
                               timeout=30)
        assert client.returncode == 0, client.stderr
        assert json.loads(client.stdout) == {"sent": 3, "error": ""}
        time.sleep(0.2)
    finally:
        out = stop(listener)
    assert out.splitlines() == ["dgram 9"] * 3  # b"emu-trace"


def test_probe_tcp_client_gives_up_on_a_closed_port(endpoint: LoopbackEndpoint) -> None:
    port = free_port()
    client = endpoint.exec(python_module_argv("emu.trace.probe", "tcp-client", "127.0.0.1", str(port), "3"),
                           timeout=30)
    report = json.loads(client.stdout)
    assert report["connected"] is False and report["sent"] == 0
    assert report["attempts"] == 3 and "refused" in report["error"].lower()
