"""``emu doctor [FILE]``: what this machine has and lacks for emu, and what that means. No side effects.

The kernel features asked about are the core's (``emu.apply.kernel.CORE_NEEDS``) and those every feature module
declares (``emu.registry``: a backend's VXLAN or TUN devices, a proxy mode's nftables, an add-on's ...); each is
tried in a throwaway network namespace that vanishes with the probe. Nothing is loaded, installed or changed.
Given a topology, it also explains what that topology needs here (netem for link delay and loss) and where its
plan says the dataplane fails (host-gw across the segments of a routed underlay, a router link smaller than the
packets sent to it), from the plan alone.
"""

import os
import platform
import shutil
import subprocess
import sys
from ipaddress import ip_interface
from typing import Dict, List, Optional, Tuple

from emu import registry
from emu.apply.kernel import CORE_NEEDS, has_br_netfilter, probe
from emu.apply.preflight import INSTALL_HINT, SEARCH_PATH, TOOLS
from emu.features import KernelNeed
from emu.plan.model import Plan

Check = Tuple[str, Optional[bool], str]  # (what, ok?, detail)

#: What kube-proxy's ipvs mode needs of the kernel. emu does not build that mode (no module in the registry):
#: the doctor says whether this machine could run it, so nobody has to guess why it is missing.
IPVS_NEEDS = (
    KernelNeed("ip_vs", "kube-proxy's ipvs mode (IPVS virtual servers)",
               "test -d /proc/net/ip_vs || modprobe -n -q ip_vs"),
    KernelNeed("dummy", "kube-proxy's ipvs mode (kube-ipvs0 holds the Service addresses)",
               "ip link add name probe type dummy"),
)


def _version(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def _which(tool: str) -> Optional[str]:
    return shutil.which(tool, path=os.environ.get("PATH", "") + SEARCH_PATH)


def _python_checks() -> List[Check]:
    out: List[Check] = [("python", sys.version_info >= (3, 8), platform.python_version())]
    try:
        import mininet.net

        out.append(("mininet module", True, os.path.dirname(mininet.net.__file__)))
    except ImportError:
        out.append(("mininet module", False, f"not importable by {sys.executable}: {INSTALL_HINT}"))
    try:
        import yaml  # noqa: F401

        out.append(("PyYAML", True, "yes"))
    except ImportError:
        out.append(("PyYAML", False, "apt-get install python3-yaml"))
    try:
        import matplotlib  # noqa: F401

        out.append(("matplotlib", True, "plots work"))
    except ImportError:
        out.append(("matplotlib", False, "emu plot needs it: apt-get install python3-matplotlib"))
    return out


def _tool_checks() -> List[Check]:
    out: List[Check] = []
    feature_tools = [(name, tool.command, tool.package) for name, tool in registry.tools()]
    seen = set()
    for tool in TOOLS + ("iperf3", "ping", "tcpdump", "tc"):
        seen.add(tool)
        path = _which(tool)
        out.append((f"command {tool}", path is not None, path or f"missing: {INSTALL_HINT}"))
    for feature, tool, package in feature_tools:
        if tool in seen:
            continue
        seen.add(tool)
        path = _which(tool)
        hint = f"missing ({feature} needs it): apt-get install {package}"
        out.append((f"command {tool}", path is not None, path or hint))
    if shutil.which("iptables"):
        out.append(("iptables flavour", True, _version(["iptables", "--version"])))
    if shutil.which("iperf3"):
        out.append(("iperf3 version", True, _version(["iperf3", "--version"])))
    return out


def checks() -> List[Check]:
    """Every fact, in the order ``emu doctor`` prints them."""
    out: List[Check] = [("root", os.geteuid() == 0, "needed by up, run, clean" if os.geteuid() else "yes")]
    out += _python_checks()
    out += _tool_checks()
    out.append(("kernel", True, platform.release()))
    for need in CORE_NEEDS.values():
        ok = probe(need)
        detail = need.purpose + ("" if ok or ok is None else ": not in this kernel")
        out.append((need.name, ok, detail))
    for _feature, need in registry.kernel_needs():
        out.append((need.name, probe(need), need.purpose))
    for need in IPVS_NEEDS:
        ok = probe(need)
        out.append((need.name, ok, need.purpose + ("" if ok or ok is None else ": not in this kernel")))
    brnf = has_br_netfilter()
    detail = "bridge-nf-call-iptables present" if brnf else "not loaded (emu up loads it: modprobe br_netfilter)"
    out.append(("br_netfilter", brnf, detail))
    return out


def _verdicts(ok: Dict[str, Optional[bool]]) -> List[str]:
    """What the facts mean, one line each."""
    core = all(ok.get(k) for k in ("mininet module", "veth", "bridge", "command ip", "command mnexec"))
    lines = [f"  emu up / emu run:   {'ready' if core and ok['root'] else 'not ready'}"]
    for name, module in registry.BACKENDS.items():
        available = all(ok.get(need.name) for need in module.KERNEL_NEEDS)
        lines.append(f"  backend {name:<8}    {'available' if available else 'unavailable'}")
    for name, module in registry.PROXY_MODES.items():
        available = all(ok.get(need.name) for need in module.KERNEL_NEEDS) and all(
            ok.get(f"command {tool.command}") for tool in module.TOOLS
        )
        lines.append(f"  kube-proxy {name:<9} {'available' if available else 'unavailable'}")
    missing = [need.name for need in IPVS_NEEDS if not ok.get(need.name)]
    lacks = f" (this kernel lacks {' and '.join(missing)})" if missing else ""
    lines.append(f"  kube-proxy {'ipvs':<9} not built by emu{lacks}")
    lines.append(f"  link bandwidth      {'available' if ok.get('htb') else 'unavailable'}")
    lines.append(f"  link delay/loss     {'available' if ok.get('netem') else 'unavailable (no netem in this kernel)'}")
    measure = ok.get("command iperf3") and ok.get("command ping")
    lines.append(f"  measurements        {'available' if measure else 'need iperf3 and ping'}")
    return lines


def topology_lines(plan: Plan, ok: Dict[str, Optional[bool]]) -> List[str]:
    """What ``plan`` needs on this machine and where its dataplane fails, one finding per line."""
    lines = [f"topology {plan.cluster} (backend {plan.backend}):"]
    links = [n.link for n in plan.nodes] + [p for r in plan.routers for p in r.ports]
    if any(x.delay or x.jitter or x.loss is not None for x in links):
        have = "present" if ok.get("netem") else "MISSING: emu up refuses it (remove delay/jitter/loss)"
        lines.append(f"  link delay/jitter/loss: needs netem: {have}")
    if plan.underlay is not None:
        lines.append(f"  underlay: {len(plan.segments)} segments ({', '.join(s.name for s in plan.segments)}), "
                     f"{len(plan.routers)} routers ({', '.join(r.name for r in plan.routers) or 'none'})")
    for node in plan.nodes:
        if node.failed_routes:
            unreachable = ", ".join(f.route.dst for f in node.failed_routes)
            gateways = ", ".join(str(f.route.via) for f in node.failed_routes)
            network = ip_interface(node.link.address).network
            lines.append(f"  {node.name}: {plan.backend} cannot add its routes to {unreachable}: the kernel answers "
                         f"'{node.failed_routes[0].error}' (their gateways {gateways} are not on {node.name}'s "
                         f"network {network}); its pods cannot reach those pods (flanneld's log: the CLI's "
                         f"'logs {node.name}')")
    lines += _mtu_lines(plan)
    if len(lines) == 1:
        lines.append("  nothing in it fails by plan, and this machine has what it needs")
    return lines


def _mtu_lines(plan: Plan) -> List[str]:
    """Router links that carry less than their segments' nodes send."""
    lines = []
    largest = max((s.mtu for s in plan.segments), default=plan.underlay_mtu)
    for router in plan.routers:
        for port in router.ports:
            if port.mtu < largest:
                icmp = ("it answers a too-big packet with DF set with ICMP fragmentation needed"
                        if router.fragmentation_needed == "send" else
                        "it drops ICMP fragmentation needed: a too-big packet with DF set is black-holed (large TCP "
                        "transfers stall while pings pass)")
                lines.append(f"  {router.name}'s link to {port.segment} carries at most {port.mtu} bytes, nodes send "
                             f"up to {largest}: packets without DF are fragmented; {icmp}")
    return lines


def doctor(plan: Optional[Plan] = None) -> int:
    """Print every check and what it means (and what ``plan`` needs and where it fails); exit 0 when emu can
    build clusters here, 1 otherwise."""
    results = checks()
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        mark = {True: "ok  ", False: "MISSING", None: "?   "}[ok]
        print(f"{name.ljust(width)}  {mark:7}  {detail}")
    ok = {name: value for name, value, _ in results}
    print()
    print("what this means:")
    for line in _verdicts(ok):
        print(line)
    if plan is not None:
        print()
        for line in topology_lines(plan, ok):
            print(line)
    if not ok["root"]:
        print("\n(run as root for the kernel checks: sudo python -m emu doctor)")
    core = all(ok.get(k) for k in ("mininet module", "veth", "bridge", "command ip", "command mnexec"))
    return 0 if core else 1
