"""The traffic of a live trace, and the helper processes it runs: a listener in the destination, the client in the
source (``ping``, or the tcp/udp clients of ``emu.trace.probe``), each recorded in the cluster's state while it runs
(so ``emu clean`` finds it after a crash) and stopped before the trace returns.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING, Any, Optional, Tuple

from emu.apply.pods import listening_ports
from emu.measure import python_module_argv
from emu.trace.evidence import runner
from emu.trace.model import Place, Prediction

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["PROBE", "listen", "own", "disown", "stop", "wait_for", "send"]

#: The module of the programs that send and receive a trace's tcp and udp packets.
PROBE = "emu.trace.probe"


def listen(cluster: "Cluster", place: Place, proto: str, port: int) -> Optional["subprocess.Popen[str]"]:
    """Start a listener on ``port`` in ``place`` unless something already listens there; None if not started."""
    if place.kind == "pod":
        pod = cluster.pod(place.name)
        pid, popen = pod.pause.pid, pod.popen
    elif place.kind == "node":
        node = cluster.node(place.node)
        pid, popen = node.pid, node.popen
    else:
        return None
    if (port, proto.upper()) in listening_ports(pid):
        return None
    proc = popen(python_module_argv(PROBE, "listen", proto, str(port)))
    own(cluster, proc, f"listener/{place.name}")
    if not wait_for(proc.stdout, "ready\n", timeout=5.0):
        stop(proc)
        disown(cluster, proc)
        return None
    return proc


def own(cluster: "Cluster", proc: "subprocess.Popen[str]", what: str) -> None:
    """Record a helper process in the cluster's state, so that ``emu clean`` finds it after a crash."""
    state = getattr(cluster, "state", None)
    if state is not None:
        try:
            state.add_process(proc.pid, "trace", what)
        except (OSError, ValueError):
            pass


def disown(cluster: "Cluster", proc: "subprocess.Popen[str]") -> None:
    state = getattr(cluster, "state", None)
    if state is not None:
        try:
            state.forget_process(proc.pid)
        except (OSError, ValueError):
            pass


def stop(proc: "subprocess.Popen[str]", sig: int = signal.SIGTERM) -> str:
    """Stop a process this module started; its remaining output."""
    out = ""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except OSError:
            pass
    try:
        out, _ = proc.communicate(timeout=3)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out or ""


def wait_for(stream: Any, text: str, timeout: float = 3.0) -> bool:
    """Wait until ``stream`` (the pipe of a process this module started) has printed ``text``; read raw, so nothing
    stays buffered."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text.encode() not in seen:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(stream.fileno(), 4096)
        if not chunk:
            break
        seen += chunk
    return text.encode() in seen


def send(
    cluster: "Cluster", prediction: Prediction, count: int, size: Optional[int]
) -> Tuple[int, Optional[int], str]:
    """Send the trace's packets from its source: (expected growth per hop, answered, the client's summary)."""
    src = prediction.src
    run = runner(cluster, src.name if src.kind == "pod" else src.node, src.kind)
    dst = prediction.dst.ip
    if prediction.proto == "icmp":
        argv = ["ping", "-n", "-c", str(count), "-i", "0.1", "-W", "1"]
        if size is not None:
            argv += ["-s", str(size), "-M", "do"]
        result = run(argv + [dst])
        match = re.search(r"(\d+) packets transmitted, (\d+) (?:packets )?received", result.stdout)
        answered = int(match.group(2)) if match else 0
        errors = (result.stderr.strip().splitlines() or [""])[-1]
        summary = f"ping {' '.join(argv[1:])} {dst}: " + (match.group(0) if match else (errors or "no output"))
        if match and errors:
            summary += f" ({errors})"
        return count, answered, summary
    program = f"{prediction.proto}-client"
    result = run(python_module_argv(PROBE, program, dst, str(prediction.port), str(count)))
    try:
        report = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return count, None, f"the {prediction.proto} client failed: {result.stderr.strip()[-300:]}"
    error = f", error: {report['error']}" if report.get("error") else ""
    if prediction.proto == "tcp":
        if report["connected"]:
            return count, 1, f"tcp to {dst}:{prediction.port}: connected, sent {report['sent']} segments{error}"
        return max(1, report["attempts"]), 0, (f"tcp to {dst}:{prediction.port}: not connected after "
                                               f"{report['attempts']} attempts{error}")
    return count, None, f"udp to {dst}:{prediction.port}: sent {report['sent']} datagrams{error}"
