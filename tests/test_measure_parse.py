"""The measurement parsers against real output captured on this kind of machine (tests/data), no root needed.

Captured with iputils ping 20221126 and iperf 3.12:
- ping_loopback.txt:        ping -n -c 10 -i 0.2 127.0.0.1
- ping_loopback_100.txt:    ping -n -D -O -c 100 -i 0.01 -s 56 -W 2 127.0.0.1  (the flags emu's ping() uses)
- ping_loss_partial.txt:    the same, -c 10 -i 0.2, in a netns whose iptables drops every 3rd echo reply
- ping_loss_all.txt:        the same, -c 5, in a netns whose iptables drops every echo reply
- ping_no_host.txt:         the same, -c 5, to an on-link address nobody has (no ARP answer)
- ping_unreachable_stderr.txt: stderr of ping to an address with no route (exit 2, nothing on stdout)
- iperf3_tcp.json / iperf3_udp.json: iperf3 -c 127.0.0.1 -J -t 1 [-u -b 100M]
- iperf3_tcp_p2_reverse.json: iperf3 -c 127.0.0.1 -J -t 1 -P 2 -R
- iperf3_error.json:        iperf3 -c 127.0.0.1 -p 5298 -J -t 1, no server on that port

Expected values are read from the files by simple, independent code (string splitting, ``statistics``),
not by the parsers' regular expressions.
"""

import json
import math
import statistics
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

from emu.measure import ExecResult, MeasurementError
from emu.measure.iperf import IperfResult, iperf3, parse_iperf3_json
from emu.measure.ping import PingResult, parse_ping, percentile, ping

DATA = Path(__file__).resolve().parent / "data"


def text(name: str) -> str:
    return (DATA / name).read_text()


def reply_times(output: str) -> List[float]:
    """Every reply line's time= value, by splitting words (independent of the parser's regex)."""
    times = []
    for line in output.splitlines():
        if "bytes from" in line and "(DUP!)" not in line:
            word = next(w for w in line.split() if w.startswith("time="))
            times.append(float(word[len("time=") :]))
    return times


def summary(output: str) -> Tuple[int, int, float, List[float]]:
    """(transmitted, received, loss %, [min, avg, max, mdev] or []) from ping's last lines."""
    counts = next(line for line in output.splitlines() if "packets transmitted" in line).split(", ")
    sent = int(counts[0].split()[0])
    received = int(counts[1].split()[0])
    loss = float(next(c for c in counts if "packet loss" in c).split("%")[0])
    rtt_lines = [line for line in output.splitlines() if line.startswith("rtt ")]
    stats = [float(x) for x in rtt_lines[0].split("=")[1].split()[0].split("/")] if rtt_lines else []
    return sent, received, loss, stats


def quantiles(values: List[float]) -> List[float]:
    """Cut points 1..99 by the standard library (method "inclusive" is linear interpolation, type 7)."""
    return statistics.quantiles(values, n=100, method="inclusive")


# ---------------------------------------------------------------------------------------------------- ping


@pytest.mark.parametrize("name", ["ping_loopback.txt", "ping_loopback_100.txt", "ping_loss_partial.txt"])
def test_parse_ping_reads_every_reply(name: str) -> None:
    output = text(name)
    sent, received, rtts = parse_ping(output)
    want_sent, want_received, _loss, _stats = summary(output)
    assert (sent, received) == (want_sent, want_received)
    assert list(rtts) == reply_times(output)
    assert len(rtts) == received


@pytest.mark.parametrize("name", ["ping_loopback.txt", "ping_loopback_100.txt", "ping_loss_partial.txt"])
def test_ping_statistics_from_samples(name: str) -> None:
    output = text(name)
    sent, received, rtts = parse_ping(output)
    result = PingResult.from_samples("a", "b", "127.0.0.1", sent, received, rtts)
    times = reply_times(output)
    cuts = quantiles(times)
    assert result.p50 == pytest.approx(cuts[49], rel=1e-9)
    assert result.p90 == pytest.approx(cuts[89], rel=1e-9)
    assert result.p99 == pytest.approx(cuts[98], rel=1e-9)
    assert result.p50 == pytest.approx(statistics.median(times), rel=1e-9)
    assert result.avg == pytest.approx(statistics.fmean(times), rel=1e-9)
    assert result.mdev == pytest.approx(statistics.pstdev(times), rel=1e-9)
    assert (result.min, result.max) == (min(times), max(times))
    # ping's own summary, computed from microsecond timings, agrees within the per-line rounding (1 us)
    _s, _r, loss_percent, (s_min, s_avg, s_max, s_mdev) = summary(output)
    assert result.min == pytest.approx(s_min, abs=0.0011)
    assert result.max == pytest.approx(s_max, abs=0.0011)
    assert result.avg == pytest.approx(s_avg, abs=0.0011)
    assert result.mdev == pytest.approx(s_mdev, abs=0.0011)
    assert result.loss_percent == pytest.approx(loss_percent, abs=1e-3)
    assert result.rtts == tuple(times)


def test_partial_loss_counts() -> None:
    output = text("ping_loss_partial.txt")
    sent, received, rtts = parse_ping(output)
    assert (sent, received) == (10, 6)
    result = PingResult.from_samples("a", "b", "127.0.0.1", sent, received, rtts)
    assert result.loss == pytest.approx(0.4)
    # -O reports each loss when the next request goes out; the last request (seq 10) has no successor
    assert output.count("no answer yet") == 3


@pytest.mark.parametrize("name", ["ping_loss_all.txt", "ping_no_host.txt"])
def test_all_lost_gives_nan_statistics(name: str) -> None:
    output = text(name)
    sent, received, rtts = parse_ping(output)
    assert (sent, received, rtts) == (5, 0, ())
    result = PingResult.from_samples("a", "b", "x", sent, received, rtts)
    assert result.loss == 1.0
    for stat in ("min", "avg", "p50", "p90", "p99", "max", "mdev"):
        assert math.isnan(getattr(result, stat)), stat


@pytest.mark.parametrize("output", ["", text("ping_unreachable_stderr.txt")])
def test_no_summary_is_an_error(output: str) -> None:
    with pytest.raises(MeasurementError, match="summary"):
        parse_ping(output)


def test_quiet_output_without_reply_lines_is_refused() -> None:
    output = "\n".join(line for line in text("ping_loopback.txt").splitlines() if "bytes from" not in line)
    with pytest.raises(MeasurementError, match="reply lines"):
        parse_ping(output)


def test_duplicates_are_not_samples() -> None:
    lines = text("ping_loopback.txt").splitlines()
    first_reply = next(i for i, line in enumerate(lines) if "bytes from" in line)
    lines.insert(first_reply + 1, lines[first_reply] + " (DUP!)")
    lines = [
        line.replace("10 received,", "10 received, +1 duplicates,") if "packets transmitted" in line else line
        for line in lines
    ]
    sent, received, rtts = parse_ping("\n".join(lines))
    assert (sent, received) == (10, 10)
    assert list(rtts) == reply_times(text("ping_loopback.txt"))


def test_long_rtts_print_fewer_decimals() -> None:
    # ping prints 3 significant digits: time=12.3 ms, time=123 ms
    lines = text("ping_loopback.txt").splitlines()
    replies = [i for i, line in enumerate(lines) if "bytes from" in line]
    for index, value in zip(replies, ("123", "12.3")):
        lines[index] = lines[index].split("time=")[0] + f"time={value} ms"
    output = "\n".join(lines)
    _sent, _received, rtts = parse_ping(output)
    assert rtts[0] == 123.0 and rtts[1] == 12.3


def test_percentile_method() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 90) == pytest.approx(4.6)
    assert percentile([7.0], 99) == 7.0
    assert percentile([1.0, 9.0], 0) == 1.0 and percentile([1.0, 9.0], 100) == 9.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile([1.0], 101)


# ------------------------------------------------------------------- ping() against a recorded endpoint


class Recorded:
    """An endpoint that answers exec() from recorded output (no namespace, no root) and logs each argv."""

    def __init__(self, name: str, ip: str, result: ExecResult = None, raises: BaseException = None) -> None:  # type: ignore[assignment]
        self.name, self.ip, self.node = name, ip, "node-1"
        self.result, self.raises = result, raises
        self.calls: List[Tuple[List[str], object]] = []

    def exec(self, argv: List[str], timeout: float = None) -> ExecResult:  # type: ignore[assignment]
        self.calls.append((list(argv), timeout))
        if self.raises is not None:
            raise self.raises
        return self.result

    def popen(self, argv: List[str]) -> subprocess.Popen:
        raise AssertionError("ping never starts a server")


def test_ping_runs_one_argv_and_parses() -> None:
    src = Recorded("client", "10.244.1.2", ExecResult(text("ping_loopback_100.txt"), "", 0))
    dst = Recorded("server", "127.0.0.1")
    result = ping(src, dst, count=100, interval=0.01)
    argv, timeout = src.calls[0]
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[argv.index("ping") :] == [
        "ping",
        "-n",
        "-D",
        "-O",
        "-c",
        "100",
        "-i",
        "0.01",
        "-s",
        "56",
        "-W",
        "2",
        "127.0.0.1",
    ]
    assert timeout is not None and timeout >= 100 * 0.01 + 2
    assert (result.src, result.dst, result.target) == ("client", "server", "127.0.0.1")
    assert (result.sent, result.received, result.loss) == (100, 100, 0.0)
    assert len(result.rtts) == 100


def test_ping_to_an_address_string_and_all_lost() -> None:
    src = Recorded("client", "10.244.1.2", ExecResult(text("ping_loss_all.txt"), "", 1))
    result = ping(src, "127.0.0.1", count=5)
    assert result.dst == "127.0.0.1" and result.loss == 1.0 and math.isnan(result.p50)


def test_ping_that_cannot_send_raises_with_pings_message() -> None:
    src = Recorded("client", "10.244.1.2", ExecResult("", text("ping_unreachable_stderr.txt"), 2))
    with pytest.raises(MeasurementError, match="Network is unreachable"):
        ping(src, "10.97.0.1", count=3)


@pytest.mark.parametrize(
    "endpoint",
    [
        Recorded("c", "1.1.1.1", raises=subprocess.TimeoutExpired(["ping"], 3)),
        Recorded("c", "1.1.1.1", ExecResult("", "\n(timed out after 3 s)", 124)),
    ],
    ids=["raised", "exit-124"],
)
def test_ping_timeout_is_a_measurement_error(endpoint: Recorded) -> None:
    with pytest.raises(MeasurementError, match="timed out"):
        ping(endpoint, "10.0.0.1", count=3, timeout=3)


def test_ping_rejects_bad_arguments() -> None:
    src = Recorded("c", "1.1.1.1", ExecResult("", "", 0))
    for kwargs in ({"count": 0}, {"interval": 0}, {"size": -1}):
        with pytest.raises(ValueError):
            ping(src, "10.0.0.1", **kwargs)  # type: ignore[arg-type]
    assert src.calls == []


# --------------------------------------------------------------------------------------------------- iperf3


def test_parse_iperf3_tcp() -> None:
    raw = text("iperf3_tcp.json")
    data = json.loads(raw)
    result = parse_iperf3_json(raw, src="a", dst="b", target="127.0.0.1")
    end = data["end"]
    assert isinstance(result, IperfResult)
    assert result.protocol == "tcp"
    assert result.bits_per_second == end["sum_received"]["bits_per_second"]
    assert result.sender_bits_per_second == end["sum_sent"]["bits_per_second"]
    assert result.retransmits == end["sum_sent"]["retransmits"]
    assert result.cpu_local_percent == end["cpu_utilization_percent"]["host_total"]
    assert result.cpu_remote_percent == end["cpu_utilization_percent"]["remote_total"]
    assert result.parallel == data["start"]["test_start"]["num_streams"] == 1
    assert result.seconds == data["start"]["test_start"]["duration"]
    assert (result.jitter_ms, result.lost_packets, result.lost_percent) == (None, None, None)
    assert (result.src, result.dst, result.target, result.reverse) == ("a", "b", "127.0.0.1", False)
    assert result.gbit_per_second == pytest.approx(end["sum_received"]["bits_per_second"] / 1e9)


def test_parse_iperf3_parallel_reverse() -> None:
    raw = text("iperf3_tcp_p2_reverse.json")
    end = json.loads(raw)["end"]
    result = parse_iperf3_json(raw)
    assert result.parallel == 2 and result.reverse is True
    assert result.bits_per_second == end["sum_received"]["bits_per_second"]


def test_parse_iperf3_udp() -> None:
    raw = text("iperf3_udp.json")
    data = json.loads(raw)
    received = data["end"]["sum_received"]
    result = parse_iperf3_json(raw)
    assert result.protocol == "udp"
    assert result.bits_per_second == received["bits_per_second"]
    assert result.sender_bits_per_second == data["end"]["sum_sent"]["bits_per_second"]
    assert result.jitter_ms == received["jitter_ms"]
    assert result.lost_packets == received["lost_packets"]
    assert result.lost_percent == received["lost_percent"]
    assert result.retransmits is None
    assert data["start"]["test_start"]["target_bitrate"] == 100_000_000
    assert 50e6 < result.bits_per_second < 150e6


def test_parse_iperf3_udp_old_format_with_only_sum() -> None:
    # iperf3 before 3.10 reports UDP in end.sum only (no sum_sent / sum_received)
    data = json.loads(text("iperf3_udp.json"))
    data["end"].pop("sum_sent")
    data["end"].pop("sum_received")
    result = parse_iperf3_json(json.dumps(data))
    assert result.bits_per_second == data["end"]["sum"]["bits_per_second"]
    assert result.jitter_ms == data["end"]["sum"]["jitter_ms"]


def test_parse_iperf3_error_raises_with_iperf3s_message() -> None:
    with pytest.raises(MeasurementError) as caught:
        parse_iperf3_json(text("iperf3_error.json"))
    assert "unable to connect to server: Connection refused" in str(caught.value)


@pytest.mark.parametrize(
    "raw, match",
    [
        ("", "no JSON"),
        ("iperf3: error - unable to connect", "no JSON"),
        ("{ not json", "does not parse"),
        ('{"start": {}, "end": {}}', "no end-of-test summary"),
    ],
)
def test_parse_iperf3_garbage(raw: str, match: str) -> None:
    with pytest.raises(MeasurementError, match=match):
        parse_iperf3_json(raw)


def test_iperf3_rejects_fractional_seconds_before_running_anything() -> None:
    # iperf3 reads -t as an integer: "-t 0.5" would be "-t 0", a test that never ends
    src = Recorded("c", "1.1.1.1", ExecResult("", "", 0))
    for kwargs in ({"seconds": 0.5}, {"seconds": 0}, {"omit": -1}, {"protocol": "sctp"}, {"parallel": 0}):
        with pytest.raises(ValueError):
            iperf3(src, src, **kwargs)  # type: ignore[arg-type]
    assert src.calls == []


def test_ping_warmup_requests_are_sent_first_and_left_out() -> None:
    """warmup=5 sends count+5 requests; the replies to icmp_seq 1..5 are dropped from the RTTs and counts."""
    output = text("ping_loopback_100.txt")
    all_sent, all_received, all_rtts = parse_ping(output)
    sent, received, rtts = parse_ping(output, warmup=5)
    assert (sent, received) == (all_sent - 5, all_received - 5)
    assert rtts == all_rtts[5:]
    src = Recorded("client", "10.244.1.2", ExecResult(output, "", 0))
    result = ping(src, "127.0.0.1", count=95, interval=0.01, warmup=5)
    argv, _timeout = src.calls[0]
    assert argv[argv.index("-c") + 1] == "100"
    assert (result.sent, result.received) == (95, 95) and result.rtts == all_rtts[5:]
    with pytest.raises(ValueError):
        ping(src, "127.0.0.1", count=5, warmup=-1)
