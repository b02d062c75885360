"""ping: round-trip latency between two endpoints, kept per packet.

This module owns running iputils ``ping`` inside an endpoint and turning its text into a ``PingResult``:

- ``ping(src, dst, ...)`` runs ``ping -n -D -O -c COUNT -i INTERVAL -s SIZE -W WAIT TARGET`` in ``src``
  (under ``LC_ALL=C``, so numbers are printed with a decimal point). ``-n``: no DNS; ``-D``: a timestamp on
  every line; ``-O``: a "no answer yet" line for every request still unanswered when the next one is sent,
  so losses show in the text where they happened. ``-W`` bounds the wait for the last replies.
- ``parse_ping(text)`` (pure) reads the per-packet ``time=`` of every reply line (duplicates, marked
  ``(DUP!)``, are not counted) and the transmitted/received counts of the summary line.
- Statistics are computed from the per-packet RTTs, not copied from ping's summary line: ``min``, ``avg``,
  ``max``, ``mdev`` (population standard deviation, as ping's mdev), and the percentiles p50, p90, p99 by
  linear interpolation between closest ranks (Hyndman & Fan type 7, numpy's default, the same as
  ``statistics.quantiles(method="inclusive")``): for sorted values x[0..n-1], percentile q is found at
  position h = (n-1)*q/100, between x[floor(h)] and x[floor(h)+1].

All packets lost is a result, not an error: loss 1.0 and NaN statistics. A ping that cannot send at all
(``connect: Network is unreachable``, unknown host, missing tool) raises ``MeasurementError``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple, Union

from emu.measure import MeasurementError, run_checked_timeout

__all__ = ["PingResult", "ping", "parse_ping", "percentile", "REPLY_WAIT_S"]

#: Seconds ping waits for the replies to its last requests (``-W``): a lost last packet costs this much time.
REPLY_WAIT_S = 2.0

_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) (?:packets )?received")
_REPLY = re.compile(r"bytes from .*?icmp_seq=(\d+).*?time[=<]\s*([0-9]+(?:\.[0-9]+)?)\s*ms")


@dataclass(frozen=True)
class PingResult:
    """One ping run: counts, every reply's RTT in milliseconds, and statistics computed from them.

    ``loss`` is a fraction (0..1). With no reply at all every statistic is NaN.
    """

    src: str
    dst: str
    target: str
    sent: int
    received: int
    loss: float
    rtts: Tuple[float, ...]
    min: float
    avg: float
    p50: float
    p90: float
    p99: float
    max: float
    mdev: float

    @property
    def loss_percent(self) -> float:
        """Packet loss in percent (0..100)."""
        return self.loss * 100.0

    @classmethod
    def from_samples(
        cls, src: str, dst: str, target: str, sent: int, received: int, rtts: Sequence[float]
    ) -> "PingResult":
        """Build a result from counts and per-packet RTTs (ms), computing every statistic."""
        values = tuple(float(x) for x in rtts)
        loss = (sent - received) / sent if sent > 0 else math.nan
        if values:
            mean = sum(values) / len(values)
            mdev = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
            low, high = min(values), max(values)
        else:
            mean = mdev = low = high = math.nan
        return cls(
            src=src,
            dst=dst,
            target=target,
            sent=sent,
            received=received,
            loss=loss,
            rtts=values,
            min=low,
            avg=mean,
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=high,
            mdev=mdev,
        )


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of ``values`` by linear interpolation between closest ranks
    (type 7, numpy's default); NaN for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0..100")
    ordered = sorted(values)
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q / 100.0
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_ping(text: str, warmup: int = 0) -> Tuple[int, int, Tuple[float, ...]]:
    """Parse iputils ping output into ``(sent, received, rtts)``; rtts are the replies' times in ms, in order.

    warmup: the first ``warmup`` requests (icmp_seq 1..warmup) are left out of all three: sent and received
        count only the requests after them, and their replies' times are dropped.
    Raises MeasurementError when there is no summary line (ping never ran, or was cut off) or when the number
    of reply lines disagrees with the summary (e.g. output from ``ping -q``).
    """
    summary = _SUMMARY.search(text)
    if summary is None:
        excerpt = text.strip()[-200:] or "(no output)"
        raise MeasurementError(f"ping output has no 'packets transmitted' summary line: {excerpt}")
    sent, received = int(summary.group(1)), int(summary.group(2))
    replies = []
    for line in text[: summary.start()].splitlines():
        if "(DUP!)" in line:
            continue
        match = _REPLY.search(line)
        if match:
            replies.append((int(match.group(1)), float(match.group(2))))
    if len(replies) != received:
        raise MeasurementError(
            f"ping summary says {received} received but {len(replies)} reply lines carry a time "
            f"(per-packet lines are needed: do not use -q)"
        )
    kept = tuple(rtt for seq, rtt in replies if seq > warmup)
    return max(0, sent - warmup), len(kept), kept


def _address_and_name(dst: Union[Any, str]) -> Tuple[str, str]:
    if isinstance(dst, str):
        return dst, dst
    return str(dst.ip), str(getattr(dst, "name", dst.ip))


def _decimal(value: float) -> str:
    """A number as ping's option parser wants it: plain decimal, no exponent (0.01, not 1e-02)."""
    text = format(float(value), "f").rstrip("0").rstrip(".")
    return text or "0"


def ping(
    src: Any,
    dst: Union[Any, str],
    count: int = 20,
    interval: float = 0.2,
    size: int = 56,
    timeout: Optional[float] = None,
    warmup: int = 0,
) -> PingResult:
    """Ping ``dst`` from ``src`` ``count`` times and return per-packet RTTs with their statistics.

    src: the endpoint ping runs in.
    dst: an endpoint (its ``ip`` is pinged) or an address string.
    count: echo requests whose replies are kept (after ``warmup`` more).
    interval: seconds between requests (below 0.2 needs root, which emu has).
    size: ICMP payload bytes (56 gives 84-byte IP packets).
    timeout: seconds to wait for ping to finish; default count*interval + REPLY_WAIT_S + 10.
    warmup: requests sent first and left out of the result (the first one waits for the neighbour entry,
        the first ones after an idle pause meet cold caches); ``count`` more follow them.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, not {count}")
    if warmup < 0:
        raise ValueError(f"warmup must be at least 0, not {warmup}")
    if interval <= 0:
        raise ValueError(f"interval must be positive, not {interval}")
    if size < 0:
        raise ValueError(f"size must be at least 0, not {size}")
    target, dst_name = _address_and_name(dst)
    argv = [
        "env",
        "LC_ALL=C",
        "ping",
        "-n",
        "-D",
        "-O",
        "-c",
        str(int(count) + int(warmup)),
        "-i",
        _decimal(interval),
        "-s",
        str(int(size)),
        "-W",
        _decimal(REPLY_WAIT_S),
        target,
    ]
    if timeout is None:
        timeout = (count + warmup) * interval + REPLY_WAIT_S + 10.0
    what = f"ping {src.name} -> {dst_name} ({target})"
    result = run_checked_timeout(src, argv, timeout, what)
    # ping exits 0 with at least one reply, 1 with none, 2 on other errors (it may still print a summary).
    try:
        sent, received, rtts = parse_ping(result.stdout, warmup)
    except MeasurementError as exc:
        stderr = (result.stderr or "").strip()
        raise MeasurementError(f"{what} failed (exit {result.returncode}): {stderr or exc}") from None
    return PingResult.from_samples(str(src.name), dst_name, target, sent, received, rtts)
