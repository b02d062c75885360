"""emu.schedule without root: the rotation of turns, reading --precision and --budget, and when the runner
stops repeating (fixed rounds, converged, out of budget), with a clock the test moves."""

import pytest

from emu.errors import InputError
from emu.schedule import DEFAULT_BUDGET, Stopping, parse_duration, parse_precision, rotation, stopping_for


def test_rotation_gives_every_variant_every_position() -> None:
    variants = ["vxlan", "host-gw", "udp"]
    rounds = [rotation(variants, r) for r in range(6)]
    assert rounds[:3] == [["vxlan", "host-gw", "udp"], ["host-gw", "udp", "vxlan"], ["udp", "vxlan", "host-gw"]]
    assert rounds[3] == rounds[0]
    for position in range(3):
        assert sorted(r[position] for r in rounds[:3]) == sorted(variants)
    assert rotation([], 4) == []


@pytest.mark.parametrize("text,value", [("5%", 0.05), ("12.5%", 0.125), ("0.1", 0.1), (" 5 % ".replace(" ", ""), 0.05)])
def test_parse_precision(text: str, value: float) -> None:
    assert parse_precision(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "five", "0%", "100%", "-3%", "1.5", "nan"])
def test_parse_precision_refuses(text: str) -> None:
    with pytest.raises(InputError, match="--precision"):
        parse_precision(text)


@pytest.mark.parametrize("text,seconds", [("10m", 600), ("90s", 90), ("90", 90), ("1h30m", 5400), ("1.5m", 90),
                                          ("2h", 7200), ("1m30s", 90)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "m", "10 minutes", "-5m", "0", "0s", "5x"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(InputError, match="--budget"):
        parse_duration(text)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def never() -> bool:
    raise AssertionError("converged() must not be asked")


def test_fixed_rounds() -> None:
    stopping = Stopping.fixed(3)
    stopping.start()
    assert [stopping.another(done, never) for done in range(4)] == [True, True, True, False]
    assert "3 round(s)" in stopping.reason


def test_precision_stops_once_converged_but_not_before_min_rounds() -> None:
    clock = Clock()
    asked = []

    def converged() -> bool:
        asked.append(True)
        return len(asked) >= 2

    stopping = Stopping(min_rounds=6, precision=0.1, budget=3600, clock=clock)
    stopping.start()
    for done in range(6):
        assert stopping.another(done, converged)
        clock.now += 60
        stopping.finished_round(60)
    assert asked == []  # not asked before min_rounds are done
    assert stopping.another(6, converged)  # asked once: not yet
    assert not stopping.another(7, converged)  # asked again: converged
    assert "within 10 %" in stopping.reason and "7 round(s)" in stopping.reason


def test_budget_never_starts_a_round_that_would_end_after_it() -> None:
    clock = Clock()
    stopping = Stopping(min_rounds=6, precision=0.05, budget=600, clock=clock)
    stopping.start()
    done = 0
    while stopping.another(done, lambda: False):
        clock.now += 90 + 10 * done  # rounds get slower: the prediction takes the last one when longer
        stopping.finished_round(90 + 10 * done)
        done += 1
    # rounds of 90, 100, 110, 120, 130 s end at 550 s; a sixth (140 s or more) would end after 600 s
    assert done == 5 and clock.now - 1000 == 550
    assert "budget of 600 s" in stopping.reason


def test_the_first_round_always_runs() -> None:
    clock = Clock()
    stopping = Stopping(min_rounds=1, budget=1, clock=clock)
    stopping.start()
    clock.now += 50
    assert stopping.another(0, never)
    stopping.finished_round(50)
    assert not stopping.another(1, never)


def test_stopping_for_the_command_line() -> None:
    # the experiment's PRECISION applies unless --repeat or --quick is given
    adaptive = stopping_for(6, 0.1, 600)
    assert (adaptive.min_rounds, adaptive.max_rounds, adaptive.precision, adaptive.budget) == (6, None, 0.1, 600)
    assert stopping_for(6, 0.1, 600, repeat=3).max_rounds == 3
    assert stopping_for(6, 0.1, 600, repeat=3).precision is None
    assert stopping_for(6, 0.1, 600, quick=True).max_rounds == 1
    # --precision wins over everything; --budget over BUDGET; no BUDGET: the default
    asked = stopping_for(3, None, None, repeat=2, precision=0.05, budget=120)
    assert (asked.min_rounds, asked.precision, asked.budget) == (2, 0.05, 120)
    assert stopping_for(3, None, None, precision=0.05).budget == DEFAULT_BUDGET
    # --budget alone: rounds until it is spent
    spend = stopping_for(3, None, None, budget=300)
    assert (spend.min_rounds, spend.max_rounds, spend.precision, spend.budget) == (3, None, None, 300)
    # an experiment without PRECISION: its REPEAT, as before
    plain = stopping_for(3, None, None)
    assert (plain.max_rounds, plain.precision, plain.budget) == (3, None, None)
    with pytest.raises(InputError):
        stopping_for(3, None, None, repeat=0)
