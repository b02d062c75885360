"""Statistics of measurements: medians, confidence intervals, ratios with intervals, and verdicts.

This module owns *how sure a number is*. Everything in it is pure, deterministic (the bootstrap's random
generator is seeded), and uses the standard library only (numpy is not guaranteed on the machines emu runs on).

- ``median(values)``: the median of the finite values (NaN and infinities are dropped; none left: NaN).
- ``median_ci(values)``: the median and its 95 % confidence interval by order statistics (the distribution-free
  interval of the median, also called the binomial or sign-test interval): for n sorted values, the interval
  [x(j), x(n+1-j)] holds the true median with probability 1 - 2 P(B < j), B ~ Binomial(n, 1/2), whatever the
  distribution; j is the largest that keeps that probability at least 95 %. It needs no random numbers and,
  unlike the percentile bootstrap, does not claim more than it has: at 6 to 15 values the bootstrap's "95 %"
  interval of a median holds it only 88 to 93 % of the time (tests/test_stats.py measures both). Six values
  are the fewest with a 95 % interval ([min, max] of 6 holds the median 96.9 % of the time; of 5, 93.8 %).
- ``bootstrap_ci(values, statistic)``: the percentile bootstrap of any statistic (a mean, a percentile, ...):
  the values are resampled with replacement ``resamples`` times, and the interval is the central ``level``
  share of the statistic over those resamples.
- ``ratio_ci(numerator, denominator)``: a ratio with its interval (emu vs a baseline, backend A vs backend B).
  ``paired=True``: the two lists were measured in the same rounds (value i of each side in round i, e.g.
  interleaved A B, B A ...): the estimate is the median of the rounds' ratios and its interval is
  ``median_ci``'s, so noise that hits both sides of a round alike cancels, and the coverage is exact.
  Unpaired (default): median(numerator) / median(denominator), each side resampled on its own (bootstrap).
- ``Interval``: estimate, low, high, the number of values, the level and how it was computed; ``width``,
  ``relative_width`` (width / |estimate|, what ``--precision 5%`` compares against), ``overlaps``, ``contains``.
- ``verdict(interval, target, better)``: "met" when the whole interval is on the good side of the target,
  "missed" when the whole interval is on the bad side, "unresolved" when it straddles the target (or there is
  no interval): the measurement cannot tell.

What the values should be: one figure per *independent* repetition (a repeat's RTT p50, a repeat's throughput),
not the samples inside one repeat. Pings 5 ms apart in one run share that run's state (which CPU each end
landed on, the machine's load during those seconds), so they are not independent; an interval over them would
be far narrower than the run-to-run spread. docs/measuring.md says which figures emu uses and why.

Fewer values than a ``level`` interval needs (for 95 %: 6) give no interval: low and high are NaN,
``relative_width`` is NaN (never "converged"), and a verdict on it is "unresolved". ``coverage_of_range(n)``
says how often [min, max] of n values holds the median.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

__all__ = [
    "DEFAULT_LEVEL",
    "DEFAULT_RESAMPLES",
    "DEFAULT_SEED",
    "MIN_VALUES",
    "Interval",
    "bootstrap_ci",
    "coverage_of_range",
    "finite",
    "median",
    "median_ci",
    "order_statistic_ranks",
    "quantile",
    "ratio_ci",
    "verdict",
]

#: The confidence level of every interval unless asked otherwise.
DEFAULT_LEVEL = 0.95
#: Bootstrap resamples: enough that the interval's ends move by well under 1 % of its width between seeds.
DEFAULT_RESAMPLES = 2000
#: The seed of the bootstrap's generator: the same values always give the same interval.
DEFAULT_SEED = 18
#: The fewest values with a 95 % interval of the median: [min, max] of 6 holds it 96.9 % of the time.
MIN_VALUES = 6

Statistic = Callable[[Sequence[float]], float]


def finite(values: Iterable[float]) -> List[float]:
    """The values that are finite numbers (NaN, +-inf and None dropped), as floats, in order."""
    kept = []
    for value in values:
        if value is None:
            continue
        number = float(value)
        if math.isfinite(number):
            kept.append(number)
    return kept


def quantile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of the finite values, interpolating linearly between closest ranks (type 7,
    numpy's default, as ``emu.measure.ping.percentile``); NaN for no values."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside 0..1")
    ordered = sorted(finite(values))
    if not ordered:
        return math.nan
    position = (len(ordered) - 1) * q
    low = int(math.floor(position))
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _sorted_median(ordered: Sequence[float]) -> float:
    n = len(ordered)
    middle = n // 2
    return ordered[middle] if n % 2 else (ordered[middle - 1] + ordered[middle]) / 2.0


def median(values: Iterable[float]) -> float:
    """The median of the finite values; NaN when there are none."""
    ordered = sorted(finite(values))
    return _sorted_median(ordered) if ordered else math.nan


def coverage_of_range(n: int) -> float:
    """How often [min, max] of ``n`` independent values holds the true median: 1 - 2 * 0.5**n (0 for n < 2)."""
    return 0.0 if n < 2 else 1.0 - 2.0 * 0.5**n


@dataclass(frozen=True)
class Interval:
    """An estimate with its confidence interval.

    estimate: the statistic of the values themselves (e.g. their median).
    low, high: the interval's ends (NaN when there is none: fewer than two values).
    n: the number of values it was computed from (for a ratio: the rounds, or the smaller side's).
    level: the confidence level asked for (0.95).
    method: "order statistics", "bootstrap", "paired order statistics", or why there is no interval: "empty"
        (no value), "single" (one value), "too few" (fewer than a ``level`` interval needs).
    """

    estimate: float
    low: float
    high: float
    n: int
    level: float = DEFAULT_LEVEL
    method: str = "bootstrap"

    @property
    def resolved(self) -> bool:
        """True when there is an interval (both ends are numbers)."""
        return not (math.isnan(self.low) or math.isnan(self.high))

    @property
    def width(self) -> float:
        """high - low (NaN without an interval)."""
        return self.high - self.low if self.resolved else math.nan

    @property
    def relative_width(self) -> float:
        """width / |estimate|: the share of the estimate the interval spans (NaN without an interval or for
        an estimate of 0). ``--precision 5%`` is met when this is at most 0.05."""
        if not self.resolved or not math.isfinite(self.estimate) or self.estimate == 0:
            return math.nan
        return self.width / abs(self.estimate)

    def converged(self, precision: float, min_values: int = MIN_VALUES) -> bool:
        """True when the interval is at most ``precision`` (a share: 0.05 for 5 %) of the estimate wide and
        rests on at least ``min_values`` values. False without an interval."""
        relative = self.relative_width
        return self.n >= min_values and not math.isnan(relative) and relative <= precision

    def contains(self, value: float) -> bool:
        """True when low <= value <= high (False without an interval)."""
        return self.resolved and self.low <= value <= self.high

    def overlaps(self, other: "Interval") -> bool:
        """True when the two intervals share at least one point (False when either has none)."""
        return self.resolved and other.resolved and self.low <= other.high and other.low <= self.high

    def scaled(self, factor: float) -> "Interval":
        """The same interval in other units (every number times ``factor``, e.g. 1000 for ms -> us)."""
        ends = sorted((self.low * factor, self.high * factor)) if self.resolved else [math.nan, math.nan]
        return Interval(self.estimate * factor, ends[0], ends[1], self.n, self.level, self.method)

    def __str__(self) -> str:
        if not self.resolved:
            return f"{self.estimate:.4g} (n={self.n}, no interval)"
        return f"{self.estimate:.4g} [{self.low:.4g}, {self.high:.4g}] (n={self.n})"


def _check(level: float, resamples: int) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be between 0 and 1 (e.g. 0.95), not {level}")
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100, not {resamples}")


def _ends(estimates: List[float], level: float) -> Tuple[float, float]:
    tail = (1.0 - level) / 2.0
    return quantile(estimates, tail), quantile(estimates, 1.0 - tail)


def _no_interval(estimate: float, n: int, level: float) -> Interval:
    why = "empty" if n == 0 else "single" if n == 1 else "too few"
    return Interval(estimate, math.nan, math.nan, n, level, why)


def _binomial_tail(n: int, j: int) -> float:
    """P(B < j) for B ~ Binomial(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(j)) / 2.0**n


def order_statistic_ranks(n: int, level: float = DEFAULT_LEVEL) -> Optional[Tuple[int, int]]:
    """The 1-based ranks (j, n+1-j) of the narrowest order-statistic interval of the median of ``n`` values
    whose coverage 1 - 2 P(B < j) is at least ``level``; None when even [min, max] falls short."""
    if n < 2 or 1.0 - 2.0 * _binomial_tail(n, 1) < level:
        return None
    j = 1
    while j + 1 <= (n + 1) // 2 and 1.0 - 2.0 * _binomial_tail(n, j + 1) >= level:
        j += 1
    return j, n + 1 - j


def bootstrap_ci(
    values: Iterable[float],
    statistic: Optional[Statistic] = None,
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Interval:
    """The percentile-bootstrap interval of ``statistic`` (default: the median) over the finite ``values``
    (from two values on: with few, it claims more confidence than it has; see ``median_ci``).

    The same values, statistic, level, resamples and seed always give the same interval."""
    _check(level, resamples)
    data = finite(values)
    if statistic is None:
        return median_ci(data, level, resamples, seed, method="bootstrap")
    estimate = statistic(data) if data else math.nan
    if len(data) < 2:
        return _no_interval(estimate, len(data), level)
    rng = random.Random(seed)
    n = len(data)
    estimates = [statistic(rng.choices(data, k=n)) for _ in range(resamples)]
    low, high = _ends(finite(estimates), level)
    return Interval(estimate, low, high, n, level, "bootstrap")


def median_ci(
    values: Iterable[float],
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    method: str = "order statistics",
) -> Interval:
    """The median of the finite ``values`` and its confidence interval.

    method: "order statistics" (default: exact and distribution-free, see the module's docstring) or
        "bootstrap" (percentile bootstrap with ``resamples`` and ``seed``; optimistic with few values).
    """
    _check(level, resamples)
    data = sorted(finite(values))
    estimate = _sorted_median(data) if data else math.nan
    if method == "bootstrap":
        if len(data) < 2:
            return _no_interval(estimate, len(data), level)
        rng = random.Random(seed)
        n = len(data)
        estimates = [_sorted_median(sorted(rng.choices(data, k=n))) for _ in range(resamples)]
        low, high = _ends(estimates, level)
        return Interval(estimate, low, high, n, level, "bootstrap")
    if method != "order statistics":
        raise ValueError(f'method must be "order statistics" or "bootstrap", not {method!r}')
    ranks = order_statistic_ranks(len(data), level)
    if ranks is None:
        return _no_interval(estimate, len(data), level)
    return Interval(estimate, data[ranks[0] - 1], data[ranks[1] - 1], len(data), level, "order statistics")


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0 or not math.isfinite(numerator) or not math.isfinite(denominator):
        return math.nan
    return numerator / denominator


def ratio_ci(
    numerator: Sequence[float],
    denominator: Sequence[float],
    level: float = DEFAULT_LEVEL,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    paired: bool = False,
) -> Interval:
    """A ratio of ``numerator`` to ``denominator`` and its interval.

    paired: True when value i of both lists was measured in round i: the estimate is the median of the rounds'
        ratios, with ``median_ci``'s order-statistic interval; the lists must have the same length, and a
        round where either side is not a finite number, or the denominator is 0, is left out. False:
        median(numerator) / median(denominator) with a bootstrap interval, each side resampled on its own (a
        resample whose denominator median is 0 is left out; if the denominator's own median is 0 the
        estimate is NaN and there is no interval).
    """
    _check(level, resamples)
    if paired:
        if len(numerator) != len(denominator):
            raise ValueError(
                f"paired ratio needs one value per round on both sides, got {len(numerator)} and {len(denominator)}"
            )
        ratios = finite(_ratio(float(a), float(b)) for a, b in zip(numerator, denominator)
                        if a is not None and b is not None)
        ci = median_ci(ratios, level)
        return Interval(ci.estimate, ci.low, ci.high, ci.n, level,
                        "paired order statistics" if ci.resolved else ci.method)
    top, bottom = finite(numerator), finite(denominator)
    estimate = _ratio(median(top), median(bottom)) if top and bottom else math.nan
    n = min(len(top), len(bottom))
    if n < 2 or math.isnan(estimate):
        return _no_interval(estimate, n, level)
    rng = random.Random(seed)
    ratios: List[float] = []
    for _ in range(resamples):
        a = _sorted_median(sorted(rng.choices(top, k=len(top))))
        b = _sorted_median(sorted(rng.choices(bottom, k=len(bottom))))
        ratios.append(_ratio(a, b))
    kept = finite(ratios)
    if len(kept) < resamples // 2:  # the denominator is 0 in most resamples: no honest interval
        return _no_interval(estimate, n, level)
    low, high = _ends(kept, level)
    return Interval(estimate, low, high, n, level, "bootstrap")


#: The three answers of ``verdict``.
MET, MISSED, UNRESOLVED = "met", "missed", "unresolved"


def verdict(interval: Interval, target: float, better: str = "higher") -> str:
    """Judge an interval against a target.

    better: "higher" (the target is a floor: throughput ratio >= 0.97) or "lower" (a ceiling: RTT ratio
        <= 1.03).
    Returns "met" when the whole interval is on the good side (the target itself counts as good), "missed"
    when the whole interval is on the bad side, "unresolved" when it straddles the target or there is none.
    """
    if better not in ("higher", "lower"):
        raise ValueError(f'better must be "higher" or "lower", not {better!r}')
    if not interval.resolved:
        return UNRESOLVED
    if better == "higher":
        if interval.low >= target:
            return MET
        if interval.high < target:
            return MISSED
    else:
        if interval.high <= target:
            return MET
        if interval.low > target:
            return MISSED
    return UNRESOLVED
