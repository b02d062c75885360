"""The live half of ``emu trace``: real packets through a running cluster, each predicted hop marked seen or not.

This module owns sending the trace's traffic, reading the kernel's evidence before and after, and explaining the
first hop the packets did not reach. It only reads state and runs short-lived helper processes (a client in the
source; a listener in the destination for tcp/udp when nothing listens there; a tcpdump of IPv4 packets in each pod
and node on the path and on the underlay switch's port); it changes nothing in the cluster, records its helpers in
the cluster's state (so ``emu clean`` finds them after a crash) and stops them all before returning, even on
failure.

Evidence, per kind of hop (``emu.trace.predict.Hop``):
- a device hop: the device's packet counter in the hop's direction (``ip -json -s link`` in that pod or node, or
  in the root namespace for a switch port) must grow by at least the number of packets sent, and so must the
  IPv4 packets tcpdump saw there in that direction (counters alone also count the IPv6 link-local chatter of
  fresh devices; a capture alone also sees packets a device then drops);
- a routing decision: the live ``ip route get DST [from SRC iif DEV]`` in that namespace must choose the planned
  route, and the packets must have reached it (the hop before was seen);
- a kube-proxy decision: the counters of the KUBE-SERVICES rule and of the endpoint's KUBE-SEP DNAT rule
  (``iptables-save -c``) must grow; for a Service the trace follows the endpoint kube-proxy really picked;
- the underlay hop also shows the first packet captured there (the VXLAN or flanneld encapsulation, or none).
For the first hop not seen, ``diagnose`` compares the live state with the plan there and further on: a missing
route, a device that is missing, down, detached from cni0 or has a smaller MTU than the packet, a path MTU the
source remembers, an ARP request nobody answers, a missing neighbour or FDB entry, a dead pod or flanneld, an
iptables rule that dropped the packets.
"""

from __future__ import annotations

import json
import re
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

from emu.apply import commands
from emu.errors import EmuError
from emu.trace.predict import FORMAT, Hop, Place, Prediction, TraceInputError, predict
from emu.types import ExecResult

if TYPE_CHECKING:
    from emu.controller import Cluster

__all__ = ["HopResult", "TraceResult", "trace", "DEFAULT_COUNT"]

#: Packets (pings, datagrams, TCP segments) a trace sends by default.
DEFAULT_COUNT = 5

# A TCP client: connect (retrying until `count` attempts or 3 s), send `count` one-byte segments, close; print JSON.
TCP_CLIENT = r"""
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
start, attempts, sent, error, connected = time.monotonic(), 0, 0, "", False
while attempts < count and time.monotonic() - start < 3.0:
    attempts += 1
    try:
        s = socket.create_connection((host, port), timeout=1.0)
    except OSError as exc:
        error = str(exc)
        time.sleep(0.05)
        continue
    connected = True
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for _ in range(count):
            s.sendall(b"x")
            sent += 1
            time.sleep(0.02)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(1.0)
        while s.recv(4096):
            pass
    except OSError as exc:
        error = str(exc)
    s.close()
    break
print(json.dumps({"connected": connected, "attempts": attempts, "sent": sent, "error": error}))
"""

UDP_CLIENT = r"""
import json, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sent, error = 0, ""
for i in range(count):
    try:
        s.sendto(b"emu-trace", (host, port))
        sent += 1
    except OSError as exc:
        error = str(exc)
    time.sleep(0.05)
print(json.dumps({"sent": sent, "error": error}))
"""

# A listener for the duration of a trace: print "ready", then one line per connection or datagram received.
LISTENER = r"""
import socket, sys
proto, port = sys.argv[1], int(sys.argv[2])
kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
s = socket.socket(socket.AF_INET, kind)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
if proto == "tcp":
    s.listen(16)
print("ready", flush=True)
while True:
    if proto == "tcp":
        c, _ = s.accept()
        n = 0
        while True:
            data = c.recv(4096)
            if not data:
                break
            n += len(data)
        c.close()
        print("conn", n, flush=True)
    else:
        data, _ = s.recvfrom(65535)
        print("dgram", len(data), flush=True)
"""


@dataclass
class HopResult:
    hop: Hop
    seen: bool
    evidence: str
    capture: str = ""  # the first packet tcpdump showed on this hop's device

    def to_dict(self) -> Dict[str, Any]:
        data = _hop_dict(self.hop)
        data.update({"seen": self.seen, "evidence": self.evidence, "capture": self.capture})
        return data


@dataclass
class TraceResult:
    """A prediction checked against the kernel.

    sent: packets the client tried to send; expected: the growth each device counter on the path must show;
    answered: replies (pings answered, TCP connections made, datagrams the listener got; None when unknown).
    client: what the client said, in one line.
    first_not_seen: the index of the first hop not seen (None when all were); reason: why, from the live state.
    """

    prediction: Prediction
    hops: List[HopResult]
    sent: int
    expected: int
    answered: Optional[int]
    client: str
    first_not_seen: Optional[int] = None
    reason: str = ""
    notes: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every hop seen, and the plan delivers the packet."""
        return self.first_not_seen is None and self.prediction.delivered

    def to_dict(self) -> Dict[str, Any]:
        p = self.prediction
        return {
            "format": FORMAT,
            "cluster": p.cluster,
            "backend": p.backend,
            "src": _place(p.src),
            "dst": _place(p.dst),
            "target": _place(p.target),
            "proto": p.proto,
            "port": p.port,
            "size": p.size,
            "packets": {"sent": self.sent, "expected_per_hop": self.expected, "answered": self.answered,
                        "client": self.client},
            "hops": [h.to_dict() for h in self.hops],
            "delivered": p.delivered,
            "first_not_seen": self.first_not_seen,
            "reason": self.reason or None,
            "ok": self.ok,
            "notes": list(p.notes) + self.notes,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _place(place: Place) -> Dict[str, str]:
    return {"name": place.name, "kind": place.kind, "ip": place.ip, "node": place.node}


def _hop_dict(hop: Hop) -> Dict[str, Any]:
    from dataclasses import asdict

    data = asdict(hop)
    data["drop"] = hop.drop
    data["expects"] = [list(e) for e in hop.expects]
    if data["service"] is not None:
        data["service"]["alternatives"] = [list(a) for a in data["service"]["alternatives"]]
    return data


# ----------------------------------------------------------------------------------------------- evidence

Runner = Callable[[List[str]], ExecResult]


def _runner(cluster: "Cluster", location: str, kind: str) -> Runner:
    if kind == "pod":
        pod = cluster.pod(location)
        return lambda argv: pod.exec(argv, timeout=15)
    if kind == "node":
        node = cluster.node(location)
        return lambda argv: node.exec(argv, timeout=15)
    return lambda argv: commands.run(argv, timeout=15)


def _links(cluster: "Cluster", location: str, kind: str) -> Optional[Dict[str, Dict[str, Any]]]:
    """Every link of a namespace with its counters, MTU, flags and master; None when it cannot be read."""
    argv = ["ip", "-json", "-s", "link", "show"] + (["master", location] if kind == "switch" else [])
    try:
        result = _runner(cluster, location, kind)(argv)
    except (EmuError, KeyError):
        return None
    if result.returncode != 0:
        return None
    out: Dict[str, Dict[str, Any]] = {}
    for link in json.loads(result.stdout or "[]"):
        stats = link.get("stats64") or link.get("stats") or {}
        out[link["ifname"]] = {
            "rx": stats.get("rx", {}).get("packets", 0),
            "tx": stats.get("tx", {}).get("packets", 0),
            "mtu": link.get("mtu", 0),
            "flags": link.get("flags", []),
            "master": link.get("master", ""),
        }
    return out


_RULE = re.compile(r"^\[(\d+):(\d+)\] -A (\S+) (.*)$")


def _rules(cluster: "Cluster", node: str) -> Dict[Tuple[str, str, str, int], int]:
    """Packet counters of every iptables rule of a node: (table, chain, rule, occurrence) -> packets."""
    try:
        result = cluster.node(node).exec(["iptables-save", "-c"], timeout=15)
    except (EmuError, KeyError):
        return {}
    table, out, seen = "", {}, {}  # type: ignore[var-annotated]
    for line in result.stdout.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
            continue
        match = _RULE.match(line)
        if match:
            key = (table, match.group(3), match.group(4))
            seen[key] = seen.get(key, 0) + 1
            out[key + (seen[key],)] = int(match.group(1))
    return out


@dataclass
class _Snapshot:
    links: Dict[Tuple[str, str], Optional[Dict[str, Dict[str, Any]]]]
    rules: Dict[str, Dict[Tuple[str, str, str, int], int]]


def _snapshot(cluster: "Cluster", locations: Sequence[Tuple[str, str]]) -> _Snapshot:
    links = {(loc, kind): _links(cluster, loc, kind) for loc, kind in locations}
    rules = {loc: _rules(cluster, loc) for loc, kind in locations if kind == "node"}
    return _Snapshot(links, rules)


def _rule_delta(before: _Snapshot, after: _Snapshot, node: str, test: Callable[[str, str, str], bool]) -> int:
    total = 0
    old = before.rules.get(node, {})
    for key, packets in after.rules.get(node, {}).items():
        if test(key[0], key[1], key[2]):
            total += max(0, packets - old.get(key, 0))
    return total


# ------------------------------------------------------------------------------------------------ traffic


def _listen(cluster: "Cluster", place: Place, proto: str, port: int) -> Optional["subprocess.Popen[str]"]:
    """Start a listener on ``port`` in ``place`` unless something already listens there; None if not started."""
    from emu.apply.pods import listening_ports

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
    proc = popen(["python3", "-c", LISTENER, proto, str(port)])
    _own(cluster, proc, f"listener/{place.name}")
    if not _wait_for(proc, proc.stdout, "ready\n", timeout=5.0):
        _stop(proc)
        _disown(cluster, proc)
        return None
    return proc


def _own(cluster: "Cluster", proc: "subprocess.Popen[str]", what: str) -> None:
    """Record a helper process in the cluster's state, so that ``emu clean`` finds it after a crash."""
    state = getattr(cluster, "state", None)
    if state is not None:
        try:
            state.add_process(proc.pid, "trace", what)
        except (OSError, ValueError):
            pass


def _disown(cluster: "Cluster", proc: "subprocess.Popen[str]") -> None:
    state = getattr(cluster, "state", None)
    if state is not None:
        try:
            state.forget_process(proc.pid)
        except (OSError, ValueError):
            pass


def _stop(proc: "subprocess.Popen[str]", sig: int = signal.SIGTERM) -> str:
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


def _wait_for(proc: "subprocess.Popen[str]", stream: Any, text: str, timeout: float = 3.0) -> bool:
    """Wait until ``stream`` (a pipe of ``proc``) has printed ``text``; read raw, so nothing stays buffered."""
    import os

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


class _Capture:
    """One tcpdump of IPv4 packets: on every device of a pod or node (``-i any``), or on one switch port. A thread
    drains its output as it comes, so a busy capture never blocks on a full pipe."""

    def __init__(self, location: str, kind: str, device: str, proc: "subprocess.Popen[str]") -> None:
        import threading

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


def _start_captures(cluster: "Cluster", candidates: Sequence[Prediction]) -> List[_Capture]:
    """A tcpdump in every pod and node on the candidate paths, and on every switch port they cross; each ready
    before this returns. IPv4 only: the IPv6 link-local chatter of fresh devices is not the trace's traffic."""
    import shutil

    if shutil.which("tcpdump", path=commands.SAFE_PATH) is None:
        return []
    vxlan = any(h.step == "encap" for c in candidates for h in c.hops) and candidates[0].proto != "udp"
    wanted: List[Tuple[str, str, str]] = []
    for candidate in candidates:
        for hop in candidate.hops:
            where = (hop.location, hop.location_kind, hop.device if hop.location_kind == "switch" else "")
            if hop.device and where not in wanted:
                wanted.append(where)
    started: List[_Capture] = []
    try:
        for location, kind, device in wanted:
            base = ["tcpdump", "-nn", "-l", "--immediate-mode", "-B", "1024"]
            if kind == "switch":
                argv = base + ["-i", device, "-Q", "out", "ip"]
                proc = commands.popen(argv)
            else:
                argv = base + ["-i", "any"] + (["-T", "vxlan"] if vxlan and kind == "node" else []) + ["ip"]
                proc = (cluster.pod(location) if kind == "pod" else cluster.node(location)).popen(argv)
            _own(cluster, proc, f"tcpdump/{location}")
            started.append(_Capture(location, kind, device, proc))
        for capture in list(started):
            if not _wait_for(capture.proc, capture.proc.stderr, "listening on"):
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
class _Captured:
    """What the captures saw: IPv4 packets per (location, device, rx|tx), and the first one's text."""

    counts: Dict[Tuple[str, str, str], int] = field(default_factory=dict)
    samples: Dict[Tuple[str, str, str], str] = field(default_factory=dict)
    watched: List[Tuple[str, str]] = field(default_factory=list)  # (location, device or "")

    def covers(self, location: str, device: str) -> bool:
        return (location, "") in self.watched or (location, device) in self.watched


def _read_captures(captures: Sequence[_Capture]) -> _Captured:
    seen = _Captured()
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


def _send(
    cluster: "Cluster", prediction: Prediction, count: int, size: Optional[int]
) -> Tuple[int, Optional[int], str]:
    """Send the trace's packets from its source: (expected growth per hop, answered, the client's summary)."""
    src = prediction.src
    run = _runner(cluster, src.name if src.kind == "pod" else src.node, src.kind)
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
    script = TCP_CLIENT if prediction.proto == "tcp" else UDP_CLIENT
    result = run(["python3", "-c", script, dst, str(prediction.port), str(count)])
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


# ------------------------------------------------------------------------------------------------ judging


def _route_get(cluster: "Cluster", hop: Hop) -> Tuple[Optional[Dict[str, Any]], str]:
    """The live ``ip route get`` for a routing hop: (its first entry or None, the error text)."""
    route = hop.route
    assert route is not None
    argv = ["ip", "-json", "route", "get", route.dst]
    if route.iif and route.src:
        argv += ["from", route.src, "iif", route.iif]
    try:
        result = _runner(cluster, hop.location, hop.location_kind)(argv)
    except (EmuError, KeyError) as exc:
        return None, str(exc)
    if result.returncode != 0:
        return None, (result.stderr.strip() or result.stdout.strip()).replace("RTNETLINK answers: ", "")
    try:
        entries = json.loads(result.stdout or "[]")
    except ValueError:
        return None, result.stdout.strip()
    return (entries[0] if entries else None), ""


def _describe_live(entry: Dict[str, Any]) -> str:
    if entry.get("type") == "local":
        return f"local {entry.get('dst')} (delivered to this namespace)"
    via = f" via {entry['gateway']}" if entry.get("gateway") else ""
    return f"{entry.get('dst')}{via} dev {entry.get('dev')}"


def _route_matches(hop: Hop, entry: Dict[str, Any]) -> bool:
    route = hop.route
    assert route is not None
    if route.kind == "local":
        return entry.get("type") == "local"
    if entry.get("type") not in (None, "unicast"):
        return False
    return entry.get("dev") == route.dev and (entry.get("gateway") or "") == route.via


def _judge(cluster: "Cluster", prediction: Prediction, before: _Snapshot, after: _Snapshot, expected: int,
           captured: _Captured) -> List[HopResult]:
    results: List[HopResult] = []
    reached = True
    for hop in prediction.hops:
        if hop.step == "route":
            assert hop.route is not None
            if hop.route.kind == "none":
                seen, evidence = reached, "no route in the plan either"
            else:
                entry, error = _route_get(cluster, hop)
                if entry is None:
                    seen, evidence = False, f"live: {error or 'no answer'}"
                else:
                    seen = _route_matches(hop, entry)
                    evidence = f"live: {_describe_live(entry)}"
                    if not seen:
                        evidence += f" (the plan says {hop.route.text})"
                if seen and not reached:
                    seen, evidence = False, evidence + "; but the packets did not get here"
        elif hop.step == "kube-proxy":
            seen, evidence = _judge_kube_proxy(hop, before, after, reached)
        elif hop.step == "drop":
            seen = reached
            evidence = "the packets end here, as the plan says" if reached else "not reached"
        elif hop.direction:
            old = (before.links.get((hop.location, hop.location_kind)) or {}).get(hop.device)
            new = (after.links.get((hop.location, hop.location_kind)) or {}).get(hop.device)
            if old is None or new is None:
                seen, evidence = False, f"{hop.device} not found in {hop.location}"
            else:
                delta = new[hop.direction] - old[hop.direction]
                seen = delta >= expected
                evidence = f"{hop.direction} counter +{delta}"
                if captured.covers(hop.location, hop.device):
                    count = captured.counts.get((hop.location, hop.device, hop.direction), 0)
                    seen = seen and count >= expected
                    evidence += f", tcpdump {count} IPv4 packet{'s' if count != 1 else ''}"
                evidence += f" (needs {expected})"
        else:
            seen, evidence = reached, "no counter tells (ARP only)"
        sample = ""
        if hop.step == "underlay-out" and hop.direction:
            key = (hop.location, hop.device, hop.direction)
            if key in captured.samples:
                sample = f"tcpdump -ni {hop.device}: {captured.samples[key]}"
        results.append(HopResult(hop, seen, evidence, sample))
        reached = seen
    return results


def _judge_kube_proxy(hop: Hop, before: _Snapshot, after: _Snapshot, reached: bool) -> Tuple[bool, str]:
    choice = hop.service
    if choice is None:
        return reached, "no rule applies, as the plan says" if reached else "not reached"
    node = hop.location
    svc = _rule_delta(before, after, node, lambda t, c, r: t == "nat" and c == "KUBE-SERVICES"
                      and r.endswith(f"-j {choice.svc_chain}"))
    picked = {
        sep: _rule_delta(before, after, node, lambda t, c, r, sep=sep, dnat=dnat: t == "nat" and c == sep
                         and r.endswith(f"-j DNAT --to-destination {dnat}"))
        for sep, dnat, _pod, _p in choice.alternatives
    }
    counts = ", ".join(f"{sep} +{n}" for sep, n in picked.items())
    evidence = f"nat KUBE-SERVICES -> {choice.svc_chain} +{svc}; DNAT rules: {counts}"
    return svc >= 1 and picked.get(choice.sep_chain, 0) >= 1, evidence


# --------------------------------------------------------------------------------------------- diagnosing


def diagnose(cluster: "Cluster", result: TraceResult, after: _Snapshot, before: _Snapshot) -> str:
    """Why the first hop not seen was not reached, from the live state compared with the plan."""
    index = result.first_not_seen
    assert index is not None
    hops = [r.hop for r in result.hops]
    hop = hops[index - 1]
    previous = [h for h in hops[: index - 1] if h.device]
    last_device = previous[-1] if previous else None
    reasons: List[str] = []

    for loc, kind in ((hop.location, hop.location_kind),) + (
            ((last_device.location, last_device.location_kind),) if last_device else ()):
        if kind == "pod":
            try:
                cluster.pod(loc)
            except KeyError:
                reasons.append(f"pod {loc} is not running (deleted, or its pause process died)")
    for problem in cluster.check_health():
        if "flannel udp daemon" in problem and (f"on {hop.location} " in problem + " "):
            reasons.append(f"{problem}: nothing carries {hop.location}'s pod packets to other nodes")

    if hop.step == "route" and hop.route is not None:
        reasons += _route_reasons(cluster, hop, last_device)
    following = next((h for h in hops[index:] if h.device and h.direction), None)
    checked = []
    for h in ([last_device] if last_device else []) + ([hop] if hop.device else []) + (
            [following] if following else []):
        if (h.location, h.device) not in checked:
            checked.append((h.location, h.device))
            found = _device_reasons(h, after)
            reasons += found
            if any("does not fit" in r for r in found):
                break  # the first device too small for the packet is the one that matters
    for h in hops[: index]:
        if h.location == hop.location and h.expects:
            reasons += _expect_reasons(cluster, h)
    reasons += _drop_rules(before, after)
    reasons += _source_mtu_reasons(cluster, result)
    for h in hops[index - 1: index + 1]:
        if h.step in ("leave-pod", "bridge-out", "bridge-forward", "underlay-out"):
            reasons += _neighbour_reasons(cluster, hops, h)
    if not any("does not fit" in r or "does not exist" in r or "is down" in r for r in reasons):
        for h in hops[index:]:  # the cause may lie further along the path (a symptom shows first here)
            if h.device and h.direction and (h.location, h.device) not in checked:
                checked.append((h.location, h.device))
                found = _device_reasons(h, after)
                if found:
                    reasons.append(f"further on, at hop {h.index}: " + "; ".join(found))
                    break
    if reasons:
        return "; ".join(dict.fromkeys(reasons))
    where = f"{hop.device} ({hop.direction}) in {hop.location}" if hop.device else f"{hop.location}"
    if last_device is not None:
        return (f"the packets were counted on {last_device.device} in {last_device.location} but not on {where}: "
                "lost between the two (compare the live state there with `emu plan`)")
    return f"the packets never reached {where}"


def _source_mtu_reasons(cluster: "Cluster", result: TraceResult) -> List[str]:
    """A path MTU the source remembers (from an earlier 'fragmentation needed') that is smaller than the packet."""
    p = result.prediction
    if p.proto != "icmp" or not p.hops or p.hops[0].route is None:
        return []
    try:
        live = _runner(cluster, p.hops[0].location, p.hops[0].location_kind)(["ip", "route", "get", p.dst.ip])
    except (EmuError, KeyError):
        return []
    match = re.search(r"\bmtu (\d+)", live.stdout)
    if match and int(match.group(1)) < p.size:
        return [f"{p.hops[0].location} remembers a path MTU of {match.group(1)} for {p.dst.ip} (`ip route show "
                f"cache`), learnt from an ICMP 'fragmentation needed': a {p.size}-byte packet with DF is refused "
                "at the source (`ip route flush cache` forgets it)"]
    return []


def _neighbour_reasons(cluster: "Cluster", hops: Sequence[Hop], hop: Hop) -> List[str]:
    """The next hop's MAC could not be resolved (ARP failed) where ``hop`` sends the packet on a link."""
    route = next((h.route for h in reversed(hops[: hop.index - 1]) if h.step == "route" and h.route), None)
    if route is None or route.kind not in ("planned", "connected"):
        return []
    next_hop = route.via or route.dst
    location = hops[hops.index(hop) - 1].location if hop.step == "leave-pod" else hop.location
    kind = "pod" if hop.step == "leave-pod" else hop.location_kind
    try:
        live = _runner(cluster, location, kind)(["ip", "-json", "neigh", "show", "to", next_hop, "dev", route.dev])
        entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
    except (EmuError, KeyError, ValueError):
        return []
    for entry in entries:
        state = entry.get("state") or []
        if any(s in ("FAILED", "INCOMPLETE") for s in state):
            return [f"{location} gets no answer to its ARP requests for {next_hop} on {route.dev} (neighbour state "
                    f"{'/'.join(state)}): nothing that holds {next_hop} is reachable on that link"]
    return []


def _route_reasons(cluster: "Cluster", hop: Hop, last_device: Optional[Hop]) -> List[str]:
    route = hop.route
    assert route is not None
    after = f": the packet is dropped after {last_device.device}" if last_device else ""
    try:
        listing = _runner(cluster, hop.location, hop.location_kind)(["ip", "-json", "route", "show"])
        live = json.loads(listing.stdout or "[]") if listing.returncode == 0 else []
    except (EmuError, KeyError, ValueError):
        live = []
    entry, error = _route_get(cluster, hop)
    if route.kind == "planned":
        prefix = "default" if route.prefix == "0.0.0.0/0" else route.prefix
        present = any(
            r.get("dst") == prefix and r.get("dev") == route.dev and (r.get("gateway") or "") == route.via
            for r in live
        )
        if not present:
            now = f" (now: {_describe_live(entry)})" if entry else ""
            return [f"no route to {route.prefix} in {hop.location}{after}{now}; the plan has `{route.text}`"]
    if route.kind == "connected" and not any(r.get("dst") == route.prefix and r.get("dev") == route.dev
                                             for r in live):
        return [f"no route to {route.prefix} in {hop.location}{after}: the address of {route.dev} that implies it "
                f"is gone ({route.text})"]
    if entry is None:
        return [f"{hop.location} cannot route {route.dst}: {error}"]
    if not _route_matches(hop, entry):
        return [f"{hop.location} routes {route.dst} as {_describe_live(entry)}, but the plan says `{route.text}`"]
    return []


def _device_reasons(hop: Hop, after: _Snapshot) -> List[str]:
    links = after.links.get((hop.location, hop.location_kind))
    if links is None:
        return []
    link = links.get(hop.device)
    where = f"{hop.device} in {hop.location}"
    if link is None:
        return [f"{hop.device} does not exist in {hop.location}"]
    out: List[str] = []
    if "UP" not in link["flags"]:
        out.append(f"{where} is down (`ip link set {hop.device} up` brings it back)")
    elif "LOWER_UP" not in link["flags"] and hop.location_kind != "switch":
        out.append(f"{where} has no carrier (the other end of its link is down)")
    if hop.step in ("bridge-in", "bridge-forward") and link["master"] != "cni0":
        out.append(f"{where} is not a port of cni0 (master: {link['master'] or 'none'}): the bridge cannot forward "
                   f"to or from it (`ip link set {hop.device} master cni0`)")
    if hop.mtu and link["mtu"] != hop.mtu:
        fits = "does not fit" if hop.size > link["mtu"] else "fits"
        out.append(f"{where} has MTU {link['mtu']}, the plan says {hop.mtu}: the {hop.size}-byte packet {fits}")
    elif hop.size > link["mtu"] > 0:
        out.append(f"the {hop.size}-byte packet does not fit {where} (MTU {link['mtu']}): with DF set it is not sent "
                   "on (the sender hears 'fragmentation needed', or 'message too long' if it is its own device)")
    return out


def _expect_reasons(cluster: "Cluster", hop: Hop) -> List[str]:
    out: List[str] = []
    run = _runner(cluster, hop.location, hop.location_kind)
    for kind, text in hop.expects:
        words = text.split()
        if kind == "neigh":
            ip, dev, lladdr = words[0], words[2], words[4]
            live = run(["ip", "-json", "neigh", "show", "dev", dev])
            entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
            if not any(e.get("dst") == ip and e.get("lladdr") == lladdr for e in entries):
                out.append(f"no neighbour entry {ip} -> {lladdr} on {dev} in {hop.location} (the plan has `{text}`): "
                           "the VXLAN device cannot address the inner frame")
        elif kind == "fdb":
            lladdr, dev, dst = words[0], words[2], words[4]
            live = run(["bridge", "-json", "fdb", "show", "dev", dev])
            entries = json.loads(live.stdout or "[]") if live.returncode == 0 else []
            if not any(e.get("mac") == lladdr and e.get("dst") == dst for e in entries):
                out.append(f"no FDB entry {lladdr} -> {dst} on {dev} in {hop.location} (the plan has `{text}`): the "
                           "VXLAN device does not know which node to send to")
    return out


def _drop_rules(before: _Snapshot, after: _Snapshot) -> List[str]:
    out: List[str] = []
    for node, rules in after.rules.items():
        old = before.rules.get(node, {})
        for (table, chain, rule, _n), packets in rules.items():
            delta = packets - old.get((table, chain, rule, _n), 0)
            if delta > 0 and re.search(r"-j (DROP|REJECT)\b", rule):
                out.append(f"iptables in {node}: `-t {table} -A {chain} {rule}` matched {delta} packets")
    return out


# -------------------------------------------------------------------------------------------------- trace


def _deleted_pod(cluster: "Cluster", name: str) -> Optional[str]:
    """The address a pod had when ``name`` is a pod that was deleted or died (None otherwise)."""
    pods = getattr(cluster, "_pods", {})
    pod = pods.get(name)
    if pod is not None and not pod.alive:
        return str(pod.ip)
    return None


def trace(
    cluster: "Cluster",
    src: str,
    dst: str,
    port: Optional[int] = None,
    proto: Optional[str] = None,
    count: int = DEFAULT_COUNT,
    size: Optional[int] = None,
    capture: bool = True,
) -> TraceResult:
    """Predict the path from ``src`` to ``dst`` in ``cluster``'s plan, send real packets, mark every hop.

    src, dst, port, proto, size: as ``emu.trace.predict.predict`` takes them.
    count: packets to send (pings, datagrams, or one-byte TCP segments over one connection).
    capture: also run tcpdump (IPv4 only) in every namespace on the path: a hop then needs its packets captured
        as well as counted, and the underlay hop shows the first packet captured.
    Raises TraceInputError (exit 2) for a bad question, EmuError when the source pod is not running.
    """
    if count < 1 or count > 1000:
        raise TraceInputError(f"--count must be 1..1000, not {count}")
    notes: List[str] = []
    old_ip = _deleted_pod(cluster, src)
    if old_ip is not None:
        raise EmuError(f"pod {src} is not running: nothing can send from it")
    name, _, suffix = dst.partition(":")
    old_ip = _deleted_pod(cluster, name)
    if old_ip is not None:
        notes.append(f"pod {name} is not running: tracing to the address it had, {old_ip}")
        dst = old_ip + (f":{suffix}" if suffix else "")
    first = predict(cluster.plan, src, dst, port, proto, size=size)
    candidates = [first]
    if first.service is not None:
        candidates = [predict(cluster.plan, src, dst, port, proto, endpoint=sep, size=size)
                      for sep, _dnat, _pod, _p in first.service.alternatives]
    locations: List[Tuple[str, str]] = []
    for candidate in candidates:
        for where in candidate.locations():
            if where not in locations:
                locations.append(where)

    processes: List["subprocess.Popen[str]"] = []
    captures: List[_Capture] = []
    captured = _Captured()
    try:
        if first.proto in ("tcp", "udp"):
            targets = {(c.target.name, c.target.kind): c for c in candidates if c.delivered}
            for candidate in targets.values():
                assert candidate.port is not None
                proc = _listen(cluster, candidate.target, candidate.proto, candidate.port)
                if proc is not None:
                    processes.append(proc)
        if capture:
            captures = _start_captures(cluster, candidates)
        before = _snapshot(cluster, locations)
        expected, answered, client = _send(cluster, first, count, size)
        time.sleep(0.15)  # let the last packets cross the path before reading the counters
        after = _snapshot(cluster, locations)
    finally:
        try:
            captured = _read_captures(captures)
        finally:
            listened = [_stop(proc) for proc in processes]
            for proc in processes + [c.proc for c in captures]:
                _disown(cluster, proc)
    if first.proto == "udp" and processes:
        answered = sum(out.count("dgram") for out in listened)
        client += f"; the listener got {answered}"

    chosen = first
    if first.service is not None:
        deltas = []
        for candidate in candidates:
            choice = candidate.service
            assert choice is not None
            delta = _rule_delta(before, after, next(h.location for h in candidate.hops if h.service is not None),
                                lambda t, c, r, ch=choice: t == "nat" and c == ch.sep_chain
                                and r.endswith(f"-j DNAT --to-destination {ch.dnat}"))
            deltas.append(delta)
        if max(deltas) > 0:
            chosen = candidates[deltas.index(max(deltas))]
            notes.append(f"kube-proxy picked {chosen.service.sep_chain} -> {chosen.service.dnat} "  # type: ignore
                         f"(pod {chosen.target.name}); the trace follows it")
    if capture and not captures:
        notes.append("no tcpdump: hops are judged by device counters alone, which also count other traffic")
    hops = _judge(cluster, chosen, before, after, expected, captured)
    result = TraceResult(chosen, hops, count, expected, answered, client, notes=notes)
    missing = [h.hop.index for h in hops if not h.seen]
    if missing:
        result.first_not_seen = missing[0]
        result.reason = diagnose(cluster, result, after, before)
    elif not chosen.delivered:
        result.reason = chosen.hops[-1].action
    elif answered == 0 and chosen.proto == "icmp":
        result.notes.append("every hop on the way there was seen but no reply came back: trace the way back "
                            f"(trace {chosen.target.name} {chosen.src.name})")
    return result

