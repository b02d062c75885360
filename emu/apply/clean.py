"""``emu clean``: remove what emu runs left behind after a crash or ``kill -9``, and nothing else.

Only what a cluster's state file lists is touched: processes named by pid *and* start time (a recycled pid
is left alone), the cluster's switches (one, or a routed underlay's one per segment) and their ports, and mount
points emu created. Node and pod
namespaces go away with their last process; their veths, routes and iptables rules with them. A cluster
whose emu process is still alive is reported and left running. No pattern kill, no ``mn -c``.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Set

from emu.apply.commands import process_start_time
from emu.apply.state import ClusterState, all_states

# Kill order: what runs inside pods first, the node shells last.
ROLE_ORDER = {
    "container": 0, "server": 0, "pause": 1, "spawner": 2, "daemon": 2, "node": 3, "router": 3, "switch": 4
}


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def clean_state(state: ClusterState, directory: Path, verbose: bool = True, dry_run: bool = False) -> List[str]:
    """Remove everything ``state`` lists; return a line per thing removed."""
    removed: List[str] = []
    alive = [p for p in state.processes if process_start_time(p.pid) == p.start]
    alive.sort(key=lambda p: ROLE_ORDER.get(p.role, 0))
    for proc in alive:
        removed.append(f"process {proc.pid} ({proc.role} {proc.name})")
        if not dry_run:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    if not dry_run:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(process_start_time(p.pid) == p.start for p in alive):
            time.sleep(0.02)
    links: List[str] = []
    net = Path("/sys/class/net")
    present = sorted(p.name for p in net.iterdir()) if net.is_dir() else []
    for switch in state.switches:  # the switch, and its ports <switch>-eth<N> (one switch) or <switch>-<P>
        links += [switch] + [name for name in present if name.startswith(switch + "-")]
    for link in links:
        if _link_exists(link):
            removed.append(f"link {link}")
            if not dry_run:
                subprocess.run(["ip", "link", "del", link], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for entry in reversed(state.links):  # a directory's parents were recorded before it: remove it first
        if entry.startswith("dir:"):
            path = entry[4:]
            if dry_run and _removable(path) or not dry_run and remove_created_dir(path):
                removed.append(f"directory {path}")
    if not dry_run:
        _unmount_below(directory)
        shutil.rmtree(directory, ignore_errors=True)
    if verbose:
        for line in removed:
            print(("would remove " if dry_run else "removed ") + line)
    return removed


def mounted_somewhere(path: str) -> bool:
    """Whether ``path`` is a mount point in some mount namespace (another cluster's node or container may use a
    directory emu created: removing it would detach their mount)."""
    seen: Set[str] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            namespace = os.readlink(f"/proc/{entry}/ns/mnt")
            if namespace in seen:
                continue
            seen.add(namespace)
            with open(f"/proc/{entry}/mountinfo") as f:
                if any(line.split()[4:5] == [path] for line in f):
                    return True
        except OSError:
            continue
    return False


def _removable(path: str) -> bool:
    return os.path.isdir(path) and not os.listdir(path) and not mounted_somewhere(path)


def remove_created_dir(path: str) -> bool:
    """Remove a directory emu created (a mount point, /run/flannel) if it is empty and mounted nowhere."""
    if not _removable(path):
        return False
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


def _unmount_below(directory: Path) -> None:
    """Private bind mounts of dead nodes vanish with their mount namespaces; this is only a safety net."""
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1] for line in f if line.split()[1].startswith(str(directory) + "/")]
    except OSError:
        return
    for point in sorted(points, reverse=True):
        subprocess.run(["umount", "-l", point], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def clean(dry_run: bool = False) -> int:
    if os.geteuid() != 0:
        print("emu clean: needs root (sudo python -m emu clean)", file=sys.stderr)
        return 1
    states = all_states()
    total = 0
    for directory, state in states.items():
        if state is None:
            print(f"{directory}: unreadable state; removing the directory")
            if not dry_run:
                shutil.rmtree(directory, ignore_errors=True)
            continue
        if state.owner_alive():
            print(f"cluster {state.cluster}: still running (emu pid {state.owner_pid}); left alone")
            continue
        print(f"cluster {state.cluster} ({state.tag}): leftovers of a run that did not finish")
        total += len(clean_state(state, directory, dry_run=dry_run))
    if total == 0:
        print("nothing to clean")
    return 0
