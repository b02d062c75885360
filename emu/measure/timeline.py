"""Measurements over time, for what changes while traffic flows: iperf3's intervals, and ping replies by time.

- ``iperf3_timeline(src, dst, seconds, interval, events)``: one iperf3 TCP run with reports every ``interval``
  seconds, calling each ``(at, action)`` of ``events`` ``at`` seconds after the client started (a link change,
  say); returns the intervals (start and end seconds, throughput) and the times the events really ran, on the
  same clock. iperf3's own clock starts when its test starts, a few milliseconds after the client process does:
  interval times are accurate to that.
- ``ping_timeline(src, address, interval, seconds, events)``: ``ping -D`` (each line stamped with the time), the
  same events; returns when each reply came, relative to the start.
- ``parse_iperf3_intervals`` and ``parse_ping_timeline`` are pure, tested on captured output.

Like the rest of ``emu.measure`` this depends only on the endpoints' ``exec``/``popen`` and ``emu.types``.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

from emu.measure import MeasurementError
from emu.measure.iperf import SERVER_EXIT_GRACE_S, SERVER_START_TIMEOUT_S, _listeners, _reap, _wait_listening

__all__ = ["Interval", "Timeline", "iperf3_timeline", "parse_iperf3_intervals", "ping_timeline", "parse_ping_timeline"]

Event = Tuple[float, Callable[[], Any]]


@dataclass(frozen=True)
class Interval:
    """One iperf3 report: seconds since the test started, and what the receiver got (bit/s; the sender's for TCP
    intervals, as iperf3's client reports them)."""

    start: float
    end: float
    bits_per_second: float
    retransmits: Optional[int] = None


@dataclass(frozen=True)
class Timeline:
    """Samples over time and the moments the events were started (seconds since the start, one clock)."""

    samples: Tuple[Any, ...]
    events: Tuple[float, ...]


def parse_iperf3_intervals(text: str) -> List[Interval]:
    """The ``intervals`` of an iperf3 client's ``-J`` output (pure). Raises MeasurementError on an error or
    output that is not iperf3's JSON."""
    try:
        data = json.loads(text[text.find("{"):]) if "{" in text else None
    except ValueError as exc:
        raise MeasurementError(f"iperf3 JSON does not parse ({exc}): {text.strip()[:200]}") from None
    if not isinstance(data, dict):
        raise MeasurementError(f"iperf3 gave no JSON: {text.strip()[:200] or '(no output)'}")
    if data.get("error") and not data.get("intervals"):
        raise MeasurementError(f"iperf3 error: {data['error']}")
    out = []
    for interval in data.get("intervals") or []:
        total = interval.get("sum") or {}
        out.append(Interval(float(total.get("start", 0.0)), float(total.get("end", 0.0)),
                            float(total.get("bits_per_second", 0.0)), total.get("retransmits")))
    return out


def _run_events(events: Sequence[Event], started: float, done: threading.Event, when: List[float]) -> None:
    for at, action in sorted(events, key=lambda e: e[0]):
        delay = started + at - time.monotonic()
        if delay > 0 and done.wait(delay):
            return
        when.append(time.monotonic() - started)
        action()


def _communicate_with_events(
    proc: "subprocess.Popen[str]", events: Sequence[Event], timeout: float, what: str
) -> Tuple[str, str, List[float]]:
    """Wait for ``proc``'s output while ``events`` run at their times (counted from now); returns stdout, stderr
    and when each event ran. The process is killed if it outlives ``timeout`` (MeasurementError) or the wait."""
    started = time.monotonic()
    done = threading.Event()
    when: List[float] = []
    runner = threading.Thread(target=_run_events, args=(events, started, done, when), daemon=True)
    runner.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MeasurementError(f"{what}: no result within {timeout:g} s") from None
    finally:
        done.set()
        runner.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return out or "", err or "", when


def iperf3_timeline(
    src: Any,
    dst: Any,
    seconds: int,
    interval: float = 0.1,
    events: Sequence[Event] = (),
    port: int = 5201,
    address: Optional[str] = None,
    reverse: bool = False,
) -> Timeline:
    """One iperf3 TCP run from ``src`` to ``dst`` with a report every ``interval`` seconds and ``events`` run on
    the way; the samples are ``Interval`` records. With ``reverse`` the server in ``dst`` sends and the client in
    ``src`` receives (``-R``): the intervals are then what arrived, which follows a link's rate at once (the
    sender's count lags by what its socket buffer holds). A run that fails (nothing got through) raises
    MeasurementError unless it reported intervals."""
    target = address or str(dst.ip)
    if _listeners(dst, port):
        raise MeasurementError(f"port {port} already has a listener in {dst.name}")
    server = dst.popen(["iperf3", "-s", "-1", "-J", "-p", str(port)])
    grace = 0.0
    try:
        _wait_listening(dst, server, port, SERVER_START_TIMEOUT_S)
        client = src.popen(["iperf3", "-c", target, "-p", str(port), "-J", "-t", str(int(seconds)),
                            "-i", f"{interval:g}", "--connect-timeout", "5000"] + (["-R"] if reverse else []))
        out, err, when = _communicate_with_events(client, events, seconds + 30, f"iperf3 {src.name} -> {target}")
        grace = SERVER_EXIT_GRACE_S
        samples = parse_iperf3_intervals(out or err or "")
    finally:
        _reap(server, grace)
    return Timeline(tuple(samples), tuple(when))


_REPLY = re.compile(r"^\[(\d+\.\d+)\] .*icmp_seq=(\d+) .*time=([\d.]+) ms")


def parse_ping_timeline(text: str) -> List[Tuple[float, int, float]]:
    """(epoch seconds, sequence number, RTT ms) of every reply in ``ping -D`` output (pure)."""
    out = []
    for line in text.splitlines():
        match = _REPLY.match(line.strip())
        if match:
            out.append((float(match.group(1)), int(match.group(2)), float(match.group(3))))
    return out


def ping_timeline(
    src: Any, address: str, interval: float, seconds: float, events: Sequence[Event] = ()
) -> Timeline:
    """``ping -D -i INTERVAL`` from ``src`` for ``seconds``, with ``events`` on the way; the samples are (seconds
    since the start, sequence number, RTT ms) of every reply."""
    count = max(1, int(seconds / interval))
    proc = src.popen(["env", "LC_ALL=C", "ping", "-n", "-D", "-i", f"{interval:g}", "-c", str(count), "-W", "1",
                      address])
    started_wall = time.time()
    out, _err, when = _communicate_with_events(proc, events, seconds + 30, f"ping {src.name} -> {address}")
    replies = [(stamp - started_wall, seq, rtt) for stamp, seq, rtt in parse_ping_timeline(out or "")]
    return Timeline(tuple(replies), tuple(when))
