"""The report layer without root: the CSV writer and its schema, crash safety, the summary table and the plots.

tests/data/results_small.csv is a run of two backends (vxlan, host-gw) x three placements (written in the order
cross-node, same-node, same-pod) x 2 repeats, with ping (rtt_min, rtt_p50, rtt_p99, loss, samples) and iperf3
TCP (throughput, retransmits) rows, figures shaped like LIMITS.md.
"""

import csv
import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Dict, List

import pytest
from conftest import requires_matplotlib

from emu.measure.iperf import parse_iperf3_json
from emu.measure.ping import PingResult, parse_ping
from emu.report.results import (
    COLUMNS,
    ReportError,
    Results,
    ResultWriter,
    columns,
    read_results,
)
from emu.report.summary import summary_table

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
SMALL = DATA / "results_small.csv"


def lines(path: Path) -> List[str]:
    return path.read_text().splitlines()


# ------------------------------------------------------------------------------------------- the schema


def test_columns() -> None:
    assert COLUMNS == [
        "experiment",
        "repeat",
        "placement",
        "src",
        "dst",
        "src_node",
        "dst_node",
        "tool",
        "metric",
        "value",
        "unit",
    ]
    assert columns(["backend"]) == ["experiment", "backend"] + COLUMNS[1:]
    assert columns(["backend", "mtu"])[1:3] == ["backend", "mtu"]
    for bad in (["value"], ["repeat"], [""], ["a", "a"]):
        with pytest.raises(ValueError):
            columns(bad)


def test_writer_header_and_rows(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "results.csv"
    with ResultWriter(path, "cross_node", ["backend"]) as writer:
        results = Results(writer)
        results.set_context({"backend": "vxlan"}, 2)
        results.add(
            placement="same-node",
            src="client",
            dst="server",
            src_node="node-1",
            dst_node="node-1",
            tool="ping",
            metric="rtt_p50",
            value=0.068125,
            unit="ms",
        )
        results.add(
            placement="cross-node",
            src="client",
            dst="server",
            tool="iperf3-tcp",
            metric="throughput",
            value=7.2,
            unit="Gbit/s",
        )
        assert writer.rows_written == 2
    assert lines(path) == [
        "experiment,backend,repeat,placement,src,dst,src_node,dst_node,tool,metric,value,unit",
        "cross_node,vxlan,2,same-node,client,server,node-1,node-1,ping,rtt_p50,0.068125,ms",
        "cross_node,vxlan,2,cross-node,client,server,,,iperf3-tcp,throughput,7.2,Gbit/s",
    ]
    rows = read_results(path)
    assert list(rows[0].keys()) == columns(["backend"])
    assert rows[0]["value"] == "0.068125" and float(rows[1]["value"]) == 7.2


def test_writer_appends_to_same_header_refuses_another(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    for _ in range(2):
        with ResultWriter(path, "x", ["backend"]) as writer:
            writer.write({"backend": "vxlan", "repeat": 0, "metric": "m", "value": 1})
    assert lines(path)[0].startswith("experiment,backend,") and len(lines(path)) == 3
    with pytest.raises(ReportError, match="another header"):
        ResultWriter(path, "x", ["mtu"])
    with ResultWriter(tmp_path / "other.csv", "x") as writer:
        with pytest.raises(ValueError, match="unknown result columns"):
            writer.write({"backend": "vxlan"})


def test_values_are_written_at_their_precision(tmp_path: Path) -> None:
    """Floats keep at most 12 significant digits (no binary noise such as 0.30000000000000004), and a figure
    measured to a known number of decimals keeps only those."""
    path = tmp_path / "r.csv"
    values = [0.1 + 0.2, 1e-7, 12345678.901234567, 3, math.nan, True, 0.050109999999999995]
    with ResultWriter(path, "x") as writer:
        for value in values:
            writer.write({"metric": "m", "value": value})
        writer.write({"metric": "m", "value": 0.04550000000000001}, decimals=4)
        writer.write({"metric": "m", "value": 9.381234567891}, decimals=6)
    read = [row["value"] for row in read_results(path)]
    assert read[:4] == ["0.3", "1e-07", "12345678.9012", "3"]
    assert read[4] == "nan" and read[5] == "1" and read[6] == "0.05011"
    assert read[7:] == ["0.0455", "9.381235"]


def test_measurements_are_rounded_to_their_tools_resolution(tmp_path: Path) -> None:
    """ping prints whole microseconds: min/max keep 3 decimals of ms, interpolated percentiles and the mean 4;
    the TCP round trip's nanosecond timer keeps 6; iperf3's throughput is kept to the kbit/s."""
    rtts = [0.031, 0.032, 0.034, 0.0335 + 1e-12]
    ping_result = PingResult.from_samples("a", "b", "10.0.0.2", 4, 4, rtts)
    rr = type("RR", (), dict(src="a", dst="b", rtts=(0.0123456789,), min=0.0123456789, avg=0.0123456789,
                             p50=0.0123456789, p90=0.0123456789, p99=0.0123456789, max=0.0123456789))()
    with Results.open(tmp_path / "r.csv", "x") as results:
        results.add_ping("p", ping_result)
        results.add_rr("p", rr)
    rows = {(r["tool"], r["metric"]): r["value"] for r in read_results(tmp_path / "r.csv")}
    assert rows[("ping", "rtt_min")] == "0.031" and rows[("ping", "rtt_max")] == "0.034"
    assert rows[("ping", "rtt_p50")] == "0.0328"  # (0.032 + 0.0335) / 2 = 0.03275 -> 4 decimals
    assert rows[("ping", "rtt_avg")] == "0.0326"
    assert rows[("tcp_rr", "rtt_p50")] == "0.012346"


def test_set_context_checks_variant_keys(tmp_path: Path) -> None:
    results = Results(ResultWriter(tmp_path / "r.csv", "x", ["backend"]))
    with pytest.raises(ValueError):
        results.set_context({"mtu": "1450"}, 0)
    with pytest.raises(ValueError):
        results.set_context({"backend": "vxlan", "mtu": "1450"}, 0)
    with pytest.raises(ValueError):
        results.set_context({"backend": "vxlan"}, -1)
    results.close()


def test_rows_survive_a_crash_mid_run(tmp_path: Path) -> None:
    """A row written before the process dies is on disk: no close(), no exit handlers, no buffer flush."""
    path = tmp_path / "results.csv"
    code = (
        "import os\n"
        "from emu.report.results import Results, ResultWriter\n"
        f"results = Results(ResultWriter({str(path)!r}, 'crash', ['backend']))\n"
        "results.set_context({'backend': 'vxlan'}, 0)\n"
        "results.add(placement='same-node', src='a', dst='b', tool='ping', metric='rtt_p50', value=0.07, unit='ms')\n"
        "os._exit(3)  # die at once, as a kill -9 would: Python flushes nothing\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    rows = read_results(path)
    assert len(rows) == 1 and rows[0]["metric"] == "rtt_p50" and rows[0]["backend"] == "vxlan"


def test_rows_survive_an_exception_mid_run(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    writer = ResultWriter(path, "crash", [])
    results = Results(writer)

    def experiment() -> None:
        results.add(placement="same-pod", src="a", dst="b", tool="ping", metric="rtt_p50", value=0.04, unit="ms")
        raise RuntimeError("the cluster fell over")

    with pytest.raises(RuntimeError):
        experiment()
    # read by another reader while the writer is still open, as after a crash
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["value"] for r in rows] == ["0.04"]
    writer.close()


def test_add_ping_rows(tmp_path: Path) -> None:
    sent, received, rtts = parse_ping((DATA / "ping_loss_partial.txt").read_text())
    result = PingResult.from_samples("client", "server", "10.244.2.2", sent, received, rtts)
    with Results.open(tmp_path / "r.csv", "x", ["backend"]) as results:
        results.set_context({"backend": "host-gw"}, 1)
        results.add_ping("cross-node", result, src_node="node-1", dst_node="node-2")
    rows = read_results(tmp_path / "r.csv")
    by_metric: Dict[str, Dict[str, str]] = {r["metric"]: r for r in rows}
    assert list(by_metric) == [
        "rtt_min",
        "rtt_avg",
        "rtt_p50",
        "rtt_p90",
        "rtt_p99",
        "rtt_max",
        "rtt_mdev",
        "loss",
        "samples",
    ]
    assert float(by_metric["rtt_p50"]["value"]) == result.p50 and by_metric["rtt_p50"]["unit"] == "ms"
    assert float(by_metric["loss"]["value"]) == pytest.approx(40.0) and by_metric["loss"]["unit"] == "%"
    assert by_metric["samples"]["value"] == "6" and by_metric["samples"]["unit"] == "count"
    assert {(r["tool"], r["src"], r["dst"], r["src_node"], r["dst_node"], r["backend"], r["repeat"]) for r in rows} == {
        ("ping", "client", "server", "node-1", "node-2", "host-gw", "1")
    }


def test_add_ping_all_lost(tmp_path: Path) -> None:
    result = PingResult.from_samples("a", "b", "t", 5, 0, ())
    with Results.open(tmp_path / "r.csv", "x") as results:
        results.add_ping("cross-node", result)
    values = {r["metric"]: r["value"] for r in read_results(tmp_path / "r.csv")}
    assert values["rtt_p50"] == "nan" and float(values["loss"]) == 100.0 and values["samples"] == "0"


def test_add_iperf3_rows(tmp_path: Path) -> None:
    tcp = parse_iperf3_json((DATA / "iperf3_tcp.json").read_text(), "client", "server")
    udp = parse_iperf3_json((DATA / "iperf3_udp.json").read_text(), "client", "server")
    with Results.open(tmp_path / "r.csv", "x") as results:
        results.add_iperf3("cross-node", tcp)
        results.add_iperf3("cross-node", udp)
    rows = read_results(tmp_path / "r.csv")
    tcp_rows = {r["metric"]: r for r in rows if r["tool"] == "iperf3-tcp"}
    udp_rows = {r["metric"]: r for r in rows if r["tool"] == "iperf3-udp"}
    assert set(tcp_rows) == {"throughput", "sender_throughput", "retransmits", "cpu_local", "cpu_remote"}
    assert float(tcp_rows["throughput"]["value"]) == pytest.approx(tcp.bits_per_second / 1e9)
    assert tcp_rows["throughput"]["unit"] == "Gbit/s"
    assert set(udp_rows) == {
        "throughput",
        "sender_throughput",
        "jitter",
        "lost_packets",
        "loss",
        "cpu_local",
        "cpu_remote",
    }
    # jitter is kept to 0.1 us (iperf3 times packets to the microsecond)
    assert float(udp_rows["jitter"]["value"]) == round(udp.jitter_ms, 4) and udp_rows["jitter"]["unit"] == "ms"


def test_read_results_refuses_other_csvs(tmp_path: Path) -> None:
    other = tmp_path / "other.csv"
    other.write_text("a,b\n1,2\n")
    with pytest.raises(ReportError, match="not an emu results CSV"):
        read_results(other)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert read_results(empty) == []


def test_summary_table() -> None:
    """Two runs per cell: the median and the runs' range in parentheses (too few runs for a 95 % interval);
    latencies in microseconds."""
    table = summary_table(read_results(SMALL))
    print(table)
    text_lines = table.splitlines()
    assert text_lines[0].startswith("cross_node")
    assert text_lines[1].split() == ["placement", "backend", "ping", "p50", "us", "ping", "loss", "%", "TCP", "Gbit/s",
                                     "runs"]
    body = [line.split() for line in text_lines[3:9]]
    assert [row[0] for row in body] == ["same-pod"] * 2 + ["same-node"] * 2 + ["cross-node"] * 2
    assert [row[1] for row in body] == ["vxlan", "host-gw"] * 3
    # cross-node vxlan: the repeats' p50 are 0.125 and 0.138 ms, throughput 7.5 and 6.79 Gbit/s, no loss
    assert body[4] == ["cross-node", "vxlan", "132", "(125-138)", "0", "7.14", "(6.79-7.50)", "2"]
    assert "the range of fewer than 6 runs, not a 95 % interval" in table
    assert summary_table([]) == "(no results)"


# ----------------------------------------------------------------------------------------------- plots


def assert_valid_figures(paths: List[Path]) -> None:
    for path in paths:
        assert path.is_file() and path.stat().st_size > 0, path
        if path.suffix == ".png":
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path
        else:
            root = ElementTree.parse(str(path)).getroot()
            assert root.tag.endswith("svg"), path


@requires_matplotlib
def test_plot_results_small(tmp_path: Path) -> None:
    from emu.report.plots import plot_results

    paths = plot_results(SMALL, tmp_path / "plots")
    assert [p.name for p in paths] == ["latency.png", "latency.svg", "throughput.png", "throughput.svg"]
    assert_valid_figures(paths)
    svg = (tmp_path / "plots" / "latency.svg").read_text()
    # text is drawn as paths; the title's glyphs are there as <use> of defined glyph paths
    assert "<use" in svg or "<text" in svg


@requires_matplotlib
def test_plot_single_run_and_missing_metrics(tmp_path: Path) -> None:
    from emu.report.plots import plot_results

    with SMALL.open(newline="") as f:
        rows = list(csv.reader(f))
    one = tmp_path / "one.csv"
    with one.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(rows[0])
        writer.writerows(r for r in rows[1:] if r[2] == "0" and r[8] == "ping")  # repeat 0, ping only
    paths = plot_results(one, tmp_path / "one")
    assert [p.name for p in paths] == ["latency.png", "latency.svg"]  # no throughput rows: figure skipped
    assert_valid_figures(paths)


@requires_matplotlib
def test_plot_without_variant_columns(tmp_path: Path) -> None:
    from emu.report.plots import plot_results

    path = tmp_path / "plain.csv"
    with Results.open(path, "plain") as results:
        for repeat in range(3):
            results.set_context({}, repeat)
            results.add("same-node", "a", "b", "iperf3-tcp", "throughput", 9.0 + repeat, "Gbit/s")
            results.add("weird-path", "a", "b", "iperf3-tcp", "throughput", 3.0, "Gbit/s")
            results.add("cross-node", "a", "b", "ping", "rtt_p50", math.nan, "ms")
    paths = plot_results(path, tmp_path / "plain")
    assert {p.name for p in paths} == {"latency.png", "latency.svg", "throughput.png", "throughput.svg"}
    assert_valid_figures(paths)


def test_plot_empty_csv_is_a_clear_error(tmp_path: Path) -> None:
    from emu.report.plots import plot_results

    header_only = tmp_path / "header.csv"
    ResultWriter(header_only, "x", ["backend"]).close()
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    for path in (header_only, empty):
        with pytest.raises(ReportError, match="no result rows"):
            plot_results(path, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_report_imports_without_matplotlib() -> None:
    code = (
        "import sys, emu.report, emu.report.plots, emu.measure.ping, emu.measure.iperf; "
        "sys.exit('matplotlib' in sys.modules)"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0
