"""The tcpdumps of a live trace: one in every pod and node on the candidate paths and on every switch port they
cross, each ready before the packets are sent, and what they saw (IPv4 packets per device and direction, and the
first one's text).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

from emu import registry
from emu.apply import commands
from emu.trace.model import Prediction
from emu.trace.traffic import own, wait_for

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["Capture", "start_captures", "Captured", "read_captures"]


class Capture:
    """One tcpdump of IPv4 packets: on every device of a pod or node (``-i any``), or on one switch port. A thread
    drains its output as it comes, so a busy capture never blocks on a full pipe."""

    def __init__(self, location: str, kind: str, device: str, proc: "subprocess.Popen[str]") -> None:
        self.location = location
        self.kind = kind
        self.device = device  # "" for -i any
        self.proc = proc
        self.lines: List[str] = []
        self.reader = threading.Thread(target=self._drain, name=f"emu-trace-{location}", daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> str:
        """Stop tcpdump (SIGINT: it prints what it has) and return everything it printed."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGINT)
            except OSError:
                pass
        try:
            self.proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=3)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return "".join(self.lines)


def start_captures(cluster: "Cluster", candidates: Sequence[Prediction]) -> List[Capture]:
    """A tcpdump in every pod and node on the candidate paths, and on every switch port they cross; each ready
    before this returns. IPv4 only: the IPv6 link-local chatter of fresh devices is not the trace's traffic."""
    if shutil.which("tcpdump", path=commands.SAFE_PATH) is None:
        return []
    # A backend that encapsulates in UDP tells tcpdump how to read the inner packets (-T vxlan), unless the
    # traced packets are UDP themselves.
    backend = registry.backend(cluster.plan.backend)
    steps = set(backend.TRACE_LABELS)
    encapsulated = any(h.step in steps and h.direction == "tx" for c in candidates for h in c.hops)
    decode = list(backend.CAPTURE_DECODE) if encapsulated and candidates[0].proto != "udp" else []
    wanted: List[Tuple[str, str, str]] = []
    for candidate in candidates:
        for hop in candidate.hops:
            where = (hop.location, hop.location_kind, hop.device if hop.location_kind == "switch" else "")
            if hop.device and where not in wanted:
                wanted.append(where)
    started: List[Capture] = []
    try:
        for location, kind, device in wanted:
            base = ["tcpdump", "-nn", "-l", "--immediate-mode", "-B", "1024"]
            if kind == "switch":
                argv = base + ["-i", device, "-Q", "out", "ip"]
                proc = commands.popen(argv)
            else:
                argv = base + ["-i", "any"] + (decode if kind == "node" else []) + ["ip"]
                where = {"pod": cluster.pod, "router": cluster.router}.get(kind, cluster.node)
                proc = where(location).popen(argv)
            own(cluster, proc, f"tcpdump/{location}")
            started.append(Capture(location, kind, device, proc))
        for capture in list(started):
            if not wait_for(capture.proc.stderr, "listening on"):
                capture.stop()
                started.remove(capture)
    except BaseException:
        for capture in started:
            capture.stop()
        raise
    return started


_PACKET = re.compile(r"^\d\d:\d\d:\d\d\.\d+ ")
_RX = ("In", "P", "M", "B")


@dataclass
class Captured:
    """What the captures saw: IPv4 packets per (location, device, rx|tx), and the first one's text."""

    counts: Dict[Tuple[str, str, str], int] = field(default_factory=dict)
    samples: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    watched: List[Tuple[str, str]] = field(default_factory=list)  # (location, device or "")

    def covers(self, location: str, device: str) -> bool:
        return (location, "") in self.watched or (location, device) in self.watched


def read_captures(captures: Sequence[Capture]) -> Captured:
    seen = Captured()
    for capture in captures:
        output = capture.stop()
        seen.watched.append((capture.location, capture.device))
        key: Optional[Tuple[str, str, str]] = None
        for line in output.splitlines():
            if not _PACKET.match(line):
                if key is not None and seen.samples.get(key, "").count(" | ") == 0 and line.strip():
                    seen.samples[key] += " | " + line.strip()
                key = None
                continue
            words = line.split()
            if capture.device:
                device, direction, text = capture.device, "tx", " ".join(words[1:])
            elif len(words) > 3:
                device, direction, text = words[1], ("rx" if words[2] in _RX else "tx"), " ".join(words[3:])
            else:
                continue
            key = (capture.location, device, direction)
            seen.counts[key] = seen.counts.get(key, 0) + 1
            if key not in seen.samples:
                seen.samples[key] = text
            else:
                key = None
    return seen
