"""TCP request/response latency (netperf's TCP_RR): the round trip of a small message over one connection.

Ping cannot measure a path through a Service: kube-proxy's rules translate TCP and UDP, not ICMP, so a ClusterIP
does not answer ping. A TCP round trip can, and it is measured the same way on every placement, so the figures
compare. An echo server runs in the destination, a client in the source sends ``count`` messages of ``size``
bytes one after the other on one connection and times each reply (``time.perf_counter``). Both are the
programs of ``emu.measure.rr_peers``, run with ``python3 -m``; nothing reaches a shell.
"""

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Tuple

from emu.measure import MeasurementError, python_module_argv
from emu.measure.ping import percentile

#: The module of the two programs (echo server, timing client).
PEERS = "emu.measure.rr_peers"


@dataclass(frozen=True)
class RRResult:
    src: str
    dst: str
    target: str
    port: int
    size: int
    rtts: Tuple[float, ...]
    min: float
    avg: float
    p50: float
    p90: float
    p99: float
    max: float


def tcp_rr(src: Any, dst: Any, port: int = 5202, count: int = 200, size: int = 64, timeout: float = 10.0) -> RRResult:
    """Round-trip times of ``count`` ``size``-byte messages from ``src`` to ``dst`` (an endpoint whose ``ip``
    is the address to connect to: a pod, a container at 127.0.0.1, a node, or a Service's cluster IP)."""
    server = dst.popen(python_module_argv(PEERS, "server", str(port), str(size)))
    try:
        line = server.stdout.readline() if server.stdout else ""
        if "listening" not in line:
            err = server.stderr.read() if server.stderr else ""
            raise MeasurementError(f"echo server in {dst.name} did not start: {err.strip() or line.strip()}")
        started = time.monotonic()
        result = src.exec(
            python_module_argv(PEERS, "client", dst.ip, str(port), str(count), str(size), str(timeout)),
            timeout=timeout + count * 0.5 + 5,
        )
        try:
            data = json.loads(result.stdout.strip().splitlines()[-1]) if result.stdout.strip() else {}
        except ValueError:
            data = {"error": f"unreadable output: {result.stdout.strip()[-200:]}"}
        if result.returncode != 0 or "error" in data:
            raise MeasurementError(
                f"tcp_rr {src.name} -> {dst.name}: {data.get('error') or result.stderr.strip()} "
                f"(after {time.monotonic() - started:.1f} s)"
            )
    finally:
        if server.poll() is None:
            server.terminate()
        try:
            server.wait(timeout=2)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr):
            if stream:
                stream.close()
    rtts = tuple(float(x) for x in data["rtts"])
    return RRResult(
        src=src.name,
        dst=dst.name,
        target=data.get("peer", dst.ip),
        port=port,
        size=size,
        rtts=rtts,
        min=min(rtts),
        avg=sum(rtts) / len(rtts),
        p50=percentile(rtts, 50),
        p90=percentile(rtts, 90),
        p99=percentile(rtts, 99),
        max=max(rtts),
    )
