"""The objects ``emu conformance`` adds to a cluster: the e2e suite's test pods and Services, as manifests.

They mirror the e2e framework's ``NetworkingTestConfig`` (test/e2e/framework/network/utils.go): one
``netserver`` pod per node serving HTTP on 8083 and UDP on 8081, a test-container pod serving 9080 (the pod the
probes are made from), a host-network test pod (the node's view), and the NodePort Services over the
netservers, one of them with ClientIP affinity. Every container is agnhost ``netexec`` upstream and has no
command here, so emu's stand-in server answers for it. All of it lives in the namespace ``emu-conformance``;
pod names carry an ``e2e-`` prefix (pods are unique cluster-wide in emu), Service names are upstream's.
"""

from typing import Any, Dict, List, Optional, Sequence, Tuple

NAMESPACE = "emu-conformance"
ENDPOINT_HTTP_PORT = 8083
ENDPOINT_UDP_PORT = 8081
TEST_CONTAINER_HTTP_PORT = 9080
HOST_TEST_HTTP_PORT = 9081
CLUSTER_HTTP_PORT = 80
CLUSTER_UDP_PORT = 90
NETSERVER_LABEL = ("e2e-selector", "netserver")

TEST_POD = "e2e-test-container-pod"
HOST_TEST_POD = "e2e-host-test-container-pod"
NODE_PORT_SERVICE = "node-port-service"
SESSION_AFFINITY_SERVICE = "session-affinity-service"

Manifest = Dict[str, Any]


def netserver_name(index: int) -> str:
    return f"e2e-netserver-{index}"


def pod(
    name: str,
    ports: Sequence[Tuple[int, str, str]],
    node: Optional[str] = None,
    labels: Optional[Dict[str, str]] = None,
    host_network: bool = False,
) -> Manifest:
    """A Pod whose one container is agnhost netexec upstream (no command: the stand-in answers on ``ports``,
    given as (port, protocol, name))."""
    spec: Dict[str, Any] = {
        "containers": [{
            "name": "webserver",
            "image": "registry.k8s.io/e2e-test-images/agnhost:2.47",
            "ports": [{"containerPort": p, "protocol": proto, **({"name": n} if n else {})} for p, proto, n in ports],
        }],
    }
    if node:
        spec["nodeName"] = node
    if host_network:
        spec["hostNetwork"] = True
    metadata = {"name": name, "namespace": NAMESPACE, "labels": dict(labels or {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def service(
    name: str,
    selector: Dict[str, str],
    ports: Sequence[Tuple[str, str, int, Any]],
    kind: str = "ClusterIP",
    affinity: bool = False,
) -> Manifest:
    """A Service over ``selector`` with ports given as (name, protocol, port, targetPort)."""
    spec: Dict[str, Any] = {
        "type": kind,
        "selector": dict(selector),
        "ports": [{"protocol": proto, "port": port, "targetPort": target, **({"name": name} if name else {})}
                  for name, proto, port, target in ports],
    }
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def netserver(index: int, node: str) -> Manifest:
    return pod(
        netserver_name(index),
        [(ENDPOINT_HTTP_PORT, "TCP", "http"), (ENDPOINT_UDP_PORT, "UDP", "udp")],
        node=node,
        labels=dict([NETSERVER_LABEL]),
    )


def networking_config(nodes: Sequence[str]) -> List[Manifest]:
    """The NetworkingTestConfig: a netserver per node, the test pods (on the first node), the two Services."""
    out = [netserver(i, node) for i, node in enumerate(nodes)]
    out.append(pod(TEST_POD, [(TEST_CONTAINER_HTTP_PORT, "TCP", "http")], node=nodes[0]))
    out.append(pod(HOST_TEST_POD, [(HOST_TEST_HTTP_PORT, "TCP", "http")], node=nodes[0], host_network=True))
    ports = [("http", "TCP", CLUSTER_HTTP_PORT, ENDPOINT_HTTP_PORT),
             ("udp", "UDP", CLUSTER_UDP_PORT, ENDPOINT_UDP_PORT)]
    selector = dict([NETSERVER_LABEL])
    out.append(service(NODE_PORT_SERVICE, selector, ports, kind="NodePort"))
    out.append(service(SESSION_AFFINITY_SERVICE, selector, ports, kind="NodePort", affinity=True))
    return out
