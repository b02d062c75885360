"""What a running cluster owns, written down before it is created, so ``emu clean`` can remove exactly that.

Each cluster has a directory ``/run/emu/<tag>/`` (tag = ``emu`` + 4 hex digits of the cluster name) holding
``state.json`` (the owning emu process and the root-namespace links it made: the underlay switch, or a routed
underlay's switches, one per segment, as ``switch:NAME`` entries; rewritten atomically on every change) and the
append-only journal ``processes.jsonl`` (every process it started: node shells, routers, pause processes,
containers, flannel daemons, each named by pid *and* start time, so a recycled pid is never killed by mistake).
``links.json`` lists the ends of the underlay's links (which namespace, which device) and the impairments set on
them at run time (``emu.apply.impair``), so ``emu link`` in another shell can find and change them. The same
directory holds the nodes' private state (``nodes/<node>/flannel/subnet.env``, ``nodes/<node>/flanneld.log``) and
the pods' files (``pods/<pod>/``: hosts, hostname, logs, volumes). /run is a tmpfs, so nothing survives a
reboot.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from emu.apply.commands import process_start_time

JOURNAL = "processes.jsonl"
STATE_ROOT = Path(os.environ.get("EMU_STATE_DIR", "/run/emu"))


@dataclass
class OwnedProcess:
    pid: int
    start: int
    role: str  # node | router | switch | pause | container | daemon | server
    name: str

    def alive(self) -> bool:
        return process_start_time(self.pid) == self.start


@dataclass
class ClusterState:
    cluster: str
    tag: str
    owner_pid: int
    owner_start: int
    switch: str = ""
    #: what else it made: ``dir:PATH`` (a directory), ``switch:NAME`` (a routed underlay's switch, one per segment)
    links: List[str] = field(default_factory=list)
    processes: List[OwnedProcess] = field(default_factory=list)

    @property
    def directory(self) -> Path:
        return STATE_ROOT / self.tag

    @property
    def switches(self) -> List[str]:
        """Every switch it made: the one switch, or a routed underlay's (``switch:NAME`` entries)."""
        named = [entry[len("switch:"):] for entry in self.links if entry.startswith("switch:")]
        return ([self.switch] if self.switch else []) + named

    def owner_alive(self) -> bool:
        """Whether the emu process that made this cluster still runs (this process included: a second Cluster
        of the same name in one program must not take the first one's state for a crashed run's)."""
        return process_start_time(self.owner_pid) == self.owner_start

    def save(self) -> None:
        """Rewrite state.json (everything but the processes, which go to the journal as they come)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        data = asdict(self)
        data.pop("processes")
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        os.replace(tmp, self.directory / "state.json")

    def _journal(self, entry: Dict) -> None:
        """Append one line to processes.jsonl: O(1) per process, so a thousand pods cost a thousand short
        writes, not a thousand rewrites of a growing file. A torn last line (a crash mid-write) is skipped."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / JOURNAL, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def add_process(self, pid: int, role: str, name: str) -> OwnedProcess:
        start = process_start_time(pid)
        owned = OwnedProcess(pid, start if start is not None else -1, role, name)
        self.processes.append(owned)
        self._journal(asdict(owned))
        return owned

    def forget_process(self, pid: int) -> None:
        self.processes = [p for p in self.processes if p.pid != pid]
        self._journal({"forget": pid})

    @classmethod
    def new(cls, cluster: str, tag: str) -> "ClusterState":
        me = os.getpid()
        return cls(cluster, tag, me, process_start_time(me) or 0)

    @classmethod
    def read(cls, directory: Path) -> Optional["ClusterState"]:
        try:
            data = json.loads((directory / "state.json").read_text())
            known = {f.name for f in fields(cls)} - {"processes"}
            state = cls(**{k: v for k, v in data.items() if k in known})  # another version's extra keys ignored
        except (OSError, ValueError, TypeError):
            return None
        try:
            lines = (directory / JOURNAL).read_text().splitlines()
        except OSError:
            lines = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if "forget" in entry:
                state.processes = [p for p in state.processes if p.pid != entry["forget"]]
            else:
                state.processes.append(OwnedProcess(**entry))
        return state


def all_states() -> Dict[Path, Optional[ClusterState]]:
    """Every cluster state directory under STATE_ROOT (None where state.json is unreadable)."""
    if not STATE_ROOT.is_dir():
        return {}
    return {d: ClusterState.read(d) for d in sorted(STATE_ROOT.iterdir()) if d.is_dir() and d.name.startswith("emu")}
