"""Benchmark of emu's flannel UDP daemon against kernel VXLAN and host-gw, on hand-built namespaces.

Run as root: ``sudo python bench/udp_daemon.py [--duration 5] [--pings 300]``.

For each data path it builds the same two-node setup from scratch, measures pod-to-pod ping RTT (p50/p99)
and one TCP stream with ``iperf3 -J``, and tears it down again::

    pod1 (10.244.1.2) --veth-- node1 ==== underlay veth 192.168.56.11 <-> .12 ==== node2 --veth-- pod2 (10.244.2.2)
                               flannel0 / flannel.1 / plain routes              flannel0 / flannel.1 / routes

Paths: ``udp`` (emu.backends.udp.daemon with kernel offloads, the default), ``udp-plain`` (``--offload off``, proxy.c's
literal per-packet loop), ``vxlan`` (flannel.1 as flannel programs it: static neighbour + FDB entry, onlink route,
MTU 1450) and ``host-gw`` (a route via the other node). Every namespace is named ``emubench-udp-*`` and is
deleted on exit, Ctrl-C included; only processes this script started are signalled.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from typing import Dict, List

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "emubench-udp-"
NODE_IPS = {1: "192.168.56.11", 2: "192.168.56.12"}
POD_IPS = {1: "10.244.1.2", 2: "10.244.2.2"}
MTUS = {"udp": 1472, "udp-plain": 1472, "vxlan": 1450, "host-gw": 1500}


def sh(argv: List[str], check: bool = True) -> subprocess.CompletedProcess:
    """Run one command (argv list), capturing text output; raise with its stderr on failure."""
    res = subprocess.run(argv, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def nsx(ns: str, argv: List[str]) -> List[str]:
    """argv to run inside namespace ``ns``."""
    return ["ip", "netns", "exec", ns] + argv


class Testbed:
    """Two node namespaces and two pod namespaces, wired for one data path; a context manager."""

    def __init__(self, path: str, underlay: str = "veth", tag: str = "") -> None:
        self.path = path
        self.underlay = underlay
        self.tag = tag
        keys = ("n1", "n2", "p1", "p2") + (("sw",) if underlay == "bridge" else ())
        self.ns = {k: f"{PREFIX}{tag}{k}" for k in keys}
        self.daemons: Dict[int, subprocess.Popen] = {}

    def __enter__(self) -> "Testbed":
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        ns = self.ns
        for name in ns.values():
            sh(["ip", "netns", "add", name])
        if self.underlay == "bridge":
            # underlay as Mininet wires it: each node's eth0 is a veth into a Linux bridge (here in its own
            # namespace rather than the root one, so nothing outside is touched)
            sw = ns["sw"]
            sh(nsx(sw, ["ip", "link", "add", "br0", "type", "bridge"]))
            sh(nsx(sw, ["ip", "link", "set", "br0", "up"]))
            for i in (1, 2):
                sh(["ip", "link", "add", "eth0", "netns", ns[f"n{i}"], "type", "veth", "peer", "name", f"s1-eth{i}",
                    "netns", sw])
                sh(nsx(sw, ["ip", "link", "set", f"s1-eth{i}", "master", "br0", "up"]))
        else:
            # underlay: one veth between the nodes
            sh(["ip", "link", "add", "eth0", "netns", ns["n1"], "type", "veth", "peer", "name", "eth0", "netns", ns["n2"]])
        mtu = MTUS[self.path]
        for i in (1, 2):
            n, p = ns[f"n{i}"], ns[f"p{i}"]
            sh(nsx(n, ["ip", "addr", "add", f"{NODE_IPS[i]}/24", "dev", "eth0"]))
            sh(nsx(n, ["ip", "link", "set", "eth0", "up"]))
            sh(nsx(n, ["ip", "link", "set", "lo", "up"]))
            sh(nsx(n, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]))
            # pod veth: node side is the pod's gateway (stands in for cni0)
            sh(["ip", "link", "add", "veth0", "netns", n, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0",
                "netns", p, "mtu", str(mtu)])
            sh(nsx(n, ["ip", "addr", "add", f"10.244.{i}.1/24", "dev", "veth0"]))
            sh(nsx(n, ["ip", "link", "set", "veth0", "up"]))
            sh(nsx(p, ["ip", "link", "set", "lo", "up"]))
            sh(nsx(p, ["ip", "addr", "add", f"{POD_IPS[i]}/24", "dev", "eth0"]))
            sh(nsx(p, ["ip", "link", "set", "eth0", "up"]))
            sh(nsx(p, ["ip", "route", "add", "default", "via", f"10.244.{i}.1"]))
        for i in (1, 2):
            getattr(self, "_" + self.path.replace("-", "_").replace("udp_plain", "udp"))(i)

    def _udp(self, i: int) -> None:
        j = 3 - i
        n = self.ns[f"n{i}"]
        argv = nsx(n, [sys.executable, "-m", "emu.backends.udp.daemon", "--tun", "flannel0", "--listen",
                       f"{NODE_IPS[i]}:8285", "--route", f"10.244.{j}.0/24={NODE_IPS[j]}", "-v", "--ping-unreachable",
                       "--offload", "off" if self.path == "udp-plain" else "auto"])
        env = dict(os.environ, PYTHONPATH=REPO)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        self.daemons[i] = proc
        line = proc.stdout.readline().strip()
        if line != "READY":
            raise RuntimeError(f"daemon in {n} did not start: {line} {proc.stderr.read() if proc.poll() is not None else ''}")
        sh(nsx(n, ["ip", "addr", "add", f"10.244.{i}.0/32", "dev", "flannel0"]))
        sh(nsx(n, ["ip", "link", "set", "flannel0", "mtu", "1472", "up"]))
        sh(nsx(n, ["ip", "route", "add", "10.244.0.0/16", "dev", "flannel0"]))

    def _vxlan(self, i: int) -> None:
        n = self.ns[f"n{i}"]
        mac = f"02:00:00:00:00:0{i}"
        sh(nsx(n, ["ip", "link", "add", "flannel.1", "address", mac, "type", "vxlan", "id", "1", "local", NODE_IPS[i],
                   "dev", "eth0", "dstport", "8472", "nolearning"]))
        sh(nsx(n, ["ip", "link", "set", "flannel.1", "mtu", "1450", "up"]))
        sh(nsx(n, ["ip", "addr", "add", f"10.244.{i}.0/32", "dev", "flannel.1"]))
        j = 3 - i
        rmac = f"02:00:00:00:00:0{j}"
        sh(nsx(n, ["ip", "route", "add", f"10.244.{j}.0/24", "via", f"10.244.{j}.0", "dev", "flannel.1", "onlink"]))
        sh(nsx(n, ["ip", "neigh", "replace", f"10.244.{j}.0", "lladdr", rmac, "dev", "flannel.1", "nud", "permanent"]))
        sh(nsx(n, ["bridge", "fdb", "append", rmac, "dev", "flannel.1", "dst", NODE_IPS[j]]))

    def _host_gw(self, i: int) -> None:
        j = 3 - i
        sh(nsx(self.ns[f"n{i}"], ["ip", "route", "add", f"10.244.{j}.0/24", "via", NODE_IPS[j], "dev", "eth0"]))

    def thread_cpu(self) -> Dict[int, List[float]]:
        """CPU seconds per thread (main, tun->udp, udp->tun) of each node's daemon, read from /proc."""
        tick = os.sysconf("SC_CLK_TCK")
        out: Dict[int, List[float]] = {}
        for i, proc in self.daemons.items():
            pid = proc.pid  # `ip netns exec` execs the daemon in place: same pid
            if not os.path.exists(f"/proc/{pid}"):
                continue
            secs = []
            for tid in sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")):
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                secs.append((int(fields[11]) + int(fields[12])) / tick)
            out[i] = secs
        return out

    def stop_daemons(self) -> Dict[int, str]:
        """SIGTERM the daemons; return their stderr (which carries packet counts with -v)."""
        errs = {}
        for i, proc in self.daemons.items():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                _, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            errs[i] = err
        self.daemons = {}
        return errs

    def close(self) -> None:
        """Stop what we started and delete our namespaces (safe to call twice)."""
        self.stop_daemons()
        for name in self.ns.values():
            if os.path.exists(f"/run/netns/{name}"):
                for pid in sh(["ip", "netns", "pids", name], check=False).stdout.split():
                    try:
                        os.kill(int(pid), signal.SIGKILL)  # only our iperf3/ping can live in our namespaces
                    except (ProcessLookupError, ValueError):
                        pass
                sh(["ip", "netns", "del", name], check=False)


def ping_rtts(tb: Testbed, count: int) -> List[float]:
    """RTTs in ms of ``count`` pings pod1 -> pod2 (after a warm-up)."""
    sh(nsx(tb.ns["p1"], ["ping", "-c", "3", "-i", "0.2", "-W", "2", POD_IPS[2]]))
    res = sh(nsx(tb.ns["p1"], ["ping", "-c", str(count), "-i", "0.01", "-W", "2", POD_IPS[2]]))
    return [float(tok.split("=")[1]) for line in res.stdout.splitlines() for tok in line.split() if tok.startswith("time=")]


def iperf(tb: Testbed, duration: int) -> float:
    """Gbit/s of one TCP stream pod1 -> pod2 (iperf3 -J, receiver side)."""
    server = subprocess.Popen(nsx(tb.ns["p2"], ["iperf3", "-s", "-1", "-B", POD_IPS[2]]), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sh(nsx(tb.ns["p2"], ["ss", "-ltn", "sport", "=", ":5201"]), check=False).stdout.count("LISTEN"):
                break
            time.sleep(0.1)
        res = sh(nsx(tb.ns["p1"], ["iperf3", "-c", POD_IPS[2], "-t", str(duration), "-J"]), check=False)
        data = json.loads(res.stdout)
        if "error" in data:
            raise RuntimeError(f"iperf3: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def pct(values: List[float], q: float) -> float:
    """The q-quantile (0..1) of values, nearest rank."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * (len(s) - 1)))))]


def measure(path: str, duration: int, pings: int, underlay: str) -> Dict[str, object]:
    """Build one path, measure it, tear it down; return its figures."""
    with Testbed(path, underlay) as tb:
        rtts = ping_rtts(tb, pings)
        cpu0 = tb.thread_cpu()
        t0 = time.monotonic()
        gbps = iperf(tb, duration)
        elapsed = time.monotonic() - t0
        row: Dict[str, object] = {"path": path, "p50": pct(rtts, 0.5), "p99": pct(rtts, 0.99), "gbps": gbps}
        if tb.daemons:
            cpu1 = tb.thread_cpu()
            errs = tb.stop_daemons()
            sent = _count(errs.get(1, ""), "packets sent")
            recv = _count(errs.get(2, ""), "received")
            row["pps_tx"] = sent / elapsed
            row["pps_rx"] = recv / elapsed
            row["cpu"] = {i: [round((b - a) / elapsed, 2) for a, b in zip(cpu0[i], cpu1[i])] for i in cpu1 if i in cpu0}
        return row


def _count(text: str, what: str) -> int:
    for line in text.splitlines():
        if "exiting:" in line:
            for part in line.split(":", 2)[2].split(","):
                if what in part:
                    return int(part.split()[0])
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM: unwind like Ctrl-C, so every Testbed is torn down."""
    raise KeyboardInterrupt


def main() -> int:
    """Measure every path, print a table and the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="iperf3 seconds per path (default 5)")
    ap.add_argument("--pings", type=int, default=300, help="pings per path (default 300)")
    ap.add_argument("--underlay", choices=("veth", "bridge"), default="bridge",
                    help="bridge: node veths on a Linux bridge, as Mininet's LinuxBridge switch wires hosts "
                         "(default); veth: one veth straight between the nodes")
    ap.add_argument("--paths", default="udp,udp-plain,vxlan,host-gw", help="comma list of paths to measure")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/udp_daemon.py needs root (namespaces, TUN devices)", file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _interrupt)
    rows = {}
    try:
        for path in args.paths.split(","):
            rows[path] = measure(path, args.duration, args.pings, args.underlay)
            r = rows[path]
            extra = ""
            if "pps_tx" in r:
                cpu = r["cpu"]
                extra = (f"  daemon pps tx {r['pps_tx']:.0f} rx {r['pps_rx']:.0f}"
                         f"  CPU s/s [main, tun->udp, udp->tun] n1 {cpu.get(1)} n2 {cpu.get(2)}")
            print(f"{path:10s} p50 {r['p50']:.3f} ms  p99 {r['p99']:.3f} ms  TCP {r['gbps']:.2f} Gbit/s{extra}",
                  flush=True)
    except KeyboardInterrupt:
        print("interrupted: namespaces removed", file=sys.stderr)
        return 130
    print()
    print(f"underlay: {args.underlay}; TCP: iperf3 -J, 1 stream, {args.duration} s; ping: {args.pings} at 10 ms")
    print(f"{'path':10s} {'RTT p50 ms':>10s} {'p99 ms':>8s} {'Gbit/s':>7s} {'daemon pps':>11s}")
    for r in rows.values():
        pps = f"{r['pps_tx']:11.0f}" if "pps_tx" in r else f"{'-':>11s}"
        print(f"{r['path']:10s} {r['p50']:10.3f} {r['p99']:8.3f} {r['gbps']:7.2f} {pps}")
    vx = rows.get("vxlan")
    if vx:
        for name in ("udp", "udp-plain", "host-gw"):
            if name in rows:
                r = rows[name]
                print(f"{name}/vxlan: throughput {r['gbps'] / vx['gbps']:.2f}x, RTT p50 {r['p50'] / vx['p50']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
