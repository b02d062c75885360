"""Starting flannel's udp backend daemon (``emu.backends.udp.daemon``) in a node, from the node's UdpDaemon plan.

The daemon creates ``flannel0`` itself (as flanneld does) and says it is ready by creating a file; only then
can the node's addresses and routes be added to the device. Its output goes to the node's log.
"""

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import emu
from emu.apply.commands import GATE_ARGV, Namespaces, base_env, popen, release
from emu.errors import BuildError
from emu.plan.model import NodePlan


def start_udp_daemon(
    node: NodePlan,
    ns: Namespaces,
    state_dir: Path,
    timeout: float = 10.0,
    record: Optional[Callable[[int], object]] = None,
) -> "subprocess.Popen[str]":
    """Start the daemon of ``node`` and wait until it is ready.

    record: called with the daemon's pid before it may run (it writes the pid into the state file).
    """
    daemon = node.udp
    assert daemon is not None
    node_dir = state_dir / "nodes" / node.name
    node_dir.mkdir(parents=True, exist_ok=True)
    ready = node_dir / "flannel-udp.ready"
    if ready.exists():
        ready.unlink()
    argv = [
        sys.executable,
        "-m",
        "emu.backends.udp.daemon",
        "--tun",
        daemon.tun,
        "--listen",
        f"{daemon.listen_ip}:{daemon.port}",
    ]
    for subnet, node_ip in daemon.table:
        argv += ["--route", f"{subnet}={node_ip}"]
    # --ping-unreachable: also answer a ping to a subnet no node holds with ICMP net unreachable (flannel's
    # proxy.c only does so for TCP/UDP, and its reply would be dropped as a martian; see emu.backends.udp.daemon).
    argv += ["--ready-file", str(ready), "--ping-unreachable"]
    package_root = str(Path(emu.__file__).resolve().parent.parent)
    log = open(node_dir / "flannel-udp.log", "ab")
    try:
        env = base_env({"PYTHONPATH": package_root})
        proc = popen(GATE_ARGV + argv, ns, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    release(proc, record)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            output = (node_dir / "flannel-udp.log").read_text(errors="replace")
            raise BuildError(f"{node.name}: start the flannel udp daemon", argv, output)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BuildError(f"{node.name}: the flannel udp daemon was not ready within {timeout:g} s", argv)
        time.sleep(0.005)
    return proc
