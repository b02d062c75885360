"""The live cluster: realises a Plan on Mininet, applies plan differences while it runs, tears it all down.

This is the apply layer's one entry point. It decides nothing about Kubernetes: what to build comes from a
``Plan``, what to change from a ``PlanDiff`` (``emu.plan.changes``), both made by the layers above
(``emu.controller``). It knows how: processes, namespaces, links, rule documents.

Build order: ownership state first (so ``emu clean`` can always finish the job), Mininet nodes, routers and
switches (with the link ends written down for ``emu link``), each router's forwarding and routes and each node's
dataplane (a backend's daemons, devices, routes, neighbour and FDB entries, rules), pause processes (all at once),
veth wiring (one batch per node), containers. Any failure undoes everything built so far and raises
``BuildError`` with the failing step. Teardown stops containers, pause processes and daemons, then
Mininet, and removes the state directory. A watcher thread notices a pause process or a daemon dying and tells
the controller (``on_pod_died``), which re-plans.
"""

import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from emu import registry
from emu.apply import commands, underlay
from emu.apply import pods as pod_ops
from emu.apply.clean import clean_state, remove_created_dir
from emu.apply.commands import check
from emu.apply.daemons import start_daemon
from emu.apply.handles import Container, Node, Pod, Router, Service
from emu.apply.impair import EndReport, LinkControl
from emu.apply.nodes import apply_node, change_rules, flush_conntrack
from emu.apply.preflight import preflight
from emu.apply.processes import signals_held, terminate
from emu.apply.routers import apply_router, node_underlay
from emu.apply.spawner import Spawner
from emu.apply.state import ClusterState, all_states
from emu.errors import EmuError
from emu.features import Daemon
from emu.plan.changes import PlanDiff
from emu.plan.impair import Change
from emu.plan.model import NodePlan, Plan, PodPlan
from emu.plan.services import pod_env

Progress = Callable[[str], None]


def _quiet(_message: str) -> None:
    pass


class LiveCluster:
    """A Plan made real: ``start()`` builds it, ``apply(diff, plan)`` changes it, ``stop()`` removes it."""

    def __init__(
        self,
        plan: Plan,
        progress: Optional[Progress] = None,
        on_pod_died: Optional[Callable[[str], None]] = None,
    ) -> None:
        self.plan = plan
        self.progress = progress or _quiet
        self.on_pod_died = on_pod_died
        self.state = ClusterState.new(plan.cluster, plan.tag)
        self.net: Any = None
        self.nodes: Dict[str, Node] = {}
        self.routers: Dict[str, Router] = {}
        self.links: Optional[LinkControl] = None  # the underlay's link ends and their impairments
        self.pods: Dict[str, Pod] = {}
        self.daemons: Dict[str, "subprocess.Popen[str]"] = {}  # "<node>/<daemon name>" -> process
        self._daemon_specs: Dict[str, Daemon] = {}  # the same keys -> what was started
        self.problems: List[str] = []  # things that went wrong while running (a daemon died, a pod died)
        self.build_seconds = 0.0
        #: Seconds each node's rules (iptables and nftables) took to load when the cluster was built.
        self.rule_load_seconds: Dict[str, float] = {}
        #: The last change's rule loading: node -> (monotonic start, monotonic end), in the order loaded.
        self.last_rule_update: Dict[str, Tuple[float, float]] = {}
        self.lock = threading.RLock()
        self._created_dirs: List[str] = []
        self._spawner = Spawner(self._recorder("spawner", "pods"), self.state.directory / "spawner.log")
        self._started = False
        self._stopping = False
        self._reported: Set[str] = set()
        self._starter: Optional[threading.Thread] = None
        self._other_dirs: Optional[Set[str]] = None  # see _dirs_of_other_clusters

    @property
    def running(self) -> bool:
        return self._started and not self._stopping

    # ----------------------------------------------------------------------------------------------- lifecycle

    def start(self) -> "LiveCluster":
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
        threading.Thread(target=self._watch, name="emu-monitor", daemon=True).start()
        return self

    def _build(self) -> None:
        plan = self.plan
        self.state.switch = plan.switch
        if plan.underlay is not None:
            self.state.links += [f"switch:{segment.switch}" for segment in plan.segments]
        # Mininet will create the nodes' mount point on the machine when it is missing
        if not os.path.isdir(underlay.FLANNEL_RUN_DIR):
            self._created_dirs.append(underlay.FLANNEL_RUN_DIR)
            self.state.links.append(f"dir:{underlay.FLANNEL_RUN_DIR}")
        self.state.save()
        if plan.underlay is None:
            self.progress(f"nodes: {len(plan.nodes)} Mininet hosts on switch {plan.switch}")
        else:
            self.progress(f"underlay: {len(plan.segments)} segments (switches), {len(plan.routers)} routers; "
                          f"nodes: {len(plan.nodes)} Mininet hosts")
        self.net = underlay.build_underlay(plan, str(self.state.directory), self.state.add_process)
        self.net.start()
        underlay.set_link_mtus(plan, self.net)
        for node_plan in plan.nodes:
            self.nodes[node_plan.name] = Node(self, node_plan, self.net.get(node_plan.name))
        for router_plan in plan.routers:
            self.routers[router_plan.name] = Router(router_plan, self.net.get(router_plan.name))
        self.links = LinkControl.create(self.state.directory, plan, self._namespace_owners())

        self.progress(f"flannel {plan.backend}: devices, routes, neighbours, FDB; kube-proxy rules")
        node_steps = [partial(self._program_node, n) for n in plan.nodes]
        router_steps = [partial(apply_router, r, self.routers[r.name].namespaces) for r in plan.routers]
        seconds = commands.in_parallel(node_steps + router_steps)
        self.rule_load_seconds = {n.name: t for n, t in zip(plan.nodes, seconds)}

        self.progress(f"pods: {len(plan.pods)} pause processes")
        pending = self._start_pauses(plan.pods)
        for pod_plan, proc in pending:
            pod_ops.wait_pause(pod_plan, proc)

        self.progress("pods: veth pairs on cni0, addresses, routes")
        wiring = []
        for node_plan in plan.nodes:
            pods = plan.pods_on(node_plan.name)
            pids = {p.name: self.pods[p.name].pause.pid for p in pods}
            wiring.append(partial(pod_ops.wire_pods, node_plan.name, pods, pids, self.nodes[node_plan.name].namespaces))
        commands.in_parallel(wiring)

        count = sum(len(p.containers) for p in plan.pods)
        self.progress(f"containers: {count} processes")
        for pod_plan in plan.pods:
            self._start_containers(self.pods[pod_plan.name], pod_env(plan, pod_plan))
        pod_ops.wait_started(list(self.pods.values()))
        self._wait_ready()
        for name, _fragment in plan.addons:
            self.progress(f"add-on {name}")
            registry.addon_hook(name, "start")(self, plan)

    def _program_node(self, node_plan: NodePlan) -> float:
        """A node's dataplane (``emu.apply.nodes``), and on a routed underlay its own routes and the routes its
        backend tries in vain (``emu.apply.routers``); the seconds its rules took to load."""
        ns = self.nodes[node_plan.name].namespaces
        seconds = apply_node(node_plan, ns, self.state.directory, self._start_daemons)
        if self.plan.underlay is not None:
            node_underlay(node_plan, self.plan.backend, ns, self.state.directory)
        return seconds

    def _namespace_owners(self) -> Dict[str, Any]:
        """``node:<name>`` and ``router:<name>`` -> (pid, start time) of the process holding that namespace."""
        owners: Dict[str, Any] = {}
        for kind, handles in (("node", self.nodes), ("router", self.routers)):
            for name, handle in handles.items():
                owners[f"{kind}:{name}"] = (handle.pid, commands.process_start_time(handle.pid))
        return owners

    def _start_pauses(self, pod_plans: Sequence[PodPlan]) -> List[Any]:
        """Write every pod's files and start its pause process; a pod's pause starts (on a thread) as soon as
        its files are written: writing them is slow on some disks. Returns (pod plan, process) pairs."""
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
                    node_pid = self.nodes[pod_plan.node].pid
                    proc = pod_ops.start_pause(pod_plan, self.plan.cluster, node_pid, record, self._spawner)
                except BaseException as exc:  # raised in the building thread below
                    failed.append(exc)
                    return
                self.pods[pod_plan.name] = Pod(self, pod_plan, proc)
                pending.append((pod_plan, proc))

        starter = threading.Thread(target=start_pauses, name="emu-pauses", daemon=True)
        self._starter = starter  # an interrupted build's teardown waits for it (see _teardown)
        starter.start()
        try:
            for pod_plan in pod_plans:
                if failed:
                    break
                self._write_pod_files(pod_plan)
                written.put(pod_plan)
        finally:
            written.put(None)
            starter.join()
        if failed:
            raise failed[0]
        return pending

    def _write_pod_files(self, pod_plan: PodPlan) -> None:
        pod_dir = self.state.directory / "pods" / pod_plan.name
        pod_ops.write_pod_files(pod_plan, pod_dir)
        for path in pod_ops.missing_mount_points(pod_plan):
            self._own_dir(path)
            os.makedirs(path, exist_ok=True)
        # A mount point another running cluster created is owned by both: the last one to go removes it.
        for path in pod_ops.mount_point_dirs(pod_plan):
            if path not in self._created_dirs and path in self._dirs_of_other_clusters():
                self._own_dir(path)

    def _own_dir(self, path: str) -> None:
        self._created_dirs.append(path)
        self.state.links.append(f"dir:{path}")
        self.state.save()

    def _dirs_of_other_clusters(self) -> Set[str]:
        """The directories other clusters' state says they created (read once per build or change)."""
        if self._other_dirs is None:
            self._other_dirs = {
                link[4:]
                for directory, state in all_states().items()
                if state is not None and directory != self.state.directory
                for link in state.links
                if link.startswith("dir:")
            }
        return self._other_dirs

    def _start_containers(self, pod: Pod, env: Dict[str, str]) -> None:
        node_pid = self.nodes[pod.node].pid
        for container in pod.plan.containers:
            record = self._recorder("container", f"{pod.name}/{container.name}")
            proc = pod_ops.start_container(
                pod.plan, container, pod.pause.pid, node_pid, pod.directory, env, record, self._spawner
            )
            pod.containers[container.name] = Container(pod, container.name, proc)

    def _wait_ready(self, timeout: float = 15.0, pods: Optional[Sequence[Pod]] = None) -> None:
        """Like a readiness check: wait until every declared container port listens in its pod (of ``pods``,
        default all), so Services answer as soon as the build returns. A container that exits or never listens
        gets a warning."""
        waiting = {
            (pod.name, port, proto)
            for pod in (self.pods.values() if pods is None else pods)
            for c in pod.plan.containers
            if not c.placeholder  # an image that is not run: nothing will listen
            for port, proto, _name in c.ports
        }
        if waiting:
            self.progress(f"waiting for {len(waiting)} container ports to listen")
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for pod_name, port, proto in sorted(waiting):
                if (port, proto) in pod_ops.listening_ports(self.pods[pod_name].pause.pid):
                    waiting.discard((pod_name, port, proto))
            if waiting:
                time.sleep(0.02)
        for pod_name, port, proto in sorted(waiting):
            message = f"pod {pod_name}: nothing listens on {port}/{proto} after {timeout:g} s (see emu logs)"
            self.problems.append(message)
            print(f"emu: warning: {message}", file=sys.stderr)

    def _start_daemons(self, node: NodePlan) -> None:
        """The backend's daemons in ``node`` (udp's flanneld), each ready before the node's devices are set up."""
        for daemon in registry.backend(self.plan.backend).node_daemons(node):
            self.start_daemon(node.name, daemon)

    # --------------------------------------------------------------------- what feature modules may call

    def start_daemon(self, node: str, daemon: Daemon) -> "subprocess.Popen[str]":
        """Start ``daemon`` in ``node`` and wait until it is ready (``emu.apply.daemons``); it is recorded in the
        state, watched (a death is reported), and stopped at teardown."""
        record = self._recorder("daemon", f"{daemon.name}/{node}")
        proc = start_daemon(daemon, node, self.nodes[node].namespaces, self.state.directory, record=record)
        self.daemons[f"{node}/{daemon.name}"] = proc
        self._daemon_specs[f"{node}/{daemon.name}"] = daemon
        return proc

    def run(self, node: str, step: str, argv: Sequence[str], input: Optional[str] = None) -> str:
        """Run ``argv`` in ``node``'s namespaces; BuildError naming ``step`` (and the output) unless it succeeds."""
        return check(step, argv, self.nodes[node].namespaces, input=input)

    def pod_directory(self, pod: str) -> Path:
        """The pod's own directory in the cluster's state (its hosts file, logs, volumes)."""
        return self.state.directory / "pods" / pod

    def _recorder(self, role: str, name: str) -> Callable[[int], object]:
        """What writes a process emu starts into the state file before it may run (``commands.release``)."""
        return lambda pid: self.state.add_process(pid, role, name)

    def stop(self) -> None:
        """Tear everything down; safe to call twice and after a failed build."""
        with self.lock:
            if self._stopping:
                return
            self._stopping = True
        with signals_held():
            self._teardown()

    def _teardown(self) -> None:
        self.progress("tearing down")
        for name, _fragment in self.plan.addons:
            try:
                registry.addon_hook(name, "stop")(self)
            except Exception as exc:  # keep tearing down: what the add-on made goes with the nodes and pods
                print(f"emu: warning: stopping add-on {name}: {exc}", file=sys.stderr)
        if self._starter is not None:  # a build interrupted while pause processes were being started
            self._starter.join()
        procs: List["subprocess.Popen[str]"] = []
        for pod in self.pods.values():
            procs += [c.process for c in pod.containers.values()]
        terminate(procs, grace=2.0)
        terminate([p.pause for p in self.pods.values()] + list(self.daemons.values()), grace=1.0)
        self._spawner.close()
        if self.net is not None:
            try:
                underlay.stop_underlay(self.net)
            except Exception as exc:  # keep tearing down; clean can finish the job
                print(f"emu: warning: stopping Mininet: {exc}", file=sys.stderr)
        for path in reversed(self._created_dirs):
            remove_created_dir(path)
        # The safety net: whatever the state still lists as alive (a process recorded by an interrupted build
        # but never handed to a Pod) goes the way `emu clean` would take it; then the state directory.
        clean_state(self.state, self.state.directory, verbose=False)
        shutil.rmtree(self.state.directory, ignore_errors=True)
        self._started = False

    # ------------------------------------------------------------------------------------------ accessors

    def node(self, name: str) -> Node:
        try:
            return self.nodes[name]
        except KeyError:
            raise KeyError(f"no node named {name!r} (nodes: {', '.join(self.nodes)})") from None

    def router(self, name: str) -> Router:
        try:
            return self.routers[name]
        except KeyError:
            known = ", ".join(self.routers) or "none: the underlay is one switch"
            raise KeyError(f"no router named {name!r} (routers: {known})") from None

    def pod(self, name: str) -> Pod:
        pod = self.pods.get(name)
        if pod is None or pod.deleted:
            live = ", ".join(p.name for p in self.pods.values() if not p.deleted)
            raise KeyError(f"no pod named {name!r} (pods: {live})")
        return pod

    @property
    def services(self) -> List[Service]:
        return [Service(s) for s in self.plan.services]

    # ------------------------------------------------------------------------------------------ changes

    def apply(self, diff: PlanDiff, plan: Plan) -> None:
        """Turn the running cluster into ``plan``, doing what ``diff`` lists: build the added pods (and wait until
        their ports listen), tell the add-ons (``update``), change the changed nodes' rules and sets in parallel
        (``emu.apply.nodes.change_rules``; if one node refuses, all go back), delete the conntrack entries
        kube-proxy would in every node, then stop the removed pods. ``plan`` is published only once every node's
        rules agree with it."""
        with self.lock:
            if not self.running:
                raise EmuError("the cluster is not running")
            added = [self._add_pod(pod_plan, pod_env(plan, pod_plan)) for pod_plan in diff.added_pods]
            if added:
                self._wait_ready(pods=added)
            removed = [self.pods[p.name] for p in diff.removed_pods if p.name in self.pods]
            for pod in removed:
                pod.deleted = True
            try:
                # add-ons first: what they do for an added pod (a stand-in's sockets) is ready before the
                # nodes' rules send it traffic
                for name, _fragment in plan.addons:
                    registry.addon_hook(name, "update")(self, self.plan, plan)
                self.last_rule_update = {}
                try:
                    commands.in_parallel([partial(self._load_rules, self.nodes[n.name], n) for n in diff.changed_nodes])
                except BaseException:
                    self._undo_change(diff, added)
                    raise
                if diff.stale_flows:
                    for node in self.nodes.values():
                        flush_conntrack(node.name, diff.stale_flows, node.namespaces)
                self.plan = plan
            finally:  # a removed pod goes even if a node refused its new rules
                for pod in removed:
                    self._stop_pod(pod)

    def _undo_change(self, diff: PlanDiff, added: Sequence[Pod]) -> None:
        """A node refused its new rules: every changed node gets the rules and sets of the plan it runs again
        (``self.plan``), and the pods built for the change go, so the cluster is what it was before."""
        for new in diff.changed_nodes:
            node, node.plan = self.nodes[new.name], new  # taken or not: the swap back goes from it
            try:
                self._load_rules(node, self.plan.node(new.name))
            except Exception as exc:  # keep undoing; say what could not be undone
                self.problems.append(f"{node.name}: rules not restored after a failed change: {exc}")
                print(f"emu: warning: {self.problems[-1]}", file=sys.stderr)
                node.plan = self.plan.node(new.name)
        for pod in added:
            pod.deleted = True
            self._stop_pod(pod)

    def _load_rules(self, node: Node, node_plan: NodePlan) -> None:
        """A node's changed rules and sets (``change_rules``); a link's drop rules put back after a restore."""
        started = time.monotonic()
        if change_rules(node.plan, node_plan, node.namespaces) and self.links is not None:
            self.links.refresh(f"node:{node.name}")  # a full restore took a link's drop rules with it
        self.last_rule_update[node.name] = (started, time.monotonic())
        node.plan = node_plan

    def link(self, target: str, change: Change, show: bool = True) -> List[EndReport]:
        """Impair (or restore) the underlay link ends ``target`` names, in place (``emu.apply.impair``)."""
        if not self.running or self.links is None:
            raise EmuError("the cluster is not running")
        return self.links.change(target, change, show) if not change.empty else self.links.show(target)

    def _add_pod(self, pod_plan: PodPlan, env: Dict[str, str]) -> Pod:
        """Build one pod in the running cluster (pause, veth on cni0, containers); undone on failure."""
        node = self.nodes[pod_plan.node]
        self.progress(f"pod {pod_plan.name}: {pod_plan.ip} on {pod_plan.node}")
        if pod_plan.name in self.pods:  # a deleted pod of the same name: its files and logs go
            shutil.rmtree(self.state.directory / "pods" / pod_plan.name, ignore_errors=True)
        self._other_dirs = None
        self._write_pod_files(pod_plan)
        record = self._recorder("pause", pod_plan.name)
        pause = pod_ops.start_pause(pod_plan, self.plan.cluster, node.pid, record, self._spawner)
        pod = Pod(self, pod_plan, pause)
        try:
            pod_ops.wait_pause(pod_plan, pause)
            pod_ops.wire_pods(node.name, [pod_plan], {pod_plan.name: pause.pid}, node.namespaces)
            self._start_containers(pod, env)
            pod_ops.wait_started([pod])
        except BaseException:
            self._stop_pod(pod)
            raise
        self.pods[pod_plan.name] = pod
        return pod

    def _stop_pod(self, pod: Pod) -> None:
        """Stop a pod's containers and pause process, and forget them in the state."""
        made = [c.process for c in pod.containers.values()]
        terminate(made, grace=2.0)
        terminate([pod.pause], grace=1.0)
        for proc in made + [pod.pause]:
            self.state.forget_process(proc.pid)

    def _watch(self) -> None:
        """Notice a pause process or a daemon dying: a dead pause is a dead pod (the controller re-plans); a dead
        daemon is a silent black hole, so say so."""
        while self.running:
            time.sleep(0.5)
            dead: List[str] = []
            with self.lock:
                if not self.running:
                    return
                for name, proc in self.daemons.items():
                    if proc.poll() is not None and name not in self._reported:
                        self._reported.add(name)
                        node, daemon = name.split("/", 1)
                        message = f"{daemon} on {node} exited with status {proc.returncode}"
                        self.problems.append(message)
                        consequence = self._daemon_specs[name].consequence.replace("{node}", node)
                        print(f"emu: warning: {message}: {consequence}", file=sys.stderr)
                for pod in self.pods.values():
                    if not pod.deleted and pod.pause.poll() is not None and pod.name not in self._reported:
                        self._reported.add(pod.name)
                        self.problems.append(f"pod {pod.name}: pause process died")
                        dead.append(pod.name)
            for name in dead:
                if self.on_pod_died is not None:
                    try:
                        self.on_pod_died(name)
                    except EmuError as exc:
                        self.problems.append(str(exc))
