"""Checks of lab 2, pods on the same node (see README.md beside this file).

Run them with: sudo python -m emu check 2 --answers labs/2-same-node/answers.yaml
"""

import json

from emu.labs import answer, expect, ping, run_in, setup, task

TOPOLOGY = "topology.yaml"


@setup
def detach_b(cluster):
    """node-1: pod b's veth end taken off the bridge (ip link set <b's veth> nomaster)"""
    cluster.node("node-1").exec(["ip", "link", "set", cluster.plan.pod("b").host_veth, "nomaster"])


@task("you found pod b's end of its veth pair in node-1")
def veth_of_b(cluster, answers):
    expect(answer(answers, "veth_of_b") == cluster.plan.pod("b").host_veth,
           "in pod b, 'ip link show eth0' says eth0@ifN; in node-1, which device has index N?")
    return True


@task("you found pod b's MAC address")
def mac_of_b(cluster, answers):
    expect(answer(answers, "mac_of_b") == cluster.plan.pod("b").mac.lower(), "b ip link show eth0")
    return True


@task("you found the bridge that joins the pods")
def bridge(cluster, answers):
    expect(answer(answers, "bridge") == "cni0", "node-1 ip -d link show type bridge")
    return True


@task("you found the TTL of a reply from a pod on the same node")
def ttl(cluster, answers):
    expect(answer(answers, "ttl_same_node") == "64", "a ping -c 1 b: read ttl= in the reply")
    return True


@task("you found whether cni0's own counters count the traffic between a and b")
def cni0_counters(cluster, answers):
    expect(answer(answers, "cni0_counts_a_to_b") in ("no", "false"),
           "compare 'node-1 ip -s link show cni0' before and after 'a ping -c 10 b'")
    return True


@task("your fix puts b back on the bridge: a reaches b")
def b_reachable(cluster, answers):
    veth = cluster.plan.pod("b").host_veth
    link = json.loads(run_in(cluster, "node-1", ["ip", "-json", "link", "show", "dev", veth]).stdout or "[{}]")[0]
    expect(link.get("master") == "cni0", f"{veth} is not a port of cni0 (master: {link.get('master', 'none')})")
    result = ping(cluster, "a", "b")
    expect(result.returncode == 0, "a still cannot ping b")
    return True


@task("after your fix the bridge has learned b's MAC address on b's veth")
def fdb_learned(cluster, answers):
    pod = cluster.plan.pod("b")
    ping(cluster, "a", "b", count=1)
    entries = json.loads(run_in(cluster, "node-1", ["bridge", "-json", "fdb", "show", "br", "cni0"]).stdout or "[]")
    ports = [e.get("ifname") for e in entries if e.get("mac") == pod.mac]
    expect(pod.host_veth in ports, f"bridge fdb show br cni0 has {pod.mac} on {ports or 'no port'}")
    return True
