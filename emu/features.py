"""What a feature module is: the contract between emu's core and a flannel backend, a kube-proxy mode or an add-on.

A *feature* is one module (or package) that owns everything about one part of a cluster's network: its fields in
the topology and their validation, its pure plan fragment, the kernel features and tools it needs (read by
``emu doctor`` and by the checks before a build), the commands that make it real in a node, and what ``emu trace``
predicts for it. ``emu.registry`` lists the features; the core (spec loader, plan builder, apply layer, trace)
asks the registry and never names a feature itself. docs/architecture.md says how to add one.

This module holds the vocabulary the features and the core share, as plain data. It sits at the bottom of the
layering with ``emu.spec.model`` and ``emu.plan.model``: it imports only the standard library.

The module attributes a **backend** (``emu/backends/<name>.py``) defines:

- ``NAME``: flannel's ``Backend.Type`` (e.g. the string users write under ``network.backend``);
- ``OVERHEAD``: bytes of encapsulation (pod MTU = underlay MTU - OVERHEAD);
- ``OPTIONS``: the backend's own fields of flannel's Backend object (``{"VNI": "vni", ...}``: net-conf.json's
  spelling -> the lowerCamelCase one also accepted), and ``read_options(reader, get)`` that validates them and
  returns the backend's options object (``default_options()`` gives the defaults);
- ``plan_options(options)``: the ``(key, value)`` pairs ``emu plan`` shows for it;
- ``plan_node(ctx, lease) -> NodeDataplane``: the devices, routes, neighbour and FDB entries (and daemons) that
  flannel programs in the node holding ``lease``;
- ``DEVICE_KINDS`` and ``device_lines(device)``: the ``ip -batch`` lines that create its devices;
- ``node_daemons(node) -> Tuple[Daemon, ...]``: the processes it runs in a node, started (and ready) before its
  devices are configured (udp's flanneld creates flannel0);
- ``KERNEL_NEEDS``: ``KernelNeed`` records;
- ``trace_out(walker, node, device, entry)``: a packet routed out of one of its devices, hop by hop (see
  ``emu.trace``); ``DIRECT_ROUTES``: how ``emu trace`` names a plain route to another node's subnet;
- optionally, for routed underlays: ``underlay_warnings(node_segments)`` ((message, hint) pairs ``emu validate``
  warns with) and ``failure_log(failed_route, ifindex)`` (flanneld's log lines for a route the kernel refused).

A **kube-proxy mode** (``emu/proxy/<mode>.py``) takes ``emu.proxy.services`` records and defines ``NAME``,
``KERNEL_NEEDS``, ``TOOLS``, ``required_sysctls()``, ``node_tables(services, pod_cidr, node_ip)`` (its iptables
rules, merged with flanneld's into the node's one document; empty for a mode that writes none), optionally
``node_nftables(services, pod_cidr, service_cidr, node_ip)`` (its ``emu.plan.nftables`` tables, the node's
nftables document) and ``describe(services)`` (what ``emu trace`` predicts). An **add-on**
(``emu/addons/<name>``) defines ``NAME``, ``DEFAULT_ENABLED``, ``KERNEL_NEEDS``, ``TOOLS`` and the hooks listed in
docs/architecture.md; one of them,
``trace_verdicts``, gives ``emu trace`` the decisions it makes about a packet (``TraceVerdict``).
"""

from dataclasses import dataclass
from typing import Tuple

__all__ = ["KernelNeed", "Tool", "Daemon", "NO_NEEDS", "TraceVerdict"]


@dataclass(frozen=True)
class KernelNeed:
    """A kernel feature a module needs, and how to tell whether this kernel has it.

    name: what ``emu doctor`` calls it (``vxlan``, ``tun``, ``nftables``...).
    purpose: what it is for, in a few words (``flannel.1 devices``).
    probe: a shell command that succeeds only where the feature exists; it runs as root in a throwaway network
        namespace (``unshare --net``) with ``lo`` up, so whatever it creates vanishes with it.
    """

    name: str
    purpose: str
    probe: str


@dataclass(frozen=True)
class Tool:
    """A program a module runs, and the Debian package that brings it."""

    command: str
    package: str


#: Nothing needed beyond the core (bridge, veth, iptables).
NO_NEEDS: Tuple[KernelNeed, ...] = ()


@dataclass(frozen=True)
class Daemon:
    """A process a feature runs in a node: ``python -m MODULE ARGS... --ready-file PATH``.

    The program must create the file named by ``--ready-file`` once it is ready to work (the apply layer waits
    for it, and adds the option itself), and write its log to stdout/stderr.
    name: a short name, for the state file, the log file and messages (``flannel-udp``).
    consequence: what stops working when it dies, for the warning emu prints then (``{node}`` is replaced by
        the node's name).
    """

    name: str
    module: str
    args: Tuple[str, ...]
    consequence: str = "cross-node traffic from {node} is dropped"


@dataclass(frozen=True)
class TraceVerdict:
    """A decision a feature makes about a packet in a node's filter FORWARD hook (NetworkPolicy's allow or drop),
    for ``emu trace`` to show as a hop of the path and to check against the kernel's counters.

    node: the node that decides. side: "egress" (the packet leaving its source pod: decided in the source's node
    as the packet is forwarded out of it) or "ingress" (entering its destination pod: decided in the destination's
    node as the packet is forwarded to it). allowed: the decision.
    text: the decision in words (which policy, which rule allowed or dropped it).
    rule: (table, chain, a fragment of the rule as iptables-save prints it) of the rule whose packet counter grows
        when the kernel decides the same; "" when no single rule tells.
    """

    node: str
    side: str
    allowed: bool
    text: str
    rule: Tuple[str, str, str] = ("", "", "")
