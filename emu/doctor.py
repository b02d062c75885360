"""``emu doctor``: what this machine has and lacks for emu, and what that means. No side effects.

The kernel features asked about are the core's (``emu.apply.kernel.CORE_NEEDS``) and those every feature module
declares (``emu.registry``: a backend's VXLAN or TUN devices, a proxy mode's nftables, an add-on's ...); each is
tried in a throwaway network namespace that vanishes with the probe. Nothing is loaded, installed or changed.
"""

import os
import platform
import shutil
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from emu import registry
from emu.apply.kernel import CORE_NEEDS, has_br_netfilter, probe
from emu.apply.preflight import INSTALL_HINT, SEARCH_PATH, TOOLS

Check = Tuple[str, Optional[bool], str]  # (what, ok?, detail)


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
    lines.append(f"  link bandwidth      {'available' if ok.get('htb') else 'unavailable'}")
    lines.append(f"  link delay/loss     {'available' if ok.get('netem') else 'unavailable (no netem in this kernel)'}")
    measure = ok.get("command iperf3") and ok.get("command ping")
    lines.append(f"  measurements        {'available' if measure else 'need iperf3 and ping'}")
    return lines


def doctor() -> int:
    """Print every check and what it means; exit 0 when emu can build clusters here, 1 otherwise."""
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
    if not ok["root"]:
        print("\n(run as root for the kernel checks: sudo python -m emu doctor)")
    core = all(ok.get(k) for k in ("mininet module", "veth", "bridge", "command ip", "command mnexec"))
    return 0 if core else 1
