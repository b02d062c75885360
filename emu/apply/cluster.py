"""The live cluster: builds a Plan on Mininet, gives handles to its nodes, pods and Services, tears it down.

    with emu.Cluster.from_file("topologies/two_nodes.yaml", backend="host-gw") as cluster:
        web = cluster.pod("web-0")
        print(cluster.pod("client-0").exec(["curl", "-s", f"http://{web.ip}:8080/"]).stdout)

Build order: ownership state first (so ``emu clean`` can always finish the job), Mininet nodes and switch,
each node's dataplane (flannel + kube-proxy rules), pause processes (all at once), veth wiring (one batch per
node), containers. Any failure undoes everything built so far and raises ``BuildError`` with the failing step.
Teardown stops containers, pause processes and daemons, then Mininet, and removes the state directory.
While it runs, pods come and go (``delete_pod``, ``add_pod``, a pause process that dies) and every node's
Service rules follow, as kube-proxy's do (see docs/services.md).
"""

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Optional, Sequence, Set, Union

from emu.apply import commands
from emu.apply.clean import clean_state, remove_created_dir
from emu.apply.commands import Command, Namespaces, as_argv
from emu.apply.spawner import Spawner
from emu.apply.state import ClusterState
from emu.errors import EmuError
from emu.measure import ExecResult
from emu.plan.build import build_plan, replan_services
from emu.plan.model import NodePlan, Plan, PodPlan, ServicePlan
from emu.spec.model import ClusterSpec

if TYPE_CHECKING:
    from emu.spec.yamlsrc import Document

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class Node:
    """A live node (a Mininet host): run commands in its network and mount namespaces."""

    def __init__(self, cluster: "Cluster", plan: NodePlan, host) -> None:  # type: ignore[no-untyped-def]
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

    def popen(self, argv: Command) -> "subprocess.Popen[str]":
        return commands.popen(as_argv(argv), self.namespaces)

    def __repr__(self) -> str:
        return f"<Node {self.name} {self.ip}>"


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

    def __init__(self, cluster: "Cluster", plan: PodPlan, pause: "subprocess.Popen[str]") -> None:
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
            return Namespaces(net_pid=proc.pid, mount_pid=proc.pid, uts=True)
        node_pid = self.cluster.node(self.node).pid
        return Namespaces(net_pid=self.pause.pid, mount_pid=node_pid, uts=True)

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
        """Run ``cmd`` in the pod (its network and UTS namespaces), or inside ``container`` (also its files
        and environment)."""
        return commands.run(as_argv(cmd), self._namespaces(container), timeout=timeout, env=self.exec_env(container))

    def popen(self, argv: Command, container: Optional[str] = None) -> "subprocess.Popen[str]":
        return commands.popen(as_argv(argv), self._namespaces(container), env=self.exec_env(container))

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


class Cluster:
    """A cluster built from a Spec: use as a context manager, or call start() and stop()."""

    def __init__(self, spec: ClusterSpec, backend: Optional[str] = None, progress: Optional[Progress] = None) -> None:
        self.spec = spec.with_backend(backend) if backend else spec
        self.plan: Plan = build_plan(self.spec)
        self.progress = progress or _quiet
        self.state = ClusterState.new(self.plan.cluster, self.plan.tag)
        self.net = None
        self._nodes: Dict[str, Node] = {}
        self._pods: Dict[str, Pod] = {}
        self._daemons: Dict[str, "subprocess.Popen[str]"] = {}
        self._created_dirs: List[str] = []
        self._spawner = Spawner(self._recorder("spawner", "pods"), self.state.directory / "spawner.log")
        self._lock = threading.RLock()
        self._started = False
        self._stopping = False
        self._previous_sigterm = None
        self._reported: Set[str] = set()
        self.problems: List[str] = []  # things that went wrong while running (a daemon died, a pod died)

    @classmethod
    def from_file(
        cls, path: Union[str, Sequence[str]], backend: Optional[str] = None, progress: Optional[Progress] = None
    ) -> "Cluster":
        """Load and validate a topology (plus manifests) without building anything yet."""
        from emu.spec.load import load

        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        spec, _warnings = load([str(p) for p in paths])
        return cls(spec, backend=backend, progress=progress)

    # ----------------------------------------------------------------------------------------------- lifecycle

    def __enter__(self) -> "Cluster":
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _sigterm_to_exit)
        try:
            self.start()
        except BaseException:
            self._restore_sigterm()
            raise
        return self

    def __exit__(self, *exc_info) -> None:  # type: ignore[no-untyped-def]
        try:
            self.stop()
        finally:
            self._restore_sigterm()

    def _restore_sigterm(self) -> None:
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def start(self) -> "Cluster":
        from emu.apply.preflight import preflight

        preflight(self.plan)
        started = time.monotonic()
        try:
            self._build()
        except BaseException:
            self.progress("build failed: undoing what was built")
            self.stop()
            raise
        self._started = True
        self.build_seconds = time.monotonic() - started
        self._monitor = threading.Thread(target=self._watch, name="emu-monitor", daemon=True)
        self._monitor.start()
        return self

    def _build(self) -> None:
        from emu.apply.nodes import apply_node
        from emu.apply.pods import (
            missing_mount_points,
            start_container,
            start_pause,
            wait_pause,
            wire_pods,
            write_pod_files,
        )
        from emu.apply.underlay import FLANNEL_RUN_DIR, build_underlay

        plan = self.plan
        self.state.switch = plan.switch
        if not os.path.isdir(FLANNEL_RUN_DIR):  # Mininet will create the nodes' mount point on the machine
            self._created_dirs.append(FLANNEL_RUN_DIR)
            self.state.links.append(f"dir:{FLANNEL_RUN_DIR}")
        self.state.save()
        self.progress(f"nodes: {len(plan.nodes)} Mininet hosts on switch {plan.switch}")
        self.net = build_underlay(plan, str(self.state.directory), self.state.add_process)
        self.net.start()
        for node_plan in plan.nodes:
            self._nodes[node_plan.name] = Node(self, node_plan, self.net.get(node_plan.name))

        self.progress(f"flannel {plan.backend}: devices, routes, neighbours, FDB; kube-proxy rules")
        commands.in_parallel(
            [
                partial(apply_node, n, self._nodes[n.name].namespaces, self.state.directory, self._start_daemon)
                for n in plan.nodes
            ]
        )

        self.progress(f"pods: {len(plan.pods)} pause processes")
        # A pod's pause starts (on a thread) as soon as its files are written: writing them is slow on some disks.
        pending: List[Any] = []
        written: "queue.Queue[Optional[PodPlan]]" = queue.Queue()
        failed: List[BaseException] = []

        def start_pauses() -> None:
            while not failed:
                pod_plan = written.get()
                if pod_plan is None:
                    return
                try:
                    record = self._recorder("pause", pod_plan.name)
                    proc = start_pause(pod_plan, plan.cluster, self._nodes[pod_plan.node].pid, record, self._spawner)
                except BaseException as exc:  # raised in the building thread below
                    failed.append(exc)
                    return
                self._pods[pod_plan.name] = Pod(self, pod_plan, proc)
                pending.append((pod_plan, proc))

        starter = threading.Thread(target=start_pauses, name="emu-pauses", daemon=True)
        self._starter = starter  # an interrupted build's teardown waits for it (see _teardown)
        starter.start()
        try:
            for pod_plan in plan.pods:
                if failed:
                    break
                pod_dir = self.state.directory / "pods" / pod_plan.name
                write_pod_files(pod_plan, pod_dir)
                for path in missing_mount_points(pod_plan):
                    self._created_dirs.append(path)
                    self.state.links.append(f"dir:{path}")
                    self.state.save()
                    os.makedirs(path, exist_ok=True)
                written.put(pod_plan)
        finally:
            written.put(None)
            starter.join()
        if failed:
            raise failed[0]
        for pod_plan, proc in pending:
            wait_pause(pod_plan, proc)

        self.progress("pods: veth pairs on cni0, addresses, routes")
        wiring = []
        for node_plan in plan.nodes:
            pods = plan.pods_on(node_plan.name)
            pids = {p.name: self._pods[p.name].pause.pid for p in pods}
            wiring.append(partial(wire_pods, node_plan.name, pods, pids, self._nodes[node_plan.name].namespaces))
        commands.in_parallel(wiring)

        count = sum(len(p.containers) for p in plan.pods)
        self.progress(f"containers: {count} processes")
        service_env = _service_env(plan.services)
        for pod_plan in plan.pods:
            pod = self._pods[pod_plan.name]
            for container in pod_plan.containers:
                proc = start_container(
                    pod_plan,
                    container,
                    pod.pause.pid,
                    self._nodes[pod_plan.node].pid,
                    pod.directory,
                    service_env,
                    self._recorder("container", f"{pod_plan.name}/{container.name}"),
                    self._spawner,
                )
                pod.containers[container.name] = Container(pod, container.name, proc)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0, pods: Optional[Sequence["Pod"]] = None) -> None:
        """Like a readiness check: wait until every declared container port listens in its pod (of ``pods``,
        default all), so Services answer as soon as the build returns. A container that exits or never listens
        gets a warning."""
        from emu.apply.pods import listening_ports

        waiting = {
            (pod.name, port, proto)
            for pod in (self._pods.values() if pods is None else pods)
            for c in pod.plan.containers
            if not c.placeholder  # an image that is not run: nothing will listen
            for port, proto, _name in c.ports
        }
        if waiting:
            self.progress(f"waiting for {len(waiting)} container ports to listen")
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for pod_name, port, proto in sorted(waiting):
                pod = self._pods[pod_name]
                if (port, proto) in listening_ports(pod.pause.pid):
                    waiting.discard((pod_name, port, proto))
            if waiting:
                time.sleep(0.02)
        for pod_name, port, proto in sorted(waiting):
            message = f"pod {pod_name}: nothing listens on {port}/{proto} after {timeout:g} s (see emu logs)"
            self.problems.append(message)
            print(f"emu: warning: {message}", file=sys.stderr)

    def _start_daemon(self, node: NodePlan) -> None:
        from emu.apply.udp import start_udp_daemon

        record = self._recorder("daemon", f"flannel-udp/{node.name}")
        proc = start_udp_daemon(node, self._nodes[node.name].namespaces, self.state.directory, record=record)
        self._daemons[node.name] = proc

    def _recorder(self, role: str, name: str) -> Callable[[int], object]:
        """What writes a process emu starts into the state file before it may run (``commands.release``)."""
        return lambda pid: self.state.add_process(pid, role, name)

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed build."""
        with self._lock:
            if self._stopping:
                return
            self._stopping = True
        with _signals_held():
            self._teardown()

    def _teardown(self) -> None:
        self.progress("tearing down")
        starter = getattr(self, "_starter", None)
        if starter is not None:  # a build interrupted while pause processes were being started
            starter.join()
        procs: List["subprocess.Popen[str]"] = []
        for pod in self._pods.values():
            procs += [c.process for c in pod.containers.values()]
        _terminate(procs, grace=2.0)
        _terminate([p.pause for p in self._pods.values()] + list(self._daemons.values()), grace=1.0)
        self._spawner.close()
        if self.net is not None:
            from emu.apply.underlay import stop_underlay

            try:
                stop_underlay(self.net)
            except Exception as exc:  # keep tearing down; clean can finish the job
                print(f"emu: warning: stopping Mininet: {exc}", file=sys.stderr)
        for path in reversed(self._created_dirs):
            remove_created_dir(path)
        # The safety net: whatever the state still lists as alive (a process recorded by an interrupted build
        # but never handed to a Pod) goes the way `emu clean` would take it; then the state directory.
        clean_state(self.state, self.state.directory, verbose=False)
        shutil.rmtree(self.state.directory, ignore_errors=True)
        self._started = False

    # --------------------------------------------------------------------------------------------- accessors

    @property
    def name(self) -> str:
        return self.plan.cluster

    @property
    def backend(self) -> str:
        return self.plan.backend

    @property
    def nodes(self) -> List[Node]:
        return list(self._nodes.values())

    @property
    def pods(self) -> List[Pod]:
        return [p for p in self._pods.values() if not p.deleted]

    def node(self, name: str) -> Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} (nodes: {', '.join(self._nodes)})") from None

    def pod(self, name: str) -> Pod:
        pod = self._pods.get(name)
        if pod is None or pod.deleted:
            raise KeyError(f"no pod named {name!r} (pods: {', '.join(p.name for p in self.pods)})")
        return pod

    @property
    def services(self) -> List[Service]:
        return [Service(s) for s in self.plan.services]

    def service(self, name: str) -> Service:
        for s in self.plan.services:
            if s.name == name:
                return Service(s)
        raise KeyError(f"no Service named {name!r} (services: {', '.join(s.name for s in self.plan.services)})")

    def resolve(self, name: str) -> str:
        """The address behind a pod, node or Service name (names are left as they are otherwise)."""
        if name in self._pods and not self._pods[name].deleted:
            return self._pods[name].ip
        if name in self._nodes:
            return self._nodes[name].ip
        for s in self.plan.services:
            if s.name == name:
                return s.cluster_ip
        return name

    def placements(self):  # type: ignore[no-untyped-def]
        """The standard paths (same-pod, same-node, cross-node, pod-to-service, node-to-pod, node-to-node) this
        cluster's pods make possible; see emu.apply.placements."""
        from emu.apply.placements import placements

        return list(placements(self))

    # ------------------------------------------------------------------------------------------ pod changes

    def delete_pod(self, name: str) -> None:
        """Delete a pod as kubelet would: stop its containers and pause; kube-proxy drops it from every Service."""
        pod = self.pod(name)
        try:
            with self._lock:
                pod.deleted = True
                self._update_services()
        finally:  # the pod goes even if a node refused its new rules
            _terminate([c.process for c in pod.containers.values()], grace=2.0)
            _terminate([pod.pause], grace=1.0)
            for proc in [pod.pause] + [c.process for c in pod.containers.values()]:
                self.state.forget_process(proc.pid)

    def add_pod(self, manifest: Dict[str, Any], document: Optional["Document"] = None) -> Pod:
        """Create a pod in the running cluster, as ``kubectl apply`` of a Pod object would.

        It is validated with the loader's rules, placed on ``spec.nodeName`` or by the same spread scheduler,
        given the lowest free address of its node's subnet, and built like the others (pause, veth on cni0,
        containers). Once its declared ports listen, every Service that selects it gets it as an endpoint
        (every node's rules are reloaded). ``spec`` and ``plan`` then include it.

        manifest: a Kubernetes Pod object as a dict, as loaded from YAML.
        document: the YAML document it comes from (``emu.spec.yamlsrc``), so that errors name its file and line.
        Raises SpecError (nothing is created) for an invalid manifest, BuildError (what was made is removed
        again) when the kernel refuses a step.
        """
        from dataclasses import replace

        from emu.apply.pods import (
            missing_mount_points,
            start_container,
            start_pause,
            wait_pause,
            wire_pods,
            write_pod_files,
        )
        from emu.plan.build import plan_added_pod
        from emu.spec.load import load_added_pod

        with self._lock:
            if not self._started or self._stopping:
                raise EmuError("the cluster is not running: cannot add a pod")
            pod_spec = load_added_pod(manifest, self.spec, document)
            pod_plan = plan_added_pod(self.plan, self.spec, pod_spec)
            node = self._nodes[pod_plan.node]
            self.progress(f"pod {pod_plan.name}: {pod_plan.ip} on {pod_plan.node}")
            pod_dir = self.state.directory / "pods" / pod_plan.name
            if pod_plan.name in self._pods:  # a deleted pod of the same name: its files and logs go
                shutil.rmtree(pod_dir, ignore_errors=True)
            write_pod_files(pod_plan, pod_dir)
            for path in missing_mount_points(pod_plan):
                self._created_dirs.append(path)
                self.state.links.append(f"dir:{path}")
                self.state.save()
                os.makedirs(path, exist_ok=True)
            pause = start_pause(
                pod_plan, self.plan.cluster, node.pid, self._recorder("pause", pod_plan.name), self._spawner
            )
            pod = Pod(self, pod_plan, pause)
            try:
                wait_pause(pod_plan, pause)
                wire_pods(node.name, [pod_plan], {pod_plan.name: pause.pid}, node.namespaces)
                service_env = _service_env(self.plan.services)
                for container in pod_plan.containers:
                    record = self._recorder("container", f"{pod_plan.name}/{container.name}")
                    proc = start_container(
                        pod_plan, container, pause.pid, node.pid, pod.directory, service_env, record, self._spawner
                    )
                    pod.containers[container.name] = Container(pod, container.name, proc)
            except BaseException:
                made = [c.process for c in pod.containers.values()]
                _terminate(made, grace=1.0)
                _terminate([pause], grace=1.0)
                for proc in made + [pause]:
                    self.state.forget_process(proc.pid)
                raise
            self._pods[pod_plan.name] = pod
            self.spec = replace(self.spec, pods=self.spec.pods + (pod_spec,))
            self.plan = replace(self.plan, pods=self.plan.pods + (pod_plan,))
            self._wait_ready(pods=[pod])
            self._update_services()
        return pod

    def _update_services(self) -> None:
        """Recompute endpoints from the live pods, as kube-proxy does on an EndpointSlice change, and reload the
        rules of every node whose document changed (one full iptables-restore per node). ``spec`` and ``plan``
        keep only the live pods."""
        from dataclasses import replace

        from emu.apply.nodes import load_iptables

        live = [p.plan for p in self._pods.values() if p.alive]
        names = {p.name for p in live}
        spec = replace(self.spec, pods=tuple(p for p in self.spec.pods if p.name in names))
        plan = replan_services(self.plan, spec, live)
        for node_plan in plan.nodes:
            node = self._nodes[node_plan.name]
            if node_plan.iptables != node.plan.iptables:
                load_iptables(node_plan, node.namespaces)
            node.plan = node_plan
        # Published only now, so whoever reads a Service's endpoints finds them in every node's rules already.
        self.spec, self.plan = spec, plan

    def _watch(self) -> None:
        """Notice a pause process or a flannel daemon dying: a dead pause is a dead pod; a dead daemon is a
        silent black hole, so say so."""
        while self._started and not self._stopping:
            time.sleep(0.5)
            with self._lock:
                if self._stopping:
                    return
                for node, proc in self._daemons.items():
                    if proc.poll() is not None and node not in self._reported:
                        self._reported.add(node)
                        message = f"flannel udp daemon on {node} exited with status {proc.returncode}"
                        self.problems.append(message)
                        print(f"emu: warning: {message}: cross-node traffic from {node} is dropped", file=sys.stderr)
                dead = [p for p in self._pods.values() if not p.deleted and p.pause.poll() is not None]
                for pod in dead:
                    pod.deleted = True
                    self.problems.append(f"pod {pod.name}: pause process died")
                    _terminate([c.process for c in pod.containers.values()], grace=1.0)
                if dead:
                    try:
                        self._update_services()
                    except EmuError as exc:
                        self.problems.append(str(exc))

    def check_health(self) -> List[str]:
        """What has gone wrong since the build (dead daemons, dead pods); empty when all is well."""
        return list(self.problems)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Teardown must finish: Ctrl-C or SIGTERM during it are held back and acted on once it is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: List[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum)) for sig in HELD_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if signal.SIGINT in received:
        raise KeyboardInterrupt()
    if signal.SIGTERM in received:
        raise SystemExit(128 + signal.SIGTERM)


HELD_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _sigterm_to_exit(signum, frame) -> None:  # type: ignore[no-untyped-def]
    raise SystemExit(128 + signum)


def _terminate(procs: Sequence["subprocess.Popen[str]"], grace: float) -> None:
    """SIGTERM every process, wait up to ``grace`` seconds, SIGKILL the rest, reap all."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.terminate()
            except OSError:
                pass
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _service_env(services: Sequence[ServicePlan]) -> Dict[str, str]:
    """The Docker-link style variables kubelet gives every container for every Service."""
    env: Dict[str, str] = {}
    for s in services:
        if not s.ports:
            continue
        prefix = s.name.upper().replace("-", "_")
        env[f"{prefix}_SERVICE_HOST"] = s.cluster_ip
        env[f"{prefix}_SERVICE_PORT"] = str(s.ports[0].port)
        for p in s.ports:
            if p.name:
                env[f"{prefix}_SERVICE_PORT_{p.name.upper().replace('-', '_')}"] = str(p.port)
    return env
