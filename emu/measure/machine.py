"""The machine under the measurements: its CPUs, frequency governor and load, and who used the CPUs meanwhile.

This module owns reading what the kernel says about the whole machine (``/proc/stat``, ``/proc/loadavg``,
``/proc/<pid>/stat``, ``/sys/devices/system/cpu``), so that a run can record the conditions it measured under
and warn when other work shared the machine:

- ``describe()``: CPU count and model, the frequency governor of every CPU (or why there is none: a virtual
  machine usually has no cpufreq, its host sets the frequency), their current MHz, the load averages.
- ``snapshot()`` then ``usage(before, after)``: between two snapshots, the share of all CPUs that was busy,
  the share used by this process and its descendants (the cluster's shells, pods, daemons and measurement
  tools all descend from it), the share used by *other* processes, and the share the hypervisor stole.
  "Busy" is user, nice, system, irq and softirq time; "other" is what is left of it after this process tree's
  time and the kernel threads' (children of kthreadd: ksoftirqd does much of the kernel's work for our own
  packets). CPU times are counted in clock ticks (1/100 s), so very short intervals are coarse.
- ``busy_warning(usages)``: a line for the summary when other processes used more than ``BUSY_SHARE`` of the
  CPUs on average, or more than ``BUSY_TURN_SHARE`` during some turns.

Everything degrades to "unknown" (None) where /proc or /sys lack a file, so it is safe to call anywhere.
Only the standard library is used.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["BUSY_SHARE", "BUSY_TURN_SHARE", "Snapshot", "Usage", "busy_warning", "describe", "snapshot", "usage"]

#: Other processes using more than this share of all CPUs, averaged over the run, is a busy machine.
BUSY_SHARE = 0.15
#: ... or more than this share during a single turn.
BUSY_TURN_SHARE = 0.35
#: Clock ticks per second of /proc's CPU times.
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

PROC = Path("/proc")
CPU_SYS = Path("/sys/devices/system/cpu")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text()
    except OSError:
        return None


def _governors() -> Dict[str, str]:
    found = {}
    for directory in sorted(CPU_SYS.glob("cpu[0-9]*")):
        text = _read(directory / "cpufreq" / "scaling_governor")
        if text is not None:
            found[directory.name] = text.strip()
    return found


def describe() -> Dict[str, Any]:
    """What metadata.json records of the machine: CPUs, model, governors, MHz, load averages."""
    info: Dict[str, Any] = {"cpus": os.cpu_count()}
    cpuinfo = _read(PROC / "cpuinfo") or ""
    models = [line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")]
    mhz = [float(line.split(":", 1)[1]) for line in cpuinfo.splitlines() if line.startswith("cpu MHz")]
    info["cpu_model"] = models[0] if models else None
    info["cpu_mhz"] = mhz or None
    governors = _governors()
    info["governor"] = (
        governors or "unavailable (no cpufreq: on a virtual machine the host sets the frequency)"
    )
    loadavg = _read(PROC / "loadavg")
    info["loadavg"] = [float(x) for x in loadavg.split()[:3]] if loadavg else None
    pressure = _read(PROC / "pressure" / "cpu")
    if pressure:
        first = pressure.splitlines()[0].split()
        info["cpu_pressure_some_avg60"] = float(first[2].split("=")[1]) if len(first) > 2 else None
    return info


@dataclass(frozen=True)
class Snapshot:
    """CPU counters at one moment: machine totals (ticks) and this process tree's CPU time (ticks)."""

    when: float
    busy: int  # user + nice + system + irq + softirq, every CPU
    total: int  # every column but guest (already in user), every CPU
    steal: int
    ours: int  # this process and its live descendants: utime + stime + cutime + cstime
    kernel_threads: int  # utime + stime of kernel threads
    loadavg: Optional[float]


def _proc_stats() -> List[Tuple[int, int, int]]:
    """(pid, ppid, cpu ticks incl. reaped children) of every process, kernel threads marked by ppid 2."""
    out = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        text = _read(entry / "stat")
        if not text:
            continue
        fields = text[text.rfind(")") + 2 :].split()  # after "pid (comm) "
        try:
            ppid = int(fields[1])
            ticks = sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        except (IndexError, ValueError):
            continue
        out.append((int(entry.name), ppid, ticks))
    return out


def snapshot(root: Optional[int] = None) -> Optional[Snapshot]:
    """Counters now; ``root``: the process whose tree is "ours" (default: this process). None without /proc."""
    stat = _read(PROC / "stat")
    if not stat or not stat.startswith("cpu "):
        return None
    columns = [int(x) for x in stat.splitlines()[0].split()[1:]]
    columns += [0] * (8 - len(columns))
    user, nice, system, idle, iowait, irq, softirq, steal = columns[:8]
    root = os.getpid() if root is None else root
    processes = _proc_stats()
    children: Dict[int, List[int]] = {}
    ticks = {}
    for pid, ppid, cpu in processes:
        children.setdefault(ppid, []).append(pid)
        ticks[pid] = cpu
    ours, stack = 0, [root]
    while stack:
        pid = stack.pop()
        ours += ticks.get(pid, 0)
        stack.extend(children.get(pid, []))
    kernel = sum(ticks.get(pid, 0) for pid in children.get(2, [])) + ticks.get(2, 0)
    loadavg = _read(PROC / "loadavg")
    return Snapshot(
        when=time.monotonic(),
        busy=user + nice + system + irq + softirq,
        total=user + nice + system + idle + iowait + irq + softirq + steal,
        steal=steal,
        ours=ours,
        kernel_threads=kernel,
        loadavg=float(loadavg.split()[0]) if loadavg else None,
    )


@dataclass(frozen=True)
class Usage:
    """How the CPUs were used between two snapshots, as shares of all CPUs over that time (0..1)."""

    seconds: float
    busy: float
    ours: float
    others: float
    steal: float
    loadavg: Optional[float]

    def to_dict(self) -> Dict[str, Any]:
        return {
            "seconds": round(self.seconds, 3),
            "busy": round(self.busy, 3),
            "ours": round(self.ours, 3),
            "others": round(self.others, 3),
            "steal": round(self.steal, 3),
            "loadavg": self.loadavg,
        }


def usage(before: Optional[Snapshot], after: Optional[Snapshot]) -> Optional[Usage]:
    """The CPU shares between two snapshots (None when either is missing or no time passed)."""
    if before is None or after is None:
        return None
    total = after.total - before.total
    if total <= 0:
        return None
    busy = after.busy - before.busy
    ours = max(0, after.ours - before.ours)
    kernel = max(0, after.kernel_threads - before.kernel_threads)
    others = max(0, busy - ours - kernel)
    return Usage(
        seconds=after.when - before.when,
        busy=busy / total,
        ours=min(1.0, ours / total),
        others=min(1.0, others / total),
        steal=(after.steal - before.steal) / total,
        loadavg=after.loadavg,
    )


def busy_warning(usages: Iterable[Optional[Usage]]) -> Optional[str]:
    """A warning line when other processes shared the machine enough to move the figures; None otherwise."""
    known = [u for u in usages if u is not None and u.seconds > 0]
    if not known:
        return None
    seconds = sum(u.seconds for u in known)
    mean = sum(u.others * u.seconds for u in known) / seconds
    steal = sum(u.steal * u.seconds for u in known) / seconds
    busy_turns = [u for u in known if u.others > BUSY_TURN_SHARE]
    if mean <= BUSY_SHARE and not busy_turns:
        return None
    worst = max(u.others for u in known)
    return (
        f"WARNING: the machine was busy: other processes used {mean:.0%} of the CPUs on average "
        f"(up to {worst:.0%}; above {BUSY_TURN_SHARE:.0%} in {len(busy_turns)} of {len(known)} turns"
        + (f"; the hypervisor stole {steal:.0%}" if steal >= 0.02 else "")
        + "): figures are noisier, and throughput lower, than on an idle machine"
    )


def summarize(usages: Sequence[Optional[Usage]]) -> Dict[str, Any]:
    """Means over the turns, for metadata.json: busy, ours, others, steal (shares of all CPUs)."""
    known = [u for u in usages if u is not None and u.seconds > 0]
    if not known:
        return {}
    seconds = sum(u.seconds for u in known)

    def mean(name: str) -> float:
        return round(sum(getattr(u, name) * u.seconds for u in known) / seconds, 3)

    return {"seconds": round(seconds, 1), **{name: mean(name) for name in ("busy", "ours", "others", "steal")}}
