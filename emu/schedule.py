"""Scheduling an experiment's runs: rounds in which the variants take turns, and when to stop repeating.

This module owns *the order and the number* of an experiment's turns (a turn: one variant's cluster built,
``run(cluster, results)`` called once, the cluster torn down); it builds and measures nothing itself.

- **Rounds and turns.** Round r gives every variant one turn, the order rotated by r: A B C, B C A, C A B, ...
  (``rotation``). A slow drift of the machine (another job starting, the host throttling) then hits every
  variant alike instead of the one measured last, and repeat r of every variant is measured close in time,
  so comparisons can pair them (``emu.report.summary``).
- **When to stop** (``Stopping``): after a fixed number of rounds (``--repeat N``, or the experiment's
  ``REPEAT``); or, given a precision (``--precision 5%`` or the experiment's ``PRECISION``), once every
  interval is narrower than that share of its median; and never start a round that would end after the time
  budget (``--budget 10m`` or the experiment's ``BUDGET``), predicted from the rounds so far.
- ``parse_precision`` and ``parse_duration`` read the command line's ``5%`` and ``10m``.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, TypeVar

from emu.errors import InputError

__all__ = ["DEFAULT_BUDGET", "Stopping", "parse_duration", "parse_precision", "rotation"]

T = TypeVar("T")

#: The time budget when a precision is asked for and neither the command line nor the experiment gives one.
DEFAULT_BUDGET = 600.0


def rotation(items: Sequence[T], round_index: int) -> List[T]:
    """The order of the turns in round ``round_index``: ``items`` rotated left by that many places."""
    if not items:
        return []
    shift = round_index % len(items)
    return list(items[shift:]) + list(items[:shift])


def parse_precision(text: str) -> float:
    """``"5%"`` -> 0.05; ``"0.05"`` -> 0.05. Between 0 and 100 % exclusive; anything else is bad input."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise InputError(f"--precision {text}: not a share (give e.g. 5% or 0.05)") from None
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise InputError(f"--precision {text}: must be more than 0 % and less than 100 % (e.g. 5%)")
    return value


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def parse_duration(text: str) -> float:
    """``"10m"`` -> 600; ``"90s"`` / ``"90"`` -> 90; ``"1h30m"`` -> 5400. Positive; else bad input."""
    raw = str(text).strip().lower()
    match = _DURATION.match(raw)
    if not raw or match is None or not any(match.groups()):
        raise InputError(f"--budget {text}: not a duration (give e.g. 10m, 90s or 1h30m)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    value = hours * 3600 + minutes * 60 + seconds
    if value <= 0:
        raise InputError(f"--budget {text}: must be more than 0 seconds")
    return value


@dataclass
class Stopping:
    """Whether to start another round.

    min_rounds: rounds always run (budget permitting; the first round always runs).
    max_rounds: never more rounds than this (None: no limit but the budget).
    precision: stop once ``converged()`` says every interval is within this share of its median (None: do
        not look at the intervals).
    budget: seconds from ``start()`` that the last round must end within (None: no limit).
    clock: the time source (tests give their own).
    """

    min_rounds: int = 1
    max_rounds: Optional[int] = None
    precision: Optional[float] = None
    budget: Optional[float] = None
    clock: Callable[[], float] = time.monotonic
    started: float = 0.0
    round_seconds: List[float] = field(default_factory=list)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.min_rounds < 1:
            raise ValueError(f"min_rounds must be at least 1, not {self.min_rounds}")
        if self.max_rounds is None and self.precision is None and self.budget is None:
            self.max_rounds = self.min_rounds  # nothing else would ever stop it

    @classmethod
    def fixed(cls, rounds: int, clock: Callable[[], float] = time.monotonic) -> "Stopping":
        """Exactly ``rounds`` rounds."""
        return cls(min_rounds=rounds, max_rounds=rounds, clock=clock)

    def start(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def finished_round(self, seconds: float) -> None:
        """Record how long a round took (the prediction of the next one uses it)."""
        self.round_seconds.append(seconds)

    def predicted_round(self) -> float:
        """The expected length of the next round: the longer of the mean and the last (0 before any)."""
        if not self.round_seconds:
            return 0.0
        return max(sum(self.round_seconds) / len(self.round_seconds), self.round_seconds[-1])

    def another(self, done: int, converged: Callable[[], bool]) -> bool:
        """True to start round number ``done`` (0-based); False to stop, with ``reason`` saying why.
        ``converged()`` is asked only when a precision is set and at least ``min_rounds`` are done."""
        if done == 0:
            return True
        if self.max_rounds is not None and done >= self.max_rounds:
            self.reason = f"{done} round(s), as asked" if self.precision is None else f"the limit of {done} rounds"
            return False
        if self.precision is not None and done >= self.min_rounds and converged():
            self.reason = f"every interval within {self.precision * 100:g} % after {done} round(s)"
            return False
        if self.budget is not None and self.elapsed() + self.predicted_round() > self.budget:
            self.reason = (
                f"the budget of {self.budget:g} s (another round of about {self.predicted_round():.0f} s "
                f"would end at {self.elapsed() + self.predicted_round():.0f} s) after {done} round(s)"
            )
            return False
        return True

    def left(self) -> str:
        """A progress hint: the budget's time left, or '' without a budget."""
        if self.budget is None:
            return ""
        return f"budget {max(0.0, self.budget - self.elapsed()):.0f} s left"


def stopping_for(
    experiment_repeat: int,
    experiment_precision: Optional[float],
    experiment_budget: Optional[float],
    repeat: Optional[int] = None,
    precision: Optional[float] = None,
    budget: Optional[float] = None,
    quick: bool = False,
    clock: Callable[[], float] = time.monotonic,
) -> Stopping:
    """How ``emu run`` repeats, from the experiment's ``REPEAT``, ``PRECISION`` and ``BUDGET`` and the command
    line's ``--repeat``, ``--precision``, ``--budget`` and ``--quick``:

    - ``--precision`` (or, unless ``--repeat`` or ``--quick`` is given, the experiment's ``PRECISION``):
      at least ``--repeat`` / ``REPEAT`` rounds, then until converged or out of budget (``--budget``, else
      ``BUDGET``, else DEFAULT_BUDGET).
    - ``--budget`` alone: rounds until the budget is spent (at least ``--repeat`` / ``REPEAT``).
    - otherwise ``--repeat N`` rounds, or one under ``--quick``, or the experiment's ``REPEAT``.
    """
    if repeat is not None and repeat < 1:
        raise InputError("--repeat must be at least 1")
    adaptive = precision is not None or (repeat is None and not quick and experiment_precision is not None)
    if adaptive:
        share = precision if precision is not None else experiment_precision
        limit = budget if budget is not None else experiment_budget if experiment_budget is not None else DEFAULT_BUDGET
        rounds = repeat if repeat is not None else (1 if quick else experiment_repeat)
        return Stopping(min_rounds=rounds, precision=share, budget=limit, clock=clock)
    if budget is not None:
        rounds = repeat if repeat is not None else (1 if quick else experiment_repeat)
        return Stopping(min_rounds=rounds, budget=budget, clock=clock)
    if repeat is not None:
        return Stopping.fixed(repeat, clock)
    return Stopping.fixed(1 if quick else experiment_repeat, clock)
