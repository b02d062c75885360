"""Pods isolated as the kubelet isolates them: a PID namespace per container, or one per pod when asked.

Without root: ``shareProcessNamespace`` and ``enableServiceLinks`` are read (true/false only) and reach the plan.

With root, one two-node cluster: a pod of two containers, a pod that shares its process namespace, a
hostNetwork pod. Asserted with ``ps``, ``/proc`` and ``kill`` run inside them:

- ``ps`` in a container lists only that container's processes, its command as PID 1; in the pod itself (no
  container) the pause process is PID 1; with ``shareProcessNamespace: true`` every container of the pod and
  pause (PID 1) are listed, and nothing else;
- no process of the machine is visible in a pod's /proc or can be signalled from a pod (``kill`` of a process
  started on the machine fails with "No such process", and the process lives on), hostNetwork pods included;
- a container's PID 1 that does not catch SIGTERM is stopped with SIGKILL at once (SIGTERM would be dropped).
"""

import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest
from conftest import ROOT_PROBLEM, requires_root

from emu.plan.build import build_plan
from emu.spec.errors import SpecError
from emu.spec.load import load

TOPOLOGY = """\
apiVersion: emu/v1
kind: Cluster
name: {name}
nodes: [node-1, node-2]
addons: {{dns: false}}         # the pods of this file only (cluster DNS would add its own)
---
apiVersion: v1
kind: Pod
metadata: {{name: two}}
spec:
  containers:
    - {{name: a, command: [sleep, infinity]}}
    - {{name: b, command: [python3, -c, "import signal, time; signal.signal(signal.SIGTERM, lambda *a: exit(0)); time.sleep(9999)"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: shared}}
spec:
  shareProcessNamespace: true
  containers:
    - {{name: a, command: [sleep, "7001"]}}
    - {{name: b, command: [sleep, "7002"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: host}}
spec:
  hostNetwork: true
  nodeName: node-2
  enableServiceLinks: false
  containers: [{{name: c, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: elsewhere, namespace: other}}
spec:
  containers: [{{name: c, command: [sleep, infinity]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web-svc}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
"""


def write(tmp_path: Path, name: str = "isolation") -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(TOPOLOGY.format(name=name))
    return path


def test_share_process_namespace_and_service_links_reach_the_plan(tmp_path: Path) -> None:
    spec, _ = load([str(write(tmp_path))])
    plan = build_plan(spec)
    assert [p.share_process_namespace for p in plan.pods] == [False, True, False, False]
    assert [p.service_links for p in plan.pods] == [True, True, False, True]


def test_share_process_namespace_takes_a_boolean(tmp_path: Path) -> None:
    path = write(tmp_path)
    path.write_text(path.read_text().replace("shareProcessNamespace: true", "shareProcessNamespace: 'yes'")
                    .replace("enableServiceLinks: false", "enableServiceLinks: 1"))
    with pytest.raises(SpecError) as exc:
        load([str(path)])
    lines = [str(p) for p in exc.value.errors]
    assert any(":19: spec.shareProcessNamespace: expected true or false" in line for line in lines), lines
    assert any("spec.enableServiceLinks: expected true or false" in line for line in lines), lines


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # type: ignore[type-arg]
    if ROOT_PROBLEM:
        pytest.skip(ROOT_PROBLEM)
    from emu.controller import Cluster

    with Cluster.from_file(write(tmp_path_factory.mktemp("iso"), f"iso-lt{os.getpid()}")) as running:
        yield running


def ps(cluster, pod: str, container=None):  # type: ignore[no-untyped-def]
    """(pid, command line) of every process ``ps`` lists in the pod or container (ps itself left out)."""
    result = cluster.pod(pod).exec(["ps", "-eo", "pid=,args="], container=container)
    assert result.returncode == 0, result.stderr
    rows = [line.strip().split(None, 1) for line in result.stdout.splitlines() if line.strip()]
    return [(int(pid), args) for pid, args in rows if not args.startswith("ps ")]


@requires_root
@pytest.mark.root
def test_a_container_sees_only_its_own_processes(cluster) -> None:  # type: ignore[no-untyped-def]
    assert ps(cluster, "two", "a") == [(1, "sleep infinity")]
    own = ps(cluster, "two", "b")
    assert len(own) == 1 and own[0][0] == 1 and own[0][1].startswith("python3 -c")
    assert ps(cluster, "two") == [(1, f"emu-pause:{cluster.name}/two infinity")]


@requires_root
@pytest.mark.root
def test_a_shared_process_namespace_holds_the_pod_with_pause_as_pid_1(cluster) -> None:  # type: ignore
    expected = [(1, f"emu-pause:{cluster.name}/shared infinity"), "sleep 7001", "sleep 7002"]
    for container in ("a", "b", None):
        seen = ps(cluster, "shared", container)
        assert seen[0] == expected[0] and sorted(args for _pid, args in seen[1:]) == expected[1:], seen


@requires_root
@pytest.mark.root
def test_no_process_of_the_machine_is_visible_or_signallable(cluster) -> None:  # type: ignore[no-untyped-def]
    outsider = subprocess.Popen(["sleep", "600"])
    try:
        for pod, container in (("two", "a"), ("two", None), ("shared", "a"), ("host", "c"), ("host", None)):
            where = f"{pod}/{container or '-'}"
            listed = cluster.pod(pod).exec(["sh", "-c", "ls /proc | grep '^[0-9]'"], container=container).stdout
            assert str(outsider.pid) not in listed.split() and str(os.getpid()) not in listed.split(), where
            killed = cluster.pod(pod).exec(["kill", "-9", str(outsider.pid)], container=container)
            assert killed.returncode != 0 and "No such process" in killed.stderr, (where, killed)
            assert outsider.poll() is None, where
    finally:
        outsider.kill()
        outsider.wait()


@requires_root
@pytest.mark.root
def test_sigterm_that_pid_1_would_drop_is_not_waited_for(cluster) -> None:  # type: ignore[no-untyped-def]
    from emu.apply.processes import ignores_sigterm

    pod = cluster.pod("two")
    assert ignores_sigterm(pod.containers["a"].process.pid)  # sleep as PID 1: SIGTERM would be dropped
    assert not ignores_sigterm(pod.containers["b"].process.pid)  # catches SIGTERM
    assert ignores_sigterm(pod.pause.pid)
    assert not ignores_sigterm(os.getpid())  # not the first process of a PID namespace
    assert not ignores_sigterm(cluster.pod("shared").containers["a"].process.pid)  # PID 2 of the pod's


@requires_root
@pytest.mark.root
def test_containers_get_the_service_variables_of_their_namespace(cluster) -> None:  # type: ignore
    def env(pod: str, container: str) -> dict:
        out = cluster.pod(pod).exec(["env"], container=container).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    ip = cluster.service("web-svc").cluster_ip
    mine = env("two", "a")
    assert mine["WEB_SVC_SERVICE_HOST"] == ip and mine["WEB_SVC_PORT_80_TCP_ADDR"] == ip
    assert mine["WEB_SVC_SERVICE_PORT_HTTP"] == "80" and mine["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    elsewhere, quiet = env("elsewhere", "c"), env("host", "c")
    assert "WEB_SVC_SERVICE_HOST" not in elsewhere and elsewhere["KUBERNETES_PORT"] == "tcp://10.96.0.1:443"
    assert "WEB_SVC_SERVICE_HOST" not in quiet and quiet["KUBERNETES_SERVICE_PORT"] == "443"


def test_the_topology_reads(tmp_path: Path) -> None:
    spec, _ = load([str(write(tmp_path))])
    assert [p.name for p in spec.pods] == ["two", "shared", "host", "elsewhere"]
