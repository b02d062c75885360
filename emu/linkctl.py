"""``emu link``: impair a running cluster's underlay links from another shell, in place.

    sudo python -m emu link node-1 loss=1%             # the only running cluster
    sudo python -m emu link --cluster two-racks tor-a:core bw=100
    sudo python -m emu link node-1 down                 # ... up
    sudo python -m emu link                             # every link end as it is now

The running cluster is found through its state directory (``/run/emu/<tag>/``): ``state.json`` names the cluster
and the emu process that owns it (alive: the cluster runs), ``links.json`` lists its link ends, the process
holding each namespace (pid and start time) and what each end is given now. The change is made here, under the
lock the owning process takes too (``emu.apply.impair.LinkControl``), and written back, so ``cluster.link`` and the
CLI's ``link`` there see it.
"""

import os
import sys
from typing import List, Optional, Sequence, Tuple

from emu.apply.impair import LinkControl
from emu.apply.state import ClusterState, all_states
from emu.errors import EnvironmentProblem, InputError
from emu.plan.impair import parse_change


def running_clusters() -> List[Tuple[str, "os.PathLike[str]"]]:
    """(cluster name, state directory) of every cluster whose emu process is alive."""
    found = []
    for directory, state in all_states().items():
        if isinstance(state, ClusterState) and state.owner_alive() and (directory / "links.json").is_file():
            found.append((state.cluster, directory))
    return found


def find_cluster(name: Optional[str]) -> "os.PathLike[str]":
    """The state directory of the running cluster ``name`` (or of the only running one)."""
    running = running_clusters()
    names = ", ".join(n for n, _ in running) or "none"
    if name is not None:
        for cluster, directory in running:
            if cluster == name:
                return directory
        raise InputError(f"no running cluster named {name!r} (running: {names})")
    if len(running) != 1:
        if not running:
            raise InputError("no cluster is running (start one with sudo python -m emu up FILE)")
        raise InputError(f"{len(running)} clusters are running ({names}): name one with --cluster NAME")
    return running[0][1]


def link_command(cluster: Optional[str], target: Optional[str], words: Sequence[str]) -> int:
    """Change (or, with no words, show) the link ends ``target`` names; print them as tc/ip show them."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("emu link changes a running cluster's links: it needs root (sudo python -m emu link)")
    change = parse_change(words)
    control = LinkControl(find_cluster(cluster))
    if target is None and not change.empty:
        raise InputError("name the link: NODE, ROUTER or SEGMENT, or A:B (e.g. emu link node-1 loss=1%)")
    reports = control.show(target) if change.empty else control.change(str(target), change)
    for report in reports:
        print(report.text())
    down = sorted({r.end.owner for r in reports if r.end.kind == "node" and not r.impairment.up})
    for node in down:
        print(f"note: node {node} is cut off: its pods are unreachable from the others, and Services keep their "
              "endpoints on it (no control plane here: in Kubernetes the node would turn NotReady after about 40 s "
              "and those endpoints be removed)", file=sys.stderr)
    return 0
