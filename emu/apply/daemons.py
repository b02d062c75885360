"""Starting the processes a feature runs in a node (``emu.features.Daemon``), such as udp's flanneld.

A daemon is ``python -m MODULE ARGS --ready-file PATH`` in the node's namespaces, held behind the gate until its
pid is written in the cluster's state, with its output in ``nodes/<node>/<name>.log``. It says it is ready by
creating the file; a daemon that exits or is not ready in time fails the build with its log.
"""

import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from emu.apply.commands import GATE_ARGV, Namespaces, base_env, popen, release
from emu.errors import BuildError
from emu.features import Daemon

#: The directory holding the ``emu`` package: daemons import it from there, whatever their working directory.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def start_daemon(
    daemon: Daemon,
    node: str,
    ns: Namespaces,
    state_dir: Path,
    timeout: float = 10.0,
    record: Optional[Callable[[int], object]] = None,
) -> "subprocess.Popen[str]":
    """Start ``daemon`` in ``node`` (namespaces ``ns``) and wait until it is ready.

    record: called with the daemon's pid before it may run (it writes the pid into the state file).
    """
    node_dir = state_dir / "nodes" / node
    node_dir.mkdir(parents=True, exist_ok=True)
    ready = node_dir / f"{daemon.name}.ready"
    if ready.exists():
        ready.unlink()
    argv = [sys.executable, "-m", daemon.module, *daemon.args, "--ready-file", str(ready)]
    package_root = str(PACKAGE_ROOT)
    log_path = node_dir / f"{daemon.name}.log"
    log = open(log_path, "ab")
    try:
        env = base_env({"PYTHONPATH": package_root})
        proc = popen(GATE_ARGV + argv, ns, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    release(proc, record)
    deadline = time.monotonic() + timeout
    while not ready.exists():
        if proc.poll() is not None:
            output = log_path.read_text(errors="replace")
            raise BuildError(f"{node}: start {daemon.name}", argv, output)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BuildError(f"{node}: {daemon.name} was not ready within {timeout:g} s", argv)
        time.sleep(0.005)
    return proc
