"""Programming a node's dataplane from its NodePlan: what flanneld and the CNI bridge plugin do on a node.

Sysctls, ``cni0``, the backend's devices (``flannel.1`` / ``flannel0``), addresses, routes and permanent
neighbour entries in one ``ip -batch``, FDB entries in one ``bridge -batch``, ``/run/flannel/subnet.env`` in
the node's private /run/flannel, the node's ipset document in one ``ipset restore`` (sets exist before the
rules that name them), the node's whole iptables document in one ``iptables-restore`` and each of its
nftables tables in one ``nft -f`` (one transaction). When the cluster changes, ``update_rules`` reloads the
iptables document and changes the nftables tables in place (``emu.plan.nftables.update_script``: only the
chains and elements that differ, never a flush of the table), and ``flush_conntrack`` deletes the conntrack
entries kube-proxy would.
A backend's daemons (udp's flanneld, which creates flannel0 itself) are started first (``start_daemons``); the
devices of a backend are created with the lines its module gives (``emu.registry``).
"""

import sys
import time
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Set

from emu import registry
from emu.apply.commands import Namespaces, check, ip_batch, run
from emu.errors import BuildError
from emu.plan.model import Device, NodePlan
from emu.plan.nftables import load_script, update_script
from emu.proxy.conntrack import Flows

#: Seconds a rule load may take: 10,000 Services are 60,000 iptables rules, or an nftables table whose
#: anonymous sets Linux creates in time quadratic in their number (about 80 s here).
RULES_TIMEOUT = 900


def device_lines(device: Device) -> List[str]:
    """``ip -batch`` lines creating ``device``: cni0 here, a backend's devices by its module (``emu.registry``)."""
    if device.kind == "bridge":
        mac = f" address {device.mac}" if device.mac else ""
        lines = [f"link add {device.name}{mac} mtu {device.mtu} type bridge"]
    else:
        lines = list(registry.backend_of_device(device.kind).device_lines(device))
    lines += [f"addr add {address} dev {device.name}" for address in device.addresses]
    lines.append(f"link set {device.name} up")
    return lines


def apply_node(
    node: NodePlan,
    ns: Namespaces,
    state_dir: Path,
    start_daemons: Optional[Callable[[NodePlan], None]] = None,
) -> float:
    """Program ``node`` in the namespaces ``ns`` (its Mininet shell's); returns the seconds its rules took to load.

    start_daemons: starts the backend's daemons in the node (and waits until they are ready) before its devices
        are configured: udp's flanneld creates flannel0 itself.
    """
    check(
        f"{node.name}: sysctls",
        ["sysctl", "-q", "-w"] + [f"{key}={value}" for key, value in node.sysctls],
        ns,
    )
    env_file = state_dir / "nodes" / node.name / "flannel" / "subnet.env"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    env_file.write_text(node.subnet_env)
    if start_daemons is not None:
        start_daemons(node)
    lines: List[str] = []
    for device in node.devices:
        lines += device_lines(device)
    for route in node.routes + node.service_routes:
        lines.append(f"route add {route}")
    for neighbour in node.neighbours:
        lines.append(f"neigh add {neighbour.ip} lladdr {neighbour.lladdr} dev {neighbour.dev} nud permanent")
    ip_batch(f"{node.name}: devices, addresses, routes and neighbours", lines, ns)
    ip_batch(
        f"{node.name}: forwarding database",
        [f"fdb add {e.lladdr} dev {e.dev} dst {e.dst} self permanent" for e in node.fdb],
        ns,
        tool="bridge",
    )
    started = time.monotonic()
    load_ipsets(node, ns)
    load_iptables(node, ns)
    load_nftables(node, ns)
    return time.monotonic() - started


def change_rules(old: NodePlan, new: NodePlan, ns: Namespaces) -> bool:
    """Turn a node's rules and sets of ``old`` into those of ``new`` (or back: swap them): the sets first (new
    ones exist, members swapped in), then the iptables document and nftables tables (``update_rules``), then the
    sets no rule names any more go. Returns whether the iptables document was restored (which takes a link's
    drop rules with it: ``emu.apply.impair``)."""
    if new.ipsets != old.ipsets:
        load_ipsets(new, ns)
    restored = new.iptables != old.iptables
    update_rules(old, new, ns)
    if new.ipsets != old.ipsets:
        remove_ipsets(new, old.ipsets, ns)
    return restored


def load_ipsets(node: NodePlan, ns: Namespaces) -> None:
    """Load the node's ipset document (``create``/``add`` lines, as ``ipset save`` prints them): every set is
    created if missing, and its members are replaced at once (filled under a temporary name, then swapped in),
    so a rule naming the set never sees it half filled."""
    script = ipset_swap_script(node.ipsets)
    if script:
        check(f"{node.name}: ipsets", ["ipset", "restore", "-exist"], ns, input=script)


def remove_ipsets(node: NodePlan, old_document: str, ns: Namespaces) -> None:
    """Destroy the sets of ``old_document`` that ``node``'s document no longer has (once no rule names them)."""
    gone = sorted(ipset_names(old_document) - ipset_names(node.ipsets))
    if gone:
        check(f"{node.name}: stale ipsets", ["ipset", "restore"], ns, input="".join(f"destroy {n}\n" for n in gone))


def ipset_names(document: str) -> Set[str]:
    return {line.split()[1] for line in document.splitlines() if line.startswith("create ")}


def ipset_swap_script(document: str) -> str:
    """An ``ipset restore -exist`` script that makes the sets of ``document`` hold exactly its members: each set
    is created if missing, filled under a temporary name, swapped in, and the temporary set destroyed."""
    out: List[str] = []
    current: List[str] = []  # [name, temporary] of the set being filled

    def finish() -> None:
        if current:
            out.extend([f"swap {current[1]} {current[0]}", f"destroy {current[1]}"])

    for line in document.splitlines():
        words = line.split()
        if words and words[0] == "create":
            finish()
            current[:] = [words[1], words[1][:26] + "-new"]
            out += [line, " ".join(["create", current[1]] + words[2:]), f"flush {current[1]}"]
        elif words and words[0] == "add" and current and words[1] == current[0]:
            out.append(" ".join(["add", current[1]] + words[2:]))
        elif words:
            raise ValueError(f"not an ipset document line (create or add of the set above): {line!r}")
    finish()
    return "\n".join(out) + "\n" if out else ""


def load_iptables(node: NodePlan, ns: Namespaces, document: Optional[str] = None) -> None:
    """Load the node's whole iptables document at once (full restore: emu owns the node's namespace)."""
    check(f"{node.name}: iptables rules", ["iptables-restore"], ns, input=document or node.iptables,
          timeout=RULES_TIMEOUT)


def load_nftables(node: NodePlan, ns: Namespaces) -> None:
    """Create each of the node's nftables tables with one ``nft -f`` (one transaction: all of it or nothing)."""
    for table in node.nftables:
        check(f"{node.name}: nftables table {table.prefix}", ["nft", "-f", "-"], ns, input=load_script(table),
              timeout=RULES_TIMEOUT)


def update_rules(old: NodePlan, new: NodePlan, ns: Namespaces) -> None:
    """Turn the node's rules of ``old`` into those of ``new`` while traffic flows: the iptables document is
    restored whole when it differs; each nftables table gets the transaction that changes only what differs,
    then the deletion of the chains it emptied (a failure of that last step leaves empty, unused chains: a
    warning, as kube-proxy retries it on its next sync)."""
    if new.iptables != old.iptables:
        load_iptables(new, ns)
    before = {(t.family, t.name): t for t in old.nftables}
    after = {(t.family, t.name): t for t in new.nftables}
    for key in list(after) + [k for k in before if k not in after]:
        update = update_script(before.get(key), after.get(key))
        step = f"{new.name}: nftables table {' '.join(key)}"
        if update.script:
            check(step, ["nft", "-f", "-"], ns, input=update.script, timeout=RULES_TIMEOUT)
        if update.cleanup:
            try:
                check(f"{step} (stale chains)", ["nft", "-f", "-"], ns, input=update.cleanup)
            except BuildError as exc:
                print(f"emu: warning: {exc}", file=sys.stderr)


def flush_conntrack(node: str, flows: Sequence[Flows], ns: Namespaces) -> None:
    """Delete the conntrack entries ``flows`` names in the node (``conntrack -D`` exits 1 when none matched)."""
    for flow in flows:
        result = run(flow.argv(), ns)
        if result.returncode not in (0, 1):
            raise BuildError(f"{node}: deleting conntrack entries", flow.argv(), result.stderr or result.stdout)
