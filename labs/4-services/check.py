"""Checks of lab 4, Services and kube-proxy's iptables rules (see README.md beside this file).

Run them with: sudo python -m emu check 4 --answers labs/4-services/answers.yaml
"""

import re

from emu.labs import TaskFailed, answer, expect, run_in, setup, task
from emu.proxy import iptables as kubeproxy

TOPOLOGY = "topology.yaml"
REQUESTS = 6


@setup
def break_bridge_netfilter(cluster):
    """node-1: net.bridge.bridge-nf-call-iptables set to 0 (sysctl -w ...=0)"""
    cluster.node("node-1").exec(["sysctl", "-q", "-w", "net.bridge.bridge-nf-call-iptables=0"])


@task("you found the Service's ClusterIP")
def cluster_ip(cluster, answers):
    expect(answer(answers, "cluster_ip") == cluster.service("web").cluster_ip, "services")
    return True


@task("you found the KUBE-SVC chain of Service web")
def svc_chain(cluster, answers):
    chain = kubeproxy.service_port_chain("default", "web", "http", "TCP")
    expect(answer(answers, "svc_chain") == chain.lower(), "node-1 iptables-save -t nat | grep 'default/web'")
    return True


@task("you found the probability on the first KUBE-SEP rule with three endpoints")
def first_probability(cluster, answers):
    text = answer(answers, "first_probability")
    try:
        value = float(text)
    except ValueError:
        raise TaskFailed(f"{text!r} is not a number") from None
    expect(abs(value - 1 / 3) < 1e-6, "the --probability of the first rule of the KUBE-SVC chain")
    return True


@task("you found whether a ClusterIP answers ping")
def ping_service(cluster, answers):
    expect(answer(answers, "ping_service_answers") in ("no", "false"), "client ping -c 2 web")
    return True


@task("only pods on node-1 serve the Service now (kube-proxy's rules in node-1 say so)")
def node1_only(cluster, answers):
    saved = run_in(cluster, "node-1", ["iptables-save", "-t", "nat"]).stdout
    web = "\n".join(line for line in saved.splitlines() if '"default/web:' in line)  # not kube-dns's rules
    targets = re.findall(r"-j DNAT --to-destination (\d+\.\d+\.\d+\.\d+):\d+", web)
    pods = {p.ip: p for p in cluster.pods}
    where = sorted({pods[ip].node if ip in pods else ip for ip in targets})
    expect(bool(targets), "the Service has no endpoints left")
    expect(where == ["node-1"], f"the Service's endpoints are on {', '.join(where)}")
    return True


@task("your fix repairs Service traffic from client: every request is answered")
def service_fixed(cluster, answers):
    value = run_in(cluster, "node-1", ["sysctl", "-n", "net.bridge.bridge-nf-call-iptables"]).stdout.strip()
    expect(value == "1", f"net.bridge.bridge-nf-call-iptables is {value} in node-1")
    ip = cluster.service("web").cluster_ip
    answered = 0
    for _ in range(REQUESTS):
        if run_in(cluster, "client", ["curl", "-s", "-m", "3", f"http://{ip}/"]).stdout.strip():
            answered += 1
    expect(answered == REQUESTS, f"{answered} of {REQUESTS} requests to http://{ip}/ were answered")
    return True
