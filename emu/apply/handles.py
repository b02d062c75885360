"""Handles on a live cluster's parts: its nodes, routers, pods, containers and Services, as users and measurements
see them.

A handle reads its plan (addresses, names) and runs commands in the namespaces of the processes that hold it: a
node's Mininet shell, a pod's pause process, a container's own process. ``exec`` gives ``ExecResult`` (stdout,
stderr, exit status), ``popen`` a running process; both take an argv list, or a string run with ``sh -c``.
"""

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from emu.apply import commands
from emu.apply.commands import Command, Namespaces, as_argv
from emu.errors import EmuError
from emu.plan.model import NodePlan, PodPlan, RouterPlan, ServicePlan
from emu.types import ExecResult

if TYPE_CHECKING:
    from emu.apply.live import LiveCluster


class Node:
    """A live node (a Mininet host): run commands in its network and mount namespaces."""

    def __init__(self, cluster: "LiveCluster", plan: NodePlan, host) -> None:  # type: ignore[no-untyped-def]
        self.cluster = cluster
        self.plan = plan
        self.host = host  # the Mininet host, for Mininet-style use (host.cmd, host.popen)

    name = property(lambda self: self.plan.name)
    ip = property(lambda self: self.plan.ip)
    node = property(lambda self: self.plan.name)
    pid = property(lambda self: self.host.pid)

    @property
    def namespaces(self) -> Namespaces:
        return Namespaces(net_pid=self.host.pid, mount_pid=self.host.pid)

    def exec(self, cmd: Command, timeout: Optional[float] = None) -> ExecResult:
        return commands.run(as_argv(cmd), self.namespaces, timeout=timeout)

    def popen(self, argv: Command, stdin: int = subprocess.DEVNULL) -> "subprocess.Popen[str]":
        return commands.popen(as_argv(argv), self.namespaces, stdin=stdin)

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.ip}>"


class Router:
    """A live router of a routed underlay (a Mininet host): run commands in its network namespace."""

    def __init__(self, plan: RouterPlan, host) -> None:  # type: ignore[no-untyped-def]
        self.plan = plan
        self.host = host

    name = property(lambda self: self.plan.name)
    pid = property(lambda self: self.host.pid)
    node = ""

    @property
    def ip(self) -> str:
        """Its address on its first segment."""
        return self.plan.ports[0].address.split("/")[0]

    @property
    def namespaces(self) -> Namespaces:
        return Namespaces(net_pid=self.host.pid)

    def exec(self, cmd: Command, timeout: Optional[float] = None) -> ExecResult:
        return commands.run(as_argv(cmd), self.namespaces, timeout=timeout)

    def popen(self, argv: Command) -> "subprocess.Popen[str]":
        return commands.popen(as_argv(argv), self.namespaces)

    def __repr__(self) -> str:
        return f"<Router {self.name} {', '.join(p.address for p in self.plan.ports)}>"


class Container:
    def __init__(self, pod: "Pod", name: str, process: "subprocess.Popen[str]") -> None:
        self.pod = pod
        self.name = name
        self.process = process

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    @property
    def log_path(self) -> Path:
        return self.pod.directory / f"{self.name}.log"


class Pod:
    """A live pod: its pause process holds its namespaces; its containers run inside them."""

    def __init__(self, cluster: "LiveCluster", plan: PodPlan, pause: "subprocess.Popen[str]") -> None:
        self.cluster = cluster
        self.plan = plan
        self.pause = pause
        self.containers: Dict[str, Container] = {}
        self.deleted = False

    name = property(lambda self: self.plan.name)
    ip = property(lambda self: self.plan.ip)
    node = property(lambda self: self.plan.node)
    namespace = property(lambda self: self.plan.namespace)

    @property
    def directory(self) -> Path:
        return self.cluster.state.directory / "pods" / self.name

    @property
    def alive(self) -> bool:
        return not self.deleted and self.pause.poll() is None

    def _namespaces(self, container: Optional[str]) -> Namespaces:
        if not self.alive:
            raise EmuError(f"pod {self.name} is not running")
        if container is not None:
            if container not in self.containers:
                raise EmuError(f"pod {self.name} has no container {container!r} (it has: {', '.join(self.containers)})")
            proc = self.containers[container].process
            if proc.poll() is not None:
                raise EmuError(f"container {container} of pod {self.name} has exited (see its log)")
            return Namespaces(net_pid=proc.pid, mount_pid=proc.pid, uts=True, pid=True)
        # the pod itself: its pause process's namespaces, the node's files, and a mount namespace of the command's
        # own with a /proc of the pod's PID namespace and the kubelet's /etc/hosts and /etc/resolv.conf bound over
        # the node's: it sees the pod's processes (none of the machine's) and resolves names as the pod does
        node_pid = self.cluster.node(self.node).pid
        binds = [(str(self.directory / "hosts"), "/etc/hosts")]
        if self.plan.resolv_conf:
            binds.append((str(self.directory / "resolv.conf"), "/etc/resolv.conf"))
        return Namespaces(
            net_pid=self.pause.pid, mount_pid=node_pid, uts=True, pid=True, own_proc=True, binds=tuple(binds)
        )

    def exec_env(self, container: Optional[str]) -> Dict[str, str]:
        """The environment a command gets: a container's own (as ``kubectl exec`` gives), else a root shell's."""
        if container is None:
            return commands.base_env()
        proc = self.containers[container].process
        try:
            with open(f"/proc/{proc.pid}/environ", "rb") as f:
                items = [i.decode(errors="replace") for i in f.read().split(b"\0") if b"=" in i]
        except OSError:
            return commands.base_env()
        return dict(i.split("=", 1) for i in items)

    def exec(self, cmd: Command, container: Optional[str] = None, timeout: Optional[float] = None) -> ExecResult:
        """Run ``cmd`` in the pod (the namespaces of its pause process: network, UTS and PID, with its node's
        files and the pod's /proc), or inside ``container`` (its own files, processes and environment)."""
        return commands.run(as_argv(cmd), self._namespaces(container), timeout=timeout, env=self.exec_env(container))

    def popen(
        self, argv: Command, container: Optional[str] = None, stdin: int = subprocess.DEVNULL
    ) -> "subprocess.Popen[str]":
        """Start ``cmd`` like ``exec`` and return at once (stdout and stderr piped; ``stdin=subprocess.PIPE`` to
        talk to it)."""
        return commands.popen(
            as_argv(argv), self._namespaces(container), env=self.exec_env(container), stdin=stdin
        )

    def logs(self, container: Optional[str] = None) -> str:
        name = container or next(iter(self.containers), "")
        path = self.directory / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __repr__(self) -> str:
        return f"<Pod {self.name} {self.ip} on {self.node}>"


class Service:
    """A Service as kube-proxy sees it: cluster IP, ports and the current endpoints."""

    def __init__(self, plan: ServicePlan) -> None:
        self.plan = plan

    name = property(lambda self: self.plan.name)
    cluster_ip = property(lambda self: self.plan.cluster_ip)
    type = property(lambda self: self.plan.type)
    ports = property(lambda self: self.plan.ports)

    @property
    def port(self) -> int:
        return self.plan.ports[0].port

    @property
    def node_port(self) -> Optional[int]:
        return self.plan.ports[0].node_port

    @property
    def endpoints(self) -> List[str]:
        """``ip:port`` of every endpoint of the first port (see ``ports`` for all)."""
        return [f"{e.ip}:{e.port}" for e in self.plan.ports[0].endpoints] if self.plan.ports else []

    @property
    def endpoint_pods(self) -> List[str]:
        return [e.pod for e in self.plan.ports[0].endpoints] if self.plan.ports else []

    # A Service is also a measurement endpoint: its address is the cluster IP.
    ip = cluster_ip
    node = ""

    def __repr__(self) -> str:
        return f"<Service {self.name} {self.cluster_ip} -> {', '.join(self.endpoints) or 'no endpoints'}>"
