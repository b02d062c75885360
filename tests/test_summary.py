"""emu.report.summary without root: cells with their intervals, the rankings (resolved, tied, stable in
the experiment's order), what did not converge (and the tool-resolution rule), notes, and comparing two runs.

The rows are made here: three backends x two placements x N repeats, with a known truth (cross-node: host-gw
fastest, udp slowest, by far; same-node: the same path for every backend) and a little seeded noise.
"""

import math
import random
from pathlib import Path
from typing import Dict, List

import pytest

from emu.report.results import Results, read_results
from emu.report.summary import MARGIN, cells, compare, rankings, summary_table, unconverged

BACKENDS = ("vxlan", "host-gw", "udp")
#: (tcp_rr p50 in us, TCP Gbit/s) per placement and backend
TRUTH = {
    "same-node": {"vxlan": (15.0, 17.0), "host-gw": (15.0, 17.0), "udp": (15.0, 17.0)},
    "cross-node": {"vxlan": (33.0, 11.8), "host-gw": (23.0, 14.8), "udp": (109.0, 2.5)},
}


def make_rows(tmp_path: Path, repeats: int, seed: int, noise: float = 0.02, name: str = "r.csv") -> List[Dict]:
    rng = random.Random(seed)
    path = tmp_path / name
    with Results.open(path, "cross_node", ["backend"]) as results:
        for repeat in range(repeats):
            for backend in BACKENDS:
                results.set_context({"backend": backend}, repeat)
                load = rng.uniform(1 - noise, 1 + noise)  # the machine's load in this turn
                for placement, truth in TRUTH.items():
                    rtt, gbit = truth[backend]
                    results.add(placement, "a", "b", "tcp_rr", "rtt_p50", rtt * load * rng.gauss(1, noise) / 1e3,
                                "ms")
                    results.add(placement, "a", "b", "iperf3-tcp", "throughput", gbit / load * rng.gauss(1, noise),
                                "Gbit/s")
                    results.add(placement, "a", "b", "iperf3-tcp", "retransmits", rng.randint(0, 3), "count")
    return read_results(path)


def test_cells_are_one_value_per_repeat_with_an_order_statistic_interval(tmp_path: Path) -> None:
    rows = make_rows(tmp_path, repeats=8, seed=1)
    found = {(c.group[0], c.group[2], c.figure.heading): c for c in cells(rows)}
    cell = found[("cross-node", "vxlan", "tcp_rr p50")]
    assert len(cell.values) == 8
    assert cell.interval.method == "order statistics"
    assert cell.interval.low == min(cell.values) and cell.interval.high == max(cell.values)  # ranks 1 and 8 of 8
    assert cell.interval.estimate == pytest.approx(0.033, rel=0.05)


def test_rankings_resolve_real_differences_and_tie_identical_paths(tmp_path: Path) -> None:
    rows = make_rows(tmp_path, repeats=6, seed=2)
    ranked = {(r.placement, r.figure): r for r in rankings(rows)}
    assert ranked[("cross-node", "tcp_rr p50 us")].text == "host-gw < vxlan < udp"
    assert ranked[("cross-node", "TCP Gbit/s")].text == "host-gw > vxlan > udp"
    # the same path for every backend: tied, listed in the experiment's order whatever the medians say
    assert ranked[("same-node", "tcp_rr p50 us")].text == "vxlan ~ host-gw ~ udp"
    assert ranked[("same-node", "TCP Gbit/s")].text == "vxlan ~ host-gw ~ udp"
    worse, better, ratio = ranked[("cross-node", "tcp_rr p50 us")].ratios[0]
    assert (worse, better) == ("vxlan", "host-gw")
    assert ratio.method == "paired order statistics" and ratio.contains(33 / 23)
    assert ratio.low > 1 + MARGIN
    # counts are not ranked
    assert not any("retransmits" in figure for _, figure in ranked)


def test_rankings_need_enough_runs(tmp_path: Path) -> None:
    """With 3 runs no 95 % interval exists: even udp, 3x slower, is not called different."""
    rows = make_rows(tmp_path, repeats=3, seed=3)
    ranked = {(r.placement, r.figure): r.text for r in rankings(rows)}
    assert ranked[("cross-node", "tcp_rr p50 us")] == "vxlan ~ host-gw ~ udp"


def test_rankings_are_stable_between_runs_of_the_same_truth(tmp_path: Path) -> None:
    """Twenty pairs of runs of the same machine: the rankings always agree (the margin keeps chance
    differences between identical paths out of them)."""
    for pair in range(20):
        a = make_rows(tmp_path, repeats=6, seed=100 + 2 * pair, noise=0.03, name="a.csv")
        b = make_rows(tmp_path, repeats=6, seed=101 + 2 * pair, noise=0.03, name="b.csv")
        (tmp_path / "a.csv").unlink()
        (tmp_path / "b.csv").unlink()
        assert compare(a, b).rankings == (), pair


def test_unconverged_and_the_resolution_rule(tmp_path: Path) -> None:
    rows = make_rows(tmp_path, repeats=6, seed=4, noise=0.002)
    assert unconverged(rows, 0.10) == []
    assert unconverged(rows, 0.0001) != []  # nothing is that precise
    few = make_rows(tmp_path, repeats=4, seed=4, noise=0.002, name="few.csv")
    assert all("fewer than 6" in line for line in unconverged(few, 0.10))
    # ping's whole microseconds: an interval one step wide is as fine as ping can tell
    path = tmp_path / "ping.csv"
    with Results.open(path, "x", ["backend"]) as results:
        for repeat, value in enumerate([0.007, 0.008, 0.007, 0.008, 0.007, 0.008]):
            results.set_context({"backend": "vxlan"}, repeat)
            results.add("same-pod", "a", "b", "ping", "rtt_p50", value, "ms")
    ping_rows = read_results(path)
    assert unconverged(ping_rows, 0.05) == []  # 1 us of 7.5 us is 13 %, but it is ping's resolution


def test_summary_table_shows_intervals_rankings_convergence_and_notes(tmp_path: Path) -> None:
    rows = make_rows(tmp_path, repeats=6, seed=5, noise=0.05)
    table = summary_table(rows, precision=0.02, notes=["stopped: the budget", "WARNING: the machine was busy"])
    print(table)
    lines = table.splitlines()
    assert lines[0] == "cross_node: median [95 % confidence interval] over runs"
    assert lines[1].split()[:4] == ["placement", "backend", "tcp_rr", "p50"]
    cross_udp = next(line for line in lines if line.startswith("cross-node") and " udp " in line)
    assert "[" in cross_udp and "]" in cross_udp and cross_udp.split()[-1] == "6"
    assert any("cross-node, tcp_rr p50 us" in line and "host-gw < vxlan < udp" in line for line in lines)
    assert any(line.startswith("NOT CONVERGED to 2 %") for line in lines)
    assert lines[-2:] == ["stopped: the budget", "WARNING: the machine was busy"]
    assert "every interval is within 50 %" in summary_table(rows, precision=0.5)


def test_compare_finds_cells_apart_and_rankings_that_differ(tmp_path: Path) -> None:
    a = make_rows(tmp_path, repeats=6, seed=6, name="a.csv")
    same = compare(a, make_rows(tmp_path, repeats=6, seed=7, name="b.csv"))
    assert same.cells == 12 and same.agree, same  # 2 placements x 3 backends x 2 ranked figures
    shifted = [dict(r) for r in a]
    for row in shifted:  # host-gw's cross-node round trip twice as long in the other run
        if row["backend"] == "host-gw" and row["placement"] == "cross-node" and row["tool"] == "tcp_rr":
            row["value"] = str(float(row["value"]) * 2)
    other = compare(a, shifted)
    assert len(other.apart) == 1 and other.apart[0].startswith("cross-node, backend=host-gw, tcp_rr p50 us")
    assert other.rankings == ("cross-node, tcp_rr p50 us: host-gw < vxlan < udp vs vxlan < host-gw < udp",)
    assert other.contradictions == other.rankings  # host-gw ahead of vxlan in one, behind it in the other
    assert not other.agree


def test_a_difference_only_one_run_resolves_is_no_contradiction() -> None:
    from emu.report.summary import _contradicts

    assert not _contradicts("host-gw < vxlan < udp", "host-gw < vxlan ~ udp")
    assert not _contradicts("vxlan ~ host-gw > udp", "vxlan ~ host-gw ~ udp")
    assert _contradicts("host-gw < vxlan ~ udp", "vxlan < host-gw ~ udp")
    assert _contradicts("a > b", "b > a")
    assert not _contradicts("a ~ b", "b ~ a")


def test_nan_cells_are_shown_and_not_ranked(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    with Results.open(path, "x", ["backend"]) as results:
        for repeat in range(6):
            for backend in ("vxlan", "udp"):
                results.set_context({"backend": backend}, repeat)
                results.add("cross-node", "a", "b", "ping", "rtt_p50", math.nan, "ms")
    rows = read_results(path)
    assert rankings(rows) == []
    assert "nan" in summary_table(rows)


def test_compare_command(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from emu.report.compare import main

    make_rows(tmp_path, repeats=6, seed=8, name="a.csv")
    make_rows(tmp_path, repeats=6, seed=9, name="b.csv")
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 0
    assert "12 cells in both runs; 0 with intervals apart; 0 rankings differ" in capsys.readouterr().out
    lines = (tmp_path / "b.csv").read_text().splitlines()
    shifted = [lines[0]] + [
        line.replace(line.split(",")[10], str(float(line.split(",")[10]) * 3))
        if ",udp," in line and ",cross-node," in line and ",throughput," in line else line
        for line in lines[1:]
    ]
    (tmp_path / "c.csv").write_text("\n".join(shifted) + "\n")
    assert main([str(tmp_path / "a.csv"), str(tmp_path / "c.csv")]) == 1
    out = capsys.readouterr().out
    assert "1 with intervals apart" in out and "cross-node, backend=udp, TCP Gbit/s" in out
    assert main([str(tmp_path / "a.csv")]) == 2
