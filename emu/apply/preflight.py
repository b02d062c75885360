"""Checks made before a build, so that a missing tool or kernel feature stops emu before anything is created.

What a plan needs comes from the modules of its features (``emu.registry``: the backend's kernel needs and
tools, and those of every add-on with a part in the plan) and from the core (bridges, veths, br_netfilter, and
netem when a link asks for delay or loss).
``emu doctor`` reports the same facts without stopping.
"""

import os
import shutil
from typing import List

from emu import registry
from emu.apply.clean import clean_state
from emu.apply.kernel import CORE_NEEDS, load_br_netfilter, probe
from emu.apply.state import STATE_ROOT, ClusterState
from emu.errors import EnvironmentProblem
from emu.features import KernelNeed
from emu.plan.model import Plan

TOOLS = ("mnexec", "ip", "bridge", "iptables-restore", "iptables-save", "nsenter", "unshare", "sysctl", "bash")
INSTALL_HINT = "run ./install.sh (it installs mininet, iproute2, iptables, iperf3 and the rest)"
SEARCH_PATH = ":/usr/sbin:/sbin"


def missing_tools(tools=TOOLS) -> List[str]:  # type: ignore[no-untyped-def]
    return [t for t in tools if shutil.which(t, path=os.environ.get("PATH", "") + SEARCH_PATH) is None]


def plan_needs(plan: Plan) -> List[KernelNeed]:
    """The kernel features building ``plan`` needs."""
    needs = [CORE_NEEDS["bridge"], CORE_NEEDS["veth"]]
    needs += list(registry.backend(plan.backend).KERNEL_NEEDS)
    needs += list(registry.proxy_mode(plan.proxy_mode).KERNEL_NEEDS)
    for name, fragment in plan.addons:  # an add-on with a part in this plan
        if fragment is not None:
            needs += list(registry.addon(name).KERNEL_NEEDS)
    if any(n.link.delay or n.link.jitter or n.link.loss is not None for n in plan.nodes):
        needs.append(CORE_NEEDS["netem"])
    return needs


def preflight(plan: Plan) -> None:
    """Stop with one clear message if this machine cannot build ``plan``."""
    if os.geteuid() != 0:
        raise EnvironmentProblem("building a cluster needs root: run it with sudo (e.g. sudo python -m emu up ...)")
    features = [registry.backend(plan.backend), registry.proxy_mode(plan.proxy_mode)]
    features += [registry.addon(name) for name, fragment in plan.addons if fragment is not None]
    missing = missing_tools(TOOLS + tuple(t.command for m in features for t in getattr(m, "TOOLS", ())))
    if missing:
        raise EnvironmentProblem(f"missing commands: {', '.join(missing)}; {INSTALL_HINT}")
    for need in plan_needs(plan):
        if not probe(need):
            if need.name == "netem":
                raise EnvironmentProblem(
                    "the topology asks for link delay/jitter/loss, which needs the kernel's netem qdisc, and this "
                    "kernel has none (sch_netem): remove delay/jitter/loss from the links, or use a kernel with "
                    "netem such as the Mininet VM's; bandwidth (bw) works without it"
                )
            raise EnvironmentProblem(f"this kernel lacks {need.name}, needed for {need.purpose}")
    if not load_br_netfilter():
        raise EnvironmentProblem(
            "br_netfilter is missing (modprobe br_netfilter failed): Service traffic between pods of one node "
            "crosses cni0 and needs it"
        )
    existing = ClusterState.read(STATE_ROOT / plan.tag)
    if existing is not None:
        if existing.owner_alive():
            raise EnvironmentProblem(
                f"cluster {plan.cluster!r} is already running (emu pid {existing.owner_pid}); stop it first, or "
                "give this one another name"
            )
        print(f"emu: removing leftovers of an earlier run of {plan.cluster!r} that did not finish")
        clean_state(existing, STATE_ROOT / plan.tag, verbose=False)
