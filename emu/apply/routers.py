"""Programming a router of a routed underlay from its RouterPlan, and what a node's underlay needs besides.

A router is a Mininet host (``emu.apply.underlay``); here it gets forwarding on (its sysctls), an address on each
interface, its static routes to the segments it is not on (one ``ip -batch``), and, when it drops ICMP
"fragmentation needed", its two iptables rules. A node on a routed underlay gets its default route via its
segment's gateway (``node_underlay``), and the routes its backend plans to fail are tried for real: the kernel
must refuse each (as it does flanneld's), and flanneld's log lines are written to the node's state directory
(``nodes/<node>/flanneld.log``, shown by the CLI's ``logs NODE``).
"""

import json
import time
from pathlib import Path
from typing import List

from emu import registry
from emu.apply.commands import Namespaces, check, ip_batch, run
from emu.errors import BuildError
from emu.plan.model import NodePlan, RouterPlan

FLANNELD_LOG = "flanneld.log"


def apply_router(router: RouterPlan, ns: Namespaces) -> None:
    """Forwarding, addresses, routes and rules of ``router`` in the namespaces ``ns`` (its Mininet shell's)."""
    check(f"{router.name}: sysctls", ["sysctl", "-q", "-w"] + [f"{k}={v}" for k, v in router.sysctls], ns)
    lines: List[str] = []
    for port in router.ports:
        lines += [f"addr add {port.address} dev {port.dev}", f"link set {port.dev} up"]
    lines += [f"route add {route}" for route in router.routes]
    ip_batch(f"{router.name}: addresses and routes", lines, ns)
    if router.iptables:
        check(f"{router.name}: iptables rules", ["iptables-restore"], ns, input=router.iptables)


def node_underlay(node: NodePlan, backend: str, ns: Namespaces, state_dir: Path) -> None:
    """A node's own routes on a routed underlay, and the routes its backend tries and the kernel refuses."""
    ip_batch(f"{node.name}: underlay routes", [f"route add {route}" for route in node.underlay_routes], ns)
    if node.failed_routes:
        _refused_routes(node, backend, ns, state_dir)


def _refused_routes(node: NodePlan, backend: str, ns: Namespaces, state_dir: Path) -> None:
    """Try each planned-to-fail route as flanneld does; each must be refused. Then write flanneld's log."""
    lines = [f"route add {failed.route}" for failed in node.failed_routes]
    result = run(["ip", "-force", "-batch", "-"], ns, input="\n".join(lines) + "\n", timeout=60)
    refused = result.stderr.count("Command failed")
    if refused != len(lines):
        raise BuildError(
            f"{node.name}: the kernel accepted {len(lines) - refused} of the routes the plan says it refuses",
            ["ip", "-force", "-batch", "-"] + lines,
            result.stderr,
        )
    ifindex = _ifindex(node.link.dev, ns)
    log = getattr(registry.backend(backend), "failure_log", None)
    stamp = time.strftime("%m%d %H:%M:%S", time.localtime()) + ".000000"
    text = ""
    for failed in node.failed_routes:
        entries = log(failed, ifindex) if log else [("E", f"{failed.route}: {failed.error}")]
        text += "".join(f"{severity}{stamp}       1 {line}\n" for severity, line in entries)
    path = state_dir / "nodes" / node.name / FLANNELD_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _ifindex(dev: str, ns: Namespaces) -> int:
    result = run(["ip", "-json", "link", "show", "dev", dev], ns, timeout=15)
    try:
        return int(json.loads(result.stdout)[0]["ifindex"])
    except (ValueError, LookupError, TypeError):
        return 0


def flanneld_log(state_dir: Path, node: str) -> str:
    """What flanneld logged on ``node`` ('' when nothing went wrong)."""
    path = state_dir / "nodes" / node / FLANNELD_LOG
    return path.read_text() if path.is_file() else ""
