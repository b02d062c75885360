"""``emu doctor``: what this machine has and lacks for emu, and what that means. No side effects.

Kernel features are tried in throwaway network namespaces that vanish with the probe process; nothing is
loaded, installed or changed (br_netfilter is only looked for, not loaded).
"""

import os
import platform
import shutil
import subprocess
import sys
from typing import List, Optional, Tuple

from emu.apply.preflight import INSTALL_HINT, TOOLS

Check = Tuple[str, Optional[bool], str]  # (what, ok?, detail)


def _version(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""


def _probe(script: str) -> Optional[bool]:
    if os.geteuid() != 0:
        return None
    result = subprocess.run(
        ["unshare", "--net", "sh", "-c", "ip link set lo up && " + script],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return result.returncode == 0


def checks() -> List[Check]:
    out: List[Check] = []
    out.append(("root", os.geteuid() == 0, "needed by up, run, clean" if os.geteuid() else "yes"))
    out.append(("python", sys.version_info >= (3, 8), platform.python_version()))
    try:
        import mininet.net

        out.append(("mininet module", True, os.path.dirname(mininet.net.__file__)))
    except ImportError:
        out.append(("mininet module", False, f"not importable by {sys.executable}: {INSTALL_HINT}"))
    for tool in TOOLS + ("iperf3", "ping", "tcpdump", "tc"):
        path = shutil.which(tool, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
        out.append((f"command {tool}", path is not None, path or f"missing: {INSTALL_HINT}"))
    if shutil.which("iptables"):
        out.append(("iptables flavour", True, _version(["iptables", "--version"])))
    if shutil.which("iperf3"):
        out.append(("iperf3 version", True, _version(["iperf3", "--version"])))
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
    out.append(("kernel", True, platform.release()))
    out.append(("netns + veth", _probe("ip link add name probe type veth peer name probe1"), "pods and links"))
    out.append(("bridge", _probe("ip link add name probe type bridge"), "cni0 and the underlay switch"))
    out.append(("vxlan", _probe("ip link add name probe type vxlan id 1 dstport 8472 dev lo"), "backend vxlan"))
    out.append(("tun", os.path.exists("/dev/net/tun"), "backend udp (flannel0)"))
    netem = _probe("tc qdisc add dev lo root netem delay 1ms")
    out.append(("netem", netem, "link delay/jitter/loss" + ("" if netem else ": not in this kernel, only bw works")))
    out.append(("htb (bandwidth)", _probe("tc qdisc add dev lo root handle 1: htb"), "link bw"))
    brnf = os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")
    out.append(
        (
            "br_netfilter",
            brnf,
            "bridge-nf-call-iptables present" if brnf else "not loaded (emu up loads it: modprobe br_netfilter)",
        )
    )
    return out


def doctor() -> int:
    results = checks()
    width = max(len(name) for name, _, _ in results)
    for name, ok, detail in results:
        mark = {True: "ok  ", False: "MISSING", None: "?   "}[ok]
        print(f"{name.ljust(width)}  {mark:7}  {detail}")
    ok = {name: value for name, value, _ in results}
    print()
    print("what this means:")
    core = all(ok.get(k) for k in ("mininet module", "netns + veth", "bridge", "command ip", "command mnexec"))
    print(f"  emu up / emu run:   {'ready' if core and ok['root'] else 'not ready'}")
    for backend, need in (("vxlan", "vxlan"), ("host-gw", "bridge"), ("udp", "tun")):
        print(f"  backend {backend:<8}    {'available' if ok.get(need) else 'unavailable'}")
    print(f"  Services (iptables) {'available' if ok.get('command iptables-restore') else 'unavailable'}")
    print(f"  link bandwidth      {'available' if ok.get('htb (bandwidth)') else 'unavailable'}")
    print(f"  link delay/loss     {'available' if ok.get('netem') else 'unavailable (no netem in this kernel)'}")
    measure = ok.get("command iperf3") and ok.get("command ping")
    print(f"  measurements        {'available' if measure else 'need iperf3 and ping'}")
    if not ok["root"]:
        print("\n(run as root for the kernel checks: sudo python -m emu doctor)")
    return 0 if core else 1
