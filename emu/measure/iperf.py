"""iperf3: throughput between two endpoints, from iperf3's own JSON.

This module owns one iperf3 measurement, from server start to server reaping:

1. check that nothing listens on the port in the destination yet (``ss -Hltn sport = :PORT``), so a leftover
   server is reported instead of silently measured;
2. start a one-off server, ``iperf3 -s -1 -J -p PORT``, in the destination with ``popen`` (``-J``: its
   report is written once at exit, so its pipe never fills during a long test);
3. wait until it listens, polling ``ss`` with short, growing pauses (no fixed sleep);
4. run the client, ``iperf3 -c ADDRESS -p PORT -J -t SECONDS [-P N] [-u] [-b RATE] [-R] [-O OMIT]
   [--connect-timeout MS]``, in the source and wait for it with a timeout;
5. always stop and reap the server, whatever happened (error, timeout, KeyboardInterrupt): wait briefly for a
   server whose test completed, otherwise SIGTERM, then SIGKILL after a grace period;
6. parse the client's JSON with ``parse_iperf3_json`` (pure): ``end.sum_received`` / ``end.sum_sent``
   (``end.sum`` for UDP on iperf3 < 3.10), ``end.cpu_utilization_percent``; a JSON ``error`` raises
   ``MeasurementError`` with iperf3's message.

Throughput is the receiver's (what arrived), as iperf3 prints on its "receiver" line; the sender's rate is kept
too. The server runs in the destination endpoint; the client connects to the endpoint's ``ip``, or to
``connect_to`` (e.g. a Service's ClusterIP, whose DNAT leads to the server's pod).
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple, Union

from emu.measure import MeasurementError, run_checked_timeout

__all__ = ["IperfResult", "iperf3", "parse_iperf3_json", "SERVER_START_TIMEOUT_S"]

#: Seconds to wait for the server to listen before giving up.
SERVER_START_TIMEOUT_S = 10.0
#: Seconds a server whose test completed gets to exit by itself before it is terminated.
SERVER_EXIT_GRACE_S = 5.0
#: Seconds between SIGTERM and SIGKILL when stopping the server.
SERVER_TERM_GRACE_S = 3.0
#: Seconds added to the test's own length before the client is given up on.
CLIENT_SLACK_S = 20.0

# iperf3 --help text per binary, asked once: whether this iperf3 knows --connect-timeout (3.2 and later).
_HELP_CACHE: Dict[str, bool] = {}


@dataclass(frozen=True)
class IperfResult:
    """One iperf3 test. Rates in bit/s; ``None`` where the protocol has no such figure
    (retransmits: TCP only; jitter and loss: UDP only)."""

    src: str
    dst: str
    protocol: str  # "tcp" or "udp"
    seconds: float  # the test's duration as iperf3 ran it (omitted seconds not included)
    bits_per_second: float  # receiver side: what arrived
    sender_bits_per_second: float
    retransmits: Optional[int]
    jitter_ms: Optional[float]
    lost_packets: Optional[int]
    lost_percent: Optional[float]
    cpu_local_percent: Optional[float]  # the client's host, total
    cpu_remote_percent: Optional[float]  # the server's host, total
    parallel: int
    target: str = ""  # the address the client connected to
    reverse: bool = False  # True: the server sent, the client received (-R)

    @property
    def gbit_per_second(self) -> float:
        """Receiver throughput in Gbit/s (10^9 bit/s)."""
        return self.bits_per_second / 1e9


def _load_json(text: str) -> Dict[str, Any]:
    start = text.find("{")
    if start < 0:
        excerpt = text.strip()[:200] or "(no output)"
        raise MeasurementError(f"iperf3 gave no JSON: {excerpt}")
    try:
        data, _end = json.JSONDecoder().raw_decode(text[start:])
    except ValueError as exc:
        raise MeasurementError(f"iperf3 JSON does not parse ({exc}): {text.strip()[:200]}") from None
    if not isinstance(data, dict):
        raise MeasurementError(f"iperf3 JSON is not an object: {text.strip()[:200]}")
    return data


def _opt_float(section: Dict[str, Any], key: str) -> Optional[float]:
    value = section.get(key)
    return float(value) if isinstance(value, (int, float)) else None


def _opt_int(section: Dict[str, Any], key: str) -> Optional[int]:
    value = section.get(key)
    return int(value) if isinstance(value, (int, float)) else None


def parse_iperf3_json(text: str, src: str = "", dst: str = "", target: str = "") -> IperfResult:
    """Parse an iperf3 client's ``-J`` output into an IperfResult (pure; ``src``/``dst``/``target`` are
    labels copied into the result).

    Raises MeasurementError with iperf3's message when the JSON has an ``error`` key, and when it is not JSON
    or lacks the end-of-test summary.
    """
    data = _load_json(text)
    error = data.get("error")
    if error:
        raise MeasurementError(f"iperf3 error: {error}")
    test = (data.get("start") or {}).get("test_start") or {}
    end = data.get("end") or {}
    protocol = str(test.get("protocol", "")).lower()
    if protocol not in ("tcp", "udp"):
        protocol = "udp" if "jitter_ms" in (end.get("sum") or end.get("sum_received") or {}) else "tcp"
    if protocol == "udp":
        received = end.get("sum_received") or end.get("sum")
        sent = end.get("sum_sent") or end.get("sum")
    else:
        received = end.get("sum_received")
        sent = end.get("sum_sent")
    if not received or not sent or "bits_per_second" not in received or "bits_per_second" not in sent:
        raise MeasurementError(f"iperf3 JSON has no end-of-test summary (end keys: {sorted(end)})")
    cpu = end.get("cpu_utilization_percent") or {}
    udp = protocol == "udp"
    return IperfResult(
        src=src,
        dst=dst,
        protocol=protocol,
        seconds=float(test.get("duration", received.get("seconds", 0.0))),
        bits_per_second=float(received["bits_per_second"]),
        sender_bits_per_second=float(sent["bits_per_second"]),
        retransmits=None if udp else _opt_int(sent, "retransmits"),
        jitter_ms=_opt_float(received, "jitter_ms") if udp else None,
        lost_packets=_opt_int(received, "lost_packets") if udp else None,
        lost_percent=_opt_float(received, "lost_percent") if udp else None,
        cpu_local_percent=_opt_float(cpu, "host_total"),
        cpu_remote_percent=_opt_float(cpu, "remote_total"),
        parallel=int(test.get("num_streams", 1)),
        target=target,
        reverse=bool(test.get("reverse", 0)),
    )


def _whole(value: Union[int, float], name: str, minimum: int) -> int:
    """iperf3 reads -t and -O as integers (``-t 0.5`` would mean 0: run forever): insist on whole numbers."""
    if float(value) != int(value) or int(value) < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return int(value)


def _text(data: Union[str, bytes, None]) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data


def _listeners(endpoint: Any, port: int) -> str:
    """The TCP listening sockets on ``port`` in the endpoint's namespace, as ``ss`` prints them ('' if none)."""
    argv = ["ss", "-Hltn", "sport", "=", f":{port}"]
    result = run_checked_timeout(endpoint, argv, 10.0, f"ss in {endpoint.name}")
    if result.returncode != 0:
        raise MeasurementError(
            f"cannot list listening sockets in {endpoint.name} (ss exit {result.returncode}): "
            f"{(result.stderr or '').strip()}"
        )
    return (result.stdout or "").strip()


def _supports_connect_timeout(src: Any) -> bool:
    """Whether the iperf3 on this machine has --connect-timeout (asked once; also proves iperf3 is there)."""
    if "iperf3" not in _HELP_CACHE:
        result = run_checked_timeout(src, ["iperf3", "--help"], 10.0, f"iperf3 --help in {src.name}")
        text = (result.stdout or "") + (result.stderr or "")
        if "--client" not in text:
            raise MeasurementError(
                f"iperf3 does not run in {src.name} (exit {result.returncode}): {text.strip()[:200]}"
            )
        _HELP_CACHE["iperf3"] = "--connect-timeout" in text
    return _HELP_CACHE["iperf3"]


def _wait_listening(dst: Any, server: "subprocess.Popen", port: int, limit: float) -> None:
    """Poll until a socket listens on ``port`` in ``dst``; raise if the server exits or the time runs out."""
    deadline = time.monotonic() + limit
    pause = 0.005
    while True:
        if server.poll() is not None:
            out, err = server.communicate()
            message = _server_message(_text(out), _text(err))
            raise MeasurementError(
                f"iperf3 server in {dst.name} exited (status {server.returncode}) before listening: {message}"
            )
        if _listeners(dst, port):
            return
        if time.monotonic() > deadline:
            raise MeasurementError(f"iperf3 server in {dst.name} did not listen on port {port} within {limit:g} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def _server_message(out: str, err: str) -> str:
    """The useful part of a server's output: its JSON error if any, else its stderr, else its stdout."""
    if "{" in out:
        try:
            error = _load_json(out).get("error")
        except MeasurementError:
            error = None
        if error:
            return str(error)
    return (err.strip() or out.strip())[-300:] or "(no output)"


def _reap(server: "subprocess.Popen", grace: float) -> Tuple[str, str, bool]:
    """Stop ``server`` and collect its output: wait ``grace`` seconds, then SIGTERM, then SIGKILL.

    Returns (stdout, stderr, whether it exited by itself). The kill is in a ``finally``, so even an interrupt
    during the polite steps leaves no process behind.
    """
    try:
        exited = server.poll() is not None
        if exited or grace > 0:
            try:  # an exited server still has its output in the pipes: give the reading time too
                out, err = server.communicate(timeout=max(grace, SERVER_TERM_GRACE_S if exited else 0.0))
                return _text(out), _text(err), True
            except subprocess.TimeoutExpired:
                pass
        server.terminate()
        try:
            out, err = server.communicate(timeout=SERVER_TERM_GRACE_S)
            return _text(out), _text(err), False
        except subprocess.TimeoutExpired:
            pass
        server.kill()
        out, err = server.communicate()
        return _text(out), _text(err), False
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for stream in (server.stdout, server.stderr, server.stdin):
            if stream is not None:
                stream.close()


def _client_argv(
    address: str,
    port: int,
    seconds: int,
    protocol: str,
    parallel: int,
    bitrate: Optional[Union[str, int, float]],
    reverse: bool,
    omit: int,
) -> List[str]:
    """The iperf3 client's command line (JSON output), as ``iperf3()``'s parameters ask for it."""
    client: List[str] = ["iperf3", "-c", address, "-p", str(port), "-J", "-t", str(seconds)]
    if parallel != 1:
        client += ["-P", str(parallel)]
    if protocol == "udp":
        client.append("-u")
    if bitrate is not None:
        client += ["-b", str(bitrate) if isinstance(bitrate, str) else str(int(bitrate))]
    if reverse:
        client.append("-R")
    if omit:
        client += ["-O", str(omit)]
    return client


def iperf3(
    src: Any,
    dst: Union[Any, Tuple[Any, str]],
    seconds: int = 5,
    protocol: str = "tcp",
    parallel: int = 1,
    bitrate: Optional[Union[str, int, float]] = None,
    port: int = 5201,
    reverse: bool = False,
    omit: int = 0,
    connect_to: Optional[str] = None,
    connect_timeout: float = 5.0,
    timeout: Optional[float] = None,
) -> IperfResult:
    """Measure throughput from ``src`` to ``dst`` with iperf3 and return the parsed result.

    src: the endpoint the client runs in.
    dst: the endpoint the server runs in; the client connects to its ``ip``. A pair
        ``(server_endpoint, address)`` is the same as ``dst=server_endpoint, connect_to=address``.
    seconds: test length (whole seconds, at least 1), not counting ``omit``.
    protocol: "tcp" or "udp" (for UDP give ``bitrate``: iperf3's UDP default is only 1 Mbit/s).
    parallel: streams (-P).
    bitrate: target rate (-b), iperf3 notation ("100M", "1G") or bit/s; None: unlimited for TCP.
    port: the server's port in ``dst`` (and the port connected to).
    reverse: -R, the server sends and the client receives.
    omit: seconds at the start left out of the result (-O), e.g. TCP slow start.
    connect_to: an address to connect to instead of ``dst.ip``, e.g. a Service's ClusterIP.
    connect_timeout: seconds the client waits for its control connection (--connect-timeout, iperf3 >= 3.2).
    timeout: seconds before the client is given up on; default omit + seconds + connect_timeout + 20.
    """
    if protocol not in ("tcp", "udp"):
        raise ValueError(f"protocol must be 'tcp' or 'udp', not {protocol!r}")
    seconds = _whole(seconds, "seconds", 1)
    omit = _whole(omit, "omit", 0)
    parallel = _whole(parallel, "parallel", 1)
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"port must be 1..65535, not {port}")
    if isinstance(dst, tuple):
        dst, connect_to = dst[0], (connect_to or dst[1])
    address = connect_to or str(dst.ip)
    what = f"iperf3 {protocol} {src.name} -> {dst.name} ({address}:{port})"

    client = _client_argv(address, port, seconds, protocol, parallel, bitrate, reverse, omit)
    if _supports_connect_timeout(src):
        client += ["--connect-timeout", str(int(connect_timeout * 1000))]
    if timeout is None:
        timeout = omit + seconds + connect_timeout + CLIENT_SLACK_S

    existing = _listeners(dst, port)
    if existing:
        raise MeasurementError(
            f"{what}: port {port} already has a listener in {dst.name} (a leftover server?): {existing}"
        )
    server = dst.popen(["iperf3", "-s", "-1", "-J", "-p", str(port)])
    grace = 0.0  # unless a test completed, the server waits for a client forever: stop it at once
    parsed: Optional[IperfResult] = None
    problem = ""
    try:
        _wait_listening(dst, server, port, SERVER_START_TIMEOUT_S)
        result = run_checked_timeout(src, client, timeout, what)
        try:
            parsed = parse_iperf3_json(result.stdout, src=str(src.name), dst=str(dst.name), target=address)
            grace = SERVER_EXIT_GRACE_S  # the server has finished its one test and exits by itself
        except MeasurementError as exc:  # iperf3 3.12 exits 0 even with an error in its JSON
            problem = str(exc)
            if not (result.stdout or "").strip() and (result.stderr or "").strip():
                problem = result.stderr.strip()[-300:]
            if result.returncode != 0:
                problem = f"exit {result.returncode}: {problem}"
    finally:
        server_out, server_err, by_itself = _reap(server, grace)
    if parsed is None:
        if by_itself:  # a server that ended on its own may say why (one we stopped only says it was stopped)
            note = _server_message(server_out, server_err)
            if note != "(no output)" and note not in problem:
                problem += f" (server: {note})"
        raise MeasurementError(f"{what} failed: {problem}")
    return parsed
