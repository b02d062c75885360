"""What the benchmarks share: waiting for the kernel to settle, one run at a time, bootstrap intervals."""

import random
import time
from typing import Any, Callable, List, Optional, Sequence, Tuple


def live_netns() -> int:
    """Network namespaces the kernel still holds (active net_namespace objects), -1 if unknown."""
    try:
        with open("/proc/slabinfo") as f:
            for line in f:
                if line.startswith("net_namespace "):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


def settle(limit: float = 60.0) -> None:
    """Wait until the kernel has finished freeing network namespaces (a big cluster torn down just before, by
    this or another program, keeps a core busy for seconds): their count stops changing for 1 s."""
    deadline = time.monotonic() + limit
    last, stable_since = live_netns(), time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - stable_since < 1.0:
        time.sleep(0.1)
        now = live_netns()
        if now != last:
            last, stable_since = now, time.monotonic()


def exclusive(path: str) -> Optional[Any]:
    """Hold a lock for the whole run (the hand-built names are fixed: two runs at once would tear down each
    other's); None if another run holds it."""
    import fcntl

    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


# --- intervals (a small stand-in until emu/report/stats.py, issue 18, is on main) ------------------------------
def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile (0..1) of already sorted values."""
    if not sorted_values:
        return float("nan")
    pos = q * (len(sorted_values) - 1)
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    """The median (nan for no values)."""
    return _quantile(sorted(values), 0.5)


def _resample(groups: Sequence[Sequence[float]], rng: random.Random) -> List[float]:
    """Two-level bootstrap draw: repeats with replacement, then the samples of each drawn repeat."""
    pooled: List[float] = []
    for _ in groups:
        group = groups[rng.randrange(len(groups))]
        pooled.extend(group[rng.randrange(len(group))] for _ in group)
    return pooled


def bootstrap_ratio(
    top: Sequence[Sequence[float]],
    bottom: Sequence[Sequence[float]],
    stat: Callable[[Sequence[float]], float] = median,
    draws: int = 2000,
    level: float = 0.95,
    seed: int = 20,
) -> Tuple[float, float, float]:
    """stat(top) / stat(bottom) and its percentile bootstrap interval: (ratio, low, high).

    Each argument holds one list of samples per repeat (one value per repeat for a throughput; every ping of a
    repeat for an RTT). A draw resamples the repeats, then the samples inside each drawn repeat, so both the
    run-to-run noise of this shared machine and the spread within a run widen the interval.
    """
    top = [g for g in top if g]
    bottom = [g for g in bottom if g]
    if not top or not bottom:
        return float("nan"), float("nan"), float("nan")
    point = stat([v for g in top for v in g]) / stat([v for g in bottom for v in g])
    rng = random.Random(seed)
    ratios = sorted(stat(_resample(top, rng)) / stat(_resample(bottom, rng)) for _ in range(draws))
    tail = (1.0 - level) / 2.0
    return point, _quantile(ratios, tail), _quantile(ratios, 1.0 - tail)


def bootstrap_interval(
    groups: Sequence[Sequence[float]],
    stat: Callable[[Sequence[float]], float] = median,
    draws: int = 2000,
    level: float = 0.95,
    seed: int = 18,
) -> Tuple[float, float, float]:
    """stat of the pooled samples and its two-level percentile bootstrap interval: (value, low, high)."""
    groups = [g for g in groups if g]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    rng = random.Random(seed)
    values = sorted(stat(_resample(groups, rng)) for _ in range(draws))
    tail = (1.0 - level) / 2.0
    return stat([v for g in groups for v in g]), _quantile(values, tail), _quantile(values, 1.0 - tail)
