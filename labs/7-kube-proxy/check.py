"""Checks of lab 7, kube-proxy's iptables and nftables modes (see README.md beside this file).

Run them with: sudo python -m emu check 7 --answers labs/7-kube-proxy/answers.yaml

The cluster runs in nftables mode; what the iptables mode would program is computed from the same spec. The
measurement tasks read the results of labs/7-kube-proxy/measure.py (an emu run) that the answers name.
"""

import csv
import json
import statistics

from emu.faults.catalog import scenario
from emu.faults.model import Fault
from emu.labs import TaskFailed, answer, answer_path, expect, run_in, setup, task
from emu.plan.build import build_plan
from emu.plan.nftables import normalize_listing, render
from emu.proxy import iptables as kubeproxy
from emu.proxy import nftables as nft

TOPOLOGY = "topology.yaml"
SIZES = (10, 5000)
CONNECTIONS = 10


def _web(cluster):
    return next(s for s in cluster.plan.services if s.name == "web" and s.namespace == "default")


def _number(answers, key):
    text = answer(answers, key)
    try:
        return float(text)
    except ValueError:
        raise TaskFailed(f"{key}: {text!r} is not a number") from None


@setup
def lose_webs_element(cluster):
    """node-1: web's element of kube-proxy's verdict map service-ips deleted (nft delete element ...)"""
    web = _web(cluster)
    key = f"{web.cluster_ip} . tcp . {web.ports[0].port}"
    table = next(t for t in cluster.plan.node("node-1").nftables if t.name == nft.TABLE)
    value = next(e.value for e in table.set(nft.SERVICE_IPS).elements if e.key == key)
    fault = Fault("missing-map-element", "node-1", key, detail=(("value", value),))
    scenario(fault.scenario).inject(cluster, fault)


@task("you found web's KUBE-SVC chain, and how many rules KUBE-SERVICES has in node-1 (iptables mode)")
def iptables_view(cluster, answers):
    chain = kubeproxy.service_port_chain("default", "web", "http", "TCP")
    expect(answer(answers, "svc_chain") == chain.lower(), "emu plan ... --proxy-mode iptables: grep default/web")
    plan = build_plan(cluster.plan.spec, proxy_mode="iptables")
    rules = [line for line in plan.node("node-1").iptables.splitlines() if line.startswith("-A KUBE-SERVICES ")]
    expect(answer(answers, "kube_services_rules") == str(len(rules)), "count the -A KUBE-SERVICES lines")
    return True


@task("you found web's service chain, the verdict map and how an endpoint is picked (nftables mode)")
def nftables_view(cluster, answers):
    chain = f"service-{nft.chain_base('default', 'web', 'http', 'tcp')}"
    expect(answer(answers, "nft_service_chain") == chain.lower(), "node-1 nft list table ip kube-proxy")
    expect(answer(answers, "nft_map") == nft.SERVICE_IPS, "which map does the services chain look the packet up in?")
    expect("numgen random mod 2" in answer(answers, "nft_pick"), "the rule of web's service chain")
    return True


@task("you predicted which mode's first-packet latency grows with the number of Services")
def prediction(cluster, answers):
    expect(answer(answers, "grows") == "iptables", "a list walked rule by rule, or a hash lookup?")
    expect(answer(answers, "stays_flat") == "nftables", "and the other one")
    return True


def _results(answers):
    """The rows of the results.csv the answers name (relative to the answers file, or the working directory)."""
    raw = answer_path(answers, "results_csv")
    metadata = raw.parent / "metadata.json"
    if not metadata.is_file() or json.loads(metadata.read_text()).get("experiment", "").find("measure") < 0:
        raise TaskFailed(f"{raw}: not the results of labs/7-kube-proxy/measure.py (no metadata.json beside it)")
    with open(raw, newline="") as f:
        return list(csv.DictReader(f))


def _p50(rows, mode, size, metric="connect_p50_ms", dst="zzz-last"):
    values = [float(r["value"]) for r in rows if r.get("proxy_mode") == mode and r.get("services") == str(size)
              and r["tool"] == "tcp-connect" and r["metric"] == metric and r["dst"] == dst]
    if not values:
        raise TaskFailed(f"the results have no {metric} to {dst} for {mode} at {size} Services")
    return statistics.median(values)


@task("you measured connect() latency to the last Service at 10 and 5,000 Services in both modes")
def measured(cluster, answers):
    rows = _results(answers)
    for mode in ("iptables", "nftables"):
        for size in SIZES:
            key = f"{mode}_{size}_ms"
            value, measured_value = _number(answers, key), _p50(rows, mode, size)
            expect(abs(value - measured_value) <= max(0.0015, 0.02 * measured_value),
                   f"{key}: your results say {measured_value:.4f} ms (connect_p50_ms, dst zzz-last)")
    return True


@task("your measurements show what the modes predict: iptables grows with the Services, nftables does not")
def measured_difference(cluster, answers):
    rows = _results(answers)
    growth = {mode: _p50(rows, mode, SIZES[1], "connect_p50_over_loopback") /
              _p50(rows, mode, SIZES[0], "connect_p50_over_loopback") for mode in ("iptables", "nftables")}
    expect(growth["iptables"] > 1.3 * growth["nftables"],
           f"over the loopback, 5,000 against 10 Services: iptables x{growth['iptables']:.2f}, nftables "
           f"x{growth['nftables']:.2f}: measure again on a quieter machine")
    return True


@task("your fix puts web back into node-1's verdict map: the table as planned, connections from client answered")
def map_fixed(cluster, answers):
    table = next(t for t in cluster.plan.node("node-1").nftables if t.name == nft.TABLE)
    live = run_in(cluster, "node-1", ["nft", "list", "table", "ip", nft.TABLE]).stdout
    expect(normalize_listing(live) == normalize_listing(render(table)),
           "node-1 nft list table ip kube-proxy differs from plan node-1")
    web = _web(cluster)
    made = 0
    for _ in range(CONNECTIONS):
        result = run_in(cluster, "client", ["timeout", "2", "bash", "-c",
                                            f"exec 3<>/dev/tcp/{web.cluster_ip}/{web.ports[0].port}"])
        made += result.returncode == 0
    expect(made == CONNECTIONS, f"{made} of {CONNECTIONS} connections from client to web were made")
    return True
