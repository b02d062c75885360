"""``emu up``: build a cluster, print what was built, open the CLI (or run commands), tear down on the way out."""

import sys
import time
from pathlib import Path
from typing import List, Optional

from emu.control import ControlServer
from emu.controller import Cluster
from emu.errors import InputError
from emu.faults.command import break_in
from emu.plan.model import Plan
from emu.shell import ClusterCLI


def _progress(message: str) -> None:
    print(f"*** {message}", file=sys.stderr, flush=True)


def summary(cluster) -> str:  # type: ignore[no-untyped-def]
    """What was built, like ``kubectl get nodes -o wide`` and ``kubectl get pods -o wide``."""
    lines = [f"cluster {cluster.name}: backend {cluster.backend}, kube-proxy {cluster.proxy_mode} mode, built in "
             f"{cluster.build_seconds:.2f} s", ""]
    rows = [("NODE", "INTERNAL-IP", "POD-CIDR")]
    rows += [(n.name, n.ip, n.plan.subnet) for n in cluster.nodes]
    lines += _rows(rows) + [""]
    if cluster.routers:
        rows = [("ROUTER", "INTERFACES")]
        rows += [(r.name, ", ".join(f"{p.address} ({p.segment})" for p in r.plan.ports)) for r in cluster.routers]
        lines += _rows(rows) + [""]
    rows = [("POD", "IP", "NODE", "CONTAINERS")]
    rows += [(p.name, p.ip, p.node, ",".join(p.containers)) for p in cluster.pods]
    lines += _rows(rows)
    if cluster.services:
        rows = [("SERVICE", "TYPE", "CLUSTER-IP", "PORTS", "ENDPOINTS")]
        for s in cluster.services:
            ports = ",".join(f"{p.port}{':' + str(p.node_port) if p.node_port else ''}/{p.protocol}" for p in s.ports)
            rows.append((s.name, s.type, s.cluster_ip, ports, ",".join(s.endpoints) or "<none>"))
        lines += [""] + _rows(rows)
    return "\n".join(lines) + "\n"


def _rows(rows: List[tuple]) -> List[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["   ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def up(plan: Plan, run: Optional[List[str]] = None, script: Optional[str] = None, quiet: bool = False) -> int:
    """Build ``plan``, print a summary, run ``run``/``script`` lines or the interactive CLI, tear down."""

    lines: Optional[List[str]] = None
    if script is not None:
        path = Path(script)
        if not path.is_file():
            raise InputError(f"--script: no such file: {script}")
        lines = path.read_text().splitlines()
    elif run:
        lines = list(run)

    started = time.monotonic()
    with Cluster(plan, progress=None if quiet else _progress) as cluster:
        if not quiet:
            sys.stdout.write(summary(cluster))
            sys.stdout.flush()
        cli = ClusterCLI(cluster)
        # other shells reach the cluster through its state directory: emu break (see emu.control)
        with ControlServer(cluster, {"break": break_in}):
            if lines is not None:
                failures = cli.run_lines(lines)
                status = 1 if failures else 0
            else:
                print("Type help for the commands, exit to tear the cluster down.")
                cli.interact()
                status = 0
    if not quiet:
        _progress(f"cluster {plan.cluster} torn down ({time.monotonic() - started:.1f} s in all)")
    return status
