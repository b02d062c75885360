"""Link impairments on a running cluster: applied in place (``tc``, ``ip link``, ``ethtool``, drop rules), read back.

``LinkControl`` owns ``links.json`` in the cluster's state directory (``/run/emu/<tag>/``): every link end
(``emu.plan.impair.LinkEnd``), the process holding each namespace (pid and start time, so a recycled pid is never
entered), whether the kernel has netem, and what each end is given now. The cluster writes it while it builds;
``cluster.link(...)`` in the owning process and ``emu link`` in another shell both read it, change the ends under
a lock (``links.lock``), and write it back, so both see the same state. Nothing is rebuilt: a rate change is one
``tc class change``, a loss change one ``iptables-restore --noflush`` of a chain per namespace, a cable pull one
``ip link set down`` of the switch port. The namespaces and switch ports go with the cluster, and everything set
here with them.
"""

import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple

from emu.apply.commands import Namespaces, process_start_time, run
from emu.apply.kernel import CORE_NEEDS, probe
from emu.errors import EmuError
from emu.plan import impair
from emu.plan.impair import Change, Impairment, LinkEnd
from emu.plan.model import Plan

LINKS_FILE = "links.json"
LOCK_FILE = "links.lock"


@dataclass
class EndReport:
    """One end after a change, as the tools show it: ``ip -br link``, ``tc qdisc``/``tc class``, drop rules."""

    end: LinkEnd
    impairment: Impairment
    link: str
    qdiscs: List[str]
    drop_rules: List[Tuple[str, str]]  # (namespace, rule)
    notes: List[str]

    def text(self) -> str:
        where = self.end.namespace.split(":", 1)[-1] if self.end.namespace else "the root namespace: a switch port"
        lines = [f"{self.end.name}  {self.end.dev} (in {where}): {self.impairment.describe()}"]
        lines.append(f"  ip -br link: {self.link}")
        lines += [f"  tc: {q}" for q in self.qdiscs]
        for namespace, rule in self.drop_rules:
            lines.append(f"  iptables -t mangle (in {namespace.split(':', 1)[-1]}): {rule}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class LinkControl:
    """The link ends of one running cluster and their impairments (``links.json``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._load()

    def _load(self) -> None:
        try:
            data = json.loads((self.directory / LINKS_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise EmuError(f"{self.directory}: no readable {LINKS_FILE} ({exc}): is the cluster running?") from None
        self.cluster: str = data["cluster"]
        self.netem: bool = data["netem"]
        self.owners: Dict[str, Tuple[int, Optional[int]]] = {k: tuple(v) for k, v in data["owners"].items()}
        self.ends: List[LinkEnd] = [_end(e) for e in data["ends"]]
        self.current: Dict[str, Impairment] = {k: Impairment(**v) for k, v in data["current"].items()}

    @classmethod
    def create(cls, directory: Path, plan: Plan, owners: Dict[str, Any]) -> "LinkControl":
        """Write ``links.json`` for a cluster being built: its ends, as planned, and who holds each namespace."""
        ends = impair.link_ends(plan)
        data = {
            "cluster": plan.cluster,
            "netem": bool(probe(CORE_NEEDS["netem"])),
            "owners": owners,
            "ends": [asdict(e) for e in ends],
            "current": {e.name: asdict(e.planned) for e in ends},
        }
        _write(Path(directory), data)
        return cls(directory)

    def _save(self) -> None:
        data = json.loads((self.directory / LINKS_FILE).read_text())
        data["current"] = {name: asdict(imp) for name, imp in self.current.items()}
        _write(self.directory, data)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._load()  # what another shell may have changed
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # ---------------------------------------------------------------------------------------------- changing

    def change(self, target: str, change: Change, show: bool = True) -> List[EndReport]:
        """Apply ``change`` to the ends ``target`` names (``emu.plan.impair.select``), all or none: a request
        this kernel cannot honour raises ImpairRefused before anything is done. Returns the ends as they are now
        (read back from the kernel; with ``show`` False, as asked, without reading: for a change timed to the
        millisecond)."""
        with self._locked():
            named = impair.select(self.ends, target)
            new = {e.name: impair.updated(self.current[e.name], change, e.planned) for e in named}
            chosen = list(named)
            if change.up is not None:  # up or down is the link's: both its ends
                ports = {e.switch_port for e in named}
                for mate in self.ends:
                    if mate.switch_port in ports and mate.name not in new:
                        new[mate.name] = replace(self.current[mate.name], up=change.up)
                        chosen.append(mate)
            for end in chosen:
                reason = impair.refusal(new[end.name], self.netem)
                if reason:
                    raise impair.ImpairRefused(f"{end.name}: {reason}")
            touched: Set[str] = set()
            try:
                self._apply(chosen, new, touched)
            finally:  # what was done is written down, even when a later step failed
                if not self.netem and touched:
                    self._load_drop_rules(sorted(touched))
                self._save()
            if not show:
                return [EndReport(end, self.current[end.name], "", [], [], []) for end in named]
            return [self._report(end) for end in named]

    def _apply(self, chosen: Sequence[LinkEnd], new: Dict[str, Impairment], touched: Set[str]) -> None:
        """Each end's offloads, qdiscs and link state; ``touched`` collects the namespaces whose drop rules change."""
        for end in chosen:
            old = self.current[end.name]
            ns = self._namespaces(end.namespace)
            for argv in impair.offload_commands(end.dev, old, new[end.name]):
                _check(f"{end.name}: segmentation offload", argv, ns, tolerate="Cannot change")
            for argv in impair.tc_commands(end.dev, old, new[end.name], self.netem):
                _check(f"{end.name}: tc", argv, ns, tolerate="No such file" if "del" in argv else "")
            if old.up != new[end.name].up and end.kind == "segment":
                state = "up" if new[end.name].up else "down"
                _check(f"{end.name}: link {state}", ["ip", "link", "set", "dev", end.dev, state], None)
            self.current[end.name] = new[end.name]
            touched.update(ns for ns, _dev in impair.receivers(self.ends, end))

    def refresh(self, namespace: str) -> None:
        """Load ``namespace``'s drop rules again (after something restored its whole iptables state)."""
        if not self.netem:
            with self._locked():
                self._load_drop_rules({namespace})

    def _load_drop_rules(self, namespaces: Sequence[str]) -> None:
        rules = impair.drop_rules([(e, self.current[e.name]) for e in self.ends if self.current[e.name].loss],
                                  self.ends)
        for namespace in namespaces:
            ns = self._namespaces(namespace)
            wanted = rules.get(namespace, [])
            hooked = run(["iptables", "-t", "mangle", "-C", "PREROUTING", "-j", impair.LOSS_CHAIN], ns).ok
            if wanted:
                _check(f"{namespace}: drop rules", ["iptables-restore", "--noflush"], ns,
                       input=impair.drop_document(wanted))
                if not hooked:
                    _check(f"{namespace}: drop rules", ["iptables", "-t", "mangle", "-A", "PREROUTING", "-j",
                                                        impair.LOSS_CHAIN], ns)
            elif hooked:  # no rule left: the chain goes, so the node's rules read as planned again
                run(["iptables", "-t", "mangle", "-D", "PREROUTING", "-j", impair.LOSS_CHAIN], ns)
                run(["iptables", "-t", "mangle", "-F", impair.LOSS_CHAIN], ns)
                run(["iptables", "-t", "mangle", "-X", impair.LOSS_CHAIN], ns)

    # ---------------------------------------------------------------------------------------------- reading

    def show(self, target: Optional[str] = None) -> List[EndReport]:
        """Every end (or those ``target`` names) as it is now."""
        with self._locked():
            chosen = impair.select(self.ends, target) if target else tuple(self.ends)
            return [self._report(end) for end in chosen]

    def _report(self, end: LinkEnd) -> EndReport:
        ns = self._namespaces(end.namespace)
        link = run(["ip", "-br", "link", "show", "dev", end.dev], ns, timeout=15).stdout.strip()
        qdiscs = run(["tc", "qdisc", "show", "dev", end.dev], ns, timeout=15).stdout.splitlines()
        qdiscs += run(["tc", "class", "show", "dev", end.dev], ns, timeout=15).stdout.splitlines()
        imp = self.current[end.name]
        rules: List[Tuple[str, str]] = []
        notes: List[str] = []
        if imp.loss and not self.netem:
            for namespace, dev in impair.receivers(self.ends, end):
                listed = run(["iptables", "-t", "mangle", "-S", impair.LOSS_CHAIN], self._namespaces(namespace))
                mine = [r for r in listed.stdout.splitlines() if r.startswith("-A") and _matches(r, dev, end)]
                rules += [(namespace, r) for r in mine]
            notes.append(f"loss {imp.loss:g}%: this kernel has no netem: random drop rules (iptables statistic) in "
                         "the namespaces that receive from this end stand in for it; only IPv4 packets are dropped, "
                         f"and {end.dev} does no segmentation offload meanwhile (each packet is a drop candidate)")
        if not imp.up:
            notes.append(f"the link is down: its switch port {end.switch_port} is down (the cable is pulled); "
                         "each end sees its carrier go")
        return EndReport(end, imp, link, [q.strip() for q in qdiscs if q.strip()], rules, notes)

    def _namespaces(self, namespace: str) -> Optional[Namespaces]:
        """Where to run for ``namespace`` (None: the root namespace); EmuError when its process is gone."""
        if not namespace:
            return None
        pid, start = self.owners[namespace]
        if start is None or process_start_time(pid) != start:
            raise EmuError(f"cluster {self.cluster}: {namespace.replace(':', ' ')} is gone (is the cluster running?)")
        return Namespaces(net_pid=pid)


def _matches(rule: str, dev: str, end: LinkEnd) -> bool:
    """Whether ``rule`` is the drop rule of ``end`` at a receiver's ``dev``."""
    return f"-i {dev} " in rule + " " and (not end.mac or end.mac.lower() in rule.lower())


def _end(data: Dict[str, Any]) -> LinkEnd:
    fields = dict(data)
    fields["planned"] = Impairment(**fields["planned"])
    return LinkEnd(**fields)


def _write(directory: Path, data: Dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / (LINKS_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, directory / LINKS_FILE)


def _check(step: str, argv: List[str], ns: Optional[Namespaces], input: Optional[str] = None,
           tolerate: str = "") -> None:
    result = run(argv, ns, input=input, timeout=30)
    if result.returncode != 0 and not (tolerate and tolerate in result.stderr + result.stdout):
        output = (result.stderr or result.stdout).strip()
        raise EmuError(f"{step} failed: {' '.join(argv)}: {output}")
