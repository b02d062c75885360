"""CPU pinning of a measurement's ends: an endpoint whose programs run on chosen CPUs.

``pinned(endpoint, cpus)`` wraps any measurement endpoint (``emu.measure.Endpoint``) so that every program it
starts, by ``exec`` or ``popen``, runs under ``taskset -c CPUS``: the measurement tools then need no option of
their own (``emu.ping``, ``emu.iperf3`` and ``emu.measure.rr.tcp_rr`` take the wrapped endpoint as they
take any other). Everything else (``name``, ``ip``, ``node``, and any attribute of the wrapped endpoint) is
the wrapped endpoint's.

Whether pinning helps is a measurement, not a given: on this project's 2-CPU machines, shared with other
work, ``bench/pinning.py`` compares the intervals of unpinned ends, ends on one CPU and ends on two CPUs;
docs/measuring.md has the figures and why the experiments do not pin.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, List, Optional, Sequence, Union

from emu.measure import ExecResult

__all__ = ["Pinned", "cpu_list", "pinned"]


def cpu_list(cpus: Union[int, Sequence[int]]) -> str:
    """``taskset -c``'s list: ``0`` -> "0", ``[0, 1]`` -> "0,1". Each CPU must exist on this machine."""
    numbers = [cpus] if isinstance(cpus, int) else list(cpus)
    if not numbers:
        raise ValueError("no CPU given to pin to")
    count = os.cpu_count() or 1
    for cpu in numbers:
        if isinstance(cpu, bool) or not isinstance(cpu, int) or not 0 <= cpu < count:
            raise ValueError(f"CPU {cpu!r} does not exist here (CPUs 0 to {count - 1})")
    return ",".join(str(cpu) for cpu in numbers)


class Pinned:
    """An endpoint whose programs run under ``taskset -c CPUS`` (see the module's docstring)."""

    def __init__(self, endpoint: Any, cpus: Union[int, Sequence[int]]) -> None:
        self.endpoint = endpoint
        self.cpus = cpu_list(cpus)

    def _argv(self, argv: Sequence[str]) -> List[str]:
        return ["taskset", "-c", self.cpus, *argv]

    def exec(self, argv: List[str], timeout: Optional[float] = None) -> ExecResult:
        return self.endpoint.exec(self._argv(argv), timeout=timeout)

    def popen(self, argv: List[str]) -> "subprocess.Popen":
        # taskset execs the program in place, so the process returned is still the program itself
        return self.endpoint.popen(self._argv(argv))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.endpoint, name)

    def __repr__(self) -> str:
        return f"Pinned({self.endpoint!r}, cpus={self.cpus})"


def pinned(endpoint: Any, cpus: Optional[Union[int, Sequence[int]]]) -> Any:
    """``endpoint`` with its programs pinned to ``cpus``; ``endpoint`` itself when ``cpus`` is None."""
    return endpoint if cpus is None else Pinned(endpoint, cpus)
