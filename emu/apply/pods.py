"""Pods as the kubelet and the CNI bridge plugin make them: a pause process, a veth into cni0, containers.

- The **pause** process holds the pod: ``unshare --net --uts --mount`` gives it a new network, UTS and mount
  namespace, its hostname is the pod name, the kubelet's ``/etc/hosts`` and ``/etc/resolv.conf`` are bound over
  the node's in its mount namespace (so a command run in the pod without a container resolves names as the pod
  does), and it then becomes ``sleep infinity`` named ``emu-pause:<cluster>/<pod>`` (no shell or interpreter
  stays behind: about 0.2 MiB per pod). A ``hostNetwork`` pod's pause joins the node's network namespace
  instead, with UTS and mount namespaces of its own so the machine's hostname and files are never touched.
- The **CNI bridge plugin's** work: a veth pair, the pod end moved into the pod as ``eth0`` with its planned MAC,
  MTU and address, the node end (``veth`` + 8 hex) on ``cni0`` with hairpin mode on (flannel's CNI config sets
  ``hairpinMode: true``), and the pod's routes. All pods of a node are wired with one ``ip -batch`` in the node;
  inside each pod the same ``ip`` requests go over rtnetlink from emu itself (``configure_pod``).
- **Containers** are processes that join the pause process's network and UTS namespaces (the
  ``--net=container:<pause>`` of the source text) plus a mount namespace of their own: a private ``/tmp``, the
  kubelet's ``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf`` (when the plan gives the pod one; else
  the node's stays), and bind-mounted ``emptyDir`` volumes shared between the containers that mount them. Their
  output goes to a log file. emu's own helper programs (``python3 -m emu....``, such as cluster DNS's
  dnsmasq-nanny) find the emu package through ``PYTHONPATH``.

A cluster starts its pause and container processes from one helper (``spawner=``, see emu.apply.spawner): one
fork and one exec each, with the namespaces and mounts made in the child, instead of the shell chains below
(``PAUSE_SCRIPT``, ``CONTAINER_SCRIPT``), which remain for callers without a spawner. Both give the same
processes in the same namespaces behind the same gate.
"""

import os
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from emu.apply.commands import GATE, Namespaces, base_env, ip_batch, popen, release
from emu.apply.netlink import NetlinkError, RouteSocket
from emu.errors import BuildError
from emu.plan.model import ContainerPlan, PodPlan

if TYPE_CHECKING:
    from emu.apply.spawner import Mount, Spawner

#: The directory holding the ``emu`` package: emu's helper programs import it from there.
PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])

# Both scripts first wait behind GATE until emu has recorded their pid (commands.release).
PAUSE_SCRIPT = GATE + (
    'mount --bind "$3" /etc/hosts && { [ -z "$4" ] || mount --bind "$4" /etc/resolv.conf; } && '
    'hostname "$1" && exec -a "$2" sleep infinity </dev/null'
)

# Runs inside the container's fresh mount namespace, then becomes the container's process (exec).
CONTAINER_SCRIPT = r"""set -e
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount --bind "$1" /etc/hosts
mount --bind "$2" /etc/hostname
if [ -n "$3" ]; then mount --bind "$3" /etc/resolv.conf; fi
shift 3
n=$1; shift
while [ "$n" -gt 0 ]; do
  mount --bind "$1" "$2"
  if [ "$3" = ro ]; then mount -o remount,bind,ro "$2"; fi
  shift 3; n=$((n - 1))
done
if [ -n "$1" ]; then cd "$1"; fi
shift
exec "$@" </dev/null
"""


def start_pause(
    pod: PodPlan,
    cluster: str,
    node_pid: int,
    record: Optional[Callable[[int], object]] = None,
    spawner: Optional["Spawner"] = None,
    pod_dir: Optional[Path] = None,
) -> "subprocess.Popen[str]":
    """Start the pod's pause process (not waiting for it: see wait_pause).

    record: called with the pid before the process may go on (it writes the pid into the state file).
    spawner: start it from this helper (one fork and one exec, see emu.apply.spawner) rather than through
        ``unshare`` and ``bash``; the result is the same process in the same namespaces.
    pod_dir: the pod's files (``write_pod_files``), bound over the node's in the pod's mount namespace.
    """
    assert pod_dir is not None, "the pod's files are written before its pause process starts"
    resolv = str(pod_dir / "resolv.conf") if pod.resolv_conf else ""
    if spawner is not None:
        setns = [("mnt", f"/proc/{node_pid}/ns/mnt")]
        if pod.host_network:
            setns.insert(0, ("net", f"/proc/{node_pid}/ns/net"))
        argv = [f"emu-pause:{cluster}/{pod.name}", "infinity"]
        mounts: List["Mount"] = [
            (None, "/", None, ("rec", "private"), None),
            (str(pod_dir / "hosts"), "/etc/hosts", None, ("bind",), None),
        ]
        if resolv:
            mounts.append((resolv, "/etc/resolv.conf", None, ("bind",), None))
        try:
            spawned = spawner.spawn(
                argv,
                "emu-pause",
                setns=setns,
                unshare=["uts", "mnt"] if pod.host_network else ["net", "uts", "mnt"],
                mounts=mounts,
                hostname=pod.hostname,
                executable="sleep",
            )
        except OSError as exc:
            raise BuildError(f"pod {pod.name}: start the pause process", ["sleep"] + argv, str(exc)) from None
        release(spawned, record)
        return spawned  # type: ignore[return-value]  # Popen's interface, see Spawned
    argv = ["unshare", "--uts", "--mount", "--propagation", "private"]
    ns = Namespaces(net_pid=node_pid, mount_pid=node_pid)
    if not pod.host_network:
        argv.append("--net")
    argv += ["--", "bash", "-c", PAUSE_SCRIPT, "emu-pause", pod.hostname, f"emu-pause:{cluster}/{pod.name}"]
    argv += [str(pod_dir / "hosts"), resolv]
    proc = popen(argv, ns, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    release(proc, record)
    return proc


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
    record: Optional[Callable[[int], object]] = None,
    spawner: Optional["Spawner"] = None,
) -> "subprocess.Popen[str]":
    """Start one container process in the pod's namespaces, with its own mount namespace; log to a file.

    record: called with the pid before the process may go on (it writes the pid into the state file).
    spawner: start it from this helper (one fork and one exec, see emu.apply.spawner) rather than through
        ``nsenter``, ``unshare``, ``bash`` and ``mount``; the mounts are the same as CONTAINER_SCRIPT's.
    """
    if spawner is not None:
        return _spawn_container(pod, container, pause_pid, node_pid, pod_dir, extra_env, record, spawner)
    ns = Namespaces(net_pid=pause_pid, mount_pid=node_pid, uts=True)
    resolv = str(pod_dir / "resolv.conf") if pod.resolv_conf else ""
    args: List[str] = [str(pod_dir / "hosts"), str(pod_dir / "hostname"), resolv, str(len(container.mounts))]
    for mount in container.mounts:
        args += [str(pod_dir / "volumes" / mount.volume), mount.path, "ro" if mount.read_only else "rw"]
    args.append(container.working_dir)
    argv = (
        ["unshare", "--mount", "--propagation", "private", "--", "bash", "-c", GATE + CONTAINER_SCRIPT, "emu-container"]
        + args
        + list(container.argv)
    )
    env = base_env({"HOSTNAME": pod.hostname})
    env.update(extra_env)
    env.update(helper_env(container))
    env.update(dict(container.env))
    log = open(pod_dir / f"{container.name}.log", "ab")
    try:
        proc = popen(argv, ns, env=env, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT)
    finally:
        log.close()
    release(proc, record)
    return proc


def container_mounts(container: ContainerPlan, pod_dir: Path, resolv: bool = False) -> List["Mount"]:
    """What CONTAINER_SCRIPT mounts, as (source, target, fstype, flags, data) for the spawner, in order.

    resolv: the pod has a resolv.conf of its own (else the node's stays)."""
    mounts: List["Mount"] = [
        (None, "/", None, ("rec", "private"), None),  # unshare --propagation private
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
    return mounts


def _spawn_container(
    pod: PodPlan,
    container: ContainerPlan,
    pause_pid: int,
    node_pid: int,
    pod_dir: Path,
    extra_env: Dict[str, str],
    record: Optional[Callable[[int], object]],
    spawner: "Spawner",
) -> "subprocess.Popen[str]":
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
        )
    except OSError as exc:
        raise BuildError(f"pod {pod.name}: start container {container.name}", list(container.argv), str(exc)) from None
    finally:
        log.close()
    release(spawned, record)
    return spawned  # type: ignore[return-value]  # Popen's interface, see Spawned


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
