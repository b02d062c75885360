"""Starting flannel's udp backend daemon (``emu.flannel_udp``) in a node, from the node's UdpDaemon plan.

The daemon creates ``flannel0`` itself (as flanneld does) and says it is ready by creating a file; only then
can the node's addresses and routes be added to the device. Its output goes to the node's log.
"""

import subprocess
import sys
import time
from pathlib import Path

import emu
from emu.apply.commands import Namespaces, base_env, popen
from emu.errors import BuildError
from emu.plan.model import NodePlan


def start_udp_daemon(node: NodePlan, ns: Namespaces, state_dir: Path, timeout: float = 10.0) -> "subprocess.Popen[str]":
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
        "emu.flannel_udp",
        "--tun",
        daemon.tun,
        "--listen",
        f"{daemon.listen_ip}:{daemon.port}",
    ]
    for subnet, node_ip in daemon.table:
        argv += ["--route", f"{subnet}={node_ip}"]
    argv += ["--ready-file", str(ready)]
    package_root = str(Path(emu.__file__).resolve().parent.parent)
    log = open(node_dir / "flannel-udp.log", "ab")
    try:
        proc = popen(argv, ns, env=base_env({"PYTHONPATH": package_root}), stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
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
