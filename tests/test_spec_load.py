"""The Spec layer on good input: defaults, shorthands, workload expansion, the scheduler, manifests, notices.

Pure: no root, no kernel. The bad inputs are in tests/test_spec_bad_inputs.py; the JSON schema's agreement with
the loader is in tests/test_spec_schema.py.
"""

import subprocess
import sys
import textwrap
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from emu.spec.errors import Problem
from emu.spec.load import load
from emu.spec.model import ClusterSpec

ROOT = Path(__file__).resolve().parent.parent
TOPOLOGIES = ROOT / "topologies"


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def cluster_text(nodes: int = 2, extra: str = "") -> str:
    """A cluster object; without cluster DNS, whose pods and Service tests/test_dns_plan.py covers."""
    node_lines = "".join(f"  - name: node-{i + 1}\n" for i in range(nodes))
    return f"apiVersion: emu/v1\nkind: Cluster\nname: test\naddons: {{dns: false}}\n{extra}nodes:\n{node_lines}"


def load_text(tmp_path: Path, text: str, *more: Tuple[str, str]) -> Tuple[ClusterSpec, List[Problem]]:
    paths = [write(tmp_path, "cluster.yaml", text)] + [write(tmp_path, name, body) for name, body in more]
    return load([str(p) for p in paths])


def placement(spec: ClusterSpec) -> Dict[str, str]:
    return {pod.name: pod.node for pod in spec.pods}


def messages(problems: List[Problem], severity: str) -> List[str]:
    return [str(p) for p in problems if p.severity == severity]


# ------------------------------------------------------------------------------------------------ defaults


def test_defaults_are_flannel_and_kubeadm_ones(tmp_path: Path) -> None:
    spec, problems = load_text(tmp_path, cluster_text(3))
    assert problems == []
    net = spec.network
    assert net.pod_cidr == IPv4Network("10.244.0.0/16")
    assert net.subnet_len == 24
    assert net.service_cidr == IPv4Network("10.96.0.0/12")
    assert (net.backend.type, net.backend.options.vni, net.backend.options.port) == ("vxlan", 1, 8472)
    assert net.backend.options.direct_routing is False and net.backend.mtu is None
    assert spec.underlay.cidr == IPv4Network("192.168.56.0/24")
    assert spec.underlay.mtu == 1500
    assert [n.ip for n in spec.nodes] == [IPv4Address(f"192.168.56.{11 + i}") for i in range(3)]
    assert [n.name for n in spec.nodes] == ["node-1", "node-2", "node-3"]
    assert spec.pods == () and spec.services == ()


def test_udp_backend_defaults_to_port_8285(tmp_path: Path) -> None:
    spec, _ = load_text(tmp_path, cluster_text(extra="network:\n  backend: {Type: udp}\n"))
    assert (spec.network.backend.type, spec.network.backend.options.port) == ("udp", 8285)


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_backend_string_shorthand(tmp_path: Path, backend: str) -> None:
    spec, _ = load_text(tmp_path, cluster_text(extra=f"network:\n  backend: {backend}\n"))
    assert spec.network.backend.type == backend
    # each backend's own defaults: udp's port is 8285, vxlan's 8472, and host-gw has no port at all
    assert getattr(spec.network.backend.options, "port", None) == {"udp": 8285, "vxlan": 8472}.get(backend)


def test_backend_lower_camel_case_keys(tmp_path: Path) -> None:
    text = cluster_text(
        extra="network:\n  backend: {type: vxlan, vni: 42, port: 4789, directRouting: true, mtu: 1400}\n"
    )
    backend = load_text(tmp_path, text)[0].network.backend
    options = backend.options
    assert (backend.type, options.vni, options.port, options.direct_routing, backend.mtu) == (
        "vxlan",
        42,
        4789,
        True,
        1400,
    )


def test_explicit_network_and_node_addresses(tmp_path: Path) -> None:
    text = textwrap.dedent(
        """\
        apiVersion: emu/v1
        kind: Cluster
        name: custom
        network: {podCIDR: 10.10.0.0/16, subnetLen: 26, serviceCIDR: 10.20.0.0/16}
        underlay: {cidr: 172.16.0.0/24, mtu: 9000, link: {bw: 100, delay: 2ms}}
        nodes:
          - {name: a, ip: 172.16.0.100, link: {bw: 10}}
          - b
        """
    )
    spec, _ = load_text(tmp_path, text)
    assert spec.network.pod_cidr == IPv4Network("10.10.0.0/16") and spec.network.subnet_len == 26
    assert spec.underlay.mtu == 9000
    a, b = spec.nodes
    assert (a.ip, b.ip) == (IPv4Address("172.16.0.100"), IPv4Address("172.16.0.12"))
    assert (a.link.bw, a.link.delay) == (10, "2ms")  # a node's link overrides the underlay's field by field
    assert (b.link.bw, b.link.delay) == (100, "2ms")


def test_numeric_delay_means_milliseconds(tmp_path: Path) -> None:
    spec, _ = load_text(tmp_path, cluster_text(extra="underlay: {link: {delay: 5, jitter: 0.5}}\n"))
    assert (spec.underlay.link.delay, spec.underlay.link.jitter) == ("5ms", "0.5ms")


# ------------------------------------------------------------------------------------------- workloads

DEPLOYMENT = """\
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      containers:
        - name: app
          command: [sleep, infinity]
"""

PINNED_POD = """\
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {node}
  containers: [{{name: app, command: [sleep, infinity]}}]
"""


def test_deployment_replicas_are_named_and_spread_round_robin(tmp_path: Path) -> None:
    spec, _ = load_text(tmp_path, cluster_text(3) + DEPLOYMENT.format(name="web", replicas=7))
    assert placement(spec) == {
        "web-0": "node-1",
        "web-1": "node-2",
        "web-2": "node-3",
        "web-3": "node-1",
        "web-4": "node-2",
        "web-5": "node-3",
        "web-6": "node-1",
    }
    assert all(p.owner == "web" and p.label_map == {"app": "web"} for p in spec.pods)


def test_pinned_pods_count_first_and_ties_go_to_the_earlier_node(tmp_path: Path) -> None:
    text = (
        cluster_text(3)
        + PINNED_POD.format(name="a", node="node-1")
        + DEPLOYMENT.format(name="web", replicas=4)
        + PINNED_POD.format(name="b", node="node-1")  # pinned, though it comes after the Deployment
    )
    spec, _ = load_text(tmp_path, text)
    # node-1 starts with 2 pinned pods: web-0 -> node-2, web-1 -> node-3, then node-2 (tie, earlier), node-3.
    assert placement(spec) == {
        "a": "node-1",
        "web-0": "node-2",
        "web-1": "node-3",
        "web-2": "node-2",
        "web-3": "node-3",
        "b": "node-1",
    }


def test_scheduler_is_deterministic(tmp_path: Path) -> None:
    text = cluster_text(4) + DEPLOYMENT.format(name="web", replicas=9) + DEPLOYMENT.format(name="db", replicas=3)
    first = placement(load_text(tmp_path, text)[0])
    assert all(placement(load_text(tmp_path, text)[0]) == first for _ in range(3))


def test_zero_replicas_make_no_pods(tmp_path: Path) -> None:
    spec, _ = load_text(tmp_path, cluster_text() + DEPLOYMENT.format(name="web", replicas=0))
    assert spec.pods == ()


@pytest.mark.parametrize("kind", ["ReplicaSet", "StatefulSet"])
def test_other_replicated_workloads_expand_like_deployments(tmp_path: Path, kind: str) -> None:
    text = cluster_text() + DEPLOYMENT.format(name="db", replicas=2).replace("kind: Deployment", f"kind: {kind}")
    spec, _ = load_text(tmp_path, text)
    assert placement(spec) == {"db-0": "node-1", "db-1": "node-2"}


def test_daemonset_gives_one_pod_per_node(tmp_path: Path) -> None:
    daemonset = DEPLOYMENT.format(name="agent", replicas=1).replace("kind: Deployment", "kind: DaemonSet")
    daemonset = daemonset.replace("  replicas: 1\n", "")
    spec, _ = load_text(tmp_path, cluster_text(3) + daemonset + DEPLOYMENT.format(name="web", replicas=3))
    assert placement(spec) == {
        "agent-node-1": "node-1",
        "agent-node-2": "node-2",
        "agent-node-3": "node-3",
        "web-0": "node-1",
        "web-1": "node-2",
        "web-2": "node-3",
    }


# ------------------------------------------------------------------------------------------- containers


def test_env_command_args_ports_and_volumes_are_applied(tmp_path: Path) -> None:
    pod = """\
    ---
    apiVersion: v1
    kind: Pod
    metadata: {name: web, labels: {app: web, tier: front}}
    spec:
      volumes: [{name: shared, emptyDir: {}}]
      containers:
        - name: http
          image: python:3-slim
          command: [python3, -m, http.server]
          args: ["8080"]
          workingDir: /srv
          env:
            - {name: GREETING, value: hello}
            - {name: COUNT, value: "3"}
          ports: [{name: http, containerPort: 8080}, {containerPort: 5353, protocol: UDP}]
          volumeMounts: [{name: shared, mountPath: /shared, readOnly: true}]
    """
    spec, _ = load_text(tmp_path, cluster_text() + textwrap.dedent(pod))
    (web,) = spec.pods
    (http,) = web.containers
    assert web.label_map == {"app": "web", "tier": "front"} and web.volumes == ("shared",)
    assert http.argv == ("python3", "-m", "http.server", "8080")
    assert http.env == (("GREETING", "hello"), ("COUNT", "3"))
    assert http.working_dir == "/srv" and http.image == "python:3-slim"
    assert [(p.container_port, p.protocol, p.name) for p in http.ports] == [(8080, "TCP", "http"), (5353, "UDP", "")]
    assert [(m.name, m.mount_path, m.read_only) for m in http.volume_mounts] == [("shared", "/shared", True)]


def test_container_without_command_gets_an_idle_placeholder(tmp_path: Path) -> None:
    from emu.plan.build import build_plan
    from emu.plan.pods import PLACEHOLDER_ARGV

    pod = "---\napiVersion: v1\nkind: Pod\nmetadata: {name: db}\nspec: {containers: [{name: redis, image: redis}]}\n"
    spec, _ = load_text(tmp_path, cluster_text() + pod)
    assert spec.pods[0].containers[0].argv == ()  # the spec keeps "no command"; the plan fills the placeholder
    (planned,) = build_plan(spec).pods
    assert planned.containers[0].argv == PLACEHOLDER_ARGV and planned.containers[0].placeholder


# ------------------------------------------------------------------------------------------- Services


SERVICE = """\
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  type: {type}
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def test_loadbalancer_is_emulated_as_nodeport_with_a_notice(tmp_path: Path) -> None:
    text = cluster_text() + DEPLOYMENT.format(name="web", replicas=2) + SERVICE.format(type="LoadBalancer")
    spec, problems = load_text(tmp_path, text)
    assert spec.services[0].type == "NodePort"
    assert [m for m in messages(problems, "notice") if "emulated as NodePort" in m]


def test_service_fields(tmp_path: Path) -> None:
    service = """\
    ---
    apiVersion: v1
    kind: Service
    metadata: {name: web}
    spec:
      type: NodePort
      clusterIP: 10.96.0.50
      sessionAffinity: ClientIP
      sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
      selector: {app: web}
      ports:
        - {name: http, port: 80, targetPort: 8080, nodePort: 30080}
        - {name: dns, port: 53, protocol: UDP}
    """
    text = cluster_text() + DEPLOYMENT.format(name="web", replicas=1) + textwrap.dedent(service)
    (svc,) = load_text(tmp_path, text)[0].services
    assert (svc.type, svc.cluster_ip, svc.session_affinity, svc.affinity_timeout) == (
        "NodePort",
        IPv4Address("10.96.0.50"),
        "ClientIP",
        60,
    )
    assert [(p.name, p.protocol, p.port, p.target_port, p.node_port) for p in svc.ports] == [
        ("http", "TCP", 80, "8080", 30080),
        ("dns", "UDP", 53, "53", None),
    ]


# ------------------------------------------------------------------------------------------- manifests


def test_manifests_named_by_the_cluster_file_relative_paths_and_globs(tmp_path: Path) -> None:
    cluster = cluster_text(extra="") + "manifests:\n  - apps/web.yaml\n  - more/*.yaml\n"
    write(tmp_path, "apps/web.yaml", DEPLOYMENT.format(name="web", replicas=2))
    write(tmp_path, "more/b.yaml", PINNED_POD.format(name="b", node="node-2"))
    write(tmp_path, "more/a.yaml", PINNED_POD.format(name="a", node="node-1"))
    write(tmp_path, "more/notes.txt", "not YAML, not matched")
    spec, _ = load_text(tmp_path, cluster)
    assert sorted(placement(spec)) == ["a", "b", "web-0", "web-1"]
    assert [Path(f).name for f in spec.files] == ["cluster.yaml", "web.yaml", "a.yaml", "b.yaml"]


def test_manifests_on_the_command_line(tmp_path: Path) -> None:
    spec, _ = load_text(
        tmp_path,
        cluster_text(),
        ("web.yaml", DEPLOYMENT.format(name="web", replicas=2)),
        ("svc.yaml", SERVICE.format(type="ClusterIP")),
    )
    assert sorted(placement(spec)) == ["web-0", "web-1"] and [s.name for s in spec.services] == ["web"]


def test_a_file_named_twice_is_read_once(tmp_path: Path) -> None:
    write(tmp_path, "web.yaml", DEPLOYMENT.format(name="web", replicas=1))
    cluster = write(tmp_path, "cluster.yaml", cluster_text() + "manifests: [web.yaml, ./web.yaml]\n")
    spec, _ = load([str(cluster), str(tmp_path / "web.yaml")])
    assert [p.name for p in spec.pods] == ["web-0"]


def test_ignored_kinds_are_accepted_with_a_notice(tmp_path: Path) -> None:
    extra = "".join(
        f"---\napiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\n"
        for api, kind in (("v1", "ConfigMap"), ("v1", "Secret"), ("networking.k8s.io/v1", "Ingress"))
    )
    spec, problems = load_text(tmp_path, cluster_text() + extra)
    notices = messages(problems, "notice")
    assert len(notices) == 3 and all("has nothing to emulate" in n for n in notices)


def test_ignored_fields_are_noticed_once_and_nothing_else(tmp_path: Path) -> None:
    pods = "".join(
        f"""---
apiVersion: v1
kind: Pod
metadata: {{name: p{i}}}
spec:
  restartPolicy: Always
  containers:
    - name: app
      image: busybox
      imagePullPolicy: IfNotPresent
      resources: {{limits: {{cpu: "1"}}}}
      livenessProbe: {{exec: {{command: [true]}}}}
"""
        for i in range(3)
    )
    spec, problems = load_text(tmp_path, cluster_text() + pods)
    notices = messages(problems, "notice")
    assert len(spec.pods) == 3
    for field in ("restartPolicy", "imagePullPolicy", "resources", "livenessProbe"):
        assert len([n for n in notices if f"'{field}' has no effect" in n]) == 1, notices
    assert len(notices) == 4 and not messages(problems, "warning")


# ------------------------------------------------------------------------------------------- shipped files


SHIPPED = sorted(p.name for p in TOPOLOGIES.glob("*.yaml"))


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_topologies_load_without_errors(name: str) -> None:
    spec, _ = load([str(TOPOLOGIES / name)])
    assert spec.nodes


def test_guestbook_manifests_load_unchanged() -> None:
    """The upstream guestbook: 6 pods, 3 Services (and cluster DNS's 2 pods and Service), notices for what emu
    does not emulate, exit 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "emu", "validate", "topologies/guestbook.yaml"],
        cwd=str(ROOT),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "valid: cluster guestbook, 3 nodes, 8 pods, 4 services" in output
    assert "notice: spec.template.spec.containers[0].resources: 'resources' has no effect" in output
    assert "emulated as NodePort" in output
    assert "error" not in output.lower() and "warning:" not in output

    spec, _ = load([str(TOPOLOGIES / "guestbook.yaml")])
    assert placement(spec) == {
        "frontend-0": "node-1",
        "frontend-1": "node-2",
        "frontend-2": "node-3",
        "redis-follower-0": "node-1",
        "redis-follower-1": "node-2",
        "redis-leader-0": "node-3",
        "kube-dns-0": "node-1",  # cluster DNS's pods come last, spread over two nodes
        "kube-dns-1": "node-2",
    }
    frontend = [p for p in spec.pods if p.owner == "frontend"]
    assert all(p.containers[0].env == (("GET_HOSTS_FROM", "dns"),) for p in frontend)
    assert all(c.argv == () for p in spec.pods for c in p.containers if p.namespace == "default")  # images: not run
    services = {s.name: s for s in spec.services}
    assert services["frontend"].type == "NodePort"
    assert [p.port for p in services["redis-follower"].ports] == [6379]


def test_deployment_topology_spreads_six_replicas() -> None:
    spec, problems = load([str(TOPOLOGIES / "deployment.yaml")])
    web = [p for p in spec.pods if p.owner == "web"]
    assert len(web) == 6
    per_node = {n.name: [p.name for p in spec.pods if p.node == n.name and p.namespace == "default"]
                for n in spec.nodes}
    assert per_node == {
        "node-1": ["web-2", "web-5", "client"],
        "node-2": ["web-0", "web-3"],
        "node-3": ["web-1", "web-4"],
    }
    assert not [p for p in problems if p.severity == "warning"]


def _doc_example(marker: str) -> str:
    text = (ROOT / "docs" / "topology.md").read_text()
    after = text.split(f"<!-- example: {marker} -->", 1)[1]
    return after.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_the_complete_example_in_the_docs_is_valid(tmp_path: Path) -> None:
    """docs/topology.md shows every field; it must stay a valid topology (the cluster names apps/*.yaml)."""
    write(tmp_path, "apps/objects.yaml", _doc_example("objects"))
    spec, problems = load_text(tmp_path, _doc_example("cluster"))
    assert not [p for p in problems if p.severity == "warning"], problems
    assert placement(spec) == {
        "client": "node-1",
        "agent-node-1": "node-1",
        "agent-node-2": "node-2",
        "web-0": "node-2",
        "web-1": "node-1",
        "web-2": "node-2",
        "kube-dns-0": "node-1",
        "kube-dns-1": "node-2",
    }
    assert spec.nodes[0].link.delay == "2ms" and spec.nodes[1].link.bw == 1000
