"""Pods as the kubelet and the CNI bridge plugin make them: a pause process, a veth into cni0, containers.

- The **pause** process holds the pod: it gets new network, UTS and PID namespaces (it is PID 1 of the pod's
  PID namespace), its hostname is the pod name, and it is ``sleep infinity`` named ``emu-pause:<cluster>/<pod>``
  (no shell or interpreter stays behind: about 0.2 MiB per pod). A ``hostNetwork`` pod's pause joins the node's
  network namespace instead, with UTS and PID namespaces of its own so the machine's hostname is never touched
  and no process outside the pod is visible from it. A command run in the pod itself (not in a container) gets
  a mount namespace of its own there (``Namespaces.own_proc``) with the pod's /proc and the kubelet's
  /etc/hosts and /etc/resolv.conf bound over the node's, so it sees and resolves as the pod does: the pause
  process has no mount namespace, as one per pod would cost a copy of the node's mount table at every build
  and teardown.
- The **CNI bridge plugin's** work: a veth pair, the pod end moved into the pod as ``eth0`` with its planned MAC,
  MTU and address, the node end (``veth`` + 8 hex) on ``cni0`` with hairpin mode on (flannel's CNI config sets
  ``hairpinMode: true``), and the pod's routes. All pods of a node are wired with one ``ip -batch`` in the node;
  inside each pod the same ``ip`` requests go over rtnetlink from emu itself (``configure_pod``).
- **Containers** are processes that join the pause process's network and UTS namespaces (the
  ``--net=container:<pause>`` of the source text) plus a mount namespace of their own: a private ``/tmp``, the
  kubelet's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` (when the plan gives the pod one; else
  the node's stays), bind-mounted ``emptyDir`` volumes shared between the containers that mount them, and a
  /proc of the container's PID namespace. As the kubelet does, each container has a PID namespace of its own (its
  command is PID 1: ``ps`` shows the container's processes, and nothing of the machine can be seen or
  signalled), or, with ``shareProcessNamespace: true``, the pause process's: the pod's containers then see each
  other, with pause as PID 1. Their output goes to a log file. emu's own helper programs (``python3 -m
  emu....``, such as cluster DNS's dnsmasq-nanny) find the emu package through ``PYTHONPATH``.

Both are started from the cluster's one helper (``spawner``, see emu.apply.spawner): one fork and one exec
each, the namespaces and mounts made in the child, behind the gate that holds a process until emu has recorded
its pid.
"""

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from emu.apply.commands import Namespaces, base_env, ip_batch, release
from emu.apply.netlink import NetlinkError, RouteSocket
from emu.errors import BuildError
from emu.plan.model import ContainerPlan, PodPlan

if TYPE_CHECKING:
    from emu.apply.handles import Pod
    from emu.apply.spawner import Mount, Spawner

#: The directory holding the ``emu`` package: emu's helper programs import it from there.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
#: /proc of the process's own PID namespace, mounted in its own mount namespace (as a container runtime does).
PROC_MOUNT: "Mount" = ("proc", "/proc", "proc", ("nosuid", "nodev", "noexec"), None)
#: ``unshare --propagation private``: nothing mounted in the new mount namespace reaches the node, or back.
PRIVATE: "Mount" = (None, "/", None, ("rec", "private"), None)


def start_pause(
    pod: PodPlan,
    cluster: str,
    node_pid: int,
    record: Optional[Callable[[int], object]],
    spawner: "Spawner",
) -> "subprocess.Popen[str]":
    """Start the pod's pause process (not waiting for it: see wait_pause).

    record: called with the pid before the process may go on (it writes the pid into the state file).
    spawner: the helper that starts it (one fork and one exec, see emu.apply.spawner).
    """
    setns = []
    if pod.host_network:
        setns = [("net", f"/proc/{node_pid}/ns/net"), ("mnt", f"/proc/{node_pid}/ns/mnt")]
    argv = [f"emu-pause:{cluster}/{pod.name}", "infinity"]
    try:
        spawned = spawner.spawn(
            argv,
            "emu-pause",
            setns=setns,
            unshare=["uts"] if pod.host_network else ["net", "uts"],
            hostname=pod.hostname,
            executable="sleep",
            pidns="new",
        )
    except OSError as exc:
        raise BuildError(f"pod {pod.name}: start the pause process", ["sleep"] + argv, str(exc)) from None
    release(spawned, record)
    return spawned  # type: ignore[return-value]  # Popen's interface, see Spawned


def wait_pause(pod: PodPlan, proc: "subprocess.Popen[str]", timeout: float = 10.0) -> None:
    """Wait until the pause process has become ``sleep`` in its namespaces."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr else ""
            raise BuildError(f"pod {pod.name}: start the pause process", proc.args, err)
        try:
            with open(f"/proc/{proc.pid}/comm") as f:
                if f.read().strip() == "sleep":
                    if proc.stderr:
                        proc.stderr.close()
                    return
        except OSError:
            pass
        time.sleep(0.002)
    raise BuildError(f"pod {pod.name}: the pause process did not start within {timeout:g} s", proc.args)


def wire_pods(node: str, pods: Sequence[PodPlan], pause_pids: Dict[str, int], node_ns: Namespaces) -> None:
    """The CNI bridge plugin's ADD for every pod of one node: veth pairs, cni0 ports, pod addresses, routes."""
    lines: List[str] = []
    for pod in pods:
        if pod.host_network:
            continue
        lines += [
            f"link add {pod.host_veth} address {pod.host_veth_mac} mtu {pod.mtu} type veth"
            f" peer name {pod.ifname} address {pod.mac} mtu {pod.mtu} netns {pause_pids[pod.name]}",
            f"link set {pod.host_veth} master cni0",
            f"link set {pod.host_veth} type bridge_slave hairpin on",
            f"link set {pod.host_veth} up",
        ]
    ip_batch(f"{node}: pod veth pairs on cni0", lines, node_ns)
    for pod in pods:
        if pod.host_network:
            continue
        configure_pod(pod, pause_pids[pod.name])


def configure_pod(pod: PodPlan, pause_pid: int) -> None:
    """Inside the pod: ``ip link set lo up``, ``addr add IP/LEN dev eth0``, ``link set eth0 up``, then the
    pod's routes; sent over rtnetlink from emu itself (emu.apply.netlink), not by an ``ip`` per pod."""
    address = f"{pod.ip}/{pod.prefixlen}"
    steps: List[Tuple[str, Callable[[RouteSocket], None]]] = [
        ("link set lo up", lambda s: s.link_up("lo")),
        (f"addr add {address} dev {pod.ifname}", lambda s: s.addr_add(address, pod.ifname)),
        (f"link set {pod.ifname} up", lambda s: s.link_up(pod.ifname)),
    ]
    for route in pod.routes:
        steps.append((f"route add {route}", lambda s, r=route: s.route_add(r.dst, r.dev, r.via, r.onlink)))
    line = "open an rtnetlink socket in the pod"
    try:
        with RouteSocket.in_netns(pause_pid) as sock:
            for line, step in steps:  # noqa: B007 - `line` names the failing step below
                step(sock)
    except OSError as exc:
        detail = f"RTNETLINK answers: {exc.strerror}" if isinstance(exc, NetlinkError) else str(exc)
        step = f"pod {pod.name}: eth0 address and routes"
        raise BuildError(step, [f"ip -n <pod {pod.name}> {line}"], detail) from None


def write_pod_files(pod: PodPlan, pod_dir: Path) -> None:
    """The files kubelet writes for a pod: /etc/hosts, /etc/hostname, a directory per emptyDir volume, and an
    empty log per container (so that starting a container only opens it)."""
    pod_dir.mkdir(parents=True, exist_ok=True)
    (pod_dir / "hosts").write_text(pod.hosts_file)
    (pod_dir / "hostname").write_text(pod.hostname + "\n")
    if pod.resolv_conf:
        (pod_dir / "resolv.conf").write_text(pod.resolv_conf)
    for container in pod.containers:
        open(pod_dir / f"{container.name}.log", "ab").close()
    for volume in pod.volumes:
        (pod_dir / "volumes" / volume).mkdir(parents=True, exist_ok=True)


def missing_mount_points(pod: PodPlan) -> List[str]:
    """Directories that do not exist on the machine and must be created for the pod's mount points (and removed
    again at teardown, in reverse): every missing level of each path, the outermost first."""
    out: List[str] = []
    for container in pod.containers:
        for mount in container.mounts:
            missing: List[str] = []
            path = os.path.normpath(mount.path)
            while path not in ("/", "") and not os.path.isdir(path):
                missing.insert(0, path)
                path = os.path.dirname(path)
            out += [p for p in missing if p not in out]
    return out


def mount_point_dirs(pod: PodPlan) -> List[str]:
    """Every directory level of the pod's mount points (outermost first), as missing_mount_points would list them
    when none existed."""
    out: List[str] = []
    for container in pod.containers:
        for mount in container.mounts:
            levels: List[str] = []
            path = os.path.normpath(mount.path)
            while path not in ("/", ""):
                levels.insert(0, path)
                path = os.path.dirname(path)
            out += [p for p in levels if p not in out]
    return out


def helper_env(container: ContainerPlan) -> Dict[str, str]:
    """``PYTHONPATH`` for emu's own helper programs (``python3 -m emu.<module>``), nothing for other commands."""
    argv = container.argv
    if len(argv) >= 3 and argv[0] in ("python3", "python") and argv[1] == "-m" and argv[2].startswith("emu."):
        return {"PYTHONPATH": PACKAGE_ROOT}
    return {}


def start_container(
    pod: PodPlan,
    container: ContainerPlan,
    pause_pid: int,
    node_pid: int,
    pod_dir: Path,
    extra_env: Dict[str, str],
    record: Optional[Callable[[int], object]],
    spawner: "Spawner",
) -> "subprocess.Popen[str]":
    """Start one container process in the pod's namespaces, with its own mount namespace (and PID namespace,
    unless the pod shares one); its output goes to its log file.

    record: called with the pid before the process may go on (it writes the pid into the state file).
    spawner: the helper that starts it (one fork and one exec, see emu.apply.spawner).
    """
    env = base_env({"HOSTNAME": pod.hostname})
    env.update(extra_env)
    env.update(helper_env(container))
    env.update(dict(container.env))
    log = open(pod_dir / f"{container.name}.log", "ab")
    try:
        spawned = spawner.spawn(
            list(container.argv),
            "emu-container",
            setns=[
                ("net", f"/proc/{pause_pid}/ns/net"),
                ("uts", f"/proc/{pause_pid}/ns/uts"),
                ("mnt", f"/proc/{node_pid}/ns/mnt"),
            ],
            unshare=["mnt"],
            mounts=container_mounts(container, pod_dir, resolv=bool(pod.resolv_conf)),
            cwd=container.working_dir,
            env=env,
            stdout=log,
            stderr=log,
            pidns=f"/proc/{pause_pid}/ns/pid" if pod.share_process_namespace else "new",
        )
    except OSError as exc:
        raise BuildError(f"pod {pod.name}: start container {container.name}", list(container.argv), str(exc)) from None
    finally:
        log.close()
    release(spawned, record)
    return spawned  # type: ignore[return-value]  # Popen's interface, see Spawned


def container_mounts(container: ContainerPlan, pod_dir: Path, resolv: bool = False) -> List["Mount"]:
    """A container's mounts, as (source, target, fstype, flags, data) for the spawner, in order.

    resolv: the pod has a resolv.conf of its own (else the node's stays)."""
    mounts: List["Mount"] = [
        PRIVATE,
        ("tmpfs", "/tmp", "tmpfs", (), "mode=1777"),
        (str(pod_dir / "hosts"), "/etc/hosts", None, ("bind",), None),
        (str(pod_dir / "hostname"), "/etc/hostname", None, ("bind",), None),
    ]
    if resolv:
        mounts.append((str(pod_dir / "resolv.conf"), "/etc/resolv.conf", None, ("bind",), None))
    for mount in container.mounts:
        mounts.append((str(pod_dir / "volumes" / mount.volume), mount.path, None, ("bind",), None))
        if mount.read_only:
            mounts.append((None, mount.path, None, ("remount", "bind", "rdonly"), None))
    mounts += package_mounts([m.path for m in container.mounts])
    mounts.append(PROC_MOUNT)
    return mounts


def package_mounts(volume_paths: Sequence[str], package_root: str = PACKAGE_ROOT) -> List["Mount"]:
    """The mounts that keep emu's package reachable in a container whose private /tmp or volumes would hide it
    (emu checked out under /tmp, say): emu's programs run in pods (cluster DNS's nanny, the measurement helpers
    run with ``exec``) import it from ``package_root``. Bound read-only at the same path; none when nothing
    hides it."""
    hidden = any(os.path.commonpath([package_root, os.path.normpath(p)]) == os.path.normpath(p)
                 for p in ["/tmp", *volume_paths])
    if not hidden:
        return []
    return [(package_root, package_root, "emu-keep", (), None),
            (None, package_root, None, ("remount", "bind", "rdonly"), None)]


def listening_ports(pid: int) -> Set[Tuple[int, str]]:
    """(port, protocol) of the TCP sockets listening and UDP sockets bound in the network namespace of ``pid``,
    read from /proc/PID/net (no process is started)."""
    found: Set[Tuple[int, str]] = set()
    for table, proto in (("tcp", "TCP"), ("tcp6", "TCP"), ("udp", "UDP"), ("udp6", "UDP")):
        try:
            with open(f"/proc/{pid}/net/{table}") as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if proto == "TCP" and fields[3] != "0A":  # 0A: LISTEN
                        continue
                    found.add((int(fields[1].rsplit(":", 1)[1], 16), proto))
        except (OSError, StopIteration, IndexError, ValueError):
            continue
    return found


def wait_started(pods: Sequence["Pod"]) -> None:
    """Wait until every container of ``pods`` runs its program: from then on an exec into it, or a feature
    handed it (the stand-in), sees the container's own namespaces, mounts and environment."""
    for pod in pods:
        for container in pod.containers.values():
            wait = getattr(container.process, "wait_exec", None)
            if wait is not None:
                wait()
